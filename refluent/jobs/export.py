"""From a trained network to the graph serving runs: ONNX export, int8 dynamic quantization, and
the gate that keeps the int8 graph only when it is as good as the float one.

The graph takes the served features as a ``[batch, features]`` float matrix named ``input`` and
answers ``probabilities`` (a classifier, one column per class) or ``value`` (a regression); the
task, feature names and classes travel in its metadata, so
:class:`~refluent.models.onnx.OnnxModel` needs nothing else.

Quality is measured on the validation split with onnxruntime itself, the runtime that serves the
graph: accuracy for a classifier, mean absolute error for a regression. Dynamic quantization
scales each call's activations by that call's range, so an int8 graph's answer for a row
depends on the rows scored with it; the int8 graph is measured one row per call, as serving
answers a request. The int8 graph is kept
when it loses at most ``tolerance`` accuracy, or raises the MAE by at most ``tolerance`` of the
float graph's.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from refluent.errors import require
from refluent.models.base import plain_label
from refluent.models.onnx import CPU, META_CLASSES, META_FEATURES, META_NETWORK, META_TASK

if TYPE_CHECKING:
    from refluent.jobs.network import NetworkSpec


def to_onnx(module: torch.nn.Module, features: Sequence[str], task: str,
            classes: Sequence[Any] = (), network: NetworkSpec | None = None) -> bytes:
    """``module`` (taking ``[batch, len(features)]`` floats) as a serialised ONNX graph with a
    dynamic batch size and refluent's metadata; with ``network`` (the architecture of a
    :class:`~refluent.jobs.network.Servable`) the graph can be trained further
    (:mod:`refluent.jobs.weights`)."""
    onnx: Any = require("onnx", "onnx")
    module = module.cpu().eval()
    example = torch.zeros(2, len(features))
    output = "probabilities" if task == "classification" else "value"
    program = torch.onnx.export(
        module, (example,), dynamo=True, input_names=["input"], output_names=[output],
        dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    if program is None:  # only the TorchScript exporter writes to a file and returns None
        raise RuntimeError("torch.onnx.export returned no program")
    proto = program.model_proto
    meta = {META_TASK: task, META_FEATURES: json.dumps(list(features))}
    if task == "classification":
        meta[META_CLASSES] = json.dumps([plain_label(c) for c in classes])
    if network is not None:
        meta[META_NETWORK] = json.dumps(network.to_json())
    onnx.helper.set_model_props(proto, meta)
    return bytes(proto.SerializeToString())


def quantize_int8(graph: bytes) -> bytes:
    """``graph`` with its matrix products' weights in int8 (onnxruntime's dynamic
    quantization: activations are quantized at run time, per batch)."""
    quantization: Any = require("onnxruntime.quantization", "onnx")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "float.onnx"), Path(tmp, "int8.onnx")
        src.write_bytes(graph)
        quantization.quantize_dynamic(src, dst, weight_type=quantization.QuantType.QInt8)
        return dst.read_bytes()


def predict(graph: bytes, x: np.ndarray, rows_per_call: int | None = None) -> np.ndarray:
    """The graph's output for rows ``x`` (onnxruntime on the CPU), ``rows_per_call`` rows per
    session call (default: all at once)."""
    ort: Any = require("onnxruntime", "onnx")
    session = ort.InferenceSession(graph, providers=[CPU])
    x = x.astype(np.float32)
    step = rows_per_call or max(len(x), 1)
    parts = [session.run(None, {"input": x[i:i + step]})[0] for i in range(0, len(x), step)]
    return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)


def quality(graph: bytes, x: np.ndarray, y: np.ndarray, task: str,
            rows_per_call: int | None = None) -> float:
    """Accuracy (classifier: ``y`` holds class indices) or MAE (regression) on ``x``, ``y``."""
    out = predict(graph, x, rows_per_call)
    if task == "classification":
        return float((out.argmax(axis=1) == y).mean())
    return float(np.abs(out.reshape(len(y), -1)[:, 0] - y).mean())


@dataclass(frozen=True)
class Quantized:
    """The gate's decision."""

    graph: bytes
    """The graph to register: the int8 one when kept, else the float one."""
    int8: bool
    float_quality: float
    int8_quality: float | None
    float_bytes: int
    int8_bytes: int | None


def quantization_gate(graph: bytes, x: np.ndarray, y: np.ndarray, task: str,
                      tolerance: float, enabled: bool = True) -> Quantized:
    """Quantize ``graph`` and keep the int8 graph when its validation quality on ``x``, ``y``
    is within ``tolerance`` of the float graph's (see the module)."""
    base = quality(graph, x, y, task)
    if not enabled or len(y) == 0:
        return Quantized(graph, False, base, None, len(graph), None)
    small = quantize_int8(graph)
    q = quality(small, x, y, task, rows_per_call=1)
    if task == "classification":
        keep = q >= base - tolerance
    else:
        keep = q <= base * (1 + tolerance)
    return Quantized(small if keep else graph, keep, base, q, len(graph), len(small))


__all__ = ["Quantized", "predict", "quality", "quantization_gate", "quantize_int8", "to_onnx"]
