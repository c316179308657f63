"""The webhook dispatcher: alerts from Kafka into the outbox, and deliveries out of it.

Two loops in one process:

- the **intake** (the consumer group ``webhooks.group`` on the ``alerts`` topic) turns each alert
  into a message and writes one pending delivery per subscriber that wants its event into the
  outbox; the batch's offsets are committed only after that write. An undecodable alert goes to
  ``alerts.dlq`` (flushed before the commit);
- the **deliverer** (a thread) takes due deliveries from the outbox under a lease, keeps up to
  ``webhooks.concurrency`` sends under way (at most ``webhooks.subscriber_concurrency`` per
  subscriber, so a slow receiver does not hold up the others) and records each answer as it
  comes: delivered, retried later, or dead.

Nothing is lost when the process is killed: an alert not yet in the outbox is consumed again
(its offset was not committed), and a delivery taken but not recorded is due again when its
lease ends. See :mod:`refluent.webhooks.base` for the guarantee.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from refluent.observability import metrics
from refluent.streams.contracts import DriftAlert
from refluent.streams.errors import DecodeError
from refluent.streams.serde import JsonSerde
from refluent.streams.topics import ALERTS
from refluent.webhooks.base import Delivery, Outbox, Subscriber, subscriber_id
from refluent.webhooks.delivery import Attempt, WebhookSender, backoff_s
from refluent.webhooks.events import message_for

if TYPE_CHECKING:
    from confluent_kafka import Message

    from refluent.config import Settings
    from refluent.streams.kafka import StopSignal

log = logging.getLogger(__name__)

RETENTION = timedelta(days=7)
"""How long done deliveries are remembered (a replayed alert within it is not sent again)."""
PRUNE_EVERY_S = 600.0
BUSY_RETRY_S = 0.2
"""When a delivery held back for its subscriber's busy slots is due again."""
FETCH_WAIT_MS = 50
"""The intake's fetch wait: an alert waits at most this long on a broker that holds fetches."""


def settings_subscribers(settings: Settings) -> list[Subscriber]:
    """The subscribers declared in ``webhooks.subscribers``."""
    return [Subscriber(s.id or subscriber_id(s.url), s.url, tuple(s.events),
                       s.secret.get_secret_value(), "settings")
            for s in settings.webhooks.subscribers]


def all_subscribers(settings: Settings, outbox: Outbox) -> list[Subscriber]:
    """Subscribers of the settings and of the outbox (a stored one wins on the same id), with
    the outbox's disabled marks."""
    disabled = outbox.disabled()
    out = {s.id: s for s in settings_subscribers(settings)}
    out.update({s.id: s for s in outbox.stored_subscribers()})
    return [Subscriber(s.id, s.url, s.events, s.secret, s.origin, disabled.get(s.id))
            for s in out.values()]


@dataclass
class DispatchStats:
    alerts: int = 0
    enqueued: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    dead_lettered_alerts: int = 0


