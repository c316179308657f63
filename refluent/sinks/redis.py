"""The online feature store on Redis: one hash per feature view and entity.

Layout (shared with :mod:`refluent.serving.online`, which reads it):

- key ``{prefix}:{view}:{entity_id}`` (see :func:`online_key`). Every command touches one key, so
  the layout works unchanged on Redis Cluster.
- one hash field per feature holding its orjson-encoded value, plus the meta fields ``__et``
  (event time, ms since the epoch), ``__seq`` (sequence, the tie-breaker after event time),
  ``__wt`` (write time, ms) and, for a deleted entity, ``__del`` = ``1``.
- the key expires after its view's TTL, counted from the last applied update.

Writes go through a Lua script that applies an update only when its ``(event_time, sequence)`` is
strictly newer than the stored one, so replays after a crash are no-ops and an older event never
overwrites a newer one, whatever order the updates arrive in. A deletion leaves a tombstone (meta
fields and ``__del``) that expires like a row, so an older create arriving later cannot bring the
row back.

Reads and writes go through redis-py with the hiredis reply parser (the ``redis`` extra installs
both): redis-py owns URLs, TLS, AUTH, database selection, the connection pool, fork safety,
retries and loading the upsert script; hiredis parses replies in C, which keeps a pipelined
batch or a single HMGET far inside the serving latency budget.

Examples:
    >>> online_key("rf", "customer_stats", "42")
    'rf:customer_stats:42'
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from pydantic import SecretStr

from refluent.errors import require
from refluent.observability.metrics import (
    FEATURE_FRESHNESS,
    ONLINE_UPDATES_APPLIED,
    ONLINE_UPDATES_STALE,
)
from refluent.sinks.base import Sink, SinkRecord
from refluent.sinks.errors import SinkError
from refluent.streams.contracts import FeatureUpdate

if TYPE_CHECKING:
    from redis import Redis
    from redis.commands.core import Script

    from refluent.config import Settings

EVENT_TIME_FIELD = "__et"
"""Hash field holding the event time of the stored values (ms since the epoch)."""
SEQUENCE_FIELD = "__seq"
"""Hash field holding the sequence of the stored update (tie-breaker after event time)."""
WRITE_TIME_FIELD = "__wt"
"""Hash field holding when the stored update was written (ms since the epoch)."""
DELETED_FIELD = "__del"
"""Hash field present (``1``) when the entity was deleted: the hash is a tombstone."""
META_FIELDS = frozenset({EVENT_TIME_FIELD, SEQUENCE_FIELD, WRITE_TIME_FIELD, DELETED_FIELD})
"""Every meta field; feature names may not start with ``__``."""

DEFAULT_TTL = timedelta(days=7)
"""TTL of views the store has no TTL for, unless told otherwise."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

# KEYS[1]: the entity's hash. ARGV: event time ms, sequence, write time ms, TTL ms (0: none),
# deleted (1/0), then feature field/value pairs. Returns 1 when applied, 0 when not newer.
UPSERT_SCRIPT = """
local cur = redis.call('HMGET', KEYS[1], '__et', '__seq')
local et = tonumber(ARGV[1])
local seq = tonumber(ARGV[2])
local cur_et = tonumber(cur[1])
if cur_et then
  local cur_seq = tonumber(cur[2]) or 0
  if et < cur_et or (et == cur_et and seq <= cur_seq) then
    return 0
  end
end
-- An update carries every value of its view: start from an empty hash so features absent
-- from it disappear.
redis.call('DEL', KEYS[1])
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], '__et', ARGV[1], '__seq', ARGV[2], '__wt', ARGV[3], '__del', '1')
else
  redis.call('HSET', KEYS[1], '__et', ARGV[1], '__seq', ARGV[2], '__wt', ARGV[3])
  local n = #ARGV
  local i = 6
  -- unpack() is bounded by the Lua stack: set wide views 500 fields at a time.
  while i <= n do
    local j = math.min(i + 999, n)
    redis.call('HSET', KEYS[1], unpack(ARGV, i, j))
    i = j + 1
  end
end
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
"""


