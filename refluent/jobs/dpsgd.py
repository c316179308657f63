"""DP-SGD with Opacus: one private training run of a network on in-memory tensors.

A run is planned before it starts: the sample rate (Poisson sampling, ``batch_size / rows`` as
Opacus computes it), the steps (epochs times ``1 / sample_rate``) and the noise multiplier (given,
or the one that reaches ``target_epsilon`` for this run alone under the chosen accountant). The
planned :class:`~refluent.privacy.accountant.Run` goes to ``charge`` before the first step; when
``charge`` raises (the lineage's budget would be exceeded) nothing is trained.

Per-example clipping is Opacus' ghost clipping by default (norms without materialising
per-example gradients; every layer of :func:`~refluent.jobs.network.tabular_mlp` supports it),
or its hooks. On a GPU the forward and backward passes run under ``torch.autocast`` in bfloat16
(no loss scaler is needed, and the clipping and noise stay in float32 in the optimizer). When a
``torch.distributed`` process group is up (``torchrun``), the network is wrapped in Opacus'
``DifferentiallyPrivateDistributedDataParallel`` and each process Poisson-samples its own shard;
the sample rate, steps and noise, and so the epsilon, are those of the single-process run.

The noise comes from a torch generator seeded from the operating system's secure source (or
from ``seed``, for reproducible tests). Opacus' ``secure_mode`` (a cryptographically secure
generator and its defence against floating-point attacks on the noise) needs ``torchcsprng``,
which is not built for current torch releases.

The rows are held as tensors: the features of a training set are a few floats per row, and
Poisson sampling draws each step from all of them.
"""

from __future__ import annotations

import math
import os
import secrets
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from refluent.errors import require
from refluent.jobs.errors import JobError
from refluent.privacy.accountant import Run

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class DPConfig:
    """How one run trains (see :class:`~refluent.config.RetrainSettings` for each field)."""

    epochs: int = 5
    batch_size: int = 512
    learning_rate: float = 0.05
    max_grad_norm: float = 1.0
    target_epsilon: float = 2.0
    noise_multiplier: float | None = None
    delta: float = 1e-5
    accountant: str = "prv"
    grad_sample_mode: str = "ghost"
    device: str = "auto"
    seed: int | None = None


@dataclass
class DPResult:
    """What a run did."""

    run: Run
    """The run as charged: noise multiplier, sample rate, steps."""
    opacus_history: list[tuple[float, float, int]]
    """The steps Opacus' own accountant recorded while training."""
    device: str
    mixed_precision: bool
    wall_s: float
    rows: int
    world_size: int = 1
    epoch_loss: list[float] = field(default_factory=list)


class TensorRows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Features and targets, fetched a batch of indices at a time (one tensor index per
    step instead of one Python call per row); load it with ``collate_fn=as_fetched``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.x.device)
        return self.x[idx], self.y[idx]


def as_fetched(batch: Any) -> Any:
    """The ``collate_fn`` of :class:`TensorRows`: the batch is already tensors."""
    return batch


def resolve_device(device: str, rank: int | None = None) -> torch.device:
    """``auto``: a CUDA device when there is one (the process's own under ``torchrun``), else
    the CPU."""
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        local = int(os.environ.get("LOCAL_RANK", rank or 0))
        return torch.device("cuda", local % torch.cuda.device_count())
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise JobError(f"retrain.device: {device!r} is not a torch device: {exc}") from exc


def plan_run(rows: int, config: DPConfig) -> Run:
    """The run ``config`` makes over ``rows`` training rows: Opacus' sample rate for a loader
    of ``batch_size``, its steps per epoch, and the noise multiplier.

    Raises:
        JobError: there are no rows.
    """
    if rows <= 0:
        raise JobError("no training rows to plan a DP run on")
    sample_rate = 1 / math.ceil(rows / config.batch_size)
    steps = config.epochs * int(1 / sample_rate)
    noise = config.noise_multiplier
    if noise is None:
        utils: Any = require("opacus.accountants.utils", "privacy")
        noise = float(utils.get_noise_multiplier(
            target_epsilon=config.target_epsilon, target_delta=config.delta,
            sample_rate=sample_rate, steps=steps, accountant=config.accountant))
    return Run(float(noise), sample_rate, steps)


