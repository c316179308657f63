"""CDC semantics: Debezium change events applied to a latest-row-per-primary-key state.

Pure functions of (entity state, change): the engine stores the state (JSON-able) in a
changelog-backed table and publishes what :func:`apply_change` returns.

Rules:

- ``c``, ``u`` and ``r`` upsert the row; ``d`` deletes it, leaving a tombstone state that remembers
  the change's position, so an older change delivered late can never resurrect the row.
- Changes are ordered by their source-log position (Postgres LSN, MySQL binlog file/pos/row, SQL
  Server change LSN, MongoDB ord), else by the source timestamp and then the Kafka offset. A change
  that is not strictly newer than the state is ignored: replayed duplicates and out-of-order
  deliveries change nothing.
- A ``u`` whose primary key differs between ``before`` and ``after`` is a delete of the old key plus
  a create of the new one (Debezium itself emits it that way unless told otherwise).
- ``t`` (truncate) deletes every row of the table whose position is older than the truncate,
  and the table remembers the truncate's position: a change older than it, delivered after it
  (from another partition of the topic: a truncate has no key), is ignored too. So the rows
  left do not depend on the order the partitions were read in.

Examples:
    >>> from refluent.streams.contracts import CdcEnvelope
    >>> env = CdcEnvelope.model_validate({"op": "c", "after": {"id": 7, "tier": "gold"},
    ...                                   "source": {"lsn": 100, "ts_ms": 1000}})
    >>> [(c.key, c.row, c.deleted) for c in apply_change({}, env, ("id",), offset=0)]
    [('7', {'id': 7, 'tier': 'gold'}, False)]
    >>> state = apply_change({}, env, ("id",), offset=0)[0].state
    >>> apply_change(state, env, ("id",), offset=1)  # a replay
    []
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from refluent.streams.contracts import CdcEnvelope

OrderKey = list[Any]


def order_key(env: CdcEnvelope, offset: int) -> OrderKey:
    """A JSON-able, comparable version of a change: ``[0, *position]`` when the source log
    position is known, else ``[1, source ts_ms, offset]``.

    Positions from one connector compare with each other; the tag keeps the two kinds apart.
    """
    position = env.source.position
    if position is not None:
        return [0, *position]
    ts = env.source.ts_ms if env.source.ts_ms is not None else (env.ts_ms or 0)
    return [1, ts, offset]


def is_newer(candidate: OrderKey, current: OrderKey | None) -> bool:
    """True if ``candidate`` comes strictly after ``current`` (anything is newer than None)."""
    if current is None:
        return True
    if candidate[0] != current[0]:
        # One side has a log position and the other does not: fall back to comparing the
        # source timestamps, which both carry.
        return _ts_of(candidate) > _ts_of(current)
    try:
        return bool(candidate[1:] > current[1:])
    except TypeError:  # mixed position shapes from a reconfigured connector
        return str(candidate[1:]) > str(current[1:])


def _ts_of(key: OrderKey) -> Any:
    return key[1] if key[0] == 1 else -1


@dataclass(frozen=True)
class RowChange:
    """What a change did to one primary key: the new row (None when deleted)."""

    key: str
    row: dict[str, Any] | None
    deleted: bool
    order: OrderKey
    event_time_ms: int

    @property
    def state(self) -> dict[str, Any]:
        """The entity state after this change."""
        return {"row": self.row, "deleted": self.deleted, "order": self.order,
                "ts": self.event_time_ms}


def primary_key_of(row: dict[str, Any], primary_key: Sequence[str]) -> str:
    """The entity id of ``row``: its primary-key values joined by ``|``.

    Raises:
        KeyError: a primary-key column is missing.
    """
    return "|".join(str(row[col]) for col in primary_key)


def _event_ms(env: CdcEnvelope) -> int:
    if env.source.ts_ms is not None:
        return env.source.ts_ms
    if env.ts_ms is not None:
        return env.ts_ms
    raise ValueError("change has neither source.ts_ms nor ts_ms")


def apply_change(
    state: dict[str, Any],
    env: CdcEnvelope,
    primary_key: Sequence[str],
    *,
    offset: int,
    old_state: dict[str, Any] | None = None,
    truncated: OrderKey | None = None,
) -> list[RowChange]:
    """Apply one change to the state of its primary key; returns the row changes to publish.

    Args:
        state: The stored state of the key the change is about (the ``after`` row's key, else
            the ``before`` row's); ``{}`` if none.
        env: The change. Truncates are handled by :func:`apply_truncate`, not here.
        primary_key: Primary-key columns.
        offset: The record's offset (orders changes without a log position).
        old_state: For a ``u`` that changes the primary key: the stored state of the OLD key.
        truncated: The position of the table's last truncate (None: never truncated); a change
            that is not newer than it changes nothing.

    Returns:
        Zero changes (stale or duplicate), one, or two (primary-key change: delete + create).

    Raises:
        KeyError: a primary-key column is missing from the row.
        ValueError: the change is a truncate or has no timestamp.
    """
    if env.op == "t":
        raise ValueError("truncates apply to the whole table: use apply_truncate")
    order = order_key(env, offset)
    ts = _event_ms(env)
    if truncated is not None and not is_newer(order, truncated):
        return []  # the table was truncated after this change
    if env.op == "d":
        assert env.before is not None  # noqa: S101 - the contract guarantees it
        key = primary_key_of(env.before, primary_key)
        if not is_newer(order, state.get("order")):
            return []
        return [RowChange(key, None, True, order, ts)]
    assert env.after is not None  # noqa: S101 - c/u/r carry the after row
    key = primary_key_of(env.after, primary_key)
    out: list[RowChange] = []
    if env.op == "u" and env.before is not None:
        try:
            old_key = primary_key_of(env.before, primary_key)
        except KeyError:
            old_key = key  # before holds no key columns (REPLICA IDENTITY NOTHING)
        if old_key != key and is_newer(order, (old_state or {}).get("order")):
            out.append(RowChange(old_key, None, True, order, ts))
    if is_newer(order, state.get("order")):
        out.append(RowChange(key, dict(env.after), False, order, ts))
    return out


def apply_truncate(
    states: dict[str, dict[str, Any]], env: CdcEnvelope, *, offset: int
) -> list[RowChange]:
    """Delete every key in ``states`` whose last change is older than the truncate."""
    order = order_key(env, offset)
    ts = _event_ms(env)
    return [
        RowChange(key, None, True, order, ts)
        for key, state in states.items()
        if not state.get("deleted") and is_newer(order, state.get("order"))
    ]
