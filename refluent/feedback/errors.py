"""Errors of the feedback join.

A label the join cannot use is data, not a fault: it is rejected with a
:class:`FeedbackRejected` subclass, whose ``reason`` names the dead-letter class
(``unknown_prediction``, ``too_late``, ``label_type``, ``duplicate_label``) and whose message
names the prediction, entity or model involved. The service dead-letters it to ``feedback.dlq``
with step ``feedback_join`` and carries on.
"""

from __future__ import annotations

from datetime import datetime

from refluent.errors import RefluentError
from refluent.streams.processing import RecordRejected

JOIN_STEP = "feedback_join"
"""The step named in the dead-letter headers of rejected labels."""


class FeedbackError(RefluentError):
    """Root of the errors in :mod:`refluent.feedback`."""


class FeedbackRejected(RecordRejected, FeedbackError):
    """A label the join rejects; dead-lettered with :attr:`reason`."""

    reason_code = "rejected"

    def __init__(self, detail: str) -> None:
        super().__init__(JOIN_STEP, self.reason_code, detail)


def _target(prediction_id: str | None, entity_id: str | None) -> str:
    if prediction_id is not None:
        return f"prediction {prediction_id}"
    return f"entity {entity_id}"


class UnknownPredictionError(FeedbackRejected):
    """No prediction matched the label within ``feedback.early_label_wait_s``."""

    reason_code = "unknown_prediction"

    def __init__(self, prediction_id: str | None, entity_id: str | None,
                 event_time: datetime, waited_s: float) -> None:
        self.prediction_id = prediction_id
        self.entity_id = entity_id
        target = _target(prediction_id, entity_id)
        if prediction_id is None:
            target += f" (no prediction at or before {event_time.isoformat()})"
        super().__init__(f"label of {event_time.isoformat()} for {target}: no such prediction "
                         f"arrived within {waited_s:g}s of event time "
                         "(feedback.early_label_wait_s)")


class LabelRecordExpiredError(FeedbackRejected):
    """A waiting label's record expired from the store (``feedback.pending_ttl_s``) before its
    deadline; it is dead-lettered by its coordinates, its value being gone."""

    reason_code = "unknown_prediction"

    def __init__(self, source: str, ttl_s: float) -> None:
        self.source = source
        super().__init__(f"the label at {source} waited for its prediction longer than the "
                         f"store keeps it (feedback.pending_ttl_s={ttl_s:g}s); its value is "
                         "lost, only its coordinates are known")


class LabelTooLateError(FeedbackRejected):
    """The label came more than ``feedback.max_label_delay_s`` after its prediction."""

    reason_code = "too_late"

    def __init__(self, prediction_id: str, model: str, prediction_time: datetime,
                 label_time: datetime, limit_s: float) -> None:
        self.prediction_id = prediction_id
        self.model = model
        delay = (label_time - prediction_time).total_seconds()
        super().__init__(f"label for prediction {prediction_id} of model {model} came "
                         f"{delay:g}s after it ({prediction_time.isoformat()} -> "
                         f"{label_time.isoformat()}), more than the {limit_s:g}s allowed "
                         "(feedback.max_label_delay_s)")


class LabelTypeError(FeedbackRejected):
    """The label does not fit the model's task (text for a regressor, 7 for a binary
    classifier, ...)."""

    reason_code = "label_type"

    def __init__(self, prediction_id: str, model: str, label: object, expected: str) -> None:
        self.prediction_id = prediction_id
        self.model = model
        self.label = label
        super().__init__(f"label {label!r} ({type(label).__name__}) for prediction "
                         f"{prediction_id} does not fit model {model}: expected {expected}")


class DuplicateLabelError(FeedbackRejected):
    """The prediction was already joined to another label (it is learned from once)."""

    reason_code = "duplicate_label"

    def __init__(self, prediction_id: str, model: str, first: str) -> None:
        self.prediction_id = prediction_id
        self.model = model
        self.first = first
        super().__init__(f"prediction {prediction_id} of model {model} already has a label "
                         f"(from {first}); this one is not learned from")


class FeedbackStoreError(FeedbackError):
    """The join's Redis store failed; names the store and what was being done."""

    def __init__(self, store: str, doing: str, detail: str) -> None:
        self.store = store
        self.doing = doing
        super().__init__(f"feedback store {store}: {doing}: {detail}")
