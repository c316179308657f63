"""Label coercion: a label as the model of its prediction learns it, or ``label_type``."""

from __future__ import annotations

from typing import Any

import pytest

from refluent.feedback.errors import LabelTypeError
from refluent.feedback.labels import coerce_label, prediction_classes, prediction_task

from .events import prediction


@pytest.mark.unit
@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (False, False), (1, True), (0, False), (1.0, True), ("true", True),
    ("FALSE", False)])
def test_coerce_label__binary_boolean_classifier_takes_booleans_and_0_1(value: Any,
                                                                        expected: bool) -> None:
    result = coerce_label(value, "classification", prediction("p", 0))
    assert result is expected


@pytest.mark.unit
@pytest.mark.parametrize("value", [2, -1, 0.5, "maybe", 7.0])
def test_coerce_label__binary_classifier_rejects_other_values(value: Any) -> None:
    with pytest.raises(LabelTypeError) as err:
        coerce_label(value, "classification", prediction("p", 0))
    assert err.value.reason == "label_type"
    assert "churn" in str(err.value) and repr(value) in str(err.value)


@pytest.mark.unit
def test_coerce_label__regressor_takes_numbers_only() -> None:
    p = prediction("p", 0, label=None, probabilities=None, score=3.5)
    assert coerce_label(2, "regression", p) == 2
    assert coerce_label(2.5, "regression", p) == 2.5
    for bad in ("2.5", True):
        with pytest.raises(LabelTypeError, match="regressor"):
            coerce_label(bad, "regression", p)


@pytest.mark.unit
def test_coerce_label__zero_one_and_text_classes() -> None:
    ints = prediction("p", 0, label=1, probabilities={"0": 0.4, "1": 0.6})
    assert coerce_label(True, "classification", ints) == 1
    assert coerce_label("0", "classification", ints) == 0
    with pytest.raises(LabelTypeError):
        coerce_label(3, "classification", ints)
    text = prediction("p", 0, label="spam", probabilities={"ham": 0.3, "spam": 0.7})
    assert coerce_label("ham", "classification", text) == "ham"
    with pytest.raises(LabelTypeError, match="text classes"):
        coerce_label(1, "classification", text)
    many = prediction("p", 0, label="b", probabilities={"a": 0.2, "b": 0.5, "c": 0.3})
    assert coerce_label("d", "classification", many) == "d"
    with pytest.raises(LabelTypeError):
        coerce_label(0.25, "classification", many)


@pytest.mark.unit
def test_prediction_task__the_answer_shows_the_task() -> None:
    assert prediction_task(prediction("p", 0)) == "classification"
    assert prediction_task(prediction("p", 0, label=None, probabilities=None)) == "regression"
    assert prediction_task(prediction("p", 0, label=None, probabilities=None,
                                      score=None)) is None
    assert prediction_classes(prediction("p", 0, label=False, probabilities={})) == [
        "False", "True"]
