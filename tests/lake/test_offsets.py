"""The offsets a lake table keeps in its snapshot summaries."""

from __future__ import annotations

from collections import namedtuple
from typing import TYPE_CHECKING

import pytest

from refluent.lake.catalog import transaction
from refluent.lake.errors import LakeOffsetsError
from refluent.lake.offsets import (
    OFFSETS_KEY,
    decode_offsets,
    encode_offsets,
    read_offsets,
    reset_offsets,
)
from refluent.lake.schema import arrow_table
from refluent.sinks.base import SinkRecord

if TYPE_CHECKING:
    from tests.lake.conftest import Lab

TOPIC = "logs.app"
TP = namedtuple("TP", "topic partition")


def _records(topic: str, partition: int, offsets: range) -> list[SinkRecord[dict[str, int]]]:
    return [SinkRecord(topic, partition, o, None, {"n": o}) for o in offsets]


@pytest.mark.unit
def test_decode_offsets__inverts_encode_and_refuses_what_is_not_offsets() -> None:
    offsets = {("cdc.orders", 0): 4, ("a:b", 12): 7}  # rpartition: the partition is last
    assert decode_offsets(encode_offsets(offsets)) == offsets
    for bad in ('[1, 2]', '{"no-partition": 3}', '{"t:x": 1}'):
        with pytest.raises(ValueError):
            decode_offsets(bad)


@pytest.mark.integration
def test_read_offsets__skips_snapshots_made_by_other_tools(lab: Lab) -> None:
    sink = lab.sink()
    sink.write(_records(TOPIC, 0, range(2)))
    sink.flush()
    sink.table.delete("offset = 0")  # a commit without refluent.offsets
    sink.table.refresh()
    # Summary.__getitem__ answers None for a missing key, so `in` is always True: use get.
    assert sink.table.current_snapshot().summary.get(OFFSETS_KEY) is None
    assert read_offsets(sink.table) == {(TOPIC, 0): 2}


@pytest.mark.integration
def test_read_offsets__unreadable_offsets_name_the_table_and_snapshot(lab: Lab) -> None:
    table = lab.sink().table
    tx = transaction(table)
    tx.append(arrow_table(tx.table_metadata.schema(), {}, 0),
              snapshot_properties={OFFSETS_KEY: "[1, 2]"})
    tx.commit_transaction()
    snapshot_id = table.current_snapshot().snapshot_id
    with pytest.raises(LakeOffsetsError) as caught:
        read_offsets(table)
    assert str(caught.value).startswith(f"lake lab.raw: snapshot {snapshot_id} has unreadable "
                                        "offsets: ")
    assert OFFSETS_KEY in str(caught.value)


@pytest.mark.integration
def test_reset_offsets__forgets_only_the_named_topics_and_keeps_the_rows(lab: Lab) -> None:
    sink = lab.sink()
    sink.write(_records(TOPIC, 0, range(3)) + _records("logs.web", 1, range(5)))
    sink.flush()

    assert reset_offsets(sink.table, [TOPIC]) == {(TOPIC, 0): 3}
    assert read_offsets(sink.table) == {("logs.web", 1): 5}
    assert sink.start_offsets([TP(TOPIC, 0)]) == {(TOPIC, 0): -2}  # from the beginning
    assert len(lab.rows(sink, "offset")) == 8
    snapshots = len(sink.table.metadata.snapshots)
    assert reset_offsets(sink.table, [TOPIC]) == {}  # nothing left to forget: no commit
    assert len(sink.table.metadata.snapshots) == snapshots
