"""An online store in a dict, with the same semantics as Redis's: for tests and for users who
run feature views and models without a Redis.

:class:`MemoryOnlineStore` is both a reader and a writer. Like the Redis store it keeps event
times to the millisecond, applies an update only when its ``(event_time, sequence)`` is
strictly newer than the stored one, keeps a tombstone for a deleted entity, replaces every value
of a view on each update, refuses feature names starting with ``__`` and hands values back as
JSON would (a tuple comes back as a list). Keys do not expire.

Thread safety: one store may be shared between threads (a lock guards the dict).

Examples:
    >>> from datetime import UTC, datetime
    >>> from refluent.streams.contracts import FeatureUpdate
    >>> store = MemoryOnlineStore()
    >>> t = datetime(2024, 5, 1, tzinfo=UTC)
    >>> store.write([FeatureUpdate(view="v", entity_id="e1", values={"n": 2}, event_time=t,
    ...                            sequence=2),
    ...              FeatureUpdate(view="v", entity_id="e1", values={"n": 1}, event_time=t,
    ...                            sequence=1)])
    [True, False]
    >>> store.get_online_features("v", ["e1"], ["n"], now=t)[0].values
    {'n': 2}
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from refluent.online_store.base import (
    RESERVED_PREFIX,
    OnlineFeatures,
    OnlineStoreReader,
    OnlineStoreWriter,
    from_epoch_ms,
    is_newer,
    online_key,
    to_epoch_ms,
    view_key_prefix,
)
from refluent.online_store.errors import ReservedFeatureNameError
from refluent.streams.contracts import FeatureUpdate


@dataclass(frozen=True, slots=True)
class _Stored:
    version: tuple[int, int]  # (event time ms, sequence)
    values: bytes  # the JSON of the values, decoded afresh on each read
    deleted: bool


class MemoryOnlineStore(OnlineStoreReader, OnlineStoreWriter):
    """The online store in memory (see the module docstring).

    Args:
        key_prefix: Prefix of the keys (only :meth:`key` uses it).
        name: How errors name the store.
    """

    def __init__(self, *, key_prefix: str = "rf", name: str = "memory") -> None:
        self.key_prefix = key_prefix
        self.name = name
        self._rows: dict[tuple[str, str], _Stored] = {}
        self._lock = threading.Lock()

    def key(self, view: str, entity_id: str) -> str:
        """The key ``entity_id``'s values in ``view`` would have in Redis."""
        return online_key(self.key_prefix, view, entity_id)

    def write(self, updates: Sequence[FeatureUpdate]) -> list[bool]:
        """Apply ``updates`` newer-wins (see :meth:`OnlineStoreWriter.write`).

        Raises:
            ReservedFeatureNameError: a feature name starts with ``__`` (nothing is written).
        """
        staged: list[tuple[tuple[str, str], _Stored]] = []
        for update in updates:
            key = (update.view, update.entity_id)
            view_key_prefix(self.key_prefix, update.view)  # the same view names as Redis
            values = {} if update.deleted else update.values
            for feature in values:
                if feature.startswith(RESERVED_PREFIX):
                    raise ReservedFeatureNameError(self.name, feature, update.view,
                                                   self.key(update.view, update.entity_id))
            version = (to_epoch_ms(update.event_time), update.sequence)
            staged.append((key, _Stored(version, orjson.dumps(values), update.deleted)))
        applied: list[bool] = []
        with self._lock:
            for key, row in staged:
                current = self._rows.get(key)
                newer = is_newer(row.version, current.version if current else None)
                if newer:
                    self._rows[key] = row
                applied.append(newer)
        return applied

    def get_online_features(
        self,
        view: str,
        entity_ids: Sequence[str],
        features: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> list[OnlineFeatures]:
        """The values of each entity in ``view`` (see
        :meth:`OnlineStoreReader.get_online_features`)."""
        if isinstance(entity_ids, str):
            raise TypeError("entity_ids must be a sequence of ids, not one string")
        view_key_prefix(self.key_prefix, view)
        if not entity_ids:
            return []
        if now is None:
            now = datetime.now(UTC)
        elif now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        with self._lock:
            rows = [self._rows.get((view, e)) for e in entity_ids]
        out = []
        for entity_id, row in zip(entity_ids, rows, strict=True):
            absent: dict[str, Any] = {} if features is None else dict.fromkeys(features)
            if row is None:
                out.append(OnlineFeatures(entity_id, absent, None, None, False, False))
                continue
            event_time = from_epoch_ms(row.version[0])
            if row.deleted:
                out.append(OnlineFeatures(entity_id, absent, event_time, now - event_time,
                                          False, True))
                continue
            stored = orjson.loads(row.values)
            values = stored if features is None else {f: stored.get(f) for f in features}
            out.append(OnlineFeatures(entity_id, values, event_time, now - event_time, True,
                                      False))
        return out

    def latest(self, view: str) -> dict[str, FeatureUpdate]:
        """Entity id -> the update whose values the store holds for ``view`` (live entities
        only), as a :class:`~refluent.streams.contracts.FeatureUpdate`."""
        with self._lock:
            rows = [(e, r) for (v, e), r in self._rows.items() if v == view and not r.deleted]
        return {e: FeatureUpdate(view=view, entity_id=e, values=orjson.loads(r.values),
                                 event_time=from_epoch_ms(r.version[0]), sequence=r.version[1])
                for e, r in rows}
