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

DP updates: the ghost-trained network exported with its architecture, then fine-tuned by
:class:`refluent.online_learning.dp_updates.DPUpdater` on ``--updates`` micro-batches of
``--update-rows`` labelled examples (the feedback loop's defaults: batch 64, noise 3.0, one
epoch): milliseconds per update (plan and charge to an in-memory ledger, DP-SGD, the weights
written back into the graph, the new graph loaded by onnxruntime), and the lineage's epsilon
after them.

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

    from refluent.jobs.dpsgd import TensorRows, as_fetched

    device = resolve_device("auto")
    torch.manual_seed(1)
    net = tabular_mlp(x.shape[1], 2).to(device)
    xd, yd = x.to(device), y.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    loss_fn = torch.nn.CrossEntropyLoss()
    amp = device.type == "cuda"
    rows = TensorRows(xd, yd)
    for _ in range(args.epochs):
        batches = (DataLoader(rows, batch_size=args.batch, shuffle=True, collate_fn=as_fetched)
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


def updates(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace
            ) -> dict[str, Any]:
    from refluent.config import FeedbackSettings
    from refluent.jobs.network import NetworkSpec
    from refluent.jobs.weights import TrainableGraph
    from refluent.models.onnx import OnnxModel
    from refluent.online_learning.dp_updates import DPUpdater
    from refluent.privacy.ledger import MemoryPrivacyLedger
    from refluent.streams.origin import Origin

    f = FeedbackSettings()
    features = tuple(f"f{i}" for i in range(args.features))
    spec = NetworkSpec(args.features, 2, (64, 32))
    servable = Servable(net.cpu(), "classification",
                        FeatureScaling(features, {}, "none")).eval()
    graph = to_onnx(servable, features, "classification", (0, 1), spec)
    ledger = MemoryPrivacyLedger(budget=1e9, delta=1e-5)
    config = DPConfig(epochs=f.dp_update_epochs, batch_size=f.dp_update_batch_size,
                      learning_rate=f.dp_update_learning_rate,
                      noise_multiplier=f.dp_update_noise_multiplier, seed=1)
    updater = DPUpdater("bench", 1, OnnxModel(graph), TrainableGraph.of(graph), ledger, config,
                        args.update_rows)
    rows = [dict(zip(features, r, strict=True)) for r in x[:args.update_rows].tolist()]
    labels = y[:args.update_rows].tolist()
    walls, epsilon = [], 0.0
    for u in range(args.updates):
        for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
            updater.add(row, label, Origin("feedback", 0, u * len(rows) + i))
        t0 = time.perf_counter()
        done = updater.update()
        walls.append(time.perf_counter() - t0)
        assert done is not None  # noqa: S101 - the budget is unbounded here
        epsilon = done.entry.epsilon_total
    return {"rows_per_update": args.update_rows, "updates": args.updates,
            "ms_per_update_mean": round(1000 * float(np.mean(walls)), 1),
            "ms_per_update_max": round(1000 * float(np.max(walls)), 1),
            "epsilon_after": round(epsilon, 3), "noise_multiplier": config.noise_multiplier,
            "batch_size": config.batch_size}


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
    ap.add_argument("--updates", type=int, default=10)
    ap.add_argument("--update-rows", type=int, default=1024)
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
        "dp_updates": updates(nets["ghost"], x_val, y_val, args),
    }, indent=2))


if __name__ == "__main__":
    main()
