"""Incremental DP updates: the champion of a DP-retrained lineage fine-tuned with DP-SGD on
micro-batches of its new labelled examples, under the lineage's one privacy budget.

A champion whose graph carries its architecture (:mod:`refluent.jobs.weights`: every graph a
DP retrain exports) gets a :class:`DPUpdater`. The feedback loop hands it each labelled example
the champion scored (:meth:`DPUpdater.add`); once ``feedback.dp_update_rows`` wait, an update
(:meth:`DPUpdater.update`):

1. plans the DP-SGD run over the micro-batch (Poisson sampling at ``dp_update_batch_size /
   rows``, ``dp_update_epochs`` passes, ``dp_update_noise_multiplier``) and charges it to the
   lineage's ledger as an ``update`` before the first step; a charge the budget refuses trains
   nothing, and the updater stops (the champion serves on, as it is);
2. trains the graph's own network from its current weights with
   :func:`~refluent.jobs.dpsgd.train_dp` (Opacus, the same accountant as the retrains);
3. writes the new weights into the graph, which the learner then saves as the version's next
   checkpoint: serving swaps it in as it does any checkpoint.

The run id of an update is derived from the examples it trains on (their topic, partition and
offset), so an update replayed after a crash that came before its checkpoint (the same
examples, from the same weights) is not charged twice; an update over other examples is.
Either way the ledger never holds less than what was published: the charge comes first.

Privacy accounting is conservative: each update is composed with the lineage's whole history
as if it had run on the whole data, though a micro-batch holds only examples no update saw
before.

Only the champion is updated (challengers are scored in shadow and would spend the same budget
for a model that may never serve). River models are not DP; they keep learning every example.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from refluent.models.base import numeric_value, plain_label
from refluent.models.errors import ModelInputError
from refluent.streams.origin import Origin

if TYPE_CHECKING:
    from refluent.config import Settings
    from refluent.jobs.dpsgd import DPConfig
    from refluent.jobs.weights import TrainableGraph
    from refluent.models.base import ServableModel
    from refluent.privacy.errors import BudgetExceededError
    from refluent.privacy.ledger import LedgerEntry, PrivacyLedger
    from refluent.streams.contracts import FeatureValue

log = logging.getLogger(__name__)

Exhausted = Callable[[str, int, "BudgetExceededError"], None]
"""Called with the model, the version and the budget's refusal of its update."""


@dataclass(frozen=True)
class Update:
    """What one update did."""

    model: ServableModel
    """The champion with its new weights."""
    entry: LedgerEntry
    """The ledger's entry of the update (the lineage's epsilon after it)."""
    rows: int
    loss: float
    """Mean training loss of its last pass."""


def update_run_id(model: str, version: int, sources: list[Origin]) -> str:
    """The run id of an update of ``model`` v``version`` over the examples at ``sources``.

    Examples:
        >>> a = [Origin("feedback", 0, 7), Origin("feedback", 1, 3)]
        >>> update_run_id("churn", 2, a) == update_run_id("churn", 2, a[::-1])
        True
        >>> update_run_id("churn", 2, a)[:17]
        'update:churn:v2:2'
    """
    digest = hashlib.blake2b(digest_size=12)
    for s in sorted(sources, key=lambda o: (o.topic, o.partition, o.offset)):
        digest.update(f"{s.topic}\0{s.partition}\0{s.offset}\n".encode())
    return f"update:{model}:v{version}:{len(sources)}:{digest.hexdigest()}"


