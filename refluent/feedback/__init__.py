"""The feedback join: labels meet the predictions they are for, in event-time order.

:mod:`refluent.feedback.labels` coerces labels to the model's task, :mod:`refluent.feedback.merge`
merges the input partitions by event time, :mod:`refluent.feedback.join` joins labels to
predictions over a :class:`~refluent.feedback.state.base.JoinState` (:mod:`refluent.feedback.state`:
in memory or in Redis), and :mod:`refluent.feedback.service` is the ``refluent feedback`` service
that also teaches the online learners (:mod:`refluent.online_learning`).
"""

from __future__ import annotations

from refluent.feedback.errors import (
    DuplicateLabelError,
    FeedbackError,
    FeedbackRejected,
    FeedbackStoreError,
    LabelRecordExpiredError,
    LabelTooLateError,
    LabelTypeError,
    UnknownPredictionError,
)
from refluent.feedback.join import FeedbackJoin, Joined, JoinOutcome, RejectedLabel
from refluent.feedback.labels import coerce_label
from refluent.feedback.merge import EventTimeMerger, TimedEvent
from refluent.feedback.state import (
    JoinState,
    MemoryJoinState,
    PendingPrediction,
    RedisJoinStore,
    WaitingLabel,
)

__all__ = [
    "DuplicateLabelError",
    "EventTimeMerger",
    "FeedbackError",
    "FeedbackJoin",
    "FeedbackRejected",
    "FeedbackStoreError",
    "JoinOutcome",
    "JoinState",
    "Joined",
    "LabelRecordExpiredError",
    "LabelTooLateError",
    "LabelTypeError",
    "MemoryJoinState",
    "PendingPrediction",
    "RedisJoinStore",
    "RejectedLabel",
    "TimedEvent",
    "UnknownPredictionError",
    "WaitingLabel",
    "coerce_label",
]
