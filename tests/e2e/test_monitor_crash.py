"""``kill -9`` the monitor while it watches: its alerts are those of a monitor that never
stopped.

``refluent monitor --until-caught-up`` runs as a subprocess on the session's broker and Redis,
over topics of its own holding ``N`` predictions and ``N`` examples of one model version, in
which a feature shifts and the error rises at known requests. It checkpoints its state every
0.2 s. It is killed ``KILLS`` times at seeded random moments: the first within its start-up,
the second while it joins its group, the rest after its checkpoints covered more records, each
after a random pause. Each kill is shown to land with work pending: the last checkpoint covered
fewer than all ``2 N`` records. After the last restart runs to the end, the alerts topic holds
exactly the alert ids that :class:`~refluent.monitoring.monitor.ModelMonitors` raises over the
same records in one uninterrupted pass in this process (the oracle), each with the same
content; a restart that lost the state would shift every window and change them.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from refluent.config import MonitorSettings
from refluent.embedded.commands import RefluentCommand
from refluent.monitoring.checkpoint_redis import RedisMonitorCheckpoints
from refluent.monitoring.monitor import ModelMonitors
from refluent.streams.contracts import DriftAlert, LabeledExample, Prediction
from refluent.streams.kafka import Producer, TopicAdmin
from refluent.streams.origin import Origin
from refluent.streams.topics import TopicCatalog
from refluent.testing.crash import kill_at_moment
from refluent.testing.kafka import read_all, topic_ends
from refluent.testing.services import RunningServices

pytestmark = pytest.mark.e2e

N = 50_000  # enough that a mid-stream kill lands with records left, however fast
SHIFT, RISE = 12_000, 18_000
KILLS = 4
SEED = 20261208
T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _stream(model: str) -> tuple[list[Prediction], list[LabeledExample]]:
    rnd = random.Random(SEED)
    preds, examples = [], []
    for i in range(N):
        t = T0 + timedelta(seconds=i)
        features = {"spend": round(rnd.gauss(100 + (50 if i >= SHIFT else 0), 20), 3),
                    "tier": rnd.choice("abc"), "visits": rnd.randint(0, 9)}
        label = rnd.random() < 0.5
        wrong = rnd.random() < (0.3 if i >= RISE else 0.05)
        preds.append(Prediction(prediction_id=f"p{i}", request_id=f"r{i}", model_name=model,
                                model_version="1", entity_id=str(i % 50), features=features,
                                ts=t))
        examples.append(LabeledExample(prediction_id=f"p{i}", entity_id=str(i % 50),
                                       model_name=model, model_version="1", features=features,
                                       label=label, predicted_label=label != wrong,
                                       prediction_time=t, label_time=t))
    return preds, examples


def test_kill_9__the_monitor_goes_on_from_its_checkpoint(services: RunningServices,
                                                         tmp_path: Path) -> None:
    rnd = random.Random(SEED)
    sfx = uuid.uuid4().hex[:8]
    model, group, prefix = f"m-{sfx}", f"mon-{sfx}", f"k{sfx}"
    ex_t, pred_t, alerts_t = f"examples.{sfx}", f"predictions.{sfx}", f"alerts.{sfx}"
    settings = services.settings()
    catalog = TopicCatalog.from_settings(settings.topics)
    specs = []
    for base, name in (("examples", ex_t), ("predictions", pred_t), ("alerts", alerts_t)):
        specs += [replace(catalog.get(base), name=name, partitions=1),
                  replace(catalog.get(base + ".dlq"), name=name + ".dlq")]
    TopicAdmin(settings.kafka, services.bootstrap_servers).ensure(specs)
    preds, examples = _stream(model)
    with Producer(settings.kafka, services.bootstrap_servers) as producer:
        for p, e in zip(preds, examples, strict=True):
            producer.produce(pred_t, p.model_dump_json().encode(), model.encode())
            producer.produce(ex_t, e.model_dump_json().encode(), model.encode())

    oracle = ModelMonitors(MonitorSettings())
    expected = {a.alert_id: a for a in
                [x for i, p in enumerate(preds) for x in oracle.on_prediction(
                    p, Origin(pred_t, 0, i))]
                + [x for i, e in enumerate(examples) for x in oracle.on_example(
                    e, Origin(ex_t, 0, i))]}
    assert {(a.kind, a.detector) for a in expected.values()} >= {
        ("feature", "psi"), ("error", "adwin"), ("performance", "realised")}

    checkpoints = RedisMonitorCheckpoints(services.redis_url, key_prefix=prefix)

    def covered() -> int:
        got = checkpoints.load(group)
        return 0 if got is None else sum(
            o for (t, _), o in got.offsets.items() if t in (ex_t, pred_t))

    env = services.command_env(namespace=f"mon_{sfx}", key_prefix=prefix, **{
        "REFLUENT_MONITOR__GROUP": group, "REFLUENT_MONITOR__CHECKPOINT_INTERVAL_S": "0.2",
        "REFLUENT_MONITOR__PROMOTIONS": "false"})
    cmd = RefluentCommand("monitor", [
        "monitor", "--examples-topic", ex_t, "--predictions-topic", pred_t,
        "--alerts-topic", alerts_t, "--until-caught-up"], env, tmp_path)
    kills: list[dict[str, object]] = []
    try:
        for k in range(KILLS):
            cmd.start()
            before = covered()
            kill_at_moment(cmd, rnd, k, began="monitoring",
                           progressed=lambda b=before: covered() >= b + 2_000)
            kills.append({"kill": k + 1, "covered": covered()})
            assert covered() < 2 * N, f"kill {k + 1} landed after everything was watched"
        cmd.start()
        assert cmd.wait(240) == 0, cmd.output(3000)
    finally:
        cmd.stop()
    assert covered() == 2 * N
    assert sum(1 for kill in kills if 0 < int(kill["covered"])) >= 2  # restarts restored state
    got: dict[str, DriftAlert] = {}
    for m in read_all(settings, alerts_t, sum(topic_ends(settings, alerts_t).values())):
        alert = DriftAlert.model_validate_json(m.value or b"")
        if alert.model_name == model:
            assert got.setdefault(alert.alert_id, alert) == alert  # a repeat is the same alert
    assert sorted(got) == sorted(expected), (kills, sorted(
        (a.kind, a.detector, a.window.get("offset")) for a in got.values()))
    assert all(got[i] == a for i, a in expected.items())
    print(f"kills: {kills}; alerts: {len(got)}")
    checkpoints.delete(group)
    checkpoints.close()
