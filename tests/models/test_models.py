"""The model interface: the same contract checks over every ServableModel, then each backend."""

from __future__ import annotations

import copy
from collections.abc import Callable
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
from refluent.models.base import (
    Scored,
    ServableModel,
    positive_class,
    scored_from_probabilities,
)
from refluent.models.errors import (
    ModelCannotLearnError,
    ModelError,
    ModelInputError,
    ModelLoadError,
)
from refluent.models.kinds import load_model
from refluent.models.onnx import CPU, CUDA, OnnxModel, default_providers
from refluent.models.river import RiverModel

FEATURES = ("x1", "x2", "x3", "x4")


def _trained(model: ServableModel, n: int = 300) -> ServableModel:
    for x, label, target in synthetic_rows(model.feature_names, n, seed=1):
        model.learn_one(x, label if model.task == "classification" else target)
    return model


MODELS: dict[str, Callable[[], ServableModel]] = {
    "river-classifier-pipeline": lambda: _trained(river_classifier(FEATURES)),
    "river-regressor": lambda: _trained(river_regressor(FEATURES)),
    "onnx-mlp-classifier": lambda: onnx_mlp_classifier(FEATURES, seed=3).model(),
    "onnx-mlp-regressor": lambda: onnx_mlp_regressor(FEATURES, seed=4).model(),
    "onnx-zipmap-classifier": lambda: onnx_linear_classifier(FEATURES, seed=5).model(),
    "onnx-zipmap-int-classifier": lambda: onnx_linear_classifier(
        FEATURES, seed=6, classes=(0, 1)).model(),
}


@pytest.fixture(params=sorted(MODELS))
def model(request: pytest.FixtureRequest) -> ServableModel:
    return MODELS[request.param]()


def _rows(n: int = 12, seed: int = 9) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [x for x, _, _ in synthetic_rows(FEATURES, n, seed=seed)]
    rows[0] = {**rows[0], "x1": 3, "x2": True}  # ints and booleans are numbers too
    rows[1] = {**rows[1], "extra": "ignored"}
    return rows


def _same(a: Scored, b: Scored, rel: float = 0.0) -> None:
    assert a.label == b.label
    if a.score is None:
        assert b.score is None
    else:
        assert a.score == pytest.approx(b.score, rel=rel, abs=rel)
    if a.probabilities is None:
        assert b.probabilities is None
    else:
        assert b.probabilities is not None
        assert a.probabilities.keys() == b.probabilities.keys()
        for k, p in a.probabilities.items():
            assert p == pytest.approx(b.probabilities[k], rel=rel, abs=rel)


# ---------------------------------------------------------------------------------------------
# contract: every model
# ---------------------------------------------------------------------------------------------


@pytest.mark.contract
def test_predict_many__equals_predict_one_row_by_row(model: ServableModel) -> None:
    rows = _rows()
    many = model.predict_many(rows)
    assert len(many) == len(rows)
    for row, scored in zip(rows, many, strict=True):
        _same(model.predict_one(row), scored, rel=1e-6)
    assert model.predict_many([]) == []


