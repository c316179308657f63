"""The feedback join: labels meet the predictions they are for, in event-time order.

:mod:`refluent.feedback.join` holds the join logic, the event-time merge and the Redis store;
:mod:`refluent.feedback.service` the ``refluent feedback`` service that also teaches the online
learners (:mod:`refluent.online_learning`).
"""

from __future__ import annotations

from refluent.feedback.base import (
    Joined,
    JoinOutcome,
    JoinState,
    MemoryJoinState,
    PendingPrediction,
    Rejected,
    SourceRef,
    WaitingLabel,
)
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
from refluent.feedback.join import (
    EventTimeMerger,
    FeedbackJoin,
    RedisJoinStore,
    TimedEvent,
    coerce_label,
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
    "Rejected",
    "SourceRef",
    "TimedEvent",
    "UnknownPredictionError",
    "WaitingLabel",
    "coerce_label",
]
