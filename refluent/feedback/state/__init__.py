"""Where the feedback join keeps its state: the :class:`JoinState` interface and the records it
holds (:mod:`~refluent.feedback.state.base`), in memory (:mod:`~refluent.feedback.state.memory`)
and in Redis (:mod:`~refluent.feedback.state.redis`)."""

from __future__ import annotations

from refluent.feedback.state.base import JoinState, PendingPrediction, WaitingLabel, from_us, to_us
from refluent.feedback.state.memory import MemoryJoinState
from refluent.feedback.state.redis import RedisJoinBatch, RedisJoinStore

__all__ = [
    "JoinState",
    "MemoryJoinState",
    "PendingPrediction",
    "RedisJoinBatch",
    "RedisJoinStore",
    "WaitingLabel",
    "from_us",
    "to_us",
]
