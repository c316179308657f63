"""The offsets a lake table keeps: the next offset to consume of every partition its sink has
seen, in the snapshot summary of each commit.

Every commit of the lake sink records, under :data:`OFFSETS_KEY`, the offsets of every partition
the table has seen (carried forward from the parent snapshot), in the same commit as the rows.
Compaction carries the newest offsets forward, and snapshots without them (made by
another tool) are looked through, so :func:`read_offsets` always answers where the sink stands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import orjson

from refluent.lake.catalog import OPERATION_KEY, qualified_name, transaction
from refluent.lake.errors import LakeOffsetsError
from refluent.lake.schema import arrow_table

if TYPE_CHECKING:
    from pyiceberg.table import Table

OFFSETS_KEY = "refluent.offsets"
"""Snapshot-summary key holding the next offset per partition, as JSON."""


def encode_offsets(offsets: Mapping[tuple[str, int], int]) -> str:
    """The snapshot-summary form of ``offsets``: ``{"topic:partition": next_offset}``.

    Examples:
        >>> encode_offsets({("cdc.orders", 1): 10, ("cdc.orders", 0): 4})
        '{"cdc.orders:0":4,"cdc.orders:1":10}'
    """
    data = {f"{t}:{p}": int(o) for (t, p), o in offsets.items()}
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()


def decode_offsets(text: str) -> dict[tuple[str, int], int]:
    """Inverse of :func:`encode_offsets` (Kafka topic names cannot contain ``:``).

    Raises:
        ValueError: not the expected JSON object.
    """
    data = orjson.loads(text)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    out: dict[tuple[str, int], int] = {}
    for name, offset in data.items():
        topic, sep, part = str(name).rpartition(":")
        if not sep or not topic:
            raise ValueError(f"key {name!r} is not topic:partition")
        out[(topic, int(part))] = int(offset)
    return out


def offsets_summary(table: Table, snapshot_id: int | None = None
                    ) -> tuple[int | None, str | None]:
    """The id of the newest snapshot on the current branch (or at and before ``snapshot_id``)
    carrying ``refluent.offsets``, and that raw value; (None, None) when there is none.

    Snapshots without offsets (a commit made by another tool) are skipped over, so their
    ancestors' offsets still count.
    """
    snapshot = (table.current_snapshot() if snapshot_id is None
                else table.snapshot_by_id(snapshot_id))
    while snapshot is not None:
        raw = snapshot.summary.get(OFFSETS_KEY) if snapshot.summary is not None else None
        if raw is not None:
            return snapshot.snapshot_id, str(raw)
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return None, None


def read_offsets(table: Table, at: int | None = None) -> dict[tuple[str, int], int]:
    """The next offset to consume per (topic, partition), from the table's snapshots (the
    current one, or snapshot ``at`` and its ancestors).

    Raises:
        LakeOffsetsError: the summary holds something that is not offsets.
    """
    snapshot_id, raw = offsets_summary(table, at)
    if raw is None or snapshot_id is None:
        return {}
    try:
        return decode_offsets(raw)
    except (ValueError, TypeError) as exc:
        raise LakeOffsetsError(qualified_name(table), snapshot_id,
                               f"{exc} (snapshot-summary key {OFFSETS_KEY})") from exc


def reset_offsets(table: Table, topics: Sequence[str] | None = None
                  ) -> dict[tuple[str, int], int]:
    """Forget the offsets ``table`` keeps for ``topics`` (every topic when None), so its sink
    reads them from their beginning; rows already in the table stay.

    For a topic that was deleted and created again: its old offsets would make the sink skip
    the new records. One empty commit records the remaining offsets.

    Returns:
        The offsets forgotten (empty when there were none, and then nothing is committed).
    """
    before = read_offsets(table)
    dropped = {tp: o for tp, o in before.items() if topics is None or tp[0] in topics}
    if not dropped:
        return {}
    kept = {tp: o for tp, o in before.items() if tp not in dropped}
    tx = transaction(table)
    tx.append(arrow_table(tx.table_metadata.schema(), {}, 0),
              snapshot_properties={OFFSETS_KEY: encode_offsets(kept),
                                   OPERATION_KEY: "reset-offsets"})
    tx.commit_transaction()
    return dropped
