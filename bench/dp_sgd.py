"""DP-SGD beside non-private training of the same network on the same rows, and the exported
graph in float and int8.

Prints one JSON object.

    python bench/dp_sgd.py [--rows 60000] [--features 20] [--epochs 2] [--batch 512]

Training: the tabular MLP (64, 32) on a synthetic rule over ``--features`` features, trained
``--epochs`` epochs of ``rows / batch`` steps by

- ``non_private``: Adam on uniformly shuffled batches of ``--batch`` rows, through the same
  DataLoader and batched row fetch as DP-SGD (``non_private_bare_loop``: indexing the tensors
  directly, for reference);
- ``ghost``: :func:`refluent.jobs.dpsgd.train_dp` with Opacus' ghost clipping;
- ``hooks``: the same with Opacus' per-example gradient hooks;

each run reporting samples per second (rows processed over wall time, after a short warm-up run
of each kind), CPU seconds (all threads), and the accuracy on held-out rows; ``slowdown`` is
non-private samples/s over DP samples/s. The DP runs sample with Poisson sampling at rate
``batch / rows`` and noise 1.0; on a GPU the same code runs under bfloat16 autocast
(``device`` says where it ran).

Export: the ghost-trained network as ONNX (:func:`refluent.jobs.export.to_onnx`) and int8
(:func:`~refluent.jobs.export.quantize_int8`): size, single-row p99 latency on one onnxruntime
thread, and validation accuracy (int8 scored one row per call, as served).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refluent.jobs.dpsgd import DPConfig, resolve_device, train_dp  # noqa: E402
from refluent.jobs.export import predict, quality, quantize_int8, to_onnx  # noqa: E402
from refluent.jobs.network import FeatureScaling, Servable, tabular_mlp  # noqa: E402


def data(rows: int, features: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, features, generator=g)
    w = torch.linspace(-1.0, 1.0, features)
    return x, ((x @ w) + 0.5 * torch.sin(3 * x[:, 0]) > 0).long()


def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net = net.cpu().eval()
    with torch.no_grad():
        return round(float((net(x).argmax(1) == y).float().mean()), 4)


def timed(work: Any) -> tuple[Any, float, float]:
    proc = psutil.Process()
    cpu0, t0 = sum(proc.cpu_times()[:2]), time.perf_counter()
    out = work()
    return out, time.perf_counter() - t0, sum(proc.cpu_times()[:2]) - cpu0


def non_private(x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace,
                loader: bool = True) -> torch.nn.Module:
    """Plain training; with ``loader``, batches come through the same DataLoader and batched
    row fetch as DP-SGD's, else straight from a shuffled index (the bare loop)."""
    from torch.utils.data import DataLoader

    from refluent.jobs.dpsgd import _batch, _Rows

    device = resolve_device("auto")
    torch.manual_seed(1)
    net = tabular_mlp(x.shape[1], 2).to(device)
    xd, yd = x.to(device), y.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    loss_fn = torch.nn.CrossEntropyLoss()
    amp = device.type == "cuda"
    rows = _Rows(xd, yd)
    for _ in range(args.epochs):
        batches = (DataLoader(rows, batch_size=args.batch, shuffle=True, collate_fn=_batch)
                   if loader else ((xd[i], yd[i]) for i in
                                   torch.randperm(len(xd), device=device).split(args.batch)))
        for xb, yb in batches:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(net(xb).float(), yb)
            loss.backward()
            optimizer.step()
    return net


def private(x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace, mode: str
            ) -> torch.nn.Module:
    torch.manual_seed(1)
    net = tabular_mlp(x.shape[1], 2)
    train_dp(net, x, y, "classification",
             DPConfig(epochs=args.epochs, batch_size=args.batch, learning_rate=0.05,
                      noise_multiplier=1.0, grad_sample_mode=mode, seed=1))
    return net


def export_rows(net: torch.nn.Module, x_val: np.ndarray, y_val: np.ndarray, features: int
                ) -> dict[str, Any]:
    import onnxruntime as ort

    names = tuple(f"f{i}" for i in range(features))
    graph = to_onnx(Servable(net, "classification", FeatureScaling(names, {}, "none")), names,
                    "classification", (0, 1))
    small = quantize_int8(graph)
    out: dict[str, Any] = {}
    for name, g in (("float", graph), ("int8", small)):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(g, options, providers=["CPUExecutionProvider"])
        rows = x_val[:2000].astype(np.float32)
        for r in rows[:200]:  # warm-up
            session.run(None, {"input": r[None, :]})
        latencies = []
        for r in rows:
            t0 = time.perf_counter()
            session.run(None, {"input": r[None, :]})
            latencies.append(time.perf_counter() - t0)
        out[name] = {"bytes": len(g),
                     "p50_us": round(float(np.percentile(latencies, 50)) * 1e6, 1),
                     "p99_us": round(float(np.percentile(latencies, 99)) * 1e6, 1),
                     "validation_accuracy": round(quality(
                         g, x_val, y_val, "classification",
                         rows_per_call=1 if name == "int8" else None), 4)}
    out["int8_agrees_with_float"] = round(float((
        predict(graph, x_val).argmax(1) ==
        predict(small, x_val, rows_per_call=1).argmax(1)).mean()), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=60_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=512)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    x, y = data(args.rows, args.features, 0)
    x_val, y_val = data(10_000, args.features, 1)
    # Imports and first-call set-up out of the timings: a short run of each kind first.
    small = argparse.Namespace(**{**vars(args), "epochs": 1})
    non_private(x[:2048], y[:2048], small)
    for mode in ("ghost", "hooks"):
        private(x[:2048], y[:2048], small, mode)
    seen = args.rows * args.epochs
    runs: dict[str, Any] = {}
    nets: dict[str, torch.nn.Module] = {}
    for name in ("non_private_bare_loop", "non_private", "ghost", "hooks"):
        if name.startswith("non_private"):
            net, wall, cpu = timed(lambda n=name: non_private(x, y, args, n == "non_private"))
        else:
            net, wall, cpu = timed(lambda n=name: private(x, y, args, n))
        nets[name] = net
        runs[name] = {"samples_per_s": round(seen / wall), "wall_s": round(wall, 2),
                      "cpu_s": round(cpu, 2), "accuracy": accuracy(net, x_val, y_val)}
    base = runs["non_private"]["samples_per_s"]
    for name in ("ghost", "hooks"):
        runs[name]["slowdown"] = round(base / runs[name]["samples_per_s"], 2)
    print(json.dumps({
        "device": str(resolve_device("auto")), "torch_threads": torch.get_num_threads(),
        "rows": args.rows, "features": args.features, "epochs": args.epochs,
        "batch": args.batch, "training": runs,
        "export": export_rows(nets["ghost"], x_val.numpy(), y_val.numpy(), args.features),
    }, indent=2))


if __name__ == "__main__":
    main()