def view_key_prefix(prefix: str, view: str) -> str:
    """The part of every key of ``view`` before the entity id: ``{prefix}:{view}:``.

    Raises:
        ValueError: ``view`` is empty or contains ``:`` (keys of two views could collide).

    Examples:
        >>> view_key_prefix("rf", "orders_1h")
        'rf:orders_1h:'
        >>> view_key_prefix("", "orders_1h")
        'orders_1h:'
    """
    if not view or ":" in view:
        raise ValueError(f"feature view name {view!r} must be non-empty and free of ':'")
    return f"{prefix}:{view}:" if prefix else f"{view}:"


def online_key(prefix: str, view: str, entity_id: str) -> str:
    """The Redis key of ``entity_id``'s values in ``view``.

    Examples:
        >>> online_key("rf", "orders_1h", "c:7")
        'rf:orders_1h:c:7'
    """
    return view_key_prefix(prefix, view) + entity_id


def to_epoch_ms(ts: datetime) -> int:
    """Milliseconds since the epoch of the aware timestamp ``ts`` (floored, exact).

    Examples:
        >>> to_epoch_ms(datetime(1970, 1, 1, 0, 0, 1, 999, tzinfo=UTC))
        1000
    """
    return (ts - _EPOCH) // _MS


def from_epoch_ms(ms: int) -> datetime:
    """The UTC timestamp ``ms`` milliseconds after the epoch (exact, no float rounding).

    Examples:
        >>> from_epoch_ms(1_700_000_000_123).isoformat()
        '2023-11-14T22:13:20.123000+00:00'
    """
    return _EPOCH + timedelta(milliseconds=ms)


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit for messages.

    Examples:
        >>> safe_url("redis://:s3cret@db:6379/0")
        'redis://:***@db:6379/0'
    """
    parts = urlsplit(url)
    if parts.password:
        host = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    return url


def connect(
    url: str,
    password: SecretStr | None = None,
    socket_timeout: float = 5.0,
    retries: int = 3,
    *,
    retry_timeouts: bool = True,
    backoff: bool = True,
) -> Redis:
    """A redis-py client for ``url`` (bytes responses, connection pool, no round trip yet).

    Args:
        url: Any URL ``redis.Redis.from_url`` accepts: ``redis://``, ``rediss://`` (TLS) or
            ``unix://``, with credentials, database and options such as ``ssl_cert_reqs``.
        password: Password when it is not in the URL.
        socket_timeout: Seconds a connect or a command may take.
        retries: Retries of a command after a connection error (and a timeout, unless
            ``retry_timeouts`` is False) on a fresh connection.
        retry_timeouts: Whether a timeout is retried too.
        backoff: Wait between retries (exponential with jitter from 10 ms, at most 1 s apart);
            False retries at once.

    Raises:
        MissingExtraError: redis-py is not installed.
        ValueError: redis-py does not accept ``url``.
    """
    redis = require("redis", "redis")
    from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from redis.retry import Retry

    errors: tuple[type[Exception], ...] = (RedisConnectionError,)
    if retry_timeouts:
        errors += (RedisTimeoutError, TimeoutError)
    policy = ExponentialWithJitterBackoff(base=0.01, cap=1.0) if backoff else NoBackoff()
    kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "retry": Retry(policy, retries, supported_errors=errors),
    }
    if password is not None:
        kwargs["password"] = password.get_secret_value()
    client: Redis = redis.Redis.from_url(url, **kwargs)  # type: ignore[attr-defined]
    return client


class RedisOnlineStore(Sink[FeatureUpdate]):
    """Writes :class:`~refluent.streams.contracts.FeatureUpdate` records to Redis hashes.

    Each :meth:`write` sends the whole batch in one non-transactional redis-py pipeline of
    EVALSHA calls and returns once Redis has answered, so :meth:`flush` has nothing left to do.
    Every update is applied atomically on its own key, newer-wins by ``(event_time, sequence)``:
    the store is idempotent under the at-least-once replay of the consumer loop. Tombstone
    records (value None) are skipped; deletions arrive as updates with ``deleted=True``.

    For each applied update the freshness (write time minus event time) is observed in
    ``refluent_feature_freshness_seconds``; applied and not-newer updates are counted per view.

    Args:
        url: Redis URL (see :func:`connect`).
        ttls: TTL per feature view, counted from each entity's last applied update.
        default_ttl: TTL of views missing from ``ttls``; None keeps their keys forever.
        password: Password when it is not in the URL; never logged.
        key_prefix: Prefix of every key (see :func:`online_key`).
        name: Name of the sink in errors and metrics.
        socket_timeout: Seconds a connect or a command may take.
        retries: Retries after a connection error or timeout before a write fails.

    Examples:
        >>> store = RedisOnlineStore("redis://127.0.0.1:6379/0",
        ...                          ttls={"orders_1h": timedelta(hours=2)})
        >>> store.key("orders_1h", "c7"), store.ttl_ms("orders_1h"), store.ttl_ms("other")
        ('rf:orders_1h:c7', 7200000, 604800000)
    """

    name = "redis-online"

    def __init__(
        self,
        url: str,
        ttls: Mapping[str, timedelta] | None = None,
        *,
        default_ttl: timedelta | None = DEFAULT_TTL,
        password: SecretStr | None = None,
        key_prefix: str = "rf",
        name: str | None = None,
        socket_timeout: float = 5.0,
        retries: int = 3,
    ) -> None:
        self.url = url
        self.ttls = dict(ttls or {})
        for view, ttl in self.ttls.items():
            if ttl <= timedelta(0):
                raise ValueError(f"TTL of feature view {view!r} must be positive, got {ttl}")
        if default_ttl is not None and default_ttl <= timedelta(0):
            raise ValueError(f"default TTL must be positive or None, got {default_ttl}")
        self.default_ttl = default_ttl
        self.password = password
        self.key_prefix = key_prefix
        if name is not None:
            self.name = name
        self.socket_timeout = socket_timeout
        self.retries = retries
        self._client: Redis | None = None
        self._script: Script | None = None
        self._errors: type[Exception] = Exception
        self._noscript: type[Exception] = Exception
        # Per view: key prefix, TTL argument and metric children (label lookups are slow).
        self._views: dict[str, tuple[str, bytes, Any, Any, Any]] = {}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        ttls: Mapping[str, timedelta] | None = None,
        *,
        default_ttl: timedelta | None = DEFAULT_TTL,
    ) -> RedisOnlineStore:
        """A store on the configured Redis (``redis.url``, else the embedded one)."""
        from refluent.embedded.services import resolve_redis_url

        return cls(
            resolve_redis_url(settings), ttls, default_ttl=default_ttl,
            password=settings.redis.password, key_prefix=settings.redis.key_prefix,
        )

    # -- layout -----------------------------------------------------------------------------

    def key(self, view: str, entity_id: str) -> str:
        """The key holding ``entity_id``'s values in ``view``."""
        return online_key(self.key_prefix, view, entity_id)

    def ttl_ms(self, view: str) -> int:
        """TTL of ``view``'s keys in milliseconds (0: no expiry)."""
        ttl = self.ttls.get(view, self.default_ttl)
        return 0 if ttl is None else max(1, ttl // _MS)

    def _view(self, view: str) -> tuple[str, bytes, Any, Any, Any]:
        cached = self._views.get(view)
        if cached is None:
            cached = (
                view_key_prefix(self.key_prefix, view),
                b"%d" % self.ttl_ms(view),
                FEATURE_FRESHNESS.labels(view),
                ONLINE_UPDATES_APPLIED.labels(view),
                ONLINE_UPDATES_STALE.labels(view),
            )
            self._views[view] = cached
        return cached

    # -- lifecycle --------------------------------------------------------------------------

    def setup(self) -> None:
        """Open the client and load the upsert script.

        Raises:
            SinkError: Redis does not answer or refuses the script.
            MissingExtraError: redis-py is not installed.
        """
        client = connect(self.url, self.password, self.socket_timeout, self.retries)
        from redis.exceptions import NoScriptError, RedisError

        try:
            client.script_load(UPSERT_SCRIPT)
        except RedisError as exc:
            client.close()
            raise SinkError(
                self.name, f"cannot load the upsert script into {safe_url(self.url)}: {exc}"
            ) from exc
        self._errors = RedisError
        self._noscript = NoScriptError
        self._client = client
        self._script = client.register_script(UPSERT_SCRIPT)

    def flush(self) -> None:
        """Nothing to do: :meth:`write` returns only once Redis has applied the batch."""

    def close(self) -> None:
        """Release the client's connections (writes are synchronous: nothing is pending)."""
        if self._client is not None:
            self._client.close()
            self._client = None
            self._script = None

    # -- writing ----------------------------------------------------------------------------

    def write(self, batch: list[SinkRecord[FeatureUpdate]]) -> None:
        """Apply ``batch`` in one pipeline; returns when Redis has answered every update.

        A connection error or timeout resends the whole batch (up to ``retries`` times, which
        the newer-wins script makes safe; updates applied by the failed attempt are then
        counted as stale).

        Raises:
            SinkError: Redis could not be reached or refused an update; names the key. Nothing
                is committed, and replaying the batch is safe.
        """
        if self._client is None:
            raise SinkError(self.name, "write() before setup()")
        write_ms = time.time_ns() // 1_000_000
        wt = b"%d" % write_ms
        keys: list[str] = []
        argvs: list[list[bytes]] = []
        lags: list[tuple[int, str]] = []
        for record in batch:
            update = record.value
            if update is None:
                continue
            view = update.view
            prefix, ttl, *_ = self._views.get(view) or self._view(view)
            key = prefix + update.entity_id
            et_ms = (update.event_time - _EPOCH) // _MS
            argv = [b"%d" % et_ms, b"%d" % update.sequence, wt, ttl]
            if update.deleted:
                argv.append(b"1")
            else:
                argv.append(b"0")
                for field, value in update.values.items():
                    if field.startswith("__"):
                        raise SinkError(
                            self.name,
                            f"feature {field!r} of view {view!r} (key {key}): names starting "
                            "with '__' are reserved for the store's meta fields",
                        )
                    argv.append(field.encode())
                    argv.append(orjson.dumps(value))
            keys.append(key)
            argvs.append(argv)
            lags.append((write_ms - et_ms, view))
        if not keys:
            return
        results = self._run(keys, argvs)
        views = self._views
        for (lag_ms, view), applied in zip(lags, results, strict=True):
            _, _, freshness, applied_count, stale_count = views[view]
            if applied:
                applied_count.inc()
                freshness.observe(lag_ms / 1000)
            else:
                stale_count.inc()

    def _run(self, keys: list[str], argvs: list[list[bytes]]) -> list[bool]:
        """Run the upsert script for every key in one pipeline; True for each update applied.

        redis-py's script object checks that Redis holds the script before the pipeline is sent
        and loads it when not. Should Redis lose it between that check and the pipeline
        (failover, ``SCRIPT FLUSH``), the commands that met NOSCRIPT were not run: they are sent
        once more, which loads the script again.
        """
        assert self._client is not None and self._script is not None  # noqa: S101 - write()
        script = self._script
        results = [False] * len(keys)
        todo = list(range(len(keys)))
        for attempt in range(2):
            with self._client.pipeline(transaction=False) as pipe:
                for i in todo:
                    script(keys=[keys[i]], args=argvs[i], client=pipe)
                try:
                    answers = pipe.execute(raise_on_error=False)
                except self._errors as exc:
                    raise SinkError(
                        self.name,
                        f"writing {len(todo)} update(s) to {safe_url(self.url)} failed at key "
                        f"{keys[todo[0]]}: {exc}",
                    ) from exc
            missing: list[int] = []
            for i, answer in zip(todo, answers, strict=True):
                if isinstance(answer, self._noscript) and attempt == 0:
                    missing.append(i)
                elif isinstance(answer, Exception):
                    raise SinkError(
                        self.name, f"key {keys[i]} in {safe_url(self.url)}: {answer}"
                    ) from answer
                else:
                    results[i] = answer == 1
            if not missing:
                break
            todo = missing
        return results
