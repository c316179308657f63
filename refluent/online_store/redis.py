"""The online store on Redis: one hash per feature view and entity, read and written here.

Layout and semantics: :mod:`refluent.online_store.base` (key ``{prefix}:{view}:{entity_id}``,
one field per feature plus the meta fields, newer-wins by ``(event_time, sequence)``,
tombstones, a TTL per view counted from the last applied update).

Writes (:class:`RedisOnlineWriter`) go through a Lua script that applies an update only when it
is strictly newer than the stored one; a batch is one EVALSHA call whose argument is the whole
batch as MessagePack (as the feedback join writes its state), applied in order, each update
atomically with the rest of the batch. One call instead of one command per update spares the
client the packing of a command per update (most of its time) and Redis the parsing of them.
The script names its keys itself, so it is for a single Redis (or one shard), as the feedback
join's are.

Reads (:class:`RedisOnlineReader`) fetch any number of entities of one feature view in a single
round trip (``HMGET`` of the requested features plus the meta fields, or ``HGETALL`` for every
feature; one command per entity, pipelined when there are several) and return each entity's
values with their event time and age. Field lists are prepared once per (view, features), so a
call only adds the keys, and feature values are decoded with one orjson call per entity.

Both go through redis-py with the hiredis reply parser (the ``redis`` extra installs both):
redis-py owns the URL (``redis://``, ``rediss://`` for TLS, ``unix://``; see :func:`connect`),
AUTH, database selection, the connection pool, fork safety, retries and loading the upsert
script; hiredis parses replies in C, which keeps a pipelined batch or a single HMGET far inside
the serving latency budget.

Thread safety: one reader may be shared between threads; each call borrows a connection from
redis-py's pool. A pooled connection the server dropped (restart, idle timeout) is replaced
before use, and a read cut off by a connection error is retried once on a fresh connection,
which is safe because reads have no side effects. A timeout is not retried: the caller's
latency budget is already spent.

Examples:
    >>> reader = RedisOnlineReader("redis://127.0.0.1:6379/0")
    >>> reader.setup()  # doctest: +SKIP
    >>> rows = reader.get_online_features("orders_1h", ["c1", "c2"], ["n", "sum"])  # doctest: +SKIP
    >>> rows[0].values, rows[0].age, rows[1].found  # doctest: +SKIP
    ({'n': 3, 'sum': 41.5}, datetime.timedelta(seconds=2, microseconds=250000), False)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import SecretStr

from refluent.config import safe_url
from refluent.errors import require
from refluent.observability.metrics import (
    FEATURE_FRESHNESS,
    ONLINE_UPDATES_APPLIED,
    ONLINE_UPDATES_STALE,
)
from refluent.online_store.base import (
    DEFAULT_TTL,
    DELETED_FIELD,
    EVENT_TIME_FIELD,
    META_FIELDS,
    RESERVED_PREFIX,
    OnlineFeatures,
    OnlineStoreReader,
    OnlineStoreWriter,
    online_key,
    view_key_prefix,
)
from refluent.online_store.errors import OnlineStoreError, ReservedFeatureNameError
from refluent.streams.contracts import FeatureUpdate

if TYPE_CHECKING:
    from redis import Redis
    from redis.commands.core import Script

    from refluent.config import Settings

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_MAX_PLANS = 1024
_META_BYTES = frozenset(f.encode() for f in META_FIELDS)
_EVENT_TIME_BYTES = EVENT_TIME_FIELD.encode()
_DELETED_BYTES = DELETED_FIELD.encode()


# ARGV[1]: write time ms. ARGV[2]: MessagePack list of updates, each [key, event time ms,
# sequence, TTL ms (0: none), deleted (1/0), [field, value, field, value, ...]], the numbers as
# decimal text (a Lua number would print 13-digit times in exponent form). Returns per update
# 1 when applied, 0 when not newer; a key Redis refuses (not a hash) fails the call, naming it.
UPSERT_SCRIPT = """
local wt = ARGV[1]
local batch = cmsgpack.unpack(ARGV[2])
local out = {}
for n, u in ipairs(batch) do
  local key, et_s, seq_s = u[1], u[2], u[3]
  local cur = redis.pcall('HMGET', key, '__et', '__seq')
  if cur['err'] then
    return redis.error_reply('key ' .. key .. ': ' .. cur['err'])
  end
  local et = tonumber(et_s)
  local seq = tonumber(seq_s)
  local cur_et = tonumber(cur[1])
  local newer = true
  if cur_et then
    local cur_seq = tonumber(cur[2]) or 0
    if et < cur_et or (et == cur_et and seq <= cur_seq) then
      newer = false
    end
  end
  if newer then
    -- An update carries every value of its view: start from an empty hash so features
    -- absent from it disappear.
    redis.call('DEL', key)
    if u[5] == '1' then
      redis.call('HSET', key, '__et', et_s, '__seq', seq_s, '__wt', wt, '__del', '1')
    else
      redis.call('HSET', key, '__et', et_s, '__seq', seq_s, '__wt', wt)
      local fields = u[6]
      local count = #fields
      local i = 1
      -- unpack() is bounded by the Lua stack: set wide views 500 fields at a time.
      while i <= count do
        local j = math.min(i + 999, count)
        redis.call('HSET', key, unpack(fields, i, j))
        i = j + 1
      end
    end
    local ttl = tonumber(u[4])
    if ttl > 0 then
      redis.call('PEXPIRE', key, ttl)
    end
    out[n] = 1
  else
    out[n] = 0
  end