@pytest.mark.contract
def test_answers__fit_the_task(model: ServableModel) -> None:
    scores = [model.predict_one(x) for x in _rows()]
    if model.task == "regression":
        assert all(s.label is None and s.probabilities is None for s in scores)
        assert all(isinstance(s.score, float) for s in scores)
        assert len({s.score for s in scores}) > 1  # the features matter
        return
    for s in scores:
        assert s.probabilities is not None and s.score is not None
        assert sum(s.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert str(s.label) in s.probabilities
        assert s.probabilities[str(s.label)] == pytest.approx(max(s.probabilities.values()))
        classes = list(s.probabilities)
        if len(classes) == 2:
            assert s.score == pytest.approx(s.probabilities[str(positive_class(classes))])


@pytest.mark.contract
def test_to_bytes__load_model_round_trip_predicts_the_same(model: ServableModel) -> None:
    rows = _rows()
    again = load_model(model.kind, model.to_bytes(), model.metadata())
    assert type(again) is type(model)
    assert (again.task, again.feature_names, again.can_learn) == (
        model.task, model.feature_names, model.can_learn)
    for a, b in zip(model.predict_many(rows), again.predict_many(rows), strict=True):
        _same(a, b)


@pytest.mark.contract
def test_clone__is_independent_of_the_original(model: ServableModel) -> None:
    rows = _rows()
    before = model.predict_many(rows)
    twin = model.clone()
    assert twin is not model
    for a, b in zip(before, twin.predict_many(rows), strict=True):
        _same(a, b)
    if not model.can_learn:
        with pytest.raises(ModelCannotLearnError, match="cannot learn"):
            twin.learn_one(rows[0], 1)
        return
    for x, label, target in synthetic_rows(FEATURES, 200, seed=7):
        # The opposite of the truth, so the clone's answers move away from the original's.
        twin.learn_one(x, (not label) if model.task == "classification" else -10 * target)
    after_twin = twin.predict_many(rows)
    assert any(a.score != b.score for a, b in zip(before, after_twin, strict=True))
    for a, b in zip(before, model.predict_many(rows), strict=True):
        _same(a, b)


@pytest.mark.contract
def test_inputs__are_never_mutated(model: ServableModel) -> None:
    rows = _rows()
    snapshot = copy.deepcopy(rows)
    model.predict_one(rows[0])
    model.predict_many(rows)
    if model.can_learn:
        model.learn_one(rows[0], True if model.task == "classification" else 1.0)
    assert rows == snapshot


@pytest.mark.contract
def test_missing_feature__raises_model_input_error_naming_it(model: ServableModel) -> None:
    row = {k: v for k, v in _rows()[2].items() if k != "x3"}
    with pytest.raises(ModelInputError, match="'x3' is missing") as info:
        model.predict_one(row)
    assert info.value.feature == "x3" and model.name in str(info.value)
    with pytest.raises(ModelInputError, match="'x3'"):
        model.predict_many([_rows()[3], row])


@pytest.mark.contract
def test_non_numeric_feature__raises_model_input_error_naming_it(model: ServableModel) -> None:
    row = {**_rows()[2], "x2": "forty"}
    with pytest.raises(ModelInputError, match="'x2'") as info:
        model.predict_one(row)
    assert info.value.feature == "x2"
    with pytest.raises(ModelInputError, match="'x2'"):
        model.predict_many([_rows()[3], row])


# ---------------------------------------------------------------------------------------------
# unit: shared helpers
# ---------------------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(("classes", "positive"), [
    ([False, True], True), ([1, 0], 1), (["no", "yes"], "yes"), (["b", "a"], "b"),
    (["x", "y", "z"], None), (["TRUE", "false"], "TRUE"),
])
def test_positive_class__prefers_true_one_and_positive_words(classes: list[Any],
                                                             positive: Any) -> None:
    assert positive_class(classes) == positive


@pytest.mark.unit
def test_scored_from_probabilities__multiclass_score_is_the_predicted_class() -> None:
    scored = scored_from_probabilities({"a": 0.2, "b": 0.5, "c": 0.3})
    assert scored == Scored(0.5, "b", {"a": 0.2, "b": 0.5, "c": 0.3})


@pytest.mark.unit
def test_scored_from_probabilities__binary_score_is_the_positive_class_even_if_absent() -> None:
    assert scored_from_probabilities({False: 1.0}, classes=[False, True]).score == 0.0


@pytest.mark.unit
def test_load_model__unknown_kind_and_garbage_bytes_are_clear_errors() -> None:
    with pytest.raises(ModelError, match="kind 'sklearn' is not one of river, onnx"):
        load_model("sklearn", b"", {})  # type: ignore[arg-type]
    with pytest.raises(ModelLoadError, match="cannot load the river artifact"):
        load_model("river", b"not a pickle", {"name": "m"})
    with pytest.raises(ModelLoadError, match="cannot load the onnx artifact"):
        load_model("onnx", b"not a graph", {"name": "m"})


# ---------------------------------------------------------------------------------------------
# unit: River
# ---------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_river__task_is_read_through_pipelines() -> None:
    from river import compose, linear_model, preprocessing, tree

    assert river_classifier().task == "classification"
    assert river_regressor().task == "regression"
    assert RiverModel(tree.HoeffdingTreeRegressor()).task == "regression"
    pipe = compose.Pipeline(preprocessing.StandardScaler(), linear_model.LinearRegression())
    with pytest.raises(ModelError, match="declared as classification but Pipeline is a River "
                                         "regression model"):
        RiverModel(pipe, task="classification")
    with pytest.raises(ModelError, match="neither a River classifier nor a River regressor"):
        RiverModel(preprocessing.StandardScaler())


@pytest.mark.unit
def test_river__untrained_classifier_without_classes_answers_none() -> None:
    from river import tree

    model = RiverModel(tree.HoeffdingTreeClassifier())
    assert model.predict_one({"a": 1.0}) == Scored(None, None, {})


@pytest.mark.unit
def test_river__declared_features_are_the_only_ones_passed_on() -> None:
    seen: list[dict[str, Any]] = []

    from river import linear_model

    class Spy(linear_model.LinearRegression):
        def predict_one(self, x: dict[str, Any], **kw: Any) -> float:
            seen.append(x)
            return 0.0

    RiverModel(Spy(), feature_names=("a",)).predict_one({"a": 1.0, "b": 2.0})
    RiverModel(Spy()).predict_one({"a": 1.0, "b": 2.0})
    assert seen == [{"a": 1.0}, {"a": 1.0, "b": 2.0}]


