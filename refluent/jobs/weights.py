"""An exported graph trained further: its weights into a torch module, and back into the graph.

A DP retrain exports :class:`~refluent.jobs.network.Servable` with its architecture in the
graph's metadata (:data:`~refluent.models.onnx.META_NETWORK`); torch's exporter names each
initializer after the module's state-dict entry (``net.0.weight``, ``inputs.centre``, ...). So
the graph alone is enough to train again: :meth:`TrainableGraph.module` rebuilds the module and
loads every entry from its initializer, and :meth:`TrainableGraph.with_weights` writes a trained
module's entries back into a copy of the graph. The graph's operators are not touched, so the
new graph answers exactly as the module does and serving loads it like the old one.

A graph without that metadata (exported elsewhere), or whose weights are not float
initializers of the entries' names (an int8 graph: its matrices are quantized), cannot be
trained: :meth:`TrainableGraph.of` says why.

Examples:
    >>> import torch
    >>> from refluent.jobs.export import to_onnx
    >>> from refluent.jobs.network import NetworkSpec
    >>> spec = NetworkSpec(2, 2, hidden=(4,))
    >>> servable = spec.servable(("a", "b"), "classification")
    >>> graph = TrainableGraph.of(to_onnx(servable, ("a", "b"), "classification", (0, 1), spec))
    >>> module = graph.module()
    >>> with torch.no_grad():
    ...     _ = module.net[0].bias.fill_(0.5)
    >>> TrainableGraph.of(graph.with_weights(module)).module().net[0].bias.tolist()
    [0.5, 0.5, 0.5, 0.5]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch

from refluent.errors import require
from refluent.jobs.errors import JobError
from refluent.jobs.network import NetworkSpec, Servable
from refluent.models.onnx import META_CLASSES, META_FEATURES, META_NETWORK, META_TASK


class UntrainableGraphError(JobError):
    """A graph whose weights cannot be trained further; says why."""


class TrainableGraph:
    """A graph exported with its architecture (see the module).

    Args:
        proto: The parsed graph (``onnx.ModelProto``).
        spec: Its architecture.
        features: Its inputs in order.
        task: ``classification`` or ``regression``.
        classes: A classifier's classes in output order.
    """

    def __init__(self, proto: Any, spec: NetworkSpec, features: Sequence[str], task: str,
                 classes: Sequence[Any]) -> None:
        self.proto, self.spec = proto, spec
        self.features, self.task, self.classes = tuple(features), task, tuple(classes)
        self._module = spec.servable(self.features, task)
        self._arrays = self._initializers()

    @classmethod
    def of(cls, graph: bytes) -> TrainableGraph:
        """The serialised ``graph`` as a trainable one.

        Raises:
            UntrainableGraphError: no architecture in the metadata, or weights the architecture
                does not find among the initializers (an int8 graph).
        """
        onnx: Any = require("onnx", "onnx")
        proto = onnx.load_from_string(graph)
        props = {p.key: p.value for p in proto.metadata_props}
        if META_NETWORK not in props:
            raise UntrainableGraphError(
                f"the graph has no {META_NETWORK} metadata: only a graph exported by a DP "
                "retrain can be trained further")
        try:
            spec = NetworkSpec.from_json(json.loads(props[META_NETWORK]))
            features = json.loads(props[META_FEATURES])
            task = props[META_TASK]
            classes = json.loads(props.get(META_CLASSES, "[]"))
        except (KeyError, ValueError, JobError) as exc:
            raise UntrainableGraphError(f"the graph's refluent metadata cannot be read: "
                                        f"{exc}") from exc
        return cls(proto, spec, features, task, classes)

    def _initializers(self) -> dict[str, Any]:
        numpy_helper: Any = require("onnx.numpy_helper", "onnx")
        by_name = {i.name: i for i in self.proto.graph.initializer}
        state = self._module.state_dict()
        missing = sorted(k for k in state if k not in by_name)
        if missing:
            raise UntrainableGraphError(
                f"the graph has no float initializer for {', '.join(missing[:4])}"
                f"{' ...' if len(missing) > 4 else ''} (an int8 graph's weights are quantized "
                "and cannot be trained further)")
        arrays = {k: numpy_helper.to_array(by_name[k]) for k in state}
        for k, v in state.items():
            if tuple(arrays[k].shape) != tuple(v.shape):
                raise UntrainableGraphError(
                    f"initializer {k} has shape {tuple(arrays[k].shape)}, the architecture "
                    f"{tuple(v.shape)}")
        return arrays

    def module(self) -> Servable:
        """A new module with the graph's weights (its scaling included)."""
        module = self.spec.servable(self.features, self.task)
        module.load_state_dict({k: torch.from_numpy(a.copy()) for k, a in self._arrays.items()})
        return module.eval()

    def with_weights(self, module: Servable) -> bytes:
        """A copy of the graph with ``module``'s state-dict entries as its initializers."""
        onnx: Any = require("onnx", "onnx")
        numpy_helper: Any = require("onnx.numpy_helper", "onnx")
        state = module.state_dict()
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        for init in proto.graph.initializer:
            value = state.get(init.name)
            if value is not None:
                array = value.detach().cpu().numpy().astype(self._arrays[init.name].dtype)
                init.CopyFrom(numpy_helper.from_array(array, init.name))
        return bytes(proto.SerializeToString())


__all__ = ["TrainableGraph", "UntrainableGraphError"]
