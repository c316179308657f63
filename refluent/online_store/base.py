"""The online store's interfaces, what a read answers, and the key layout every backend uses.

An online store keeps, per feature view and entity, the values of the newest update it was
given. "Newest" is by ``(event_time, sequence)``, event time to the millisecond: an update is
applied only when it is strictly newer than the stored one, so replays after a crash are
no-ops and an older event never overwrites a newer one, whatever order updates arrive in. A
deletion leaves a tombstone, so an older create arriving later cannot bring the row back. An
update carries every value of its view: features absent from it disappear.

Layout (the Redis backend's, and the names the others use):

- key ``{prefix}:{view}:{entity_id}`` (see :func:`online_key`). Every command touches one key, so
  the layout works unchanged on Redis Cluster.
- one hash field per feature holding its JSON-encoded value, plus the meta fields ``__et``
  (event time, ms since the epoch), ``__seq`` (sequence), ``__wt`` (write time, ms) and, for a
  deleted entity, ``__del`` = ``1``.
- the key expires after its view's TTL, counted from the last applied update.

Examples:
    >>> online_key("rf", "customer_stats", "42")
    'rf:customer_stats:42'
    >>> is_newer((1000, 2), (1000, 1)), is_newer((1000, 1), (1000, 1)), is_newer((999, 9), None)
    (True, False, True)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from refluent.streams.contracts import FeatureUpdate, FeatureValue

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
RESERVED_PREFIX = "__"
"""Feature names may not start with this."""

DEFAULT_TTL = timedelta(days=7)
"""TTL of views the store has no TTL for, unless told otherwise."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


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
    """The key of ``entity_id``'s values in ``view``.

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


def is_newer(update: tuple[int, int], stored: tuple[int, int] | None) -> bool:
    """True when an update at ``(event time ms, sequence)`` replaces what is ``stored`` (None:
    nothing is): it must be strictly newer, so a replay changes nothing."""
    return stored is None or update > stored


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


class OnlineStoreReader(ABC):
    """Reads feature values and their age (the serving hot path).

    Lifecycle: ``setup()`` checks the store answers, ``close()`` releases connections.
    Implementations are safe to share between threads and have no side effects, so a read
    may be retried.
    """

    def setup(self) -> None:  # noqa: B027 - optional hook: a store without connections
        """Check that the store answers (raises ``OnlineStoreError`` when it does not)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (a later read opens new ones)."""

    @abstractmethod
    def get_online_features(
        self,
        view: str,
        entity_ids: Sequence[str],
        features: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> list[OnlineFeatures]:
        """The values of ``features`` (all of them when None) of each entity in ``view``, in
        the order of ``entity_ids``: an unknown or expired entity has ``found=False`` and no
        event time, a deleted one ``found=False, deleted=True``.

        Raises:
            OnlineStoreError: the store cannot be read; names the key.
            ValueError: a bad view name or a naive ``now``.
            TypeError: ``entity_ids`` is one string.
        """


class OnlineStoreWriter(ABC):
    """Applies feature updates, newer-wins (see the module docstring).

    Lifecycle: ``setup()`` opens the store, ``close()`` releases it. :meth:`write` returns
    once every update is applied or refused as not newer: nothing is left pending.
    """

    def setup(self) -> None:  # noqa: B027 - optional hook: a store without connections
        """Open the store (raises ``OnlineStoreError`` when it cannot)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the store's connections."""

    @abstractmethod
    def write(self, updates: Sequence[FeatureUpdate]) -> list[bool]:
        """Apply ``updates``; True for each one applied, False for one not newer than what
        the store holds. Replaying the same updates is safe.

        Raises:
            ReservedFeatureNameError: a feature name starts with ``__`` (nothing is written).
            OnlineStoreError: the store could not be written; names the key.
        """

