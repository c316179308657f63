"""A DP retrain of one model: training set from the lake, DP-SGD under the lineage's budget, ONNX
export with the int8 gate, registration as a challenger.

The steps, in order:

1. the training set is pinned (:class:`~refluent.jobs.training_set.TrainingSetBuilder`): the
   champion's features as served, with their labels, at the given or current snapshots;
2. the run is planned and charged to the lineage's privacy ledger before its first step; a run
   the budget does not allow is refused (:class:`~refluent.privacy.errors.BudgetExceededError`)
   and nothing trains;
3. the network (the tabular MLP or the user's factory) trains with DP-SGD
   (:func:`~refluent.jobs.dpsgd.train_dp`);
4. it is exported to ONNX; the int8 graph replaces the float one when the validation split says
   it is as good (:func:`~refluent.jobs.export.quantization_gate`);
5. the graph is registered as the next version, parent the champion, under the
   ``retrain.alias`` alias (a challenger: the feedback loop shadow-scores it and promotes it when
   it wins), with its lineage (snapshots, offsets, rows, the DP run, device, wall time), its
   validation metrics, and as epsilon the lineage's total after this run, composed by the
   accountant.

A run is idempotent by its run id: the ledger charges an id once, and a run id that already
made a version returns that version without training again.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any

import numpy as np

from refluent.jobs.errors import JobError
from refluent.jobs.group import JobGroup
from refluent.jobs.training_set import TrainingSet, TrainingSetBuilder

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from refluent.config import Settings
    from refluent.jobs.dpsgd import DPConfig, DPResult
    from refluent.jobs.export import Quantized
    from refluent.privacy.ledger import LedgerEntry, PrivacyLedger
    from refluent.registry.base import ModelRegistry, ModelVersion


@dataclass(frozen=True)
class RetrainOutcome:
    """What a retrain made."""

    version: ModelVersion
    entry: LedgerEntry | None
    """The ledger's entry of the run (None when the run id had already made the version)."""
    training_set: TrainingSet | None
    repeated: bool = False
    """True when the run id had already made ``version`` and nothing ran."""


@dataclass(frozen=True)
class _Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    classes: tuple[Any, ...]
    dropped: int


