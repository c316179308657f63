"""Model scoring latency: one small MLP in PyTorch eager mode and as ONNX through ``OnnxModel``.

Prints one JSON object.

    python bench/onnx_inference.py [--features 20] [--hidden 64] [--iterations 5000]
                                   [--batch 64] [--threads 1]

The model is :func:`refluent.examples.models.onnx_mlp_classifier` (``Gemm -> Relu -> Gemm ->
Softmax``, two classes); its PyTorch twin has the same weights, so both give the same
probabilities (``max_abs_diff`` checks it). Timed one call after another on one thread, after a
warm-up:

- ``torch_eager_1``: the feature mapping to a tensor, then the module under
  ``torch.inference_mode()`` (what a hand-written PyTorch service does per request);
- ``torch_eager_1_tensor``: the module on a ready tensor (the framework's floor);
- ``onnx_model_1``: ``OnnxModel.predict_one`` on the mapping, validation and the decoded
  ``Scored`` included (what serving calls);
- ``ort_session_1``: ``InferenceSession.run`` on a ready array (onnxruntime's floor);
- ``*_64``: the same for a batch of ``--batch`` mappings (``predict_many``: one session call),
  with throughput in rows per second.

The device is CUDA for both when present (onnxruntime's CUDA provider, ``torch.cuda``), else
the CPU; ``--threads`` sets both frameworks' intra-op threads so they compete on equal terms.
Latencies are in milliseconds (nearest-rank percentiles).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime
import torch

from refluent.examples.models import onnx_mlp_classifier
from refluent.models.onnx import OnnxModel
from refluent.observability.stats import summary


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    """p50/p99 (nearest rank), mean and max in milliseconds."""
    return summary(samples_ns, scale=1e-6, digits=4)


def timed(fn: Callable[[int], Any], iterations: int, warmup: int,
          rows_per_call: int = 1) -> dict[str, float]:
    """Latency of ``fn(i)`` over ``iterations`` calls after ``warmup`` untimed ones."""
    for i in range(warmup):
        fn(i)
    clock = time.perf_counter_ns
    samples = [0] * iterations
    for i in range(iterations):
        start = clock()
        fn(i)
        samples[i] = clock() - start
    out = percentiles(samples)
    if rows_per_call > 1:
        out["rows_per_s"] = round(rows_per_call * iterations / (sum(samples) / 1e9))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    names = tuple(f"f{i}" for i in range(args.features))
    example = onnx_mlp_classifier(names, seed=args.seed, hidden=args.hidden)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module = example.torch_module().to(device)
    model = OnnxModel(example.data, intra_op_threads=args.threads)
    session = model.session
    input_name = session.get_inputs()[0].name

    rng = random.Random(args.seed)  # noqa: S311 - benchmark inputs
    pool = [{f: rng.uniform(-2, 2) for f in names} for _ in range(1024)]
    batches = [pool[i:i + args.batch] for i in range(0, len(pool) - args.batch + 1, args.batch)]
    arrays = [np.array([[x[f] for f in names]], dtype=np.float32) for x in pool]
    tensors = [torch.from_numpy(a).to(device) for a in arrays]

    def torch_rows(xs: list[dict[str, float]]) -> Any:
        t = torch.tensor([[x[f] for f in names] for x in xs], dtype=torch.float32, device=device)
        return module(t).cpu()

    with torch.inference_mode():
        reference = torch_rows(pool).numpy()
        onnx_probs = np.array([[s.probabilities[str(c)]  # type: ignore[index]
                                for c in example.classes] for s in model.predict_many(pool)])
        max_abs_diff = float(np.abs(reference - onnx_probs).max())

        n, w, nb = args.iterations, args.warmup, args.batch_iterations
        results = {
            "torch_eager_1": timed(lambda i: torch_rows([pool[i % 1024]]), n, w),
            "torch_eager_1_tensor": timed(lambda i: module(tensors[i % 1024]).cpu(), n, w),
            "onnx_model_1": timed(lambda i: model.predict_one(pool[i % 1024]), n, w),
            "ort_session_1": timed(
                lambda i: session.run(None, {input_name: arrays[i % 1024]}), n, w),
            f"torch_eager_{args.batch}": timed(
                lambda i: torch_rows(batches[i % len(batches)]), nb, w // 10, args.batch),
            f"onnx_model_{args.batch}": timed(
                lambda i: model.predict_many(batches[i % len(batches)]), nb, w // 10,
                args.batch),
        }
    return {
        "benchmark": "onnx_inference",
        "model": {"kind": "mlp", "features": args.features, "hidden": args.hidden,
                  "classes": len(example.classes)},
        "threads": args.threads,
        "torch_device": str(device),
        "onnx_providers": model.providers,
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                     "python": platform.python_version()},
        "machine": platform.machine(),
        "max_abs_diff": max_abs_diff,
        "results": results,
        "onnx_vs_torch_p50_1": round(results["onnx_model_1"]["p50_ms"]
                                     / results["torch_eager_1"]["p50_ms"], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=5_000, help="timed single-row calls")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batch-iterations", type=int, default=1_000, help="timed batch calls")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.batch < 1 or args.batch > 1024:
        parser.error("--batch must be between 1 and 1024")
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
