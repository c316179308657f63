"""Contract checks for models: what serving, the registry and online learning rely on.

As River's estimator checks do, :func:`yield_checks` yields one check per property a
:class:`~refluent.models.base.ServableModel` must have, and :func:`check_model` runs them all.
Use them on your own model class with a few rows it can score (and labels, if it learns):

- scoring never mutates the row, and ``predict_many`` answers as ``predict_one`` does;
- the answer has the task's shape (a class with probabilities summing to 1 and a score in
  [0, 1], or a number);
- the artifact round trip (``to_bytes``, ``metadata``, ``from_bytes``) and ``clone`` give the
  same answers, and the clone learns independently;
- a row lacking a declared feature is refused with ``ModelInputError`` naming it;
- a model that cannot learn says so with ``ModelCannotLearnError``.

Examples:
    >>> from refluent.examples.models import river_classifier, synthetic_rows
    >>> data = synthetic_rows(("x1", "x2"), 20)
    >>> check_model(river_classifier(), [x for x, _, _ in data], [y for _, y, _ in data])
    >>> [check.__name__ for check in yield_checks(river_classifier())][:2]
    ['check_predict_does_not_mutate_rows', 'check_predict_many_equals_predict_one']
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from refluent.models.base import Scored, ServableModel
from refluent.models.errors import ModelCannotLearnError, ModelInputError
from refluent.models.kinds import load_model

Row = Mapping[str, Any]
Check = Callable[[ServableModel, Sequence[Row], Sequence[Any]], None]


def _same(a: Scored, b: Scored, what: str) -> None:
    if a.label != b.label or not _close(a.score, b.score) or \
            (a.probabilities or {}).keys() != (b.probabilities or {}).keys() or \
            not all(_close(p, (b.probabilities or {})[k])
                    for k, p in (a.probabilities or {}).items()):
        raise AssertionError(f"{what}: {a} != {b}")


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def check_predict_does_not_mutate_rows(model: ServableModel, rows: Sequence[Row],
                                       labels: Sequence[Any]) -> None:
    """``predict_one`` and ``predict_many`` leave the rows as they were."""
    before = copy.deepcopy(list(rows))
    for row in rows:
        model.predict_one(row)
    model.predict_many(rows)
    if list(rows) != before:
        raise AssertionError(f"{model.name}: scoring changed the rows it was given")


def check_predict_many_equals_predict_one(model: ServableModel, rows: Sequence[Row],
                                          labels: Sequence[Any]) -> None:
    """Each answer of ``predict_many`` equals ``predict_one``'s for the same row."""
    many = model.predict_many(rows)
    if len(many) != len(rows):
        raise AssertionError(f"{model.name}: predict_many gave {len(many)} answers for "
                             f"{len(rows)} rows")
    for i, (row, scored) in enumerate(zip(rows, many, strict=True)):
        _same(scored, model.predict_one(row), f"{model.name}: row {i}, predict_many vs one")


def check_answers_have_the_task_shape(model: ServableModel, rows: Sequence[Row],
                                      labels: Sequence[Any]) -> None:
    """Classifiers answer a class, its probabilities (summing to 1) and a score in [0, 1];
    regressors a number and nothing else."""
    for i, row in enumerate(rows):
        s = model.predict_one(row)
        if model.task == "regression":
            if s.label is not None or s.probabilities is not None or s.score is None \
                    or not math.isfinite(s.score):
                raise AssertionError(f"{model.name}: row {i}: a regressor answered {s}")
            continue
        if s.probabilities is None:
            raise AssertionError(f"{model.name}: row {i}: a classifier gave no probabilities")
        if not s.probabilities:
            continue  # an untrained online classifier knows no class yet
        total = sum(s.probabilities.values())
        if not math.isclose(total, 1.0, abs_tol=1e-4):
            raise AssertionError(f"{model.name}: row {i}: probabilities sum to {total}")
        if str(s.label) not in s.probabilities:
            raise AssertionError(f"{model.name}: row {i}: label {s.label!r} is not among the "
                                 f"classes {sorted(s.probabilities)}")
        if s.score is None or not 0.0 <= s.score <= 1.0:
            raise AssertionError(f"{model.name}: row {i}: score {s.score} is not a probability")