class RetrainJob:
    """Retrains models under DP (see the module).

    Args:
        settings: ``retrain``, ``privacy`` and ``lake`` settings.
        catalog: The lake catalog (default: the settings').
        registry: The model registry (default: the settings').
        ledger: The privacy ledger (default: the lake table of the settings' catalog).
        progress: Show progress bars.
    """

    def __init__(self, settings: Settings, *, catalog: Catalog | None = None,
                 registry: ModelRegistry | None = None, ledger: PrivacyLedger | None = None,
                 progress: bool = False) -> None:
        from refluent.lake.catalog import open_catalog
        from refluent.privacy.iceberg import IcebergPrivacyLedger
        from refluent.registry.store import IcebergModelRegistry

        self.settings = settings
        self.catalog = catalog if catalog is not None else open_catalog(settings)
        namespace = settings.lake.namespace
        self.registry = registry if registry is not None else IcebergModelRegistry(
            self.catalog, namespace)
        p = settings.privacy
        self.ledger = ledger if ledger is not None else IcebergPrivacyLedger(
            self.catalog, namespace, budget=p.epsilon_budget, delta=p.delta,
            accountant=p.accountant)
        self.progress = progress

    def _done(self, model: str, run_id: str) -> ModelVersion | None:
        for v in self.registry.versions(model):
            if v.lineage.get("run_id") == run_id:
                return v
        return None

    def builder(self, model: str) -> TrainingSetBuilder:
        """The builder of ``model``'s training sets, on its champion's features."""
        from refluent.registry.base import CHAMPION

        champion = self.registry.resolve(model, CHAMPION)
        return TrainingSetBuilder(self.catalog, self.settings.lake.namespace, model,
                                  features=champion.feature_names or None)

    def run(self, model: str, *, snapshot: int | None = None,
            examples_snapshot: int | None = None, run_id: str | None = None) -> RetrainOutcome:
        """Retrain ``model`` (see the module).

        Raises:
            TrainingSetError: no training set at these snapshots.
            BudgetExceededError: the run would exceed the lineage's budget (nothing ran).
            JobError: the training set cannot train this model (one class only, ...).
        """
        import torch

        from refluent.jobs.dpsgd import train_dp
        from refluent.jobs.export import quantization_gate, to_onnx
        from refluent.jobs.network import FeatureScaling, NetworkSpec, Servable, build_network
        from refluent.models.onnx import OnnxModel
        from refluent.privacy.ledger import Spend
        from refluent.registry.base import CHAMPION

        run_id = run_id or uuid.uuid4().hex
        with JobGroup() as group:
            done = group.first_says(lambda: self._done(model, run_id))
            if done is not None:
                return RetrainOutcome(done, None, None, repeated=True)
            started = time.perf_counter()
            champion = self.registry.resolve(model, CHAMPION)
            # Every process trains on the training set the first one pinned.
            builder = self.builder(model)
            ts = group.first_says(lambda: builder.pin(snapshot, examples_snapshot))
            data = _load(builder, ts, champion.task)
            r = self.settings.retrain
            n_out = len(data.classes) if champion.task == "classification" else 1
            if r.seed is not None:
                torch.manual_seed(r.seed)
            spec = NetworkSpec(len(ts.features), n_out, tuple(r.hidden), r.module_factory)
            net = build_network(spec.n_inputs, spec.n_outputs, hidden=spec.hidden,
                                factory=spec.factory)
            scaling = FeatureScaling(ts.features, r.feature_scales, r.input_transform)
            with torch.no_grad():
                x = scaling(torch.from_numpy(data.x_train))
            y = (torch.from_numpy(data.y_train).long() if champion.task == "classification"
                 else torch.from_numpy(data.y_train).float().reshape(-1, 1))
            charged: list[LedgerEntry] = []

            def charge(planned: Any) -> None:
                spend = Spend(run_id, planned.noise_multiplier, planned.sample_rate,
                              planned.steps, "retrain")
                charged.append(group.first_says(lambda: self.ledger.charge(model, spend)))

            result = train_dp(net, x, y, champion.task, self.dp_config(), charge=charge,
                              progress=self.progress)
            entry = charged[0]

            def register() -> ModelVersion:
                graph = to_onnx(Servable(net, champion.task, scaling),
                                ts.features, champion.task, data.classes, spec)
                gate = quantization_gate(graph, data.x_val, data.y_val, champion.task,
                                         r.quantize_tolerance, r.quantize)
                return self.registry.register(
                    model, OnnxModel(gate.graph, name=f"{model}@retrain"),
                    parent=champion.version,
                    lineage=self._lineage(ts, run_id, result, gate, data, entry,
                                          time.perf_counter() - started),
                    metrics=_metrics(champion.task, gate),
                    epsilon=entry.epsilon_total, alias=r.alias,
                    description=f"DP-SGD retrain {run_id} of v{champion.version}")

            version = group.first_says(register)
        return RetrainOutcome(version, entry, ts)

    def dp_config(self) -> DPConfig:
        """The DP-SGD configuration of a run, from the settings."""
        from refluent.jobs.dpsgd import DPConfig

        r, p = self.settings.retrain, self.settings.privacy
        return DPConfig(epochs=r.epochs, batch_size=r.batch_size,
                        learning_rate=r.learning_rate, max_grad_norm=r.max_grad_norm,
                        target_epsilon=r.target_epsilon, noise_multiplier=r.noise_multiplier,
                        delta=p.delta, accountant=p.accountant,
                        grad_sample_mode=r.grad_sample_mode, device=r.device, seed=r.seed)

    def _lineage(self, ts: TrainingSet, run_id: str, result: DPResult, gate: Quantized,
                 data: _Data, entry: LedgerEntry, wall_s: float) -> dict[str, Any]:
        r = self.settings.retrain
        return {**ts.lineage(), "run_id": run_id, "trainer": "dp-sgd",
                "rows": result.rows, "rows_dropped_null": data.dropped,
                "noise_multiplier": result.run.noise_multiplier,
                "sample_rate": result.run.sample_rate, "steps": result.run.steps,
                "epochs": r.epochs, "max_grad_norm": r.max_grad_norm,
                "delta": entry.delta, "accountant": entry.accountant,
                "ledger_seq": entry.seq, "grad_sample_mode": r.grad_sample_mode,
                "input_transform": r.input_transform,
                "feature_scales": {f: list(v) for f, v in r.feature_scales.items()},
                "network": r.module_factory or f"mlp{list(r.hidden)}",
                "device": result.device, "mixed_precision": result.mixed_precision,
                "world_size": result.world_size, "train_s": round(result.wall_s, 3),
                "wall_s": round(wall_s, 3), "int8": gate.int8}