end
return out
"""


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


def _reading(view: str, first_key: str, n: int) -> str:
    return f"reading view {view!r} ({n} key(s) from {first_key})"


def _describe(exc: Exception) -> str:
    # redis-py's exception repr leaves the message out.
    return f"{type(exc).__name__}: {exc}"


# (key prefix, feature names or None for HGETALL, HMGET fields: the names then the meta fields)
_Plan = tuple[str, list[str] | None, list[bytes]]


class RedisOnlineReader(OnlineStoreReader):
    """Reads feature values and their age from the online store.

    Lifecycle: the constructor makes the redis-py client without any round trip; ``setup()``
    checks that the store answers and accepts the credentials, so a service fails at start
    rather than on its first request (reads connect on demand either way); ``close()`` closes
    the pooled connections. Safe to share between threads.

    Args:
        url: Redis URL (see :func:`connect`).
        password: Password when it is not in the URL; never logged.
        key_prefix: Prefix of every key, as the writer used it.
        socket_timeout: Seconds a connect or a read may take before the call fails.

    Raises:
        MissingExtraError: redis-py is not installed.
        ValueError: redis-py does not accept ``url``.
    """

    def __init__(
        self,
        url: str,
        *,
        password: SecretStr | None = None,
        key_prefix: str = "rf",
        socket_timeout: float = 1.0,
    ) -> None:
        self.url = url
        self.key_prefix = key_prefix
        self.socket_timeout = socket_timeout
        self._store = safe_url(url)
        self._client = connect(url, password, socket_timeout, retries=1, retry_timeouts=False,
                               backoff=False)
        from redis.exceptions import AuthenticationError, RedisError, ResponseError

        self._errors: type[Exception] = RedisError
        self._error_reply: type[Exception] = ResponseError
        self._refused: tuple[type[Exception], ...] = (ResponseError, AuthenticationError)
        self._plans: dict[tuple[str, tuple[str, ...] | None], _Plan] = {}

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> RedisOnlineReader:
        """A reader of the configured Redis (``redis.url``, else the embedded one)."""
        from refluent.embedded.services import resolve_redis_url

        return cls(resolve_redis_url(settings), password=settings.redis.password,
                   key_prefix=settings.redis.key_prefix, **kwargs)

    # -- lifecycle --------------------------------------------------------------------------

    def setup(self) -> None:
        """Connect once (authenticating, selecting the database) and PING.

        Raises:
            OnlineStoreError: the store does not answer or refuses the credentials.
        """
        try:
            self._client.ping()
        except self._refused as exc:
            raise OnlineStoreError(self._store, f"setup: refused: {_describe(exc)}") from exc
        except self._errors as exc:
            raise OnlineStoreError(self._store, f"setup: PING failed: {_describe(exc)}") from exc

    def close(self) -> None:
        """Close the pooled connections (a later read opens new ones)."""
        self._client.close()

    # -- reading ----------------------------------------------------------------------------

    def key(self, view: str, entity_id: str) -> str:
        """The key holding ``entity_id``'s values in ``view``."""
        return view_key_prefix(self.key_prefix, view) + entity_id

    def _plan(self, view: str, features: tuple[str, ...] | None) -> _Plan:
        prefix = view_key_prefix(self.key_prefix, view)
        if features is None:
            plan: _Plan = (prefix, None, [])
        else:
            fields = [f.encode() for f in features] + [_EVENT_TIME_BYTES, _DELETED_BYTES]
            plan = (prefix, list(features), fields)
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()
        self._plans[(view, features)] = plan
        return plan

    def get_online_features(
        self,
        view: str,
        entity_ids: Sequence[str],
        features: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> list[OnlineFeatures]:
        """The values of ``features`` (all of them when None) of each entity in ``view``.

        One round trip whatever the number of entities. Results are in the order of
        ``entity_ids``; an unknown or expired entity comes back with ``found=False`` and no
        event time, a deleted one with ``found=False, deleted=True``.

        Args:
            view: Feature view name.
            entity_ids: Entities to read.
            features: Feature names to read; None reads every feature the store holds.
            now: Time the ages are measured at (aware); default the current time.

        Raises:
            OnlineStoreError: the store cannot be reached, refuses a read or holds a value that
                is not JSON; names the key.
            ValueError: a bad view name or a naive ``now``.
        """
        if isinstance(entity_ids, str):
            raise TypeError("entity_ids must be a sequence of ids, not one string")
        wanted = None if features is None else tuple(features)
        prefix, names, fields = self._plans.get((view, wanted)) or self._plan(view, wanted)
        if not entity_ids:
            return []
        if now is None:
            now = datetime.now(UTC)
        elif now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        replies = self._fetch(view, prefix, entity_ids, names is None, fields)
        pairs = zip(entity_ids, replies, strict=True)
        if names is None:
            return [self._from_hash(prefix, e, r, now) for e, r in pairs]
        return [self._from_fields(prefix, names, e, r, now) for e, r in pairs]

    def _fetch(self, view: str, prefix: str, entity_ids: Sequence[str], every: bool,
               fields: list[bytes]) -> list[Any]:
        """One reply per entity (an error reply as its exception), in one round trip."""
        client = self._client
        try:
            if len(entity_ids) == 1:
                # A lone command skips the pipeline object: 10-25 us less per call on loopback.
                key = prefix + entity_ids[0]
                try:
                    return [client.hgetall(key) if every else client.hmget(key, fields)]
                except self._error_reply as exc:
                    return [exc]
            with client.pipeline(transaction=False) as pipe:
                if every:
                    for entity_id in entity_ids:
                        pipe.hgetall(prefix + entity_id)
                else:
                    for entity_id in entity_ids:
                        pipe.hmget(prefix + entity_id, fields)
                return pipe.execute(raise_on_error=False)
        except self._errors as exc:
            what = _reading(view, prefix + entity_ids[0], len(entity_ids))
            raise OnlineStoreError(self._store, f"{what}: {_describe(exc)}") from exc

    def _from_fields(self, prefix: str, names: list[str], entity_id: str, reply: Any,
                     now: datetime) -> OnlineFeatures:
        if not isinstance(reply, list):
            raise OnlineStoreError(self._store, f"key {prefix + entity_id}: {reply}")
        n = len(names)
        et = reply[n]
        if et is None:
            return OnlineFeatures(entity_id, dict.fromkeys(names), None, None, False, False)
        event_time = _EPOCH + timedelta(milliseconds=int(et))
        if reply[n + 1] is not None:
            return OnlineFeatures(entity_id, dict.fromkeys(names), event_time, now - event_time,
                                  False, True)
        raw = [b"null" if v is None else v for v in reply[:n]]
        values = self._decode(prefix, entity_id, raw)
        return OnlineFeatures(entity_id, dict(zip(names, values, strict=True)), event_time,
                              now - event_time, True, False)

    def _from_hash(self, prefix: str, entity_id: str, reply: Any,
                   now: datetime) -> OnlineFeatures:
        if not isinstance(reply, dict):
            raise OnlineStoreError(self._store, f"key {prefix + entity_id}: {reply}")
        et = reply.get(_EVENT_TIME_BYTES)
        if et is None:
            return OnlineFeatures(entity_id, {}, None, None, False, False)
        event_time = _EPOCH + timedelta(milliseconds=int(et))
        if _DELETED_BYTES in reply:
            return OnlineFeatures(entity_id, {}, event_time, now - event_time, False, True)
        names: list[str] = []
        raw: list[bytes] = []
        for field, value in reply.items():
            if field not in _META_BYTES:
                names.append(field.decode())
                raw.append(value)
        values = self._decode(prefix, entity_id, raw)
        return OnlineFeatures(entity_id, dict(zip(names, values, strict=True)), event_time,
                              now - event_time, True, False)

    def _decode(self, prefix: str, entity_id: str, raw: list[bytes]) -> list[Any]:
        """The JSON values of one entity's fields, in one parse."""
        try:
            return list(orjson.loads(b"[%b]" % b",".join(raw)))
        except orjson.JSONDecodeError as exc:
            raise OnlineStoreError(
                self._store, f"key {prefix + entity_id} holds a value that is not JSON: {exc}"
            ) from exc


class RedisOnlineWriter(OnlineStoreWriter):
    """Writes :class:`~refluent.streams.contracts.FeatureUpdate` records to Redis hashes.

    Each :meth:`write` sends the whole batch in one non-transactional redis-py pipeline of
    EVALSHA calls and returns once Redis has answered. Every update is applied atomically on its
    own key, newer-wins by ``(event_time, sequence)``: the store is idempotent under the
    at-least-once replay of a consumer loop.

    For each applied update the freshness (write time minus event time) is observed in
    ``refluent_feature_freshness_seconds``; applied and not-newer updates are counted per view.

    Args:
        url: Redis URL (see :func:`connect`).
        ttls: TTL per feature view, counted from each entity's last applied update.
        default_ttl: TTL of views missing from ``ttls``; None keeps their keys forever.
        password: Password when it is not in the URL; never logged.
        key_prefix: Prefix of every key (see :func:`~refluent.online_store.base.online_key`).
        socket_timeout: Seconds a connect or a command may take.
        retries: Retries after a connection error or timeout before a write fails.

    Raises:
        ValueError: a TTL is not positive.

    Examples:
        >>> writer = RedisOnlineWriter("redis://127.0.0.1:6379/0",
        ...                            ttls={"orders_1h": timedelta(hours=2)})
        >>> writer.key("orders_1h", "c7"), writer.ttl_ms("orders_1h"), writer.ttl_ms("other")
        ('rf:orders_1h:c7', 7200000, 604800000)
    """

    def __init__(
        self,
        url: str,
        ttls: Mapping[str, timedelta] | None = None,
        *,
        default_ttl: timedelta | None = DEFAULT_TTL,
        password: SecretStr | None = None,
        key_prefix: str = "rf",
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
        self.socket_timeout = socket_timeout
        self.retries = retries
        self._store = safe_url(url)
        self._client: Redis | None = None
        self._script: Script | None = None
        self._errors: type[Exception] = Exception
        self._packb: Any = None
        # Per view: key prefix, TTL argument and metric children (label lookups are slow).
        self._views: dict[str, tuple[str, bytes, Any, Any, Any]] = {}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        ttls: Mapping[str, timedelta] | None = None,
        *,
        default_ttl: timedelta | None = DEFAULT_TTL,
    ) -> RedisOnlineWriter:
        """A writer to the configured Redis (``redis.url``, else the embedded one)."""
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
            OnlineStoreError: Redis does not answer or refuses the script.
            MissingExtraError: redis-py is not installed.
        """
        client = connect(self.url, self.password, self.socket_timeout, self.retries)
        from redis.exceptions import RedisError

        try:
            client.script_load(UPSERT_SCRIPT)
        except RedisError as exc:
            client.close()
            raise OnlineStoreError(
                self._store, f"cannot load the upsert script into {self._store}: {exc}"
            ) from exc
        self._errors = RedisError
        self._packb = require("msgpack", "redis").packb  # type: ignore[attr-defined]
        self._client = client
        self._script = client.register_script(UPSERT_SCRIPT)

    def close(self) -> None:
        """Release the client's connections (writes are synchronous: nothing is pending)."""
        if self._client is not None:
            self._client.close()
            self._client = None
            self._script = None

    # -- writing ----------------------------------------------------------------------------

    def write(self, updates: Sequence[FeatureUpdate]) -> list[bool]:
        """Apply ``updates`` in one script call; returns when Redis has answered.

        A connection error or timeout resends the whole batch (up to ``retries`` times, which
        the newer-wins script makes safe; updates applied by the failed attempt are then
        counted as stale).

        Raises:
            ReservedFeatureNameError: a feature name starts with ``__`` (nothing is written).
            OnlineStoreError: Redis could not be reached or refused an update; names the key.
                Replaying the batch is safe.
        """
        if self._client is None:
            raise OnlineStoreError(self._store, "write() before setup()")
        if not updates:
            return []
        write_ms = time.time_ns() // 1_000_000
        wt = b"%d" % write_ms
        batch: list[list[Any]] = []
        lags: list[tuple[int, str]] = []
        for update in updates:
            view = update.view
            prefix, ttl, *_ = self._views.get(view) or self._view(view)
            key = prefix + update.entity_id
            et_ms = (update.event_time - _EPOCH) // _MS
            fields: list[bytes] = []
            if not update.deleted:
                for field, value in update.values.items():
                    if field.startswith(RESERVED_PREFIX):
                        raise ReservedFeatureNameError(self._store, field, view, key)
                    fields.append(field.encode())
                    fields.append(orjson.dumps(value))
            batch.append([key, b"%d" % et_ms, b"%d" % update.sequence, ttl,
                          b"1" if update.deleted else b"0", fields])
            lags.append((write_ms - et_ms, view))
        results = self._run(wt, batch)
        views = self._views
        counts: dict[str, list[int]] = {}
        for (lag_ms, view), applied in zip(lags, results, strict=True):
            count = counts.get(view)
            if count is None:
                count = counts[view] = [0, 0]
            if applied:
                count[0] += 1
                views[view][2].observe(lag_ms / 1000)
            else:
                count[1] += 1
        for view, (applied_n, stale_n) in counts.items():  # one increment per view and batch
            _, _, _, applied_count, stale_count = views[view]
            if applied_n:
                applied_count.inc(applied_n)
            if stale_n:
                stale_count.inc(stale_n)
        return results

    def _run(self, wt: bytes, batch: list[list[Any]]) -> list[bool]:
        """Run the upsert script over ``batch``; True for each update applied.

        redis-py's script object sends EVALSHA and, when Redis lost the script (restart,
        failover, ``SCRIPT FLUSH``: nothing ran), loads it and sends it again.
        """
        assert self._client is not None and self._script is not None  # noqa: S101 - write()
        try:
            # Raw strings, not bin: the cmsgpack inside Redis reads no bin type.
            answers = self._script(keys=[], args=[wt, self._packb(batch, use_bin_type=False)])
        except self._errors as exc:
            raise OnlineStoreError(
                self._store,
                f"writing {len(batch)} update(s) to {self._store} failed (first key "
                f"{batch[0][0]}): {exc}",
            ) from exc
        return [answer == 1 for answer in answers]
