"""Every model kind passes the model contract checks, and the checks catch broken models."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from refluent.examples.models import (
    onnx_linear_classifier,
    onnx_mlp_classifier,
    onnx_mlp_regressor,
    river_classifier,
    river_regressor,
    synthetic_rows,
)
from refluent.models.base import Scored, ServableModel
from refluent.models.river import RiverModel
from refluent.testing.models import CHECKS, check_model

pytestmark = pytest.mark.contract


def _data(features: Sequence[str]) -> list[tuple[dict[str, float], bool, float]]:
    return synthetic_rows(features, 12, seed=3)


def _trained(model: RiverModel, target: int) -> RiverModel:
    for row in _data(model.feature_names):
        model.learn_one(row[0], row[target])
    return model


MODELS: dict[str, Callable[[], tuple[ServableModel, int]]] = {
    "river-classifier": lambda: (_trained(river_classifier(), 1), 1),
    "river-classifier-untrained": lambda: (river_classifier(), 1),
    "river-regressor": lambda: (_trained(river_regressor(), 2), 2),
    "onnx-mlp-classifier": lambda: (onnx_mlp_classifier().model(), 1),
    "onnx-mlp-regressor": lambda: (onnx_mlp_regressor().model(), 2),
    "onnx-linear-classifier": lambda: (onnx_linear_classifier().model(), 1),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_model_kinds__pass_every_contract_check(name: str, check: Any) -> None:
    model, target = MODELS[name]()
    data = _data(model.feature_names)
    check(model, [r[0] for r in data], [r[target] for r in data])


class Mutating(RiverModel):
    """Scores after writing into the row it was given."""

    def predict_one(self, x: Mapping[str, Any]) -> Scored:
        x["x1"] = 0.0  # type: ignore[index]
        return super().predict_one(x)


class Inconsistent(RiverModel):
    """predict_many answers something else than predict_one."""

    def predict_many(self, xs: Sequence[Mapping[str, Any]]) -> list[Scored]:
        return [Scored(0.5, True, {"False": 0.5, "True": 0.5}) for _ in xs]


class Shared(RiverModel):
    """A clone that shares its estimator with the original."""

    def clone(self) -> ServableModel:
        return self


@pytest.mark.parametrize(("broken", "message"), [
    (Mutating, "scoring changed the rows"),
    (Inconsistent, "predict_many vs one"),
    (Shared, "after teaching the clone"),
])
def test_checks__catch_a_broken_model(broken: type[RiverModel], message: str) -> None:
    base = river_classifier()
    model = broken(base.estimator, feature_names=base.feature_names, name="broken")
    data = _data(model.feature_names)
    rows, labels = [r[0] for r in data], [r[1] for r in data]
    with pytest.raises(AssertionError, match=message):
        check_model(_trained(model, 1) if broken is not Mutating else model, rows, labels)
