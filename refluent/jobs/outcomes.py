"""A retraining job's outcome as an alert: ``retrain.completed``, ``retrain.failed`` or
``budget.exhausted``, on ``alerts`` (where the webhooks deliver it and the lake sink lands it).

An outcome's alert id is the run id and the event, so reporting it twice (the job, then the
launcher that saw it end) is one alert downstream.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from refluent.streams.contracts import DriftAlert

if TYPE_CHECKING:
    from refluent.config import Settings
    from refluent.privacy.errors import BudgetExceededError
    from refluent.registry.base import ModelVersion

log = logging.getLogger(__name__)
_MESSAGE = 300


def completed(version: ModelVersion, run_id: str, budget: float) -> DriftAlert:
    """The alert of a retrain that registered ``version``: its epsilon against the budget."""
    lin = version.lineage
    window: dict[str, Any] = {k: lin[k] for k in ("noise_multiplier", "sample_rate", "steps",
                                                  "rows", "snapshot_id", "device", "int8")
                              if k in lin}
    return DriftAlert(
        alert_id=f"{run_id}:retrain.completed", event="retrain.completed",
        model_name=version.name, model_version=str(version.version), detector="dp-sgd",
        kind="retrain", statistic=float(version.epsilon or 0.0), threshold=budget,
        severity="info", detected_at=version.created_at,
        window={"run_id": run_id, **window,
                **{f"metric.{k}": v for k, v in version.metrics.items()}})


def failed(model: str, run_id: str, error: str, now: datetime | None = None) -> DriftAlert:
    """The alert of a retrain that failed, with the end of its error."""
    return DriftAlert(
        alert_id=f"{run_id}:retrain.failed", event="retrain.failed", model_name=model,
        detector="dp-sgd", kind="retrain", statistic=0.0, threshold=0.0, severity="warning",
        detected_at=now or datetime.now(UTC),
        window={"run_id": run_id, "error": error[-_MESSAGE:]})


def exhausted(model: str, run_id: str, error: BudgetExceededError,
              now: datetime | None = None) -> DriftAlert:
    """The alert of a retrain the privacy budget refused: what was spent, planned, allowed."""
    return DriftAlert(
        alert_id=f"{run_id}:budget.exhausted", event="budget.exhausted", model_name=model,
        detector="ledger", kind="privacy", statistic=error.planned, threshold=error.budget,
        severity="critical", detected_at=now or datetime.now(UTC),
        window={"run_id": run_id, "spent": error.spent, "planned": error.planned,
                "budget": error.budget})


def report(settings: Settings, alert: DriftAlert, topic: str = "alerts",
           timeout_s: float = 15.0) -> bool:
    """Produce ``alert`` to ``topic``; False (and a logged warning) when it could not be, so a
    job's own outcome is never hidden by a failure to report it."""
    from refluent.embedded.services import resolve_bootstrap
    from refluent.errors import RefluentError
    from refluent.streams.kafka import Producer
    from refluent.streams.serde import JsonSerde

    try:
        producer = Producer(settings.kafka, resolve_bootstrap(settings),
                            **{"message.timeout.ms": int(timeout_s * 1000)})
        try:
            producer.produce(topic, JsonSerde(DriftAlert).encode(alert), alert.entity_key())
            producer.flush(timeout_s)
        finally:
            producer.close(timeout_s)
    except (RefluentError, RuntimeError, OSError) as exc:
        log.warning("could not report %s of %s to %s: %s", alert.event, alert.model_name,
                    topic, exc)
        return False
    return True


__all__ = ["completed", "exhausted", "failed", "report"]
