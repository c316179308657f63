"""The state the feedback join runs against: what waits in it (:class:`PendingPrediction`,
:class:`WaitingLabel`, each with the :class:`~refluent.streams.origin.Origin` of the event
that wrote it), and the :class:`JoinState` interface.

The join logic (:mod:`refluent.feedback.join`) is a pure function of the events it is given and
of a :class:`JoinState`; :class:`~refluent.feedback.state.memory.MemoryJoinState` holds that
state in dictionaries (tests, the property checks, benchmarks without Redis) and
:class:`~refluent.feedback.state.redis.RedisJoinStore` keeps it in Redis.

Replay: every stored record carries the :class:`Origin` of the event that wrote it, so after
a restart from a checkpoint the join can tell what an event it is replaying already wrote (see
:class:`~refluent.feedback.join.FeedbackJoin`). Records are never deleted when they are joined:
a replay needs them; they are marked instead and expire with ``feedback.pending_ttl_s``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from refluent.streams.origin import Origin

if TYPE_CHECKING:
    from refluent.models.base import Scored
    from refluent.streams.contracts import Feedback, Prediction

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

def to_us(ts: datetime) -> int:
    """Microseconds since the epoch of the aware timestamp ``ts`` (exact).

    Examples:
        >>> to_us(datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=UTC))
        1000005
    """
    return (ts - EPOCH) // _US


def from_us(us: int) -> datetime:
    """Inverse of :func:`to_us`.

    Examples:
        >>> from_us(1000005).isoformat()
        '1970-01-01T00:00:01.000005+00:00'
    """
    return EPOCH + timedelta(microseconds=us)


@dataclass(slots=True)
class PendingPrediction:
    """A prediction waiting for its label.

    Attributes:
        prediction: The event as consumed.
        source: Where it was read.
        raw: Its bytes as consumed (what the store keeps).
        joined_by: The label that joined it, once joined.
        answers: Model version -> what the online learner's model answered for this question
            (kept for progressive validation once the label arrives).
        ts_us: Prediction time, microseconds since the epoch.
    """

    prediction: Prediction
    source: Origin
    raw: bytes
    joined_by: Origin | None = None
    answers: dict[str, Scored] = field(default_factory=dict)
    ts_us: int = field(init=False)

    def __post_init__(self) -> None:
        self.ts_us = to_us(self.prediction.ts)

    @property
    def prediction_id(self) -> str:
        """The prediction's id."""
        return self.prediction.prediction_id


WaitingStatus = Literal["waiting", "joined", "rejected", "expired"]


@dataclass(slots=True)
class WaitingLabel:
    """A label whose prediction was not known when it was processed.

    Attributes:
        feedback: The event as consumed.
        source: Where it was read; also its key in the store.
        raw: Its bytes as consumed (dead-lettered whole if it expires).
        key: Its record key.
        deadline_us: Event time after which it is dead-lettered as ``unknown_prediction``.
        status: ``waiting``, then ``joined``, ``rejected`` (joined a prediction it did not fit)
            or ``expired``.
        changed_by: The prediction event that joined or rejected it.
    """

    feedback: Feedback
    source: Origin
    raw: bytes | None
    key: bytes | None
    deadline_us: int
    status: WaitingStatus = "waiting"
    changed_by: Origin | None = None

    @property
    def event_us(self) -> int:
        """The label's event time, microseconds since the epoch."""
        return to_us(self.feedback.event_time)


class JoinState(ABC):
    """Where the join keeps pending predictions and waiting labels.

    Implementations hold everything in memory
    (:class:`~refluent.feedback.state.memory.MemoryJoinState`) or front a store with a
    per-batch cache (:class:`~refluent.feedback.state.redis.RedisJoinBatch`). ``save_*`` calls are
    upserts of the whole record: the join mutates the records it was given and saves them.
    """

    @abstractmethod
    def prediction(self, prediction_id: str) -> PendingPrediction | None:
        """The pending prediction ``prediction_id``, or None."""

    @abstractmethod
    def save_prediction(self, pending: PendingPrediction, *, new: bool) -> None:
        """Store ``pending``; ``new`` also indexes it under its entity."""

    def mark_joined(self, pending: PendingPrediction) -> None:
        """Store that ``pending`` was joined (its ``joined_by`` changed, nothing else)."""
        self.save_prediction(pending, new=False)

    @abstractmethod
    def entity_predictions(self, entity_id: str, at_or_before_us: int
                           ) -> Iterator[PendingPrediction]:
        """The entity's pending predictions made at or before the time, latest first."""

    @abstractmethod
    def waiting_for(self, prediction_id: str, entity_id: str) -> list[WaitingLabel]:
        """Labels waiting for ``prediction_id`` or for a prediction of ``entity_id``."""

    @abstractmethod
    def save_waiting(self, label: WaitingLabel, *, new: bool) -> None:
        """Store ``label``; ``new`` also indexes it under its target and deadline."""

    @abstractmethod
    def due_waiting(self, clock_us: int,
                    partitions: Collection[tuple[str, int]] | None = None) -> list[WaitingLabel]:
        """Labels still waiting whose deadline is before ``clock_us`` (of the given feedback
        partitions; all when None), in deadline order."""


def prediction_target(prediction_id: str) -> str:
    """The target of the labels that name ``prediction_id``."""
    return "p:" + prediction_id


def entity_target(entity_id: str) -> str:
    """The target of the labels that name the entity ``entity_id``."""
    return "e:" + entity_id


def label_target(feedback: Feedback) -> str:
    """What a label waits for: ``p:<prediction id>`` or ``e:<entity id>``.

    Examples:
        >>> from refluent.streams.contracts import Feedback
        >>> label_target(Feedback(entity_id="u1", label=1, event_time=EPOCH))
        'e:u1'
    """
    if feedback.prediction_id is not None:
        return prediction_target(feedback.prediction_id)
    return entity_target(feedback.entity_id or "")
