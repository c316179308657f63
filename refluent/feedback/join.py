"""The feedback join: predictions meet their labels, replay-safe.

:class:`FeedbackJoin` is the join logic, a pure function of the events it is given (in the
order :class:`~refluent.feedback.merge.EventTimeMerger` releases them) and of a
:class:`~refluent.feedback.state.base.JoinState` (in memory:
:class:`~refluent.feedback.state.memory.MemoryJoinState`; in Redis, read and written once per
batch: :class:`~refluent.feedback.state.redis.RedisJoinStore`). What one event yields is a
:class:`JoinOutcome`: labels :class:`Joined` to their prediction, labels :class:`RejectedLabel`
with a reason, a label left waiting.

**The join.** A prediction is kept as pending, keyed by its id and indexed under its entity by
prediction time. A label names a prediction id, or an entity and a time: it joins the latest
pending prediction of that entity made at or before the label's event time. A label is rejected
(and dead-lettered with the reason) when the prediction it joins already has a label
(``duplicate_label``), when it came more than ``max_label_delay_s`` after the prediction
(``too_late``), or when its value does not fit the model's task (``label_type``, see
:func:`~refluent.feedback.labels.coerce_label`). A label whose prediction is not there yet
waits; the prediction joins it when it arrives, as long as the join's clock (the largest event
time processed) has not passed the label's event time plus ``early_label_wait_s``; once it has,
:meth:`FeedbackJoin.expire` dead-letters the label as ``unknown_prediction``. Every label
therefore ends joined or dead-lettered with a reason, and each prediction is joined at most
once.

**Replay.** After a restart from a checkpoint the service reads again events it had processed,
and the store holds what they wrote. Every stored record carries the coordinates of the event
that wrote it, and the join is given ``visible``: whether an event at those coordinates has been
processed in this run (its offset is below the partition's current position). A record written
by an event not yet replayed is ignored until that event comes again, which then writes the same
record; nothing is deleted on a join (records are marked, and expire after ``pending_ttl_s``). A
replayed label therefore joins the same prediction again and a learner restored from the
checkpoint learns it exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from refluent.feedback.errors import (
    DuplicateLabelError,
    FeedbackRejected,
    LabelTooLateError,
    LabelTypeError,
    UnknownPredictionError,
)
from refluent.feedback.labels import LabelValue, coerce_label, prediction_task
from refluent.feedback.state.base import EPOCH, JoinState, PendingPrediction, WaitingLabel, to_us
from refluent.streams.contracts import Feedback, LabeledExample, Prediction
from refluent.streams.origin import Origin

if TYPE_CHECKING:
    from refluent.config import FeedbackSettings
    from refluent.models.base import Task

_US_PER_S = 1_000_000
_ONE_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Joined:
    """A label joined to its prediction.

    Attributes:
        example: The labelled example (the label coerced to the model's task).
        pending: The prediction it joined (with the learners' answers).
        label_source: Where the label was read.
        trigger: The event whose processing made the join: the label itself, or the
            prediction a waiting label was waiting for.
    """

    example: LabeledExample
    pending: PendingPrediction
    label_source: Origin
    trigger: Origin


@dataclass(frozen=True, slots=True)
class RejectedLabel:
    """A label the join gives up on, to dead-letter with ``error.reason``.

    Attributes:
        error: Why (its ``reason`` is the dead-letter reason).
        source: Where the label was read.
        raw: Its bytes as consumed.
        key: Its record key.
        trigger: The event whose processing rejected it (None: the join's clock expired it).
    """

    error: FeedbackRejected
    source: Origin
    raw: bytes | None
    key: bytes | None
    trigger: Origin | None


@dataclass(frozen=True, slots=True)
class JoinOutcome:
    """What processing one event yielded.

    Attributes:
        question: For a prediction: the pending record the learners answer (None when the
            prediction repeats one already held, which is skipped and counted).
        joined: Labels joined by this event.
        rejected: Labels rejected by this event.
        waiting: A label that now waits for its prediction.
        repeated: A prediction id already held from another record.
    """

    question: PendingPrediction | None = None
    joined: tuple[Joined, ...] = ()
    rejected: tuple[RejectedLabel, ...] = ()
    waiting: WaitingLabel | None = None
    repeated: bool = False


_EXAMPLE = LabeledExample(prediction_id="", entity_id="", model_name="", model_version="",
                          features={}, label=0, score=None, predicted_label=None,
                          prediction_time=EPOCH, label_time=EPOCH)


def labeled_example(prediction: Prediction, label: LabelValue, feedback: Feedback
                    ) -> LabeledExample:
    """The example that joins ``prediction`` to ``feedback``, with ``label`` (the feedback's
    label as :func:`coerce_label` made it).

    Every value comes from an event that was validated when it was decoded, or from
    :func:`coerce_label`, so the example is copied from a template instead of validated again
    (validation cost as much as the rest of a label's join); it equals the validated one. It
    shares the prediction's ``features`` mapping: events are immutable.

    Examples:
        >>> from datetime import UTC, datetime
        >>> p = Prediction(prediction_id="p1", request_id="r1", model_name="m",
        ...                model_version="1", entity_id="u1", features={"x": 1.0},
        ...                ts=datetime(2026, 1, 1, tzinfo=UTC))
        >>> f = Feedback(prediction_id="p1", label=True, event_time=p.ts)
        >>> labeled_example(p, True, f) == LabeledExample(
        ...     prediction_id="p1", entity_id="u1", model_name="m", model_version="1",
        ...     features={"x": 1.0}, label=True, score=None, predicted_label=None,
        ...     prediction_time=p.ts, label_time=f.event_time)
        True
    """
    return _EXAMPLE.model_copy(update={
        "prediction_id": prediction.prediction_id, "entity_id": prediction.entity_id,
        "model_name": prediction.model_name, "model_version": prediction.model_version,
        "features": prediction.features, "label": label, "score": prediction.score,
        "predicted_label": prediction.label, "prediction_time": prediction.ts,
        "label_time": feedback.event_time})


def _always(_: Origin) -> bool:
    return True


class FeedbackJoin:
    """The join logic (see the module docstring). Holds only its clock; everything else is in
    the :class:`~refluent.feedback.state.base.JoinState` passed to each call.

    Args:
        early_label_wait_s: How long (event time) a label waits for its prediction.
        max_label_delay_s: Label time minus prediction time above which a label is too late.
        task_of: Model name -> its task, when known (else the prediction's answer tells).
        visible: Whether the event at a source has been processed in this run (replay; see the
            module docstring). Default: every stored record is visible.
        clock_us: The clock to start from (a checkpoint's), microseconds since the epoch.

    Examples:
        >>> from datetime import UTC, datetime
        >>> from refluent.feedback.state import MemoryJoinState
        >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
        >>> join, state = FeedbackJoin(early_label_wait_s=60, max_label_delay_s=3600), \
MemoryJoinState()
        >>> p = Prediction(prediction_id="p1", request_id="r1", model_name="m",
        ...                model_version="1", entity_id="u1", score=0.5, ts=t0)
        >>> join.on_prediction(state, p, Origin("predictions", 0, 0), b"{}").question.ts_us
        1767225600000000
        >>> fb = Feedback(prediction_id="p1", label=1.5, event_time=t0 + timedelta(seconds=9))
        >>> out = join.on_feedback(state, fb, Origin("feedback", 0, 0), b"{}", None)
        >>> out.joined[0].example.label, out.joined[0].example.model_name
        (1.5, 'm')
    """

    def __init__(self, *, early_label_wait_s: float, max_label_delay_s: float,
                 task_of: Callable[[str], Task | None] | None = None,
                 visible: Callable[[Origin], bool] | None = None,
                 clock_us: int | None = None) -> None:
        self.early_label_wait_us = round(early_label_wait_s * _US_PER_S)
        self.max_label_delay = timedelta(seconds=max_label_delay_s)
        self.max_label_delay_us = self.max_label_delay // _ONE_US
        self.max_label_delay_s = max_label_delay_s
        self.early_label_wait_s = early_label_wait_s
        self.task_of = task_of
        self.visible = visible or _always
        self.clock_us = clock_us

    @classmethod
    def from_settings(cls, settings: FeedbackSettings, **kwargs: Any) -> FeedbackJoin:
        """A join with the waits of ``settings`` (``Settings.feedback``)."""
        return cls(early_label_wait_s=settings.early_label_wait_s,
                   max_label_delay_s=settings.max_label_delay_s, **kwargs)

    def _advance(self, us: int) -> None:
        if self.clock_us is None or us > self.clock_us:
            self.clock_us = us

    # -- predictions ---------------------------------------------------------------------------
    def on_prediction(self, state: JoinState, prediction: Prediction, source: Origin,
                      raw: bytes) -> JoinOutcome:
        """Keep ``prediction`` as pending and join the labels that were waiting for it.

        A prediction id already held from another record (a replayed request) is not taken
        again: the outcome says ``repeated``.
        """
        pending = PendingPrediction(prediction, source, raw)
        ts_us = pending.ts_us
        if self.clock_us is None or ts_us > self.clock_us:
            self.clock_us = ts_us
        pid = prediction.prediction_id
        existing = state.prediction(pid)
        if existing is not None:
            if existing.source != source and self.visible(existing.source):
                return JoinOutcome(repeated=True)
            # A replay of this very record: learners whose checkpoint already holds it keep
            # the answers they gave the first time.
            pending.answers = dict(existing.answers)
            if existing.joined_by is not None and self.visible(existing.joined_by):
                pending.joined_by = existing.joined_by
        state.save_prediction(pending, new=True)
        found = state.waiting_for(pid, prediction.entity_id)
        if not found:
            return JoinOutcome(question=pending)
        joined: list[Joined] = []
        rejected: list[RejectedLabel] = []
        for label in sorted(found, key=lambda w: (w.event_us, w.source)):
            if not self._may_join(label, pending, source):
                continue
            if label.feedback.prediction_id is None and pending.joined_by is not None:
                continue  # an entity's label may still meet another prediction of the entity
            result = self._join(state, pending, label.feedback, label.event_us, label.source,
                                label.raw, label.key, trigger=source)
            label.status = "joined" if isinstance(result, Joined) else "rejected"
            label.changed_by = source
            state.save_waiting(label, new=False)
            (joined if isinstance(result, Joined) else rejected).append(result)  # type: ignore[arg-type]
        return JoinOutcome(question=pending, joined=tuple(joined), rejected=tuple(rejected))

    def _may_join(self, label: WaitingLabel, pending: PendingPrediction,
                  source: Origin) -> bool:
        if not self.visible(label.source):
            return False  # written by a label not replayed yet: its replay will come
        still_waiting = label.status == "waiting" or (
            label.changed_by is not None
            and (label.changed_by == source or not self.visible(label.changed_by)))
        if not still_waiting:
            return False
        if self.clock_us is not None and self.clock_us > label.deadline_us:
            return False  # expired; expire() dead-letters it
        if label.feedback.prediction_id is None:
            return pending.ts_us <= label.event_us
        return label.feedback.prediction_id == pending.prediction_id

    # -- labels --------------------------------------------------------------------------------
    def on_feedback(self, state: JoinState, feedback: Feedback, source: Origin,
                    raw: bytes | None, key: bytes | None) -> JoinOutcome:
        """Join ``feedback`` to its prediction, reject it, or keep it waiting."""
        event_us = to_us(feedback.event_time)
        self._advance(event_us)
        pending: PendingPrediction | None = None
        if feedback.prediction_id is not None:
            pending = state.prediction(feedback.prediction_id)
            if pending is not None and not self.visible(pending.source):
                pending = None
        else:
            for candidate in state.entity_predictions(feedback.entity_id or "", event_us):
                if self.visible(candidate.source):
                    pending = candidate
                    break
        if pending is None:
            label = WaitingLabel(feedback, source, raw, key, event_us + self.early_label_wait_us)
            state.save_waiting(label, new=True)
            return JoinOutcome(waiting=label)
        result = self._join(state, pending, feedback, event_us, source, raw, key,
                            trigger=source)
        if isinstance(result, Joined):
            return JoinOutcome(joined=(result,))
        return JoinOutcome(rejected=(result,))

    def _join(self, state: JoinState, pending: PendingPrediction, feedback: Feedback,
              event_us: int, label_source: Origin, raw: bytes | None, key: bytes | None,
              trigger: Origin) -> Joined | RejectedLabel:
        prediction = pending.prediction
        first = pending.joined_by
        error: FeedbackRejected | None = None
        if first is not None and first != label_source and self.visible(first):
            error = DuplicateLabelError(prediction.prediction_id, prediction.model_name,
                                        first.text())
        elif event_us - pending.ts_us > self.max_label_delay_us:
            error = LabelTooLateError(prediction.prediction_id, prediction.model_name,
                                      prediction.ts, feedback.event_time, self.max_label_delay_s)
        else:
            task = self.task_of(prediction.model_name) if self.task_of is not None else None
            try:
                label = coerce_label(feedback.label, task or prediction_task(prediction),
                                     prediction)
            except LabelTypeError as exc:
                error = exc
        if error is not None:
            return RejectedLabel(error, label_source, raw, key, trigger)
        pending.joined_by = label_source
        state.mark_joined(pending)
        return Joined(labeled_example(prediction, label, feedback), pending, label_source,
                      trigger)

    # -- expiry --------------------------------------------------------------------------------
    def expire(self, state: JoinState,
               partitions: Collection[tuple[str, int]] | None = None) -> list[RejectedLabel]:
        """Dead-letter (as ``unknown_prediction``) the labels whose wait the clock has passed."""
        if self.clock_us is None:
            return []
        out = []
        for label in state.due_waiting(self.clock_us, partitions):
            if not self.visible(label.source) or label.status != "waiting":
                continue
            label.status = "expired"
            label.changed_by = None
            state.save_waiting(label, new=False)
            fb = label.feedback
            error = UnknownPredictionError(fb.prediction_id, fb.entity_id, fb.event_time,
                                           self.early_label_wait_s)
            out.append(RejectedLabel(error, label.source, label.raw, label.key, None))
        return out

