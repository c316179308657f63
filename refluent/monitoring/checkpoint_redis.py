"""Monitor checkpoints in Redis: one hash per consumer group, ``{prefix}:monitor:{group}``,
with the pickled state, the offsets (JSON) and when it was saved, written by one ``HSET`` so a
reader sees the old checkpoint or the new one whole.

The state is a pickle: keep the Redis it lives in as trusted as the registry's artifacts.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, cast

import orjson
from pydantic import SecretStr

from refluent.monitoring.checkpoint import MonitorCheckpoint, MonitorCheckpoints
from refluent.online_store.redis import connect

if TYPE_CHECKING:
    from refluent.config import Settings


class RedisMonitorCheckpoints(MonitorCheckpoints):
    """Checkpoints in Redis (see the module)."""

    def __init__(self, url: str, password: SecretStr | None = None, key_prefix: str = "rf"
                 ) -> None:
        self._r = connect(url, password)
        self.key_prefix = key_prefix

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisMonitorCheckpoints:
        """The configured Redis (``redis.url``, else the embedded one)."""
        from refluent.embedded.services import resolve_redis_url

        return cls(resolve_redis_url(settings), settings.redis.password,
                   settings.redis.key_prefix)

    def _key(self, group: str) -> str:
        return f"{self.key_prefix}:monitor:{group}"

    def load(self, group: str) -> MonitorCheckpoint | None:
        got = cast("dict[bytes, bytes]", self._r.hgetall(self._key(group)))
        if not got:
            return None
        offsets = {(t, int(p)): int(o) for t, p, o in orjson.loads(got[b"offsets"])}
        return MonitorCheckpoint(got[b"state"], offsets,
                                 datetime.fromisoformat(got[b"saved_at"].decode()))

    def save(self, group: str, checkpoint: MonitorCheckpoint) -> None:
        offsets = [[t, p, o] for (t, p), o in sorted(checkpoint.offsets.items())]
        self._r.hset(self._key(group), mapping={
            "state": checkpoint.state, "offsets": orjson.dumps(offsets),
            "saved_at": checkpoint.saved_at.isoformat()})

    def delete(self, group: str) -> None:
        """Forget the group's checkpoint (the next run starts afresh)."""
        self._r.delete(self._key(group))

    def close(self) -> None:
        self._r.close()


__all__ = ["RedisMonitorCheckpoints"]