def _criterion(task: Task) -> nn.Module:
    return nn.CrossEntropyLoss() if task == "classification" else nn.MSELoss()


def train_dp(net: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task, config: DPConfig,
             *, charge: Callable[[Run], object] | None = None,
             progress: bool = False) -> DPResult:
    """Train ``net`` in place with DP-SGD on features ``x`` and targets ``y`` (class indices
    for a classifier, values for a regression).

    Args:
        charge: Called with the planned run before the first step (the privacy ledger); when it
            raises, nothing is trained and the error propagates.
        progress: Show progress bars for the epochs and their steps.

    Raises:
        JobError: no rows, or a bad device.
    """
    opacus: Any = require("opacus", "privacy")
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    world = torch.distributed.get_world_size() if dist else 1
    device = resolve_device(config.device, torch.distributed.get_rank() if dist else None)
    planned = plan_run(int(x.shape[0]), config)
    if charge is not None:
        charge(planned)
    if config.seed is not None:
        torch.manual_seed(config.seed)
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device="cpu").manual_seed(config.seed + 7919 * (
            torch.distributed.get_rank() if dist else 0))
    net.to(device).train()  # Opacus validates a module in training mode
    rows = TensorRows(x.to(device), y.to(device))
    # Under DDP every process holds all rows and samples its own shard at the same rate.
    loader = DataLoader(rows, batch_size=config.batch_size, collate_fn=as_fetched,
                        generator=generator)
    module: nn.Module = net
    if dist:
        module = opacus.distributed.DifferentiallyPrivateDistributedDataParallel(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = opacus.PrivacyEngine(accountant=config.accountant)
    ghost = config.grad_sample_mode == "ghost"
    noise_seed = secrets.randbits(63) if config.seed is None else config.seed
    prepared = engine.make_private(
        module=module, optimizer=optimizer, data_loader=loader,
        criterion=_criterion(task), noise_multiplier=planned.noise_multiplier,
        max_grad_norm=config.max_grad_norm, poisson_sampling=True,
        grad_sample_mode=config.grad_sample_mode,
        noise_generator=torch.Generator(device=device).manual_seed(noise_seed))
    if ghost:
        model, optimizer, criterion, loader = prepared
    else:
        (model, optimizer, loader), criterion = prepared, _criterion(task)
    if len(loader) * config.epochs != planned.steps or \
            not math.isclose(loader.sample_rate, planned.sample_rate):
        raise JobError(f"Opacus planned {len(loader)} steps per epoch at sample rate "
                       f"{loader.sample_rate}, not the {planned.steps // config.epochs} at "
                       f"{planned.sample_rate} charged")
    amp = device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else nullcontext
    losses: list[float] = []
    started = time.perf_counter()
    model.train()
    with _bars(progress and (not dist or torch.distributed.get_rank() == 0)) as bars, \
            warnings.catch_warnings():
        # Opacus' hooks fire on module outputs when the inputs need no gradient: expected.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        epochs = bars.add_task("epochs", total=config.epochs)
        steps = bars.add_task("steps", total=len(loader))
        for _ in range(config.epochs):
            total, seen = torch.zeros((), device=device), 0
            bars.reset(steps)
            for xb, yb in loader:
                optimizer.zero_grad(set_to_none=True)
                with autocast():
                    out = model(xb)
                    loss = criterion(out.float(), yb)
                loss.backward()
                optimizer.step()
                if len(xb):
                    total += loss.detach().float() * len(xb)
                    seen += len(xb)
                bars.advance(steps)
            losses.append(float(total) / max(seen, 1))
            bars.advance(epochs)
    history = [(float(s), float(q), int(n)) for s, q, n in engine.accountant.history]
    net.eval()
    return DPResult(planned, history, str(device), amp, time.perf_counter() - started,
                    len(rows), world, losses)


def _bars(show: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeRemainingColumn(), transient=True,
                    disable=not show)


__all__ = ["DPConfig", "DPResult", "TensorRows", "as_fetched", "plan_run", "resolve_device",
           "train_dp"]
