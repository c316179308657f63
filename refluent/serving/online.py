"""Online feature reads: the serving hot path over the Redis layout of
:mod:`refluent.sinks.redis`.

:meth:`OnlineFeatureReader.get_online_features` fetches any number of entities of one feature
view in a single round trip (``HMGET`` of the requested features plus the meta fields, or
``HGETALL`` for every feature; one command per entity, pipelined when there are several) and
returns each entity's values with their event time and age.

Reads go through redis-py with the hiredis reply parser, as writes do: redis-py owns the URL
(``redis://``, ``rediss://`` for TLS, ``unix://``; see :func:`~refluent.sinks.redis.connect`),
AUTH, database selection, the connection pool and fork safety, and hiredis parses replies in C.
What stays here is the per-call work: field lists are prepared once per (view, features), so a
call only adds the keys, and feature values are decoded with one orjson call per entity.

Thread safety: one reader may be shared between threads; each call borrows a connection from
redis-py's pool. A pooled connection the server dropped (restart, idle timeout) is replaced
before use, and a read cut off by a connection error is retried once on a fresh connection,
which is safe because reads have no side effects. A timeout is not retried: the caller's
latency budget is already spent.

Examples:
    >>> reader = OnlineFeatureReader("redis://127.0.0.1:6379/0")
    >>> reader.setup()  # doctest: +SKIP
    >>> rows = reader.get_online_features("orders_1h", ["c1", "c2"], ["n", "sum"])  # doctest: +SKIP
    >>> rows[0].values, rows[0].age, rows[1].found  # doctest: +SKIP
    ({'n': 3, 'sum': 41.5}, datetime.timedelta(seconds=2, microseconds=250000), False)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import SecretStr

from refluent.errors import RefluentError
from refluent.sinks.redis import (
    DELETED_FIELD,
    EVENT_TIME_FIELD,
    META_FIELDS,
    connect,
    safe_url,
    view_key_prefix,
)
from refluent.streams.contracts import FeatureValue

if TYPE_CHECKING:
    from refluent.config import Settings

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_PLANS = 1024
_META_BYTES = frozenset(f.encode() for f in META_FIELDS)
_EVENT_TIME_BYTES = EVENT_TIME_FIELD.encode()
_DELETED_BYTES = DELETED_FIELD.encode()


class OnlineStoreError(RefluentError):
    """The online store could not be read; names the store and the view or key involved."""

    def __init__(self, store: str, detail: str) -> None:
        self.store = store
        self.detail = detail
        super().__init__(f"online store {store}: {detail}")


@dataclass(slots=True)
class OnlineFeatures:
    """One entity's values in one feature view, as the online store holds them now.

    A fresh object per call (not frozen, which would cost a microsecond per entity).
    """

    entity_id: str
    """The entity asked for."""
    values: dict[str, FeatureValue]
    """Feature name -> value; a requested feature the store lacks is None. Empty when every
    feature was asked for and the entity is unknown or deleted."""
    event_time: datetime | None
    """Event time of the update that produced the values (or the deletion), UTC."""
    age: timedelta | None
    """``now`` minus ``event_time``: how old the values are (negative if the event time is
    ahead of the reader's clock)."""
    found: bool
    """True when the store holds live values for the entity."""
    deleted: bool
    """True when the entity was deleted (a tombstone): ``found`` is False, ``event_time`` is
    the deletion's."""


def _reading(view: str, first_key: str, n: int) -> str:
    return f"reading view {view!r} ({n} key(s) from {first_key})"


def _describe(exc: Exception) -> str:
    # redis-py's exception repr leaves the message out.
    return f"{type(exc).__name__}: {exc}"


# (key prefix, feature names or None for HGETALL, HMGET fields: the names then the meta fields)
_Plan = tuple[str, list[str] | None, list[bytes]]


class OnlineFeatureReader:
    """Reads feature values and their age from the online store.

    Lifecycle: the constructor makes the redis-py client without any round trip; ``setup()``
    checks that the store answers and accepts the credentials, so a service fails at start
    rather than on its first request (reads connect on demand either way); ``close()`` closes
    the pooled connections. Safe to share between threads.

    Args:
        url: Redis URL (see :func:`~refluent.sinks.redis.connect`).
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
    def from_settings(cls, settings: Settings, **kwargs: Any) -> OnlineFeatureReader:
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