@pytest.mark.unit
def test_river__predict_many_uses_one_mini_batch_call_when_every_step_can(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pandas")
    model = _trained(river_classifier(FEATURES))
    assert isinstance(model, RiverModel)
    calls: list[int] = []
    original = model.estimator.predict_proba_many

    def spy(frame: Any) -> Any:
        calls.append(len(frame))
        return original(frame)

    monkeypatch.setattr(model.estimator, "predict_proba_many", spy)
    rows = _rows()
    model.predict_many(rows)
    assert calls == []  # a small batch: row by row is faster than a DataFrame
    monkeypatch.setattr("refluent.models.river.MINI_BATCH_ROWS", 2)
    model.predict_many(rows)
    assert calls == [len(rows)]
    # Rows with different features cannot share a frame: scored one by one.
    undeclared = RiverModel(model.estimator)
    undeclared.predict_many([{"x1": 1.0, "x2": 2.0}, {"x1": 1.0}])
    assert calls == [len(rows)]


@pytest.mark.unit
def test_river__tree_without_mini_batch_support_loops() -> None:
    from river import tree

    model = RiverModel(tree.HoeffdingTreeClassifier(grace_period=20), feature_names=FEATURES)
    _trained(model)
    rows = _rows()
    for row, scored in zip(rows, model.predict_many(rows), strict=True):
        _same(model.predict_one(row), scored)


# ---------------------------------------------------------------------------------------------
# unit: ONNX
# ---------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_onnx__providers_put_cuda_first_only_when_available(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CUDA, CPU])
    assert default_providers() == [CUDA, CPU]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["AzureExecutionProvider",
                                                                          CPU])
    assert default_providers() == [CPU]
    assert onnx_mlp_regressor(FEATURES).model().providers[-1] == CPU


@pytest.mark.unit
def test_onnx__graph_without_metadata_needs_feature_names() -> None:
    bare = onnx_linear_classifier(FEATURES, metadata=False)
    with pytest.raises(ModelLoadError, match="feature names are unknown"):
        OnnxModel(bare.data)
    with pytest.raises(ModelLoadError, match="takes 4 features but 3 names were given"):
        OnnxModel(bare.data, feature_names=("a", "b", "c"))
    model = OnnxModel(bare.data, feature_names=("a", "b", "c", "d"))
    assert model.task == "classification"  # read off the label and ZipMap outputs
    assert model.classes == ()
    scored = model.predict_one({"a": 1, "b": 0, "c": 0, "d": 0})
    assert set(scored.probabilities or {}) == {"ham", "spam", "eggs"}
    assert model.metadata()["feature_names"] == ["a", "b", "c", "d"]


@pytest.mark.unit
def test_onnx__arguments_override_graph_metadata() -> None:
    data = onnx_mlp_classifier(FEATURES, classes=("a", "b", "c")).data
    model = OnnxModel(data, classes=("low", "mid", "high"), feature_names=list("pqrs"))
    scored = model.predict_one({"p": 1, "q": 2, "r": 3, "s": 4})
    assert set(scored.probabilities or {}) == {"low", "mid", "high"}
    with pytest.raises(ModelError, match="3 probabilities but 2 classes"):
        OnnxModel(data, classes=("x", "y")).predict_one(dict.fromkeys(FEATURES, 0.0))


@pytest.mark.unit
def test_onnx__null_feature_is_an_input_error() -> None:
    model = onnx_mlp_regressor(FEATURES).model(name="price@v3")
    with pytest.raises(ModelInputError, match=r"model price@v3: feature 'x4' is null"):
        model.predict_one({**dict.fromkeys(FEATURES, 1.0), "x4": None})


@pytest.mark.unit
@pytest.mark.parametrize("batch", [1, 3])
def test_onnx__numbers_only_with_booleans_as_zero_and_one(batch: int) -> None:
    import numpy as np

    model = onnx_mlp_regressor(FEATURES, seed=2).model()
    ones = dict.fromkeys(FEATURES, 1.0)
    expected = model.predict_one(ones)
    for same in ({**ones, "x1": True}, {**ones, "x2": 1}, {**ones, "x3": np.float32(1.0)}):
        assert model.predict_many([same] * batch) == [expected] * batch
    with pytest.raises(ModelInputError, match="'x4' is '41' .str., not a number"):
        model.predict_many([{**ones, "x4": "41"}] * batch)
    with pytest.raises(ModelInputError, match="'x2' is \\[1.0\\] .list., not a number"):
        model.predict_many([{**ones, "x2": [1.0]}] * batch)
