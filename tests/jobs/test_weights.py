"""A graph trained further: its weights load into torch, and written back the graph answers as
the trained module does (oracle: torch itself); graphs that cannot be trained are named."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from refluent.jobs.export import predict, quantize_int8, to_onnx
from refluent.jobs.network import FeatureScaling, NetworkSpec, Servable
from refluent.jobs.weights import TrainableGraph, UntrainableGraphError

pytestmark = pytest.mark.unit

FEATURES = ("spend", "visits", "tenure")


def _export(module: torch.nn.Module, spec: NetworkSpec | None) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_onnx(module, FEATURES, "classification", ("a", "b"), spec)


@pytest.fixture(scope="module")
def exported() -> tuple[Servable, bytes, NetworkSpec]:
    torch.manual_seed(4)
    spec = NetworkSpec(3, 2, (8, 4))
    servable = Servable(spec.servable(FEATURES, "classification").net, "classification",
                        FeatureScaling(FEATURES, {"spend": (100.0, 20.0)}, "symlog")).eval()
    return servable, _export(servable, spec), spec


def test_trainable_graph__loads_the_exported_weights_and_scaling(
        exported: tuple[Servable, bytes, NetworkSpec]) -> None:
    servable, graph, spec = exported
    loaded = TrainableGraph.of(graph)
    assert (loaded.spec, loaded.features, loaded.task, loaded.classes) == (
        spec, FEATURES, "classification", ("a", "b"))
    module = loaded.module()
    for key, value in servable.state_dict().items():
        assert torch.equal(module.state_dict()[key], value), key


def test_trainable_graph__written_back_answers_as_the_trained_module(
        exported: tuple[Servable, bytes, NetworkSpec]) -> None:
    _, graph, _ = exported
    loaded = TrainableGraph.of(graph)
    module = loaded.module()
    x = (np.random.default_rng(1).normal(size=(50, 3)) * [100.0, 5.0, 1.0]).astype(np.float32)
    opt = torch.optim.SGD(module.net.parameters(), lr=0.5)
    target = torch.from_numpy((x[:, 1] > 0).astype(np.int64))
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.nll_loss(torch.log(module(torch.from_numpy(x))), target).backward()
        opt.step()
    module.eval()
    new = loaded.with_weights(module)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(predict(new, x), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(predict(graph, x), expected, atol=1e-3)  # it did change


def test_trainable_graph__refuses_a_graph_without_architecture_or_float_weights(
        exported: tuple[Servable, bytes, NetworkSpec]) -> None:
    servable, graph, _ = exported
    with pytest.raises(UntrainableGraphError, match="no refluent.network metadata"):
        TrainableGraph.of(_export(servable, None))
    with pytest.raises(UntrainableGraphError, match="no float initializer for net.0.weight"):
        TrainableGraph.of(quantize_int8(graph))
