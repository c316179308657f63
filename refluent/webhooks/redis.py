"""The webhook outbox on Redis.

Keys, under ``{prefix}:wh:``:

- ``subs`` (hash): subscriber id -> JSON (url, events, secret); ``disabled`` (hash): id -> why;
- ``msgs`` (hash): message id -> the message (id, type, timestamp, body, when stored);
- ``due`` (sorted set): ``{subscriber}|{message}`` -> when it is due (epoch ms). A claim moves
  the score to the end of the lease, so a dispatcher that dies leaves it due again then;
- ``attempts`` and ``errors`` (hashes): per pending delivery, attempts so far and the last error;
- ``done`` (sorted set): delivered deliveries -> when (so a replayed alert is not re-enqueued;
  pruned after a retention time);
- ``dead`` (hash): dead letters -> JSON (attempts, error, when).

Enqueue and claim are Lua scripts, so each is atomic against other dispatchers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import SecretStr

from refluent.online_store.redis import connect
from refluent.webhooks.base import DeadLetter, Delivery, Outbox, Subscriber
from refluent.webhooks.events import WebhookMessage

if TYPE_CHECKING:
    from refluent.config import Settings

SEP = "|"

_ENQUEUE = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
local added = 0
for i = 4, #ARGV do
  local m = ARGV[i] .. '|' .. ARGV[1]
  if not redis.call('ZSCORE', KEYS[3], m) and redis.call('HEXISTS', KEYS[4], m) == 0 then
    added = added + redis.call('ZADD', KEYS[2], 'NX', ARGV[3], m)
  end
end
return added
"""

_CLAIM = """
local ms = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, m in ipairs(ms) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], m) end
return ms
"""


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _member(subscriber_id: str, message_id: str) -> str:
    return f"{subscriber_id}{SEP}{message_id}"