def _metrics(task: str, gate: Quantized) -> dict[str, float]:
    name = "validation_accuracy" if task == "classification" else "validation_mae"
    out = {name: gate.int8_quality if gate.int8 and gate.int8_quality is not None
           else gate.float_quality, f"{name}_float": gate.float_quality,
           "onnx_bytes": float(len(gate.graph))}
    if gate.int8_quality is not None:
        out[f"{name}_int8"] = gate.int8_quality
    return out


def _load(builder: TrainingSetBuilder, ts: TrainingSet, task: str) -> _Data:
    """The training set as matrices: rows with a null feature or label are dropped; a
    classifier's labels become class indices (classes in sorted order, as text)."""
    parts: dict[str, tuple[list[np.ndarray], list[Any]]] = {"train": ([], []),
                                                              "validation": ([], [])}
    dropped = 0
    cutoff = np.datetime64(ts.cutoff.astimezone(UTC).replace(tzinfo=None), "us")
    for batch in builder.batches(ts):  # one read; split by the cutoff here
        x = np.column_stack([batch.column(f).to_numpy(zero_copy_only=False)
                             for f in ts.features]).astype(np.float64)
        labels = batch.column("label").to_pylist()
        ok = ~np.isnan(x).any(axis=1) & np.array([v is not None for v in labels])
        dropped += int((~ok).sum())
        late = batch.column("event_time").to_numpy(zero_copy_only=False).astype(
            "datetime64[us]") >= cutoff
        for split, mine in (("train", ok & ~late), ("validation", ok & late)):
            xs, ys = parts[split]
            xs.append(x[mine].astype(np.float32))
            ys.extend(v for v, keep in zip(labels, mine.tolist(), strict=True) if keep)
    width = len(ts.features)

    def matrix(split: str) -> np.ndarray:
        xs = parts[split][0]
        return np.concatenate(xs) if xs else np.zeros((0, width), np.float32)

    y_train, y_val = parts["train"][1], parts["validation"][1]
    if not y_train:
        raise JobError(f"training set of {ts.model!r}: no training row without nulls")
    if task == "regression":
        return _Data(matrix("train"), np.asarray(y_train, np.float32), matrix("validation"),
                     np.asarray(y_val, np.float32), (), dropped)
    classes = tuple(sorted(set(y_train), key=str))
    if len(classes) < 2:
        raise JobError(f"training set of {ts.model!r}: every training label is "
                       f"{classes[0]!r}; a classifier needs two classes")
    index = {c: i for i, c in enumerate(classes)}
    return _Data(matrix("train"), np.asarray([index[v] for v in y_train], np.int64),
                 matrix("validation"),
                 np.asarray([index.get(v, -1) for v in y_val], np.int64), classes, dropped)


__all__ = ["RetrainJob", "RetrainOutcome"]
