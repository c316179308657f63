"""The exported graph answers as the network does (oracle: torch itself), and the int8 gate keeps
or drops the int8 graph as its tolerance says (oracle: the two graphs' answers compared row by
row, counted here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from refluent.jobs.errors import JobError
from refluent.jobs.export import predict, quantization_gate, quantize_int8, to_onnx
from refluent.jobs.network import FeatureScaling, Servable, tabular_mlp
from refluent.models.onnx import OnnxModel

pytestmark = pytest.mark.unit

FEATURES = ("spend", "visits", "tenure")


@pytest.fixture(scope="module")
def classifier() -> tuple[Servable, bytes]:
    torch.manual_seed(0)
    scaling = FeatureScaling(FEATURES, {"spend": (100.0, 20.0)}, "symlog")
    servable = Servable(tabular_mlp(3, 2, (16, 8)), "classification", scaling).eval()
    return servable, to_onnx(servable, FEATURES, "classification", (False, True))


def _rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 3)) * [100.0, 5.0, 1.0]).astype(np.float32)


def test_to_onnx__answers_as_torch_for_any_batch_size(classifier: tuple[Servable, bytes]
                                                      ) -> None:
    servable, graph = classifier
    for n in (1, 7, 300):
        x = _rows(n, n)
        with torch.no_grad():
            expected = servable(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(predict(graph, x), expected, rtol=1e-5, atol=1e-6)


def test_to_onnx__serves_as_an_onnx_model_with_its_metadata(classifier: tuple[Servable, bytes]
                                                            ) -> None:
    servable, graph = classifier
    model = OnnxModel(graph)
    assert (model.task, model.feature_names, model.classes) == (
        "classification", FEATURES, (False, True))
    row = {"spend": 120.0, "visits": 3, "tenure": -0.5}
    with torch.no_grad():
        p = servable(torch.tensor([[120.0, 3.0, -0.5]]))[0].tolist()
    scored = model.predict_one(row)
    assert scored.label is (p[1] > p[0])
    assert scored.score == pytest.approx(p[1], abs=1e-6)


def test_to_onnx__a_regressor() -> None:
    torch.manual_seed(1)
    servable = Servable(tabular_mlp(3, 1, (8,)), "regression",
                        FeatureScaling(FEATURES, {}, "none")).eval()
    graph = to_onnx(servable, FEATURES, "regression")
    x = _rows(50, 3)
    with torch.no_grad():
        expected = servable(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(predict(graph, x), expected, rtol=1e-5, atol=1e-5)
    assert OnnxModel(graph).task == "regression"


def test_quantization_gate__keeps_int8_only_within_its_tolerance(
        classifier: tuple[Servable, bytes]) -> None:
    _, graph = classifier
    small = quantize_int8(graph)
    assert len(small) < len(graph)
    x = _rows(20_000, 9)
    exact, int8 = predict(graph, x).argmax(1), predict(small, x, rows_per_call=1).argmax(1)
    flipped = np.flatnonzero(exact != int8)
    assert len(flipped) > 0  # rows near the boundary that int8 decides otherwise
    # Validation: 100 rows both agree on and the flipped ones, labelled as the float graph says.
    rows = np.concatenate([np.flatnonzero(exact == int8)[:100], flipped])
    xv, yv = x[rows], exact[rows]
    lost = len(flipped) / len(rows)  # the int8 graph's accuracy loss, counted here
    dropped = quantization_gate(graph, xv, yv, "classification", tolerance=lost * 0.9)
    kept = quantization_gate(graph, xv, yv, "classification", tolerance=lost * 1.1)
    assert (dropped.int8, dropped.graph) == (False, graph)
    assert (kept.int8, kept.graph) == (True, small)
    assert kept.float_quality == 1.0
    assert kept.int8_quality == pytest.approx(1.0 - lost)
    off = quantization_gate(graph, xv, yv, "classification", tolerance=1.0, enabled=False)
    assert (off.int8, off.graph, off.int8_quality) == (False, graph, None)


def test_feature_scaling__standardises_declared_features_and_refuses_bad_scales() -> None:
    scaling = FeatureScaling(FEATURES, {"spend": (100.0, 20.0), "tenure": (-1.0, 0.5)},
                             "symlog")
    out = scaling(torch.tensor([[140.0, 9.0, 0.0]]))[0].tolist()
    # Declared: (x - centre) / scale; the rest: sign(x) * log1p(|x|).
    assert out == pytest.approx([2.0, float(np.log1p(9.0)), 2.0])
    assert FeatureScaling(FEATURES, {}, "none")(torch.tensor([[5.0, -3.0, 2.0]])).tolist() \
        == [[5.0, -3.0, 2.0]]
    with pytest.raises(JobError, match="the scale of 'visits' is 0.0; it must be positive"):
        FeatureScaling(FEATURES, {"visits": (1.0, 0.0)})
    with pytest.raises(JobError, match="age not among the model's features"):
        FeatureScaling(FEATURES, {"age": (40.0, 10.0)})