class DPUpdater:
    """The micro-batch and the DP updates of one champion (see the module).

    Args:
        model: Model name (the lineage).
        version: The version updated.
        served: The champion as loaded (its features, task and classes).
        graph: Its graph, trainable.
        ledger: The lineage's privacy ledger.
        config: The DP-SGD run of one update.
        rows: Examples per micro-batch.
        on_exhausted: Called once when the budget refuses an update.
    """

    def __init__(self, model: str, version: int, served: ServableModel, graph: TrainableGraph,
                 ledger: PrivacyLedger, config: DPConfig, rows: int,
                 on_exhausted: Exhausted | None = None) -> None:
        self.model, self.version, self.served, self.graph = model, version, served, graph
        self.ledger, self.config, self.rows = ledger, config, rows
        self.on_exhausted = on_exhausted
        self.exhausted = False
        self.updates = 0
        self.skipped = 0
        """Examples that could not be used (a missing or non-numeric feature, an unknown
        class)."""
        self._index = {plain_label(c): i for i, c in enumerate(graph.classes)}
        self._x: list[list[float]] = []
        self._y: list[float] = []
        self._sources: list[Origin] = []

    @property
    def pending(self) -> int:
        """Examples waiting for the next update."""
        return len(self._y)

    @property
    def ready(self) -> bool:
        """A full micro-batch waits and the budget has not refused an update."""
        return not self.exhausted and len(self._y) >= self.rows

    def add(self, x: Mapping[str, FeatureValue], y: Any, source: Origin) -> bool:
        """Keep one labelled example for the next update; False (counted in ``skipped``)
        when it cannot train the graph."""
        if self.exhausted:
            return False
        try:
            row = [numeric_value(self.model, f, x.get(f)) for f in self.graph.features]
        except ModelInputError:
            self.skipped += 1
            return False
        if self.graph.task == "classification":
            index = self._index.get(plain_label(y))
            if index is None:
                self.skipped += 1
                return False
            target = float(index)
        else:
            try:
                target = numeric_value(self.model, "label", y)
            except ModelInputError:
                self.skipped += 1
                return False
        self._x.append(row)
        self._y.append(target)
        self._sources.append(source)
        return True

    def drop(self) -> None:
        """Forget the waiting examples (the member is no longer champion)."""
        self._x, self._y, self._sources = [], [], []

    def update(self) -> Update | None:
        """Charge, train on the micro-batch and return the new champion; None when the budget
        refused the update (nothing trained; the updater stops). The micro-batch is used up
        either way."""
        import torch

        from refluent.jobs.dpsgd import train_dp
        from refluent.jobs.weights import TrainableGraph
        from refluent.privacy.errors import BudgetExceededError
        from refluent.privacy.ledger import Spend

        run_id = update_run_id(self.model, self.version, self._sources)
        module = self.graph.module()
        with torch.no_grad():
            x = module.inputs(torch.tensor(self._x, dtype=torch.float32))
        y = torch.tensor(self._y)
        y = y.long() if self.graph.task == "classification" else y.reshape(-1, 1)
        rows = len(self._y)
        self.drop()
        charged: list[LedgerEntry] = []

        def charge(planned: Any) -> None:
            charged.append(self.ledger.charge(self.model, Spend(
                run_id, planned.noise_multiplier, planned.sample_rate, planned.steps,
                "update", str(self.version))))

        try:
            result = train_dp(module.net, x, y, self.graph.task,  # type: ignore[arg-type]
                              self.config, charge=charge)
        except BudgetExceededError as exc:
            self.exhausted = True
            log.warning("DP updates of %s v%d stop: %s", self.model, self.version, exc)
            if self.on_exhausted is not None:
                self.on_exhausted(self.model, self.version, exc)
            return None
        module.cpu()
        graph = self.graph.with_weights(module)
        self.graph = TrainableGraph.of(graph)
        self.served = self.served.from_bytes(graph, self.served.metadata())
        self.updates += 1
        entry = charged[0]
        log.info("DP update %d of %s v%d: %d examples, %d steps at noise %.2f; lineage epsilon "
                 "%.3f", self.updates, self.model, self.version, rows, result.run.steps,
                 result.run.noise_multiplier, entry.epsilon_total)
        return Update(self.served, entry, rows, result.epoch_loss[-1])


class DPUpdates:
    """Makes the :class:`DPUpdater` of each trainable champion (see the module).

    Args:
        ledger: The privacy ledger, or a function opening it on first use.
        config: The DP-SGD run of one update.
        rows: Examples per micro-batch.
        on_exhausted: Called once per updater when the budget refuses an update.
    """

    def __init__(self, ledger: PrivacyLedger | Callable[[], PrivacyLedger], config: DPConfig,
                 rows: int, on_exhausted: Exhausted | None = None) -> None:
        self._ledger = ledger
        self.config, self.rows, self.on_exhausted = config, rows, on_exhausted

    @classmethod
    def from_settings(cls, settings: Settings, on_exhausted: Exhausted | None = None
                      ) -> DPUpdates:
        """Updates as ``feedback.dp_update_*``, ``retrain`` and ``privacy`` say, charged to the
        lake's ledger (opened when the first trainable champion loads)."""
        from refluent.jobs.dpsgd import DPConfig

        f, r, p = settings.feedback, settings.retrain, settings.privacy

        def ledger() -> PrivacyLedger:
            from refluent.privacy.iceberg import IcebergPrivacyLedger

            return IcebergPrivacyLedger.from_settings(settings)

        config = DPConfig(epochs=f.dp_update_epochs, batch_size=f.dp_update_batch_size,
                          learning_rate=f.dp_update_learning_rate,
                          max_grad_norm=r.max_grad_norm,
                          noise_multiplier=f.dp_update_noise_multiplier, delta=p.delta,
                          accountant=p.accountant, grad_sample_mode=r.grad_sample_mode,
                          device=r.device, seed=r.seed)
        return cls(ledger, config, f.dp_update_rows, on_exhausted)

    @property
    def ledger(self) -> PrivacyLedger:
        """The privacy ledger (opened now, the first time)."""
        if callable(self._ledger):
            self._ledger = self._ledger()
        return self._ledger

    def updater(self, model: str, version: int, served: ServableModel) -> DPUpdater | None:
        """The updater of ``served`` (``model`` v``version``), or None when its graph cannot be
        trained further (not exported by a DP retrain, int8) or torch is not installed."""
        if not served.onnx_graph:
            return None
        try:
            from refluent.jobs.weights import TrainableGraph, UntrainableGraphError
        except ImportError as exc:
            log.info("no DP updates of %s v%d: %s (install refluent[privacy])", model, version,
                     exc)
            return None
        try:
            graph = TrainableGraph.of(served.to_bytes())
        except UntrainableGraphError as exc:
            log.info("no DP updates of %s v%d: %s", model, version, exc)
            return None
        return DPUpdater(model, version, served, graph, self.ledger, self.config, self.rows,
                         self.on_exhausted)


__all__ = ["DPUpdater", "DPUpdates", "Update", "update_run_id"]