class RedisOutbox(Outbox):
    """The outbox in Redis (see the module for the layout).

    Args:
        url: Redis URL.
        password: Password when it is not in the URL.
        key_prefix: Prefix of every key (``redis.key_prefix``).
    """

    def __init__(self, url: str, password: SecretStr | None = None, key_prefix: str = "rf"
                 ) -> None:
        self._r: Any = connect(url, password)  # redis-py's stubs type replies loosely
        p = f"{key_prefix}:wh:"
        self._subs, self._disabled = p + "subs", p + "disabled"
        self._msgs, self._due, self._done, self._dead = p + "msgs", p + "due", p + "done", \
            p + "dead"
        self._attempts, self._errors = p + "attempts", p + "errors"
        self._enqueue = self._r.register_script(_ENQUEUE)
        self._claim = self._r.register_script(_CLAIM)

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisOutbox:
        """The outbox in the configured Redis (``redis.url``, else the embedded one)."""
        from refluent.embedded.services import resolve_redis_url

        return cls(resolve_redis_url(settings), settings.redis.password,
                   settings.redis.key_prefix)

    def close(self) -> None:
        self._r.close()

    # -- subscribers ------------------------------------------------------------------------

    def put_subscriber(self, subscriber: Subscriber) -> None:
        self._r.hset(self._subs, subscriber.id, orjson.dumps(
            {"url": subscriber.url, "events": list(subscriber.events),
             "secret": subscriber.secret}))

    def remove_subscriber(self, subscriber_id: str) -> bool:
        removed = bool(self._r.hdel(self._subs, subscriber_id))
        prefix = subscriber_id + SEP
        members = [m for m in self._members(self._due) + self._dead_members()
                   if m.startswith(prefix)]
        pipe = self._r.pipeline()
        pipe.hdel(self._disabled, subscriber_id)
        if members:
            pipe.zrem(self._due, *members).hdel(self._dead, *members)
            pipe.hdel(self._attempts, *members).hdel(self._errors, *members)
        pipe.execute()
        return removed

    def stored_subscribers(self) -> list[Subscriber]:
        disabled = self.disabled()
        out = []
        for sid, raw in sorted(self._r.hgetall(self._subs).items()):
            d = orjson.loads(raw)
            sid = sid.decode()
            out.append(Subscriber(sid, d["url"], tuple(d["events"]), d["secret"], "cli",
                                  disabled.get(sid)))
        return out

    def disable(self, subscriber_id: str, reason: str) -> None:
        self._r.hset(self._disabled, subscriber_id, reason)

    def disabled(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self._r.hgetall(self._disabled).items()}

    def enable(self, subscriber_id: str) -> bool:
        return bool(self._r.hdel(self._disabled, subscriber_id))

    # -- deliveries -------------------------------------------------------------------------

    def enqueue(self, message: WebhookMessage, subscriber_ids: Sequence[str], now: datetime
                ) -> int:
        keys = [self._msgs, self._due, self._done, self._dead]
        stored = message.to_json(stored_at=_ms(now))
        return int(self._enqueue(keys=keys, args=[message.id, stored, _ms(now),
                                                  *subscriber_ids]))

    def claim(self, now: datetime, limit: int, lease_s: float) -> list[Delivery]:
        members = [m.decode() for m in self._claim(
            keys=[self._due], args=[_ms(now), _ms(now) + int(lease_s * 1000), limit])]
        if not members:
            return []
        split = [m.split(SEP, 1) for m in members]
        pipe = self._r.pipeline(transaction=False)
        pipe.hmget(self._msgs, [mid for _, mid in split])
        pipe.hmget(self._attempts, members)
        raw_msgs, attempts = pipe.execute()
        out = []
        for (sid, mid), raw, n in zip(split, raw_msgs, attempts, strict=True):
            if raw is None:  # pruned under it: nothing left to send
                self._r.zrem(self._due, _member(sid, mid))
                continue
            out.append(Delivery(sid, WebhookMessage.from_json(raw), int(n or 0)))
        return out

    def delivered(self, delivery: Delivery, now: datetime) -> None:
        m = _member(delivery.subscriber_id, delivery.message.id)
        pipe = self._r.pipeline()
        pipe.zrem(self._due, m).zadd(self._done, {m: _ms(now)})
        pipe.hdel(self._attempts, m).hdel(self._errors, m)
        pipe.execute()

    def retry(self, delivery: Delivery, at: datetime, error: str) -> None:
        m = _member(delivery.subscriber_id, delivery.message.id)
        pipe = self._r.pipeline()
        pipe.zadd(self._due, {m: _ms(at)}, xx=True)
        pipe.hset(self._attempts, m, delivery.attempts + 1).hset(self._errors, m, error)
        pipe.execute()

    def release(self, delivery: Delivery, at: datetime) -> None:
        m = _member(delivery.subscriber_id, delivery.message.id)
        self._r.zadd(self._due, {m: _ms(at)}, xx=True)

    def dead(self, delivery: Delivery, error: str, now: datetime) -> None:
        m = _member(delivery.subscriber_id, delivery.message.id)
        pipe = self._r.pipeline()
        pipe.zrem(self._due, m)
        pipe.hset(self._dead, m, orjson.dumps({"attempts": delivery.attempts + 1,
                                               "error": error, "at": _ms(now),
                                               "type": delivery.message.type}))
        pipe.hdel(self._attempts, m).hdel(self._errors, m)
        pipe.execute()

    def dead_letters(self, subscriber_id: str | None = None) -> list[DeadLetter]:
        out = []
        for m, raw in sorted(self._r.hgetall(self._dead).items()):
            sid, mid = m.decode().split(SEP, 1)
            if subscriber_id is not None and sid != subscriber_id:
                continue
            d = orjson.loads(raw)
            out.append(DeadLetter(sid, mid, d["type"], d["attempts"], d["error"],
                                  datetime.fromtimestamp(d["at"] / 1000, UTC)))
        return out

    def replay(self, now: datetime, subscriber_id: str | None = None,
               message_ids: Iterable[str] | None = None) -> int:
        wanted = None if message_ids is None else set(message_ids)
        members = []
        for m in self._dead_members():
            sid, mid = m.split(SEP, 1)
            if (subscriber_id is None or sid == subscriber_id) and (wanted is None
                                                                    or mid in wanted):
                members.append(m)
        if not members:
            return 0
        pipe = self._r.pipeline()
        pipe.zadd(self._due, dict.fromkeys(members, _ms(now)))
        pipe.hdel(self._dead, *members)
        pipe.execute()
        return len(members)

    def pending(self, subscriber_id: str | None = None) -> int:
        if subscriber_id is None:
            return int(self._r.zcard(self._due))
        return sum(1 for m in self._members(self._due) if m.startswith(subscriber_id + SEP))

    def prune(self, before: datetime) -> int:
        cutoff = _ms(before)
        self._r.zremrangebyscore(self._done, "-inf", cutoff)
        referenced = {m.split(SEP, 1)[1] for m in
                      self._members(self._due) + self._dead_members() + self._members(self._done)}
        old = [mid.decode() for mid, raw in self._r.hscan_iter(self._msgs)
               if mid.decode() not in referenced
               and int(orjson.loads(raw).get("stored_at", 0)) < cutoff]
        if old:
            self._r.hdel(self._msgs, *old)
        return len(old)

    # -- helpers ----------------------------------------------------------------------------

    def _members(self, zset: str) -> list[str]:
        return [m.decode() for m in self._r.zrange(zset, 0, -1)]

    def _dead_members(self) -> list[str]:
        return [m.decode() for m in self._r.hkeys(self._dead)]

    def clear(self) -> None:
        """Delete every key of the outbox (tests, demo resets)."""
        self._r.delete(self._subs, self._disabled, self._msgs, self._due, self._done,
                       self._dead, self._attempts, self._errors)


__all__ = ["RedisOutbox"]
