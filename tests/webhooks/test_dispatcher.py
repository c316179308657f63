"""The dispatcher end to end on the real broker and Redis: a receiver that is down gets every
alert once it is up (each webhook-id handled once, every signature verified by the Standard
Webhooks library), a 410 Gone disables the subscriber until it is enabled and its dead letters
replayed, and an undecodable alert goes to the dead-letter topic."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from refluent.config import Settings
from refluent.embedded.services import free_port
from refluent.streams.contracts import DriftAlert
from refluent.streams.io import tail
from refluent.streams.kafka import Producer, StopSignal, TopicAdmin
from refluent.streams.topics import TopicCatalog
from refluent.webhooks.base import Subscriber, new_secret, subscriber_id
from refluent.webhooks.dispatcher import WebhookDispatcher
from refluent.webhooks.receiver import WebhookReceiver
from refluent.webhooks.redis import RedisOutbox

pytestmark = pytest.mark.integration


def alerts(n: int, sfx: str) -> list[DriftAlert]:
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    return [DriftAlert(alert_id=f"{sfx}-{i}", model_name=f"m{i % 3}", model_version="1",
                       detector="adwin", kind="error", statistic=0.1 + i / 1000, threshold=0.05,
                       detected_at=t0 + timedelta(seconds=i)) for i in range(n)]


@dataclass
class Rig:
    settings: Settings
    topic: str
    outbox: RedisOutbox
    dispatcher: WebhookDispatcher
    stop: StopSignal
    thread: threading.Thread

    def produce(self, values: list[bytes]) -> None:
        with Producer(self.settings.kafka, self.settings.kafka.bootstrap_servers or "") as p:
            for v in values:
                p.produce(self.topic, v, b"k")


@pytest.fixture()
def rig(settings: Settings) -> Iterator[Rig]:
    sfx = uuid.uuid4().hex[:8]
    s = settings.model_copy(update={"webhooks": settings.webhooks.model_copy(update={
        "allow_networks": ["127.0.0.0/8"], "backoff_initial_s": 0.1, "backoff_max_s": 0.5,
        "max_attempts": 1000, "lease_s": 5.0, "group": f"wh-{sfx}"})})
    topic = f"alerts.{sfx}"
    catalog = TopicCatalog.from_settings(s.topics)
    TopicAdmin(s.kafka, s.kafka.bootstrap_servers or "").ensure([
        replace(catalog.get("alerts"), name=topic),
        replace(catalog.get("alerts.dlq"), name=topic + ".dlq")])
    outbox = RedisOutbox(s.redis.url or "", key_prefix=f"t{sfx}")
    dispatcher = WebhookDispatcher(s, s.kafka.bootstrap_servers or "", outbox,
                                   alerts_topic=topic, seed=1)
    stop = StopSignal()
    thread = threading.Thread(target=dispatcher.run, kwargs={"stop": stop}, daemon=True)
    yield Rig(s, topic, outbox, dispatcher, stop, thread)
    stop.set()
    thread.join(30)
    outbox.clear()
    outbox.close()


def wait_for(what: str, done: Callable[[], bool], timeout: float = 60.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if done():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def test_receiver_down_then_up__gets_every_alert_once(rig: Rig) -> None:
    secret = new_secret()
    port = free_port()
    receiver = WebhookReceiver(secret, port=port)
    url = receiver.url
    rig.outbox.put_subscriber(Subscriber(subscriber_id(url), url, ("drift.detected",), secret))
    other = WebhookReceiver(secret).start()  # wants another event: gets nothing
    rig.outbox.put_subscriber(Subscriber("wh_other", other.url, ("model.promoted",), secret))
    sent = alerts(60, uuid.uuid4().hex[:6])
    rig.thread.start()
    rig.produce([a.model_dump_json().encode() for a in sent])
    try:
        # Down: every attempt fails and is retried.
        wait_for("alerts in the outbox", lambda: rig.dispatcher.stats.enqueued == 60)
        wait_for("failed attempts", lambda: rig.dispatcher.stats.retried >= 120)
        assert rig.dispatcher.stats.delivered == 0
        receiver.start()
        wait_for("every alert delivered", lambda: len(receiver.handled) == 60)
        wait_for("the outbox to empty", lambda: rig.outbox.pending() == 0)
    finally:
        receiver.stop()
        other.stop()
    assert receiver.handled == {a.alert_id: {"type": "drift.detected",
                                             "timestamp": a.detected_at.isoformat()
                                             .replace("+00:00", "Z"),
                                             "data": a.model_dump(mode="json")} for a in sent}
    assert receiver.rejected == [] and other.received == []
    # Retries carry the alert's id: a receiver that saw one twice would say so here.
    assert all(r.id == r.payload["data"]["alert_id"] for r in receiver.received)
    assert rig.outbox.dead_letters() == []


def test_a_stuck_receiver__holds_its_own_slots_and_never_the_others(rig: Rig) -> None:
    secret = new_secret()
    release = threading.Event()
    calls: list[str] = []

    def stuck_answer(msg_id: str) -> int:
        calls.append(msg_id)
        release.wait(60)
        return 200

    stuck = WebhookReceiver(secret, answer=stuck_answer).start()
    free = WebhookReceiver(secret).start()
    for r in (stuck, free):
        rig.outbox.put_subscriber(Subscriber(subscriber_id(r.url), r.url, ("*",), secret))
    sent = alerts(40, uuid.uuid4().hex[:6])
    rig.thread.start()
    rig.produce([a.model_dump_json().encode() for a in sent])
    try:
        wait_for("the free receiver to get every alert", lambda: len(free.handled) == 40)
        # The stuck one holds the subscriber's slots and no more, though 80 were due.
        assert len(calls) == rig.settings.webhooks.subscriber_concurrency
        assert stuck.received == []
        release.set()
        wait_for("the stuck receiver to get every alert", lambda: len(stuck.handled) == 40)
    finally:
        release.set()
        stuck.stop()
        free.stop()
    assert set(stuck.handled) == set(free.handled) == {a.alert_id for a in sent}


def test_gone__disables_the_subscriber_until_enabled_and_replayed(rig: Rig) -> None:
    secret = new_secret()
    gone = {"yes": True}
    receiver = WebhookReceiver(secret, answer=lambda _id: 410 if gone["yes"] else 200).start()
    sid = subscriber_id(receiver.url)
    rig.outbox.put_subscriber(Subscriber(sid, receiver.url, ("*",), secret))
    sent = alerts(5, uuid.uuid4().hex[:6])
    rig.thread.start()
    try:
        rig.produce([a.model_dump_json().encode() for a in sent[:1]])
        wait_for("the subscriber to be disabled", lambda: sid in rig.outbox.disabled())
        rig.produce([a.model_dump_json().encode() for a in sent[1:]])
        wait_for("every alert in the dead letters", lambda: len(rig.outbox.dead_letters()) == 5)
        assert receiver.received == [] and rig.outbox.pending() == 0
        assert "410 Gone" in rig.outbox.disabled()[sid]
        gone["yes"] = False
        rig.outbox.enable(sid)
        assert rig.outbox.replay(datetime.now(UTC), sid) == 5
        wait_for("the replayed alerts", lambda: len(receiver.handled) == 5)
    finally:
        receiver.stop()
    assert set(receiver.handled) == {a.alert_id for a in sent}


def test_undecodable_alert__goes_to_the_dead_letter_topic(rig: Rig) -> None:
    rig.thread.start()
    rig.produce([b"{not json", DriftAlert(model_name="m", model_version="1", detector="ks",
                                          kind="feature", statistic=1.0, threshold=0.5,
                                          detected_at=datetime.now(UTC))
                 .model_dump_json().encode()])
    wait_for("one alert taken", lambda: rig.dispatcher.stats.alerts == 1)
    assert rig.dispatcher.stats.dead_lettered_alerts == 1
    dead = list(tail(rig.settings.kafka, rig.settings.kafka.bootstrap_servers or "",
                     rig.topic + ".dlq", from_beginning=True, max_records=1, idle_timeout=20))
    assert [m.value for m in dead] == [b"{not json"]
