"""The online-store sink: moves feature updates from their topics into the online store.

:class:`RedisOnlineStore` hands each batch to a
:class:`~refluent.online_store.redis.RedisOnlineWriter`, which applies every update newer-wins
(layout and semantics: :mod:`refluent.online_store.base`), and returns once Redis has answered,
so :meth:`~RedisOnlineStore.flush` has nothing left to do and the pipeline may commit the
batch's offsets. A failure is a :class:`~refluent.sinks.errors.SinkError`: nothing is committed
and the replay is safe, since the store is newer-wins.

Examples:
    >>> store = RedisOnlineStore("redis://127.0.0.1:6379/0",
    ...                          ttls={"orders_1h": timedelta(hours=2)})
    >>> store.key("orders_1h", "c7"), store.ttl_ms("orders_1h"), store.ttl_ms("other")
    ('rf:orders_1h:c7', 7200000, 604800000)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from pydantic import SecretStr

from refluent.online_store.base import DEFAULT_TTL
from refluent.online_store.errors import OnlineStoreError
from refluent.online_store.redis import RedisOnlineWriter
from refluent.sinks.base import Sink, SinkRecord
from refluent.sinks.errors import SinkError
from refluent.streams.contracts import FeatureUpdate

if TYPE_CHECKING:
    from refluent.config import Settings


class RedisOnlineStore(Sink[FeatureUpdate]):
    """Writes :class:`~refluent.streams.contracts.FeatureUpdate` records to the Redis online
    store through a :class:`~refluent.online_store.redis.RedisOnlineWriter`.

    Tombstone records (value None) are skipped; deletions arrive as updates with
    ``deleted=True``.

    Args:
        url: Redis URL (see :func:`~refluent.online_store.redis.connect`), or the writer to
            write through (the other arguments but ``name`` are then the writer's own).
        ttls: TTL per feature view, counted from each entity's last applied update.
        default_ttl: TTL of views missing from ``ttls``; None keeps their keys forever.
        password: Password when it is not in the URL; never logged.
        key_prefix: Prefix of every key.
        name: Name of the sink in errors and metrics.
        socket_timeout: Seconds a connect or a command may take.
        retries: Retries after a connection error or timeout before a write fails.
    """

    name = "redis-online"

    def __init__(
        self,
        url: str | RedisOnlineWriter,
        ttls: Mapping[str, timedelta] | None = None,
        *,
        default_ttl: timedelta | None = DEFAULT_TTL,
        password: SecretStr | None = None,
        key_prefix: str = "rf",
        name: str | None = None,
        socket_timeout: float = 5.0,
        retries: int = 3,
    ) -> None:
        if name is not None:
            self.name = name
        self.writer = url if isinstance(url, RedisOnlineWriter) else RedisOnlineWriter(
            url, ttls, default_ttl=default_ttl, password=password, key_prefix=key_prefix,
            socket_timeout=socket_timeout, retries=retries)
        self._open = False

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        ttls: Mapping[str, timedelta] | None = None,
        *,
        default_ttl: timedelta | None = DEFAULT_TTL,
    ) -> RedisOnlineStore:
        """A sink to the configured Redis (``redis.url``, else the embedded one)."""
        return cls(RedisOnlineWriter.from_settings(settings, ttls, default_ttl=default_ttl))

    def key(self, view: str, entity_id: str) -> str:
        """The key holding ``entity_id``'s values in ``view``."""
        return self.writer.key(view, entity_id)

    def ttl_ms(self, view: str) -> int:
        """TTL of ``view``'s keys in milliseconds (0: no expiry)."""
        return self.writer.ttl_ms(view)

    def setup(self) -> None:
        """Open the writer (connects and loads the upsert script).

        Raises:
            SinkError: Redis does not answer or refuses the script.
            MissingExtraError: redis-py is not installed.
        """
        try:
            self.writer.setup()
        except OnlineStoreError as exc:
            raise SinkError(self.name, exc.detail) from exc
        self._open = True

    def write(self, batch: list[SinkRecord[FeatureUpdate]]) -> None:
        """Apply ``batch``; returns when Redis has answered every update.

        Raises:
            SinkError: Redis could not be reached or refused an update; names the key. Nothing
                is committed, and replaying the batch is safe.
        """
        if not self._open:
            raise SinkError(self.name, "write() before setup()")
        updates = [r.value for r in batch if r.value is not None]
        if not updates:
            return
        try:
            self.writer.write(updates)
        except OnlineStoreError as exc:
            raise SinkError(self.name, exc.detail) from exc

    def flush(self) -> None:
        """Nothing to do: :meth:`write` returns only once Redis has applied the batch."""

    def close(self) -> None:
        """Release the writer's connections (writes are synchronous: nothing is pending)."""
        self.writer.close()
        self._open = False
