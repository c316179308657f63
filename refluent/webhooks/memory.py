"""The webhook outbox in this process: the same rules as the Redis one, nothing durable.

For tests and for users who try subscribers and receivers out without a Redis; a dispatcher on
it loses its pending deliveries when the process ends. Thread-safe (one lock), since the
dispatcher's intake and deliverer run on two threads.

Examples:
    >>> from datetime import UTC, datetime
    >>> from refluent.webhooks.events import message
    >>> now = datetime(2026, 5, 1, tzinfo=UTC)
    >>> box = MemoryOutbox()
    >>> msg = message("a1", "drift.detected", now, {"model_name": "churn"})
    >>> box.enqueue(msg, ["wh_1", "wh_2"], now), box.enqueue(msg, ["wh_1"], now)
    (2, 0)
    >>> [d.subscriber_id for d in box.claim(now, 10, lease_s=60)]
    ['wh_1', 'wh_2']
    >>> box.claim(now, 10, lease_s=60)  # leased
    []
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from refluent.webhooks.base import DeadLetter, Delivery, Outbox, Subscriber
from refluent.webhooks.events import WebhookMessage

_Key = tuple[str, str]
"""(subscriber id, message id)."""


class MemoryOutbox(Outbox):
    """The outbox in memory (see the module)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, Subscriber] = {}
        self._disabled: dict[str, str] = {}
        self._msgs: dict[str, tuple[WebhookMessage, datetime]] = {}
        self._due: dict[_Key, datetime] = {}
        self._attempts: dict[_Key, int] = {}
        self._done: dict[_Key, datetime] = {}
        self._dead: dict[_Key, DeadLetter] = {}

    # -- subscribers ------------------------------------------------------------------------

    def put_subscriber(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subs[subscriber.id] = replace(subscriber, origin="cli", disabled=None)

    def remove_subscriber(self, subscriber_id: str) -> bool:
        with self._lock:
            removed = self._subs.pop(subscriber_id, None) is not None
            self._disabled.pop(subscriber_id, None)
            for table in (self._due, self._attempts, self._dead):
                for key in [k for k in table if k[0] == subscriber_id]:
                    del table[key]
            return removed

    def stored_subscribers(self) -> list[Subscriber]:
        with self._lock:
            return [replace(s, disabled=self._disabled.get(s.id))
                    for _, s in sorted(self._subs.items())]

    def disable(self, subscriber_id: str, reason: str) -> None:
        with self._lock:
            self._disabled[subscriber_id] = reason

    def disabled(self) -> dict[str, str]:
        with self._lock:
            return dict(self._disabled)

    def enable(self, subscriber_id: str) -> bool:
        with self._lock:
            return self._disabled.pop(subscriber_id, None) is not None

    # -- deliveries -------------------------------------------------------------------------

    def enqueue(self, message: WebhookMessage, subscriber_ids: Sequence[str], now: datetime
                ) -> int:
        with self._lock:
            self._msgs.setdefault(message.id, (message, now))
            added = 0
            for sid in subscriber_ids:
                key = (sid, message.id)
                if key in self._due or key in self._done or key in self._dead:
                    continue
                self._due[key] = now
                added += 1
            return added

    def claim(self, now: datetime, limit: int, lease_s: float) -> list[Delivery]:
        with self._lock:
            due = sorted((at, key) for key, at in self._due.items() if at <= now)[:limit]
            out = []
            for _, key in due:
                got = self._msgs.get(key[1])
                if got is None:  # pruned under it: nothing left to send
                    del self._due[key]
                    continue
                self._due[key] = now + timedelta(seconds=lease_s)
                out.append(Delivery(key[0], got[0], self._attempts.get(key, 0)))
            return out

    def delivered(self, delivery: Delivery, now: datetime) -> None:
        key = (delivery.subscriber_id, delivery.message.id)
        with self._lock:
            self._due.pop(key, None)
            self._attempts.pop(key, None)
            self._done[key] = now

    def retry(self, delivery: Delivery, at: datetime, error: str) -> None:
        key = (delivery.subscriber_id, delivery.message.id)
        with self._lock:
            if key in self._due:  # a delivery removed meanwhile stays removed
                self._due[key] = at
                self._attempts[key] = delivery.attempts + 1

    def release(self, delivery: Delivery, at: datetime) -> None:
        key = (delivery.subscriber_id, delivery.message.id)
        with self._lock:
            if key in self._due:
                self._due[key] = at

    def dead(self, delivery: Delivery, error: str, now: datetime) -> None:
        key = (delivery.subscriber_id, delivery.message.id)
        with self._lock:
            self._due.pop(key, None)
            self._attempts.pop(key, None)
            self._dead[key] = DeadLetter(key[0], key[1], delivery.message.type,
                                         delivery.attempts + 1, error, now)

    def dead_letters(self, subscriber_id: str | None = None) -> list[DeadLetter]:
        with self._lock:
            return [d for key, d in sorted(self._dead.items())
                    if subscriber_id is None or key[0] == subscriber_id]

    def replay(self, now: datetime, subscriber_id: str | None = None,
               message_ids: Iterable[str] | None = None) -> int:
        wanted = None if message_ids is None else set(message_ids)
        with self._lock:
            keys = [k for k in self._dead if (subscriber_id is None or k[0] == subscriber_id)
                    and (wanted is None or k[1] in wanted)]
            for key in keys:
                del self._dead[key]
                self._due[key] = now
            return len(keys)

    def pending(self, subscriber_id: str | None = None) -> int:
        with self._lock:
            return sum(1 for k in self._due if subscriber_id is None or k[0] == subscriber_id)

    def prune(self, before: datetime) -> int:
        with self._lock:
            for key in [k for k, at in self._done.items() if at <= before]:
                del self._done[key]
            referenced = {k[1] for k in (*self._due, *self._dead, *self._done)}
            old = [mid for mid, (_, stored) in self._msgs.items()
                   if mid not in referenced and stored < before]
            for mid in old:
                del self._msgs[mid]
            return len(old)


__all__ = ["MemoryOutbox"]
