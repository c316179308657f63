"""The retraining loop on real services: alerts on the broker become one retrain request (the
duplicate, the non-drift alert and the one inside the cooldown do not), the launcher runs it as
a real ``refluent retrain`` process that registers a DP challenger and reports
``retrain.completed`` with its epsilon; the same request read again spends and registers
nothing; a request the budget cannot pay is refused and reported ``budget.exhausted``."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from refluent.config import Settings
from refluent.examples.models import onnx_mlp_classifier
from refluent.jobs.service import LauncherService, TriggerService
from refluent.jobs.trigger import request_id
from refluent.lake.catalog import open_catalog
from refluent.lake.mappings import PredictionsTable, RawEventsTable
from refluent.models.onnx import OnnxModel
from refluent.privacy.iceberg import IcebergPrivacyLedger
from refluent.registry.base import CHAMPION
from refluent.registry.store import IcebergModelRegistry
from refluent.streams.contracts import DriftAlert, LabeledExample, Prediction, RetrainRequest
from refluent.streams.kafka import Producer, TopicAdmin
from refluent.streams.serde import JsonSerde
from refluent.streams.topics import ALERTS, RETRAIN_REQUESTS, TopicCatalog
from refluent.testing.kafka import read_all
from refluent.testing.services import RunningServices

from . import lake

pytestmark = pytest.mark.e2e

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _fill_lake(catalog: Any, namespace: str, model: str, n: int) -> None:
    rnd = random.Random(5)
    preds, examples = [], []
    for i in range(n):
        t = T0 + timedelta(seconds=i)
        x = {"spend": round(rnd.uniform(0, 300), 2), "visits": rnd.randint(0, 15)}
        preds.append(Prediction(prediction_id=f"p{i}", request_id=f"r{i}", model_name=model,
                                model_version="1", entity_id="e", score=0.5, label=True,
                                features=x, ts=t))
        examples.append(LabeledExample(
            prediction_id=f"p{i}", entity_id="e", model_name=model, model_version="1",
            features=x, label=x["spend"] / 50 + x["visits"] / 3 > 5, prediction_time=t,
            label_time=t + timedelta(minutes=1)))
    lake.write(catalog, "predictions", PredictionsTable(), preds, 0, namespace)
    lake.write(catalog, "examples", RawEventsTable(), examples, 0, namespace)


def _alerts(settings: Settings) -> dict[str, DriftAlert]:
    serde = JsonSerde(DriftAlert)
    out = {}
    for r in read_all(settings, ALERTS, expected=10**6, timeout=3):
        a = serde.decode(r.value)
        if a is not None:
            out[a.alert_id] = a
    return out


def test_loop__drift_to_one_dp_challenger_reported_once_and_budget_refusal(
        services: RunningServices, monkeypatch: pytest.MonkeyPatch) -> None:
    ns, model = f"loop{uuid.uuid4().hex[:6]}", f"churn-{uuid.uuid4().hex[:6]}"
    jobs = {"trigger_group": f"trigger-{ns}", "launcher_group": f"launcher-{ns}",
            "min_new_labels": 1000, "cooldown_s": 3600}
    settings = services.settings(lake={"namespace": ns}, jobs=jobs,
                                 privacy={"epsilon_budget": 2.5},
                                 retrain={"target_epsilon": 2.0, "seed": 3})
    # The launched jobs are processes: they take these settings from the environment.
    env = services.command_env(namespace=ns, REFLUENT_PRIVACY__EPSILON_BUDGET="2.5",
                               REFLUENT_RETRAIN__TARGET_EPSILON="2.0",
                               REFLUENT_RETRAIN__SEED="3")
    for k, v in env.items():
        if k.startswith("REFLUENT_"):
            monkeypatch.setenv(k, v)
    catalog = open_catalog(settings)
    _fill_lake(catalog, ns, model, 5000)
    registry = IcebergModelRegistry(catalog, ns)
    registry.register(model, OnnxModel(onnx_mlp_classifier(("spend", "visits")).data),
                      alias=CHAMPION)
    topics = TopicCatalog.from_settings(settings.topics)
    bootstrap = services.bootstrap_servers
    # The drift alerts (and a record that is none) on a topic of their own; the jobs report
    # their outcomes on the catalog's alerts topic.
    drifts = replace(topics.get(ALERTS), name=f"alerts.{ns}")
    TopicAdmin(settings.kafka, bootstrap).ensure(
        [drifts, drifts.dlq(), *(topics.get(t) for t in (ALERTS, "alerts.dlq",
                                                         RETRAIN_REQUESTS,
                                                         "retrain.requests.dlq"))])

    def drift(n: int, event: str = "drift.detected") -> DriftAlert:
        return DriftAlert(alert_id=f"{ns}-a{n}", event=event, model_name=model,
                          model_version="1", detector="adwin", kind="error", statistic=0.3,
                          threshold=0.1, detected_at=T0)

    with Producer(settings.kafka, bootstrap) as producer:
        serde = JsonSerde(DriftAlert)
        for a in (drift(1), drift(1), drift(2, "features.stale"), drift(3)):
            producer.produce(drifts.name, serde.encode(a), model)
        producer.produce(drifts.name, b"{not an alert", f"{ns}-junk")
        producer.flush()
    trigger = TriggerService(settings, bootstrap, alerts_topic=drifts.name)
    trigger.run(until_caught_up=True)
    assert (trigger.stats.alerts, trigger.stats.requests, trigger.stats.dead_lettered) == (
        4, 1, 1)
    junk = read_all(settings, drifts.dlq().name, expected=1, timeout=10)
    assert [dict(r.headers)["refluent.dlq.step"] for r in junk] == [b"retrain-trigger"]
    rid = request_id(model, f"{ns}-a1")
    requests = [RetrainRequest.model_validate(orjson.loads(r.value or b""))
                for r in read_all(settings, RETRAIN_REQUESTS, expected=10**6, timeout=3)]
    mine = [r for r in requests if r.model_name == model]
    assert [r.request_id for r in mine] == [rid]  # a1 once; a2 is not drift; a3 cools down

    launcher = LauncherService(settings, bootstrap)
    launcher.run(until_caught_up=True)
    assert (launcher.stats.launched, launcher.stats.failed) == (1, 0)
    v = registry.get(model, 2)
    assert registry.aliases(model) == {CHAMPION: 1, "challenger-dp": 2}
    ledger = IcebergPrivacyLedger(catalog, ns, budget=2.5, delta=1e-5)
    assert [e.run_id for e in ledger.entries(model)] == [rid]
    assert v.lineage["run_id"] == rid and v.epsilon == ledger.entries(model)[0].epsilon_total
    done = _alerts(settings)[f"{rid}:retrain.completed"]
    assert (done.event, done.model_version, done.statistic, done.threshold) == (
        "retrain.completed", "2", v.epsilon, 2.5)

    # The same request again (a replay): a fresh launcher runs it, and nothing is spent.
    with Producer(settings.kafka, bootstrap) as producer:
        producer.produce(RETRAIN_REQUESTS, JsonSerde(RetrainRequest).encode(mine[0]), model)
        other = RetrainRequest(request_id=f"{ns}-manual", model_name=model, reason="manual",
                               requested_at=datetime.now(UTC))
        producer.produce(RETRAIN_REQUESTS, JsonSerde(RetrainRequest).encode(other), model)
        producer.flush()
    again = LauncherService(settings, bootstrap)
    again.run(until_caught_up=True)
    assert (again.stats.launched, again.stats.failed) == (2, 1)
    assert len(registry.versions(model)) == 2
    assert [e.run_id for e in ledger.entries(model)] == [rid]
    alerts = _alerts(settings)
    refused = alerts[f"{ns}-manual:budget.exhausted"]
    assert refused.statistic > refused.threshold == 2.5  # the plan, over the budget
    assert f"{ns}-manual:retrain.failed" not in alerts  # the job reported; not again
