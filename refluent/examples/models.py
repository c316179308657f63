"""Small example models, built in well under a second, for tests, benchmarks and demos.

River: :func:`river_classifier` and :func:`river_regressor` (a scaler and a linear model).
ONNX graphs written directly with ``onnx.helper`` (no exporter needed): :func:`onnx_mlp` (a
two-layer perceptron, softmax classifier or regressor, whose weights also build the same
network in PyTorch for comparisons) and :func:`onnx_linear_classifier` (the scikit-learn
converter's shape: ``LinearClassifier`` then ``ZipMap``, so the probabilities come out as a
sequence of class -> probability maps). Each graph carries Refluent's metadata in its
``metadata_props``, so ``OnnxModel(data)`` needs nothing else.

Examples:
    >>> example = onnx_mlp(("a", "b", "c"), seed=1)
    >>> model = example.model()
    >>> model.task, model.feature_names
    ('classification', ('a', 'b', 'c'))
    >>> round(sum(model.predict_one({"a": 1, "b": 0, "c": 2}).probabilities.values()), 5)
    1.0
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from refluent.errors import require

if TYPE_CHECKING:
    from refluent.models.onnx import OnnxModel
    from refluent.models.river import RiverModel

ONNX_OPSET = 21
ONNX_ML_OPSET = 3
ONNX_IR_VERSION = 10
DEFAULT_FEATURES: tuple[str, ...] = tuple(f"f{i}" for i in range(20))
"""Inputs of the example MLPs: f0 ... f19."""


def river_classifier(feature_names: Sequence[str] = ("x1", "x2")) -> RiverModel:
    """A binary River classifier: standard scaling, then logistic regression."""
    from river import compose, linear_model, preprocessing

    from refluent.models.river import RiverModel

    pipeline = compose.Pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression())
    return RiverModel(pipeline, feature_names=feature_names, name="example-river-classifier")


def river_regressor(feature_names: Sequence[str] = ("x1", "x2")) -> RiverModel:
    """A River regressor: standard scaling, then linear regression."""
    from river import compose, linear_model, preprocessing

    from refluent.models.river import RiverModel

    pipeline = compose.Pipeline(preprocessing.StandardScaler(), linear_model.LinearRegression())
    return RiverModel(pipeline, feature_names=feature_names, name="example-river-regressor")


def synthetic_rows(feature_names: Sequence[str], n: int, seed: int = 0
                   ) -> list[tuple[dict[str, float], bool, float]]:
    """``n`` rows of uniform features with a binary label and a numeric target that depend on
    them: (features, label, target)."""
    rng = random.Random(seed)  # noqa: S311 - example weights, not secrets
    out = []
    for _ in range(n):
        x = {f: rng.uniform(-1, 1) for f in feature_names}
        values = list(x.values())
        target = sum((i + 1) * v for i, v in enumerate(values)) + rng.gauss(0, 0.05)
        out.append((x, target > 0, target))
    return out


@dataclass(frozen=True)
class OnnxExample:
    """An ONNX graph and what built it.

    Attributes:
        data: The serialised graph.
        feature_names: Its inputs, in order.
        task: ``"classification"`` or ``"regression"``.
        classes: The classes, in output order (classification).
        weights: Layer name -> nested lists (``w1``, ``b1``, ``w2``, ``b2`` of the MLP).
    """

    data: bytes
    feature_names: tuple[str, ...]
    task: str
    classes: tuple[Any, ...] = ()
    weights: dict[str, Any] = field(default_factory=dict)

    def model(self, **kwargs: Any) -> OnnxModel:
        """The graph as an :class:`~refluent.models.onnx.OnnxModel`."""
        from refluent.models.onnx import OnnxModel

        return OnnxModel(self.data, **kwargs)

    def torch_module(self) -> Any:
        """The same MLP in PyTorch (eval mode, same weights), for comparisons.

        Raises:
            MissingExtraError: torch is not installed.
            ValueError: the example is not an MLP.
        """
        torch = require("torch", "torch")
        if "w1" not in self.weights:
            raise ValueError("only MLP examples have a PyTorch twin")
        nn = torch.nn  # type: ignore[attr-defined]
        w1, w2 = self.weights["w1"], self.weights["w2"]
        layers = [nn.Linear(len(w1[0]), len(w1)), nn.ReLU(), nn.Linear(len(w2[0]), len(w2))]
        if self.task == "classification":
            layers.append(nn.Softmax(dim=1))
        module = nn.Sequential(*layers)
        with torch.no_grad():  # type: ignore[attr-defined]
            for layer, (w, b) in ((module[0], ("w1", "b1")), (module[2], ("w2", "b2"))):
                layer.weight.copy_(torch.tensor(self.weights[w]))  # type: ignore[attr-defined]
                layer.bias.copy_(torch.tensor(self.weights[b]))  # type: ignore[attr-defined]
        return module.eval()


def _metadata(feature_names: Sequence[str], task: str, classes: Sequence[Any]) -> dict[str, str]:
    meta = {"refluent.task": task, "refluent.feature_names": json.dumps(list(feature_names))}
    if classes:
        meta["refluent.classes"] = json.dumps(list(classes))
    return meta


def _save(graph: Any, metadata: dict[str, str], ml: bool = False) -> bytes:
    onnx = require("onnx", "onnx")
    helper = onnx.helper  # type: ignore[attr-defined]
    opsets = [helper.make_opsetid("", ONNX_OPSET)]
    if ml:
        opsets.append(helper.make_opsetid("ai.onnx.ml", ONNX_ML_OPSET))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="refluent.examples")
    model.ir_version = ONNX_IR_VERSION
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)  # type: ignore[attr-defined]
    return bytes(model.SerializeToString())


def _matrix(rng: random.Random, rows: int, cols: int, scale: float) -> list[list[float]]:
    return [[rng.gauss(0.0, scale) for _ in range(cols)] for _ in range(rows)]


def onnx_mlp(feature_names: Sequence[str] = DEFAULT_FEATURES, seed: int = 0,
             *, hidden: int = 32, task: str = "classification",
             classes: Sequence[Any] = (False, True)) -> OnnxExample:
    """A two-layer perceptron as an ONNX graph: ``Gemm -> Relu -> Gemm`` (``-> Softmax`` for a
    classifier, one output per class; one output for a regressor), float32 input
    ``[batch, len(feature_names)]``, dynamic batch size.

    Args:
        feature_names: The inputs, in order.
        seed: Seed of the random weights.
        hidden: Width of the hidden layer.
        task: ``"classification"`` or ``"regression"``.
        classes: The classes in output order (classification).
    """
    onnx = require("onnx", "onnx")
    helper, tp = onnx.helper, onnx.TensorProto  # type: ignore[attr-defined]
    n_in = len(feature_names)
    n_out = len(classes) if task == "classification" else 1
    rng = random.Random(seed)  # noqa: S311 - example weights, not secrets
    weights: dict[str, Any] = {"w1": _matrix(rng, hidden, n_in, (2.0 / n_in) ** 0.5),
                               "b1": [rng.gauss(0.0, 0.1) for _ in range(hidden)],
                               "w2": _matrix(rng, n_out, hidden, (1.0 / hidden) ** 0.5),
                               "b2": [rng.gauss(0.0, 0.1) for _ in range(n_out)]}

    def init(name: str, dims: list[int]) -> Any:
        values = weights[name]
        flat = [v for row in values for v in row] if isinstance(values[0], list) else values
        return helper.make_tensor(name, tp.FLOAT, dims, flat)

    out_name = "probabilities" if task == "classification" else "value"
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["a"]),
        helper.make_node("Gemm", ["a", "w2", "b2"],
                         ["logits" if task == "classification" else out_name], transB=1),
    ]
    if task == "classification":
        nodes.append(helper.make_node("Softmax", ["logits"], [out_name], axis=1))
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("input", tp.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info(out_name, tp.FLOAT, ["batch", n_out])],
        initializer=[init("w1", [hidden, n_in]), init("b1", [hidden]),
                     init("w2", [n_out, hidden]), init("b2", [n_out])],
    )
    cls = tuple(classes) if task == "classification" else ()
    data = _save(graph, _metadata(feature_names, task, cls))
    return OnnxExample(data, tuple(feature_names), task, cls, weights)


def onnx_mlp_classifier(feature_names: Sequence[str] = DEFAULT_FEATURES,
                        seed: int = 0, **kwargs: Any) -> OnnxExample:
    """:func:`onnx_mlp` as a classifier (softmax over ``classes``, default False/True)."""
    return onnx_mlp(feature_names, seed, task="classification", **kwargs)


def onnx_mlp_regressor(feature_names: Sequence[str] = DEFAULT_FEATURES,
                       seed: int = 0, **kwargs: Any) -> OnnxExample:
    """:func:`onnx_mlp` as a regressor (one output)."""
    return onnx_mlp(feature_names, seed, task="regression", **kwargs)


def onnx_linear_classifier(feature_names: Sequence[str] = ("x1", "x2", "x3"), seed: int = 0,
                           classes: Sequence[str | int] = ("ham", "spam", "eggs"),
                           *, metadata: bool = True) -> OnnxExample:
    """A linear softmax classifier shaped as the scikit-learn converter writes it: outputs
    ``label`` (a tensor of classes) and ``probabilities`` (``ZipMap``: one class -> probability
    map per row). ``classes`` are all text or all integers.

    Args:
        feature_names: The inputs, in order.
        seed: Seed of the random coefficients.
        classes: The classes.
        metadata: Write Refluent's metadata into the graph (False: the caller must give the
            feature names when loading it).
    """
    onnx = require("onnx", "onnx")
    helper, tp = onnx.helper, onnx.TensorProto  # type: ignore[attr-defined]
    rng = random.Random(seed)  # noqa: S311 - example weights, not secrets
    n_in = len(feature_names)
    coefficients = [rng.gauss(0.0, 1.0) for _ in range(n_in * len(classes))]
    intercepts = [rng.gauss(0.0, 0.2) for _ in classes]
    text = all(isinstance(c, str) for c in classes)
    # The two ops name their integer-label attribute differently.
    labels = ({"classlabels_strings": [str(c) for c in classes]} if text
              else {"classlabels_ints": [int(c) for c in classes]})
    zip_labels = labels if text else {"classlabels_int64s": [int(c) for c in classes]}
    label_type = tp.STRING if text else tp.INT64
    nodes = [
        helper.make_node("LinearClassifier", ["input"], ["label", "scores"], domain="ai.onnx.ml",
                         coefficients=coefficients, intercepts=intercepts,
                         post_transform="SOFTMAX", multi_class=1, **labels),
        helper.make_node("ZipMap", ["scores"], ["probabilities"], domain="ai.onnx.ml",
                         **zip_labels),
    ]
    prob_type = helper.make_sequence_type_proto(
        helper.make_map_type_proto(label_type, helper.make_tensor_type_proto(tp.FLOAT, [])))
    graph = helper.make_graph(
        nodes, "linear_classifier",
        [helper.make_tensor_value_info("input", tp.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("label", label_type, ["batch"]),
         helper.make_value_info("probabilities", prob_type)],
    )
    meta = _metadata(feature_names, "classification", classes) if metadata else {}
    data = _save(graph, meta, ml=True)
    return OnnxExample(data, tuple(feature_names), "classification", tuple(classes))
