"""Both outboxes, Redis and memory, through the same checks: idempotent enqueue, leases,
retries, dead letters and replay, each step checked against what the step should leave
behind."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from refluent.config import Settings
from refluent.webhooks.base import Outbox, Subscriber, new_secret
from refluent.webhooks.events import WebhookMessage, message
from refluent.webhooks.memory import MemoryOutbox
from refluent.webhooks.redis import RedisOutbox

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["redis", "memory"])
def outbox(request: pytest.FixtureRequest) -> Iterator[Outbox]:
    if request.param == "memory":
        yield MemoryOutbox()
        return
    settings: Settings = request.getfixturevalue("settings")
    box = RedisOutbox(settings.redis.url or "", key_prefix=f"t{uuid.uuid4().hex[:8]}")
    yield box
    box.clear()
    box.close()


def msg(i: int) -> WebhookMessage:
    return message(f"m{i}", "drift.detected", T0, {"i": i})


def test_enqueue_claim_deliver__each_step_leaves_what_it_should(outbox: Outbox) -> None:
    m1, m2 = msg(1), msg(2)
    assert outbox.enqueue(m1, ["a", "b"], T0) == 2
    assert outbox.enqueue(m1, ["a", "b"], T0) == 0  # idempotent
    assert outbox.enqueue(m2, ["a"], T0 + timedelta(seconds=5)) == 1
    assert (outbox.pending(), outbox.pending("a"), outbox.pending("b")) == (3, 2, 1)

    # Only what is due is claimed, and a claimed delivery is held for the lease.
    got = outbox.claim(T0, 10, lease_s=30)
    assert sorted((d.subscriber_id, d.message.id, d.attempts) for d in got) == [
        ("a", "m1", 0), ("b", "m1", 0)]
    assert got[0].message.body == m1.body
    assert outbox.claim(T0 + timedelta(seconds=10), 10, 30)[0].message.id == "m2"
    assert outbox.claim(T0 + timedelta(seconds=29), 10, 30) == []
    # A dispatcher that died leaves its deliveries due again when the lease ends.
    again = outbox.claim(T0 + timedelta(seconds=31), 10, 30)
    assert sorted((d.subscriber_id, d.message.id) for d in again) == [("a", "m1"), ("b", "m1")]

    a1 = next(d for d in again if d.subscriber_id == "a")
    outbox.delivered(a1, T0 + timedelta(seconds=31))
    assert (outbox.pending("a"), outbox.pending("b")) == (1, 1)
    # A delivered message is not made pending again by a repeated alert.
    assert outbox.enqueue(m1, ["a"], T0) == 0


def test_retry_dead_replay(outbox: Outbox) -> None:
    outbox.enqueue(msg(1), ["a"], T0)
    (d,) = outbox.claim(T0, 10, 30)
    outbox.retry(d, T0 + timedelta(seconds=8), "HTTP 503: busy")
    assert outbox.claim(T0 + timedelta(seconds=7), 10, 30) == []
    (d2,) = outbox.claim(T0 + timedelta(seconds=8), 10, 30)
    assert d2.attempts == 1
    outbox.release(d2, T0 + timedelta(seconds=8, milliseconds=500))  # given back, not tried
    assert outbox.claim(T0 + timedelta(seconds=8, milliseconds=499), 10, 30) == []
    (d2,) = outbox.claim(T0 + timedelta(seconds=8, milliseconds=500), 10, 30)
    assert d2.attempts == 1
    outbox.dead(d2, "HTTP 500: boom", T0 + timedelta(seconds=9))
    assert outbox.pending() == 0
    (dl,) = outbox.dead_letters()
    assert (dl.subscriber_id, dl.message_id, dl.message_type, dl.attempts, dl.error) == (
        "a", "m1", "drift.detected", 2, "HTTP 500: boom")
    assert outbox.enqueue(msg(1), ["a"], T0) == 0  # dead stays dead
    assert outbox.replay(T0, subscriber_id="b") == 0
    assert outbox.replay(T0, message_ids=["m9"]) == 0
    assert outbox.replay(T0 + timedelta(seconds=20)) == 1
    assert outbox.dead_letters() == []
    (d3,) = outbox.claim(T0 + timedelta(seconds=20), 10, 30)
    assert (d3.message.id, d3.attempts) == ("m1", 0)


def test_subscribers_disable_remove_and_prune(outbox: Outbox) -> None:
    sub = Subscriber("wh_1", "https://example.com/h", ("drift.detected",), new_secret())
    outbox.put_subscriber(sub)
    (stored,) = outbox.stored_subscribers()
    assert (stored.id, stored.url, stored.events, stored.secret) == (
        sub.id, sub.url, sub.events, sub.secret)
    outbox.disable(sub.id, "410 Gone")
    assert outbox.stored_subscribers()[0].disabled == "410 Gone"
    assert outbox.enable(sub.id) is True
    assert outbox.stored_subscribers()[0].disabled is None
    assert outbox.enable(sub.id) is False  # it was not disabled any more

    outbox.enqueue(msg(1), [sub.id, "other"], T0)
    outbox.enqueue(msg(2), [sub.id], T0)
    (d,) = [d for d in outbox.claim(T0, 10, 30) if d.message.id == "m2"]
    outbox.dead(d, "gone", T0)
    assert outbox.remove_subscriber(sub.id)
    assert not outbox.remove_subscriber(sub.id)
    assert outbox.stored_subscribers() == [] and outbox.dead_letters() == []
    assert outbox.pending() == 1  # the other subscriber's delivery stays

    # Prune forgets done deliveries and messages nothing refers to any more, older than the
    # cutoff, and never a message still pending.
    (other,) = outbox.claim(T0 + timedelta(minutes=5), 10, 30)
    outbox.delivered(other, T0)
    outbox.enqueue(msg(3), ["x"], T0)
    assert outbox.prune(T0 - timedelta(minutes=1)) == 0
    assert outbox.enqueue(msg(1), ["other"], T0) == 0  # still done
    assert outbox.prune(T0 + timedelta(days=1)) == 2  # m1 and m2, not the pending m3
    assert outbox.enqueue(msg(1), ["other"], T0) == 1  # forgotten
    (d3,) = [d for d in outbox.claim(T0, 10, 30) if d.message.id == "m3"]
    assert d3.message.body == msg(3).body
