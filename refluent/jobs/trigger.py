"""When an alert asks for a retrain: the trigger's policy.

An alert whose event is one of ``jobs.trigger_events`` (drift, performance decay) asks for a
retrain of its model. The trigger grants it when both hold:

- **cooldown**: ``jobs.cooldown_s`` have passed since the model's last retrain, that is, the
  newest of its last DP-trained version's registration and the last request this trigger made;
- **new labels**: the lake holds at least ``jobs.min_new_labels`` labelled examples of the model
  more than it held when the last retrain pinned its training set (all of them, before any).

A granted alert becomes a :class:`~refluent.streams.contracts.RetrainRequest` whose id is derived
from the model and the alert id, so the same alert read twice makes the same request, and the
launcher, the ledger and the registry run and charge that id once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from refluent.streams.contracts import DriftAlert, RetrainRequest

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from refluent.registry.base import ModelRegistry, ModelVersion

_IDS = uuid.UUID("6f1d2c3b-8a7e-4b5c-9d0e-1f2a3b4c5d6e")


@dataclass(frozen=True)
class LastRetrain:
    """A model's last DP retrain, as the registry records it."""

    at: datetime
    examples_snapshot: int | None


@dataclass(frozen=True)
class Decision:
    """What the trigger made of an alert: a request, or why not."""

    request: RetrainRequest | None
    why: str


def request_id(model: str, alert_id: str) -> str:
    """The request id of ``model``'s retrain asked for by ``alert_id`` (stable).

    Examples:
        >>> request_id("churn", "a1") == request_id("churn", "a1") != request_id("churn", "a2")
        True
    """
    return uuid.uuid5(_IDS, f"{model}:{alert_id}").hex


class RetrainTrigger:
    """The trigger's policy (see the module).

    Args:
        events: Alert events that ask for a retrain.
        cooldown: Least time between two retrains of a model.
        min_new_labels: Labels a retrain needs beyond the last one's.
        last_retrain: The model's last DP retrain, or None.
        labels: The model's labelled examples in the lake at a snapshot of the examples table
            (None: the current one).
        clock: Now.
    """

    def __init__(self, events: list[str], cooldown: timedelta, min_new_labels: int, *,
                 last_retrain: Callable[[str], LastRetrain | None],
                 labels: Callable[[str, int | None], int],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.events = frozenset(events)
        self.cooldown, self.min_new_labels = cooldown, min_new_labels
        self._last_retrain, self._labels, self._clock = last_retrain, labels, clock
        self._requested: dict[str, datetime] = {}

    def decide(self, alert: DriftAlert) -> Decision:
        """A request for ``alert``'s model, or why there is none."""
        model = alert.model_name
        if alert.event not in self.events or model is None:
            return Decision(None, f"{alert.event} does not ask for a retrain")
        now = self._clock()
        last = self._last_retrain(model)
        since = max([t for t in (last.at if last else None, self._requested.get(model))
                     if t is not None], default=None)
        if since is not None and now - since < self.cooldown:
            return Decision(None, f"{model} was retrained or asked for at {since:%H:%M:%S}, "
                                  f"within the cooldown of {self.cooldown}")
        have = self._labels(model, None)
        before = self._labels(model, last.examples_snapshot) if last and \
            last.examples_snapshot is not None else 0
        if have - before < self.min_new_labels:
            return Decision(None, f"{model} has {have - before} new labels, fewer than "
                                  f"{self.min_new_labels}")
        self._requested[model] = now
        reason: Literal["quality", "drift"] = (
            "quality" if alert.event == "performance.degraded" else "drift")
        return Decision(RetrainRequest(request_id=request_id(model, alert.alert_id),
                                       model_name=model, reason=reason,
                                       alert_id=alert.alert_id, requested_at=now),
                        f"{alert.event} on {model} with {have - before} new labels")


def registry_last_retrain(registry: ModelRegistry) -> Callable[[str], LastRetrain | None]:
    """The last DP retrain of a model from ``registry``: its newest version a DP-SGD job
    registered."""
    from refluent.registry.errors import UnknownModelError

    def last(model: str) -> LastRetrain | None:
        try:
            versions: list[ModelVersion] = registry.versions(model)
        except UnknownModelError:
            return None
        trained = [v for v in versions if v.lineage.get("trainer") == "dp-sgd"]
        if not trained:
            return None
        v = max(trained, key=lambda v: v.version)
        snap = v.lineage.get("examples_snapshot_id")
        return LastRetrain(v.created_at, int(snap) if snap is not None else None)

    return last


def lake_labels(catalog: Catalog, namespace: str, table: str = "examples"
                ) -> Callable[[str, int | None], int]:
    """A model's labelled examples in the lake's ``examples`` table at a snapshot."""
    from refluent.errors import require
    from refluent.lake.catalog import load_table
    from refluent.lake.errors import LakeTableNotFoundError

    def count(model: str, snapshot: int | None) -> int:
        try:
            t = load_table(catalog, table, namespace)
        except LakeTableNotFoundError:
            return 0
        if t.current_snapshot() is None:
            return 0
        expressions: Any = require("pyiceberg.expressions", "iceberg")
        return int(t.scan(row_filter=expressions.EqualTo("model_name", model),
                          snapshot_id=snapshot).count())

    return count


__all__ = ["Decision", "LastRetrain", "RetrainTrigger", "lake_labels", "registry_last_retrain",
           "request_id"]
