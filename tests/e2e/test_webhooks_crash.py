"""``kill -9`` the webhook dispatcher during a burst of alerts: every alert still reaches the
receiver.

``refluent webhooks dispatch`` runs as a subprocess on the session's broker and Redis, over an
alerts topic of its own, delivering to a verifying receiver in this process that takes a few
milliseconds per request. All ``N`` alerts are produced up front. The dispatcher is killed
``KILLS`` times at seeded random moments: the first within its start-up (before it joined its
group), the second just after it joined and announced itself, the rest after the receiver has
seen new deliveries from the running process, each after a random pause. Each kill is shown to
land with work pending: fewer than ``N`` alerts had been handled by the receiver when it died.
After the last restart every alert is handled exactly once by the idempotent receiver (a
repeat delivery, allowed after a crash, carries the same ``webhook-id`` and is counted), every
request verified, and the outbox holds nothing pending and no dead letter.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from refluent.embedded.commands import RefluentCommand
from refluent.streams.contracts import DriftAlert
from refluent.streams.kafka import Producer, TopicAdmin
from refluent.streams.topics import TopicCatalog
from refluent.testing.crash import kill_at_moment
from refluent.testing.services import RunningServices
from refluent.webhooks.base import Subscriber, new_secret, subscriber_id
from refluent.webhooks.receiver import WebhookReceiver
from refluent.webhooks.redis import RedisOutbox

pytestmark = pytest.mark.e2e

N = 400
KILLS = 4
SEED = 20261207


def test_kill_9__the_dispatcher_loses_no_alert(services: RunningServices, tmp_path: Path
                                                ) -> None:
    rnd = random.Random(SEED)
    sfx = uuid.uuid4().hex[:8]
    topic, prefix = f"alerts.{sfx}", f"k{sfx}"
    settings = services.settings()
    catalog = TopicCatalog.from_settings(settings.topics)
    TopicAdmin(settings.kafka, services.bootstrap_servers).ensure(
        [replace(catalog.get("alerts"), name=topic)])
    secret = new_secret()

    def slow(_id: str) -> int:
        time.sleep(0.005)
        return 200

    receiver = WebhookReceiver(secret, answer=slow).start()
    outbox = RedisOutbox(services.redis_url, key_prefix=prefix)
    outbox.put_subscriber(Subscriber(subscriber_id(receiver.url), receiver.url, ("*",), secret))
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    sent = [DriftAlert(alert_id=f"{sfx}-{i}", model_name=f"m{i % 5}", model_version="1",
                       detector="adwin", kind="error", statistic=0.3, threshold=0.1,
                       detected_at=t0 + timedelta(seconds=i)) for i in range(N)]
    with Producer(settings.kafka, services.bootstrap_servers) as producer:
        for a in sent:
            producer.produce(topic, a.model_dump_json().encode(), a.model_name.encode())

    env = services.command_env(namespace=f"wh_{sfx}", key_prefix=prefix, **{
        "REFLUENT_WEBHOOKS__ALLOW_NETWORKS": '["127.0.0.0/8"]',
        "REFLUENT_WEBHOOKS__GROUP": f"wh-{sfx}", "REFLUENT_WEBHOOKS__LEASE_S": "3",
        "REFLUENT_WEBHOOKS__BACKOFF_INITIAL_S": "0.2", "REFLUENT_WEBHOOKS__BACKOFF_MAX_S": "1",
        "REFLUENT_WEBHOOKS__CONCURRENCY": "4"})
    cmd = RefluentCommand("dispatch", ["webhooks", "dispatch", "--topic", topic], env, tmp_path)
    kills: list[dict[str, object]] = []
    try:
        for k in range(KILLS):
            cmd.start()
            before = len(receiver.received)
            kill_at_moment(cmd, rnd, k, began="delivering",
                           progressed=lambda b=before: len(receiver.received) >= b + 20)
            handled = len(receiver.handled)
            kills.append({"kill": k + 1, "handled": handled,
                          "pending_in_outbox": outbox.pending()})
            assert handled < N, f"kill {k + 1} landed after everything was delivered"
        cmd.start()
        deadline = time.monotonic() + 120
        while len(receiver.handled) < N and time.monotonic() < deadline:
            cmd.check_alive()
            time.sleep(0.1)
        assert len(receiver.handled) == N, (
            f"{len(receiver.handled)} of {N} delivered; kills {kills}\n{cmd.output(3000)}")
        deadline = time.monotonic() + 30
        while outbox.pending() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        cmd.stop()
        receiver.stop()
    assert set(receiver.handled) == {a.alert_id for a in sent}
    assert all(receiver.handled[a.alert_id]["data"] == a.model_dump(mode="json") for a in sent)
    assert receiver.rejected == []
    assert outbox.pending() == 0 and outbox.dead_letters() == []
    repeats = sum(r.repeat for r in receiver.received)
    print(f"kills: {kills}; repeated deliveries: {repeats}")
    outbox.clear()
    outbox.close()