def check_artifact_round_trip(model: ServableModel, rows: Sequence[Row],
                              labels: Sequence[Any]) -> None:
    """What the registry stores (artifact bytes and JSON metadata) rebuilds the same model."""
    meta = orjson.loads(orjson.dumps(model.metadata()))  # the registry stores it as JSON
    again = load_model(model.kind, model.to_bytes(), meta)
    if again.task != model.task or tuple(again.feature_names) != tuple(model.feature_names):
        raise AssertionError(f"{model.name}: rebuilt as {again.task} over "
                             f"{again.feature_names}, was {model.task} over "
                             f"{model.feature_names}")
    for i, row in enumerate(rows):
        _same(again.predict_one(row), model.predict_one(row), f"{model.name}: row {i} rebuilt")


def check_clone_is_equal_and_independent(model: ServableModel, rows: Sequence[Row],
                                         labels: Sequence[Any]) -> None:
    """A clone answers the same; teaching the clone leaves the original as it was."""
    clone = model.clone()
    before = [model.predict_one(row) for row in rows]
    for i, row in enumerate(rows):
        _same(clone.predict_one(row), before[i], f"{model.name}: row {i} of the clone")
    if model.can_learn and labels:
        for row, y in zip(rows, labels, strict=False):
            clone.learn_one(row, y)
        for i, row in enumerate(rows):
            _same(model.predict_one(row), before[i],
                  f"{model.name}: row {i} after teaching the clone")


def check_learning(model: ServableModel, rows: Sequence[Row], labels: Sequence[Any]) -> None:
    """A learner learns without mutating the rows; a model that only predicts refuses with
    ``ModelCannotLearnError``."""
    if not rows:
        return
    learner = model.clone()
    if not learner.can_learn:
        try:
            learner.learn_one(rows[0], labels[0] if labels else 0)
        except ModelCannotLearnError:
            return
        raise AssertionError(f"{model.name}: can_learn is False but learn_one did not refuse")
    before = copy.deepcopy(list(rows))
    for row, y in zip(rows, labels, strict=False):
        learner.learn_one(row, y)
    if list(rows) != before:
        raise AssertionError(f"{model.name}: learn_one changed the rows it was given")


def check_missing_feature_is_refused(model: ServableModel, rows: Sequence[Row],
                                     labels: Sequence[Any]) -> None:
    """A row lacking a declared feature is refused with ``ModelInputError`` naming it."""
    if not model.feature_names or not rows:
        return
    missing = model.feature_names[-1]
    row = {k: v for k, v in rows[0].items() if k != missing}
    try:
        model.predict_one(row)
    except ModelInputError as exc:
        if repr(missing) not in str(exc) and missing not in str(exc):
            raise AssertionError(f"{model.name}: the error does not name {missing!r}: "
                                 f"{exc}") from exc
        return
    raise AssertionError(f"{model.name}: a row without {missing!r} was scored")


CHECKS: tuple[Check, ...] = (
    check_predict_does_not_mutate_rows,
    check_predict_many_equals_predict_one,
    check_answers_have_the_task_shape,
    check_artifact_round_trip,
    check_clone_is_equal_and_independent,
    check_learning,
    check_missing_feature_is_refused,
)


def yield_checks(model: ServableModel) -> Iterator[Check]:
    """Every check that applies to ``model`` (call each with the model, rows and labels)."""
    yield from CHECKS


def check_model(model: ServableModel, rows: Sequence[Row],
                labels: Sequence[Any] = ()) -> None:
    """Run every check on ``model`` with ``rows`` (and ``labels`` for a learner).

    Raises:
        AssertionError: naming the model, the check's finding and the row.
    """
    for check in yield_checks(model):
        check(model, rows, labels)
