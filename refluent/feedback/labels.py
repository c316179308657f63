"""Labels as the model learns them: which task a prediction's answer shows, and the coercion of
a label to that task (or its rejection as ``label_type``).

Pure functions of the prediction and the label; the join (:mod:`refluent.feedback.join`) calls
:func:`coerce_label` on every label it joins.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from refluent.feedback.errors import LabelTypeError
from refluent.streams.contracts import Prediction

if TYPE_CHECKING:
    from refluent.models.base import Task

LabelValue = float | int | bool | str
"""A label as :class:`~refluent.streams.contracts.Feedback` carries it."""

_BOOL_TEXT = {"true": True, "false": False}


def prediction_task(prediction: Prediction) -> Task | None:
    """The task a prediction's answer shows: classification when it names a class or class
    probabilities, regression when it holds only a score, None when it holds nothing."""
    if prediction.label is not None or prediction.probabilities is not None:
        return "classification"
    if prediction.score is not None:
        return "regression"
    return None


def prediction_classes(prediction: Prediction) -> list[str]:
    """The classes (as text) a classifier's answer names: its probabilities' keys, else
    ``False``/``True`` for a boolean label; empty when unknown."""
    if prediction.probabilities:
        return list(prediction.probabilities)
    if isinstance(prediction.label, bool):
        return ["False", "True"]
    return []


def coerce_label(label: LabelValue, task: Task | None, prediction: Prediction) -> LabelValue:
    """``label`` as the model of ``prediction`` learns it, or :class:`LabelTypeError`.

    - regression: a number (not a boolean);
    - classification: a class, not a fractional number; a whole float becomes an int. A
      classifier whose answer names exactly the classes ``False``/``True`` is binary and takes
      booleans, 0/1 or ``"true"``/``"false"`` (as booleans); one naming ``0``/``1`` takes 0/1
      or booleans (as ints); one naming two text classes takes text;
    - unknown task (the prediction holds no answer): taken as it is.

    Examples:
        >>> p = Prediction(request_id="r", model_name="m", model_version="1", entity_id="u",
        ...                label=True, probabilities={"False": 0.2, "True": 0.8})
        >>> coerce_label(1, "classification", p), coerce_label("false", "classification", p)
        (True, False)
        >>> coerce_label(7, "classification", p)
        Traceback (most recent call last):
        ...
        refluent.feedback.errors.LabelTypeError: feedback_join: label_type: label 7 (int) for \
prediction ... does not fit model m: expected True or False (or 1 or 0): the model is a binary \
classifier
    """
    pid, model = prediction.prediction_id, prediction.model_name
    given = label
    if task == "regression":
        if isinstance(label, bool) or not isinstance(label, int | float):
            raise LabelTypeError(pid, model, given, "a number: the model is a regressor")
        return label
    if task != "classification":
        return label
    if isinstance(label, float):
        if not label.is_integer():
            raise LabelTypeError(pid, model, given, "a class (text, integer or boolean): the "
                                                    "model is a classifier")
        label = int(label)
    classes = prediction_classes(prediction)
    if len(classes) != 2:
        return label
    kind = _class_kind(tuple(classes))
    if kind == "bool":
        if isinstance(label, bool):
            return label
        if isinstance(label, int) and label in (0, 1):
            return bool(label)
        if isinstance(label, str) and label.lower() in _BOOL_TEXT:
            return _BOOL_TEXT[label.lower()]
        raise LabelTypeError(pid, model, given,
                             "True or False (or 1 or 0): the model is a binary classifier")
    if kind == "01":
        if isinstance(label, bool):
            return int(label)
        if isinstance(label, int) and label in (0, 1):
            return label
        if isinstance(label, str) and label.strip() in ("0", "1"):
            return int(label)
        raise LabelTypeError(pid, model, given, "0 or 1: the model is a binary classifier")
    if isinstance(label, str) or str(label) in classes:
        return label if isinstance(label, str) else str(label)
    raise LabelTypeError(pid, model, given, "one of the classes " + ", ".join(
        repr(c) for c in classes) + ": the model is a binary classifier of text classes")


@functools.lru_cache(maxsize=256)
def _class_kind(classes: tuple[str, ...]) -> str:
    """``bool`` (False/True), ``01`` (0/1) or ``text`` for a binary classifier's classes."""
    lowered = {c.lower() for c in classes}
    if lowered == {"false", "true"}:
        return "bool"
    if lowered == {"0", "1"}:
        return "01"
    return "text"

