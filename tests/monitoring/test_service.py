"""``MonitorService`` on the real broker: the examples' error rises and a feature shifts at known
points; the alerts topic then holds one error alert after the rise, one realised-accuracy alert
for the first window after it, and one feature alert for the shifted feature in the first window
after the shift; a burst of rejected requests raises ``deadletters.rising`` and
``model.failing``, a group that never committed raises ``consumer.lagging``, and a bad record is
dead-lettered."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from refluent.config import Settings
from refluent.monitoring.service import MonitorService
from refluent.streams.contracts import DriftAlert, LabeledExample, Prediction
from refluent.streams.deadletter import DeadLetterRouter
from refluent.streams.kafka import Producer, TopicAdmin
from refluent.streams.topics import TopicCatalog
from refluent.testing.kafka import read_all

pytestmark = pytest.mark.integration

N = 6_000
CHANGE = 3_000
REJECTED = 1_000  # the monitor's window
T0 = datetime(2026, 5, 1, tzinfo=UTC)


def test_monitor__raises_the_alerts_of_the_known_changes(settings: Settings) -> None:
    sfx = uuid.uuid4().hex[:8]
    ex_t, pred_t, alerts_t = f"examples.{sfx}", f"predictions.{sfx}", f"alerts.{sfx}"
    req_t = f"inference.requests.{sfx}"
    catalog = TopicCatalog.from_settings(settings.topics)
    bootstrap = settings.kafka.bootstrap_servers or ""
    specs = []
    for base, name in (("examples", ex_t), ("predictions", pred_t), ("alerts", alerts_t),
                       ("inference.requests", req_t)):
        specs += [replace(catalog.get(base), name=name, partitions=1),
                  replace(catalog.get(base + ".dlq"), name=name + ".dlq")]
    TopicAdmin(settings.kafka, bootstrap).ensure(specs)
    rnd = random.Random(11)
    with Producer(settings.kafka, bootstrap) as p:
        for i in range(N):
            t = T0 + timedelta(seconds=i)
            after = i >= CHANGE
            spend = rnd.gauss(100 + (60 if after else 0), 20)
            label = rnd.random() < 0.5
            wrong = rnd.random() < (0.5 if after else 0.05)
            features = {"spend": spend, "visits": rnd.randint(0, 9)}
            p.produce(pred_t, Prediction(
                prediction_id=f"p{i}", request_id=f"r{i}", model_name="churn",
                model_version="3", entity_id=str(i % 50), score=0.5, features=features,
                ts=t).model_dump_json().encode(), b"churn")
            p.produce(ex_t, LabeledExample(
                prediction_id=f"p{i}", entity_id=str(i % 50), model_name="churn",
                model_version="3", features=features, label=label,
                predicted_label=label != wrong, prediction_time=t,
                label_time=t).model_dump_json().encode(), b"churn")
        p.produce(ex_t, b'{"prediction_id": 1}', b"churn")
        router = DeadLetterRouter(p)
        for i in range(REJECTED):  # every request for fraud, and a burst (half of them fall
            # in one minute, however the minutes cut them)
            router.route_raw(req_t, b"e", f'{{"model": "fraud", "entity_id": "{i}"}}'.encode(),
                             "serving", ValueError("no such entity"), partition=0, offset=i)
    monitor = settings.monitor.model_copy(update={
        "group": f"mon-{sfx}", "deadletters_per_minute": REJECTED // 2,
        "lag_groups": {f"never-{sfx}": [ex_t]}, "lag_threshold": N, "lag_interval_s": 0.05})
    service = MonitorService(
        settings.model_copy(update={"monitor": monitor}), bootstrap,
        examples_topic=ex_t, predictions_topic=pred_t, alerts_topic=alerts_t,
        dead_letter_topics=[req_t + ".dlq", ex_t + ".dlq"])
    stats = service.run(until_caught_up=True, idle_timeout=60)
    assert (stats.examples, stats.predictions, stats.dead_lettered) == (N, N, 1)
    assert stats.dead_letters == REJECTED + 1  # and the bad example it dead-lettered itself
    alerts = [DriftAlert.model_validate_json(m.value or b"") for m in
              read_all(settings, alerts_t, stats.alerts, timeout=10)]
    by_kind = {(a.kind, a.feature): a for a in alerts}
    assert sorted(by_kind) == [("deadletters", None), ("error", None), ("feature", "spend"),
                               ("lag", None), ("performance", None), ("requests", None)], alerts
    assert len(alerts) == len(by_kind)
    realised = by_kind[("performance", None)]
    assert (realised.event, realised.detector, realised.window["first"]) == (
        "performance.degraded", "realised", CHANGE)
    assert realised.statistic < realised.threshold < realised.window["reference"]
    burst = by_kind[("deadletters", None)]
    assert (burst.event, burst.subject, burst.statistic) == (
        "deadletters.rising", req_t + ".dlq", REJECTED // 2)
    failing = by_kind[("requests", None)]
    assert (failing.event, failing.model_name, failing.statistic) == (
        "model.failing", "fraud", 1.0)
    assert failing.window["reason.ValueError"] == REJECTED
    lag = by_kind[("lag", None)]
    assert (lag.event, lag.subject, lag.statistic) == ("consumer.lagging", f"never-{sfx}", N + 1)
    err = by_kind[("error", None)]
    assert (err.model_name, err.model_version, err.detector, err.event) == (
        "churn", "3", "adwin", "drift.detected")
    assert T0 + timedelta(seconds=CHANGE) <= err.detected_at <= T0 + timedelta(
        seconds=CHANGE + 1000)
    assert err.statistic > err.threshold
    spend = by_kind[("feature", "spend")]
    assert (spend.window["first_request"], spend.window["last_request"]) == (3000, 3999)
    assert spend.detector == "psi" and spend.statistic > 0.2
    assert len({a.alert_id for a in alerts}) == len(alerts)
    assert len(read_all(settings, ex_t + ".dlq", 2, timeout=5)) == 1
