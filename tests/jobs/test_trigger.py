"""The trigger's policy, alert by alert: each decision is checked against the rule worked out by
hand (events that ask, the cooldown since the last retrain or request, the new labels since the
last retrain's training set), and a replayed alert makes the same request id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from refluent.jobs.trigger import LastRetrain, RetrainTrigger, request_id
from refluent.streams.contracts import DriftAlert

pytestmark = pytest.mark.unit

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def alert(n: int, event: str = "drift.detected", model: str = "churn") -> DriftAlert:
    return DriftAlert(alert_id=f"a{n}", event=event, model_name=model, model_version="1",
                      detector="adwin", kind="error", statistic=0.3, threshold=0.1,
                      detected_at=T0)


class World:
    """The registry's last retrain and the lake's label counts, as the test sets them."""

    def __init__(self) -> None:
        self.now = T0
        self.last: dict[str, LastRetrain] = {}
        self.labels: dict[tuple[str, int | None], int] = {}

    def trigger(self) -> RetrainTrigger:
        return RetrainTrigger(["drift.detected", "performance.degraded"], timedelta(hours=1),
                              500, last_retrain=self.last.get,
                              labels=lambda m, snap: self.labels.get((m, snap), 0),
                              clock=lambda: self.now)


def test_trigger__asks_on_drift_with_labels_and_respects_the_cooldown() -> None:
    w = World()
    t = w.trigger()
    w.labels[("churn", None)] = 499
    assert t.decide(alert(1)).request is None  # 499 < 500 new labels
    assert "499 new labels" in t.decide(alert(1)).why
    w.labels[("churn", None)] = 500
    first = t.decide(alert(2)).request
    assert first is not None and first.request_id == request_id("churn", "a2")
    assert (first.model_name, first.reason, first.alert_id) == ("churn", "drift", "a2")
    w.now += timedelta(minutes=59)
    assert t.decide(alert(3)).request is None  # within an hour of the request
    w.now += timedelta(minutes=1)
    again = t.decide(alert(4, "performance.degraded")).request
    assert again is not None and again.reason == "quality"
    assert t.decide(alert(5, "features.stale")).request is None  # does not ask
    assert t.decide(alert(6, model="fraud")).request is None  # fraud has no labels


def test_trigger__counts_labels_since_the_last_retrain_s_training_set() -> None:
    w = World()
    w.last["churn"] = LastRetrain(T0 - timedelta(hours=5), examples_snapshot=77)
    w.labels[("churn", 77)] = 10_000
    w.labels[("churn", None)] = 10_400
    t = w.trigger()
    assert t.decide(alert(1)).request is None  # 400 new since snapshot 77
    w.labels[("churn", None)] = 10_500
    assert t.decide(alert(2)).request is not None
    # A retrain registered 10 minutes ago: cooling down, whatever the labels.
    w.last["fraud"] = LastRetrain(T0 - timedelta(minutes=10), examples_snapshot=None)
    w.labels[("fraud", None)] = 10**6
    assert "cooldown" in t.decide(alert(3, model="fraud")).why


def test_trigger__a_replayed_alert_makes_the_same_request() -> None:
    w = World()
    w.labels[("churn", None)] = 1000
    first = w.trigger().decide(alert(1)).request
    replayed = w.trigger().decide(alert(1)).request  # a restarted trigger reads it again
    assert first is not None and replayed is not None
    assert first.request_id == replayed.request_id