class WebhookDispatcher:
    """Reads alerts and delivers them to subscribers (see the module).

    Args:
        settings: Refluent settings (``webhooks`` above all).
        bootstrap_servers: Kafka brokers.
        outbox: The durable delivery state.
        sender: Sends one attempt (a new :class:`WebhookSender` when None).
        alerts_topic: Topic of the alerts.
        seed: Seed of the retry jitter.
        clock: Current time (tests move it).
    """

    def __init__(self, settings: Settings, bootstrap_servers: str, outbox: Outbox,
                 sender: WebhookSender | None = None, *, alerts_topic: str = ALERTS,
                 seed: int | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.outbox = outbox
        self.sender = sender or WebhookSender(settings.webhooks)
        self.alerts_topic = alerts_topic
        self.clock = clock
        self.stats = DispatchStats()
        self._rnd = random.Random(seed)  # noqa: S311 - retry jitter, not a secret
        self._serde = JsonSerde(DriftAlert, max_record_bytes=settings.kafka.max_record_bytes)
        self._wake = threading.Event()
        self._backlog: deque[Delivery] = deque()
        self._subscribers: list[Subscriber] = []
        self._subscribers_at = 0.0
        self._m_out = metrics.WEBHOOK_DELIVERIES

    # -- subscribers ------------------------------------------------------------------------

    def subscribers(self, max_age_s: float = 2.0) -> list[Subscriber]:
        """Current subscribers (read again from the outbox at most every ``max_age_s``)."""
        now = time.monotonic()
        if now - self._subscribers_at > max_age_s:
            self._subscribers = all_subscribers(self.settings, self.outbox)
            self._subscribers_at = now
        return self._subscribers

    # -- intake -----------------------------------------------------------------------------

    def intake(self, records: Sequence[tuple[bytes | None, bytes | None]],
               reject: Callable[[int, Exception], None] | None = None) -> int:
        """Put the alerts among ``records`` (key, value) into the outbox; ``reject(i, error)``
        is told about each undecodable one. The number of deliveries added.

        A disabled subscriber's deliveries are added too: the deliverer moves them to the dead
        letters, from where ``replay`` sends them once it is enabled again."""
        subs = self.subscribers(0.0)
        now = self.clock()
        added = 0
        for i, (_, value) in enumerate(records):
            try:
                alert = self._serde.decode(value)
            except DecodeError as exc:
                if reject is None:
                    raise
                reject(i, exc)
                continue
            if alert is None:
                continue
            self.stats.alerts += 1
            msg = message_for(alert)
            added += self.outbox.enqueue(msg, [s.id for s in subs if s.wants(msg.type)], now)
        self.stats.enqueued += added
        if added:
            self._wake.set()
        return added

    # -- delivery ---------------------------------------------------------------------------

    def deliver_due(self, pool: ThreadPoolExecutor, in_flight: dict[Future[Attempt], Any]
                    ) -> int:
        """Start sending due deliveries into the free slots; ``in_flight`` maps each send under
        way to its (delivery, subscriber). How many were started or settled at once (removed
        or disabled subscribers).

        Deliveries are claimed from the outbox in batches (``webhooks.concurrency`` * 4, under
        the lease) into a local backlog that fills the slots as they free. A subscriber has at
        most ``webhooks.subscriber_concurrency`` sends under way; a delivery beyond that goes
        back to the outbox, due again shortly, so a slow receiver holds its own slots and never
        the others' (no head-of-line blocking)."""
        ws = self.settings.webhooks
        free = ws.concurrency - len(in_flight)
        if free <= 0:
            return 0
        now = self.clock()
        backlog = self._backlog
        if len(backlog) < free:
            backlog.extend(self.outbox.claim(now, ws.concurrency * 4 - len(backlog),
                                             ws.lease_s))
        if not backlog:
            return 0
        by_id = {s.id: s for s in self.subscribers()}
        if any(by_id.get(d.subscriber_id) is None or by_id[d.subscriber_id].disabled
               for d in backlog):
            # Read again before dead-lettering: it may have been enabled (or added) just now.
            by_id = {s.id: s for s in self.subscribers(0.0)}
        busy = Counter(sub.id for _, sub in in_flight.values())
        done = 0
        while backlog and len(in_flight) < ws.concurrency:
            d = backlog.popleft()
            done += 1
            sub = by_id.get(d.subscriber_id)
            if sub is None:
                self.outbox.dead(d, f"subscriber {d.subscriber_id} was removed", now)
                self.stats.dead += 1
            elif sub.disabled is not None:
                self.outbox.dead(d, f"subscriber disabled: {sub.disabled}", now)
                self.stats.dead += 1
            elif busy[sub.id] >= ws.subscriber_concurrency:
                self.outbox.release(d, now + timedelta(seconds=BUSY_RETRY_S))
                done -= 1
            else:
                busy[sub.id] += 1
                in_flight[pool.submit(self.sender.send, sub, d.message)] = (d, sub)
        return done

    def release_backlog(self) -> None:
        """Give the deliveries claimed but not started back to the outbox, due now."""
        now = self.clock()
        while self._backlog:
            self.outbox.release(self._backlog.popleft(), now)

    def settle(self, in_flight: dict[Future[Attempt], Any], timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for sends to finish and record their answers; how many."""
        if not in_flight:
            return 0
        done, _ = wait(in_flight, timeout=timeout_s, return_when=FIRST_COMPLETED)
        for future in done:
            d, sub = in_flight.pop(future)
            self._record(d, sub, future.result())
        return len(done)

    def _record(self, d: Delivery, sub: Subscriber, attempt: Attempt) -> None:
        ws = self.settings.webhooks
        now = self.clock()
        if attempt.ok:
            self.outbox.delivered(d, now)
            self.stats.delivered += 1
            self._m_out.labels("delivered").inc()
            return
        n = d.attempts + 1
        if attempt.gone:
            reason = f"{sub.url} answered 410 Gone"
            self.outbox.disable(sub.id, reason)
            self._subscribers_at = 0.0
            log.warning("webhook subscriber %s disabled: %s", sub.id, reason)
        if attempt.gone or n >= ws.max_attempts:
            self.outbox.dead(d, attempt.error, now)
            self.stats.dead += 1
            self._m_out.labels("dead").inc()
            log.warning("webhook %s to %s dead after %d attempts: %s", d.message.id, sub.id, n,
                        attempt.error)
            return
        wait = backoff_s(n, ws, self._rnd)
        if attempt.retry_after_s is not None:
            wait = min(max(wait, attempt.retry_after_s), ws.backoff_max_s)
        self.outbox.retry(d, now + timedelta(seconds=wait), attempt.error)
        self.stats.retried += 1
        self._m_out.labels("retried").inc()

    def deliver_forever(self, stop: StopSignal, poll_s: float = 0.25) -> None:
        """Deliver until ``stop`` is set (the deliverer thread's body); sends under way when
        it is set are finished and recorded."""
        last_prune = 0.0
        in_flight: dict[Future[Attempt], Any] = {}
        with ThreadPoolExecutor(self.settings.webhooks.concurrency,
                                thread_name_prefix="webhook") as pool:
            while not stop.is_set():
                try:
                    started = self.deliver_due(pool, in_flight)
                    if time.monotonic() - last_prune > PRUNE_EVERY_S:
                        self.outbox.prune(self.clock() - RETENTION)
                        last_prune = time.monotonic()
                    if in_flight:
                        # Until one finishes (a slot frees), or briefly when more are due.
                        self.settle(in_flight, 0.0 if started else poll_s / 5)
                        continue
                except Exception:  # keep delivering; the outbox still holds everything
                    log.exception("webhook delivery round failed")
                    started = 0
                if not started:
                    self._wake.wait(poll_s)
                    self._wake.clear()
            while in_flight:
                self.settle(in_flight, self.settings.webhooks.timeout_s)
            self.release_backlog()

    # -- service ----------------------------------------------------------------------------

    def run(self, stop: StopSignal | None = None, idle_timeout: float | None = None) -> None:
        """Consume alerts and deliver until stopped (SIGTERM/SIGINT)."""
        from refluent.streams.deadletter import DeadLetterRouter
        from refluent.streams.kafka import ConsumerLoop, Producer, StopSignal

        stop = stop or StopSignal()
        producer = Producer(self.settings.kafka, self.bootstrap_servers)
        router = DeadLetterRouter(producer)
        loop = ConsumerLoop(self.settings.kafka, self.bootstrap_servers,
                            self.settings.webhooks.group, [self.alerts_topic],
                            **self.settings.kafka.short_fetch_wait(FETCH_WAIT_MS))

        def handle(batch: list[Message]) -> None:
            def reject(i: int, error: Exception) -> None:
                router.route(batch[i], "decode", error)
                self.stats.dead_lettered_alerts += 1

            self.intake([(m.key(), m.value()) for m in batch], reject)
            producer.flush()  # dead letters are durable before the offsets are committed

        deliverer = threading.Thread(target=self.deliver_forever, args=(stop,),
                                     name="webhook-deliverer", daemon=True)
        deliverer.start()
        try:
            # drain: an alert is taken as soon as it arrives, not after a poll's full wait.
            loop.run(handle, stop=stop, idle_timeout=idle_timeout, drain=True)
        finally:
            stop.set()
            self._wake.set()
            deliverer.join(30)
            producer.close()
            self.sender.close()


__all__ = ["DispatchStats", "WebhookDispatcher", "all_subscribers", "settings_subscribers"]
