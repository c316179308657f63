"""Lake maintenance and CDC state against a real SQLite-backed Iceberg catalog."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from refluent.lake import maintenance as lm
from refluent.lake.errors import LakeTableNotFoundError
from refluent.lake.offsets import OFFSETS_KEY, read_offsets
from refluent.sinks.base import SinkRecord
from refluent.sinks.iceberg import IcebergSink
from refluent.streams.contracts import CdcEnvelope

if TYPE_CHECKING:
    from tests.lake.conftest import Lab

pytestmark = pytest.mark.integration

T0 = datetime(2024, 3, 1, 22, 0, tzinfo=UTC)


def _commit_events(sink: IcebergSink, commits: int, per_commit: int = 3, start: int = 0) -> None:
    """``commits`` micro-batches on partition 0, events an hour apart (two event days)."""
    offset = start
    for _ in range(commits):
        batch = []
        for _ in range(per_commit):
            batch.append(SinkRecord("logs.app", 0, offset, None,
                                    {"n": offset, "at": (T0 + timedelta(hours=offset % 4))
                                     .isoformat(), "event_time": T0 + timedelta(hours=offset % 4)}))
            offset += 1
        sink.write(batch)
        sink.flush()


def _live_data_files(sink: IcebergSink) -> list[str]:
    sink.table.refresh()
    return [t.file.file_path for t in sink.table.scan().plan_files()]


def _ns(sink: IcebergSink) -> list[int]:
    sink.table.refresh()
    return sorted(sink.table.scan().to_arrow().column("n").to_pylist())


def _files_on_disk(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


# ---------------------------------------------------------------------------------------------
# compaction
# ---------------------------------------------------------------------------------------------


def test_compact__rewrites_small_files_per_partition_and_keeps_the_offsets(lab: Lab) -> None:
    sink = lab.sink()
    _commit_events(sink, 6)  # 6 commits x 2 event days = 12 small files
    assert len(_live_data_files(sink)) == 12
    offsets = sink.committed_offsets()
    snapshots = len(sink.table.metadata.snapshots)

    result = lm.compact(sink.table, target_file_rows=1000)

    assert (result.partitions, result.files_removed, result.files_added, result.rows) == (
        2, 12, 2, 18)
    assert len(_live_data_files(sink)) == 2
    assert len(sink.table.metadata.snapshots) == snapshots + 1  # one commit
    assert _ns(sink) == list(range(18))
    head = sink.table.current_snapshot()
    assert head.summary.get(OFFSETS_KEY) is not None
    restarted = lab.sink()
    assert restarted.committed_offsets() == offsets == {("logs.app", 0): 18}
    # The restarted sink still drops what the table holds.
    _commit_events(restarted, 7)
    assert _ns(restarted) == list(range(21))


def test_compact__leaves_partitions_with_one_small_file_and_big_files_alone(lab: Lab) -> None:
    sink = lab.sink()
    _commit_events(sink, 1)
    assert lm.compact(sink.table, target_file_rows=1000).files_removed == 0
    _commit_events(sink, 2, start=3)
    assert lm.compact(sink.table, target_file_rows=1).files_removed == 0


def test_compact__cuts_target_sized_files_and_a_second_run_rewrites_nothing(lab: Lab) -> None:
    sink = lab.sink()
    _commit_events(sink, 6)  # 10 and 8 rows in 6 files per event day
    result = lm.compact(sink.table, target_file_rows=4)
    assert (result.files_removed, result.files_added) == (12, 5)
    counts = sorted(t.file.record_count for t in sink.table.scan().plan_files())
    assert counts == [2, 4, 4, 4, 4]
    assert lm.compact(sink.table, target_file_rows=4) == lm.CompactionResult()
    assert _ns(sink) == list(range(18))


def test_compact__a_sink_commit_meanwhile_makes_compaction_plan_again(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = lab.sink()
    _commit_events(sink, 4)
    other = lab.sink()  # another process, committing while compaction works
    real_write = lm._write_files
    calls = []

    def write_then_interleave(*args: Any, **kwargs: Any) -> Any:
        if not calls:
            _commit_events(other, 1, start=12)
        calls.append(1)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(lm, "_write_files", write_then_interleave)
    result = lm.compact(sink.table, target_file_rows=1000)
    assert result.rows == 15  # planned again on the new head
    assert read_offsets(sink.table) == {("logs.app", 0): 15}  # the sink's, not the stale ones
    assert _ns(sink) == list(range(15))


# ---------------------------------------------------------------------------------------------
# expiry and orphans
# ---------------------------------------------------------------------------------------------


def test_expire__keeps_the_newest_snapshots_and_deletes_only_unreachable_files(lab: Lab) -> None:
    sink = lab.sink()
    _commit_events(sink, 5)
    lm.compact(sink.table, target_file_rows=1000)
    replaced = set(_live_data_files(sink))
    before = len(sink.table.metadata.snapshots)

    result = lm.expire_snapshots(sink.table, older_than=timedelta(0), retain_last=2)

    assert result.expired_snapshots == before - 2
    assert len(sink.table.metadata.snapshots) == 2
    assert result.deleted_files > 0
    # The compacted files stay; the small ones only the expired snapshots used are gone,
    # except those the oldest retained snapshot still needs.
    for path in replaced:
        assert _local(path).exists()
    needed = lm.reachable_files(sink.table, sink.table.metadata.snapshots)
    for path in needed:
        assert _local(path).exists(), path
    assert _ns(sink) == list(range(15))
    assert sink.committed_offsets() == {("logs.app", 0): 15}


def test_expire__younger_snapshots_are_kept(lab: Lab) -> None:
    sink = lab.sink()
    _commit_events(sink, 3)
    result = lm.expire_snapshots(sink.table, older_than=timedelta(hours=1), retain_last=1)
    assert result == lm.ExpireResult(0, 0)
    assert len(sink.table.metadata.snapshots) == 3


def test_orphans__only_unreferenced_old_files_are_deleted(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyiceberg.table import Transaction

    sink = lab.sink()
    _commit_events(sink, 2)
    with monkeypatch.context() as m:  # a crashed commit leaves its data file behind
        m.setattr(Transaction, "commit_transaction", lambda self: (_ for _ in ()).throw(
            RuntimeError("killed")))
        with pytest.raises(RuntimeError):
            _commit_events(sink, 1, start=6)
    root = _local(sink.table.location())
    planted_old = root / "data" / "planted-old.parquet"
    planted_new = root / "metadata" / "planted-new.avro"
    planted_old.write_bytes(b"x")
    planted_new.write_bytes(b"y")
    hour_ago = time.time() - 3600
    for p in _files_on_disk(root) - {planted_new}:
        os.utime(p, (hour_ago, hour_ago))
    before = _files_on_disk(root)
    referenced = {_local(p) for p in lm.reachable_files(sink.table, sink.table.metadata.snapshots)
                  | lm.live_metadata_files(sink.table)}

    dry = lm.delete_orphan_files(sink.table, timedelta(minutes=30), dry_run=True)
    assert _files_on_disk(root) == before
    deleted = lm.delete_orphan_files(sink.table, timedelta(minutes=30))

    assert dry == deleted
    assert str(planted_old) in deleted
    assert str(planted_new) not in deleted and planted_new.exists()  # too young
    crashed = {Path(p) for p in deleted} - {planted_old}
    # The crashed commit's files: a data file per event day, its manifest and manifest list.
    assert sorted(p.suffix for p in crashed) == [".avro", ".avro", ".parquet", ".parquet"]
    assert not crashed & referenced
    assert _files_on_disk(root) == before - crashed - {planted_old}
    assert referenced <= _files_on_disk(root)
    assert _ns(sink) == list(range(6))


def test_maintain__compacts_expires_and_reports_every_table(lab: Lab, catalog: Any) -> None:
    a = lab.sink("raw_a")
    b = lab.sink("raw_b")
    _commit_events(a, 3)
    _commit_events(b, 1)
    report = lm.maintain(catalog, "lab", older_than=timedelta(0), retain_last=1,
                         orphan_older_than=timedelta(0), target_file_rows=1000)
    assert report.ok
    by_name = {t.table: t for t in report.tables}
    assert set(by_name) == {"lab.raw_a", "lab.raw_b"}
    assert by_name["lab.raw_a"].compaction.files_removed == 6
    assert by_name["lab.raw_a"].expire.expired_snapshots == 3
    assert by_name["lab.raw_b"].compaction.files_removed == 0
    assert _ns(a) == list(range(9)) and _ns(b) == list(range(3))
    assert a.committed_offsets() == {("logs.app", 0): 9}
    assert len(_files_on_disk(_local(a.table.location()) / "data")) == 2


def test_maintain__a_missing_table_is_reported_not_raised(lab: Lab, catalog: Any) -> None:
    lab.sink("raw_a")
    report = lm.maintain(catalog, "lab", tables=["raw_a", "nope"])
    assert not report.ok
    assert report.tables[1].error is not None and "no such table" in report.tables[1].error


# ---------------------------------------------------------------------------------------------
# CDC state
# ---------------------------------------------------------------------------------------------


def test_compact_cdc__latest_row_per_key_with_deletes_and_key_changes(
    lab: Lab, catalog: Any
) -> None:
    lab.cdc_sink([
        (0, 0, lab.change("c", 1, 10)),
        (0, 1, lab.change("u", 1, 20, "one@new")),
        (0, 2, lab.change("c", 2, 30)),
        (0, 3, lab.change("d", 2, 40)),
        (0, 4, None),                                # tombstone of 2
        (0, 5, lab.change("c", 3, 50)),
        (0, 6, lab.change("d", 3, 60)),              # Debezium's primary-key change 3 -> 4:
        (0, 7, None),                                # delete, tombstone, create
        (1, 0, lab.change("c", 4, 61)),
        (0, 8, lab.change("c", 5, 70)),
        (0, 9, lab.change("u", 6, 80, before_id=5)),  # an update that moved the key 5 -> 6
        (1, 1, lab.change("u", 7, 100, "seven@late")),  # arrives first, happened last
        (0, 10, lab.change("c", 7, 90, "seven@early")),
        (0, 11, lab.change("r", 8, 5)),              # snapshot read
    ])
    result = lm.compact_cdc(catalog, "cdc_customers", namespace="lab")
    assert result.target == "lab.cdc_customers_current"
    state = catalog.load_table(result.target).scan().to_arrow()
    rows = {r["key"]: r["email"] for r in state.to_pylist()}
    assert rows == {"1": "one@new", "4": "4@61", "6": "6@80", "7": "seven@late", "8": "8@5"}
    assert result.rows == 5
    assert {"op", "before", "after", "offset"}.isdisjoint(state.column_names)
    assert state.column_names[:3] == ["key", "position", "source_ts"]


def test_compact_cdc__a_truncate_removes_every_earlier_row(lab: Lab, catalog: Any) -> None:
    truncate = CdcEnvelope.model_validate({
        "op": "t", "ts_ms": 1_709_330_000_000,
        "source": {"connector": "postgresql", "ts_ms": 1_709_320_000_200, "lsn": 200}})
    lab.cdc_sink([(0, 0, lab.change("c", 1, 10)), (0, 1, lab.change("c", 2, 20)),
                  (0, 2, truncate), (0, 3, lab.change("c", 3, 210))])
    result = lm.compact_cdc(catalog, "cdc_customers", "customers_state", namespace="lab")
    assert result.target == "lab.customers_state"
    state = catalog.load_table(result.target).scan().to_arrow()
    assert state.column("key").to_pylist() == ["3"]


def test_compact_cdc__runs_again_replace_the_state_and_follow_new_columns(
    lab: Lab, catalog: Any
) -> None:
    sink = lab.cdc_sink([(0, 0, lab.change("c", 1, 10)), (0, 1, lab.change("c", 2, 20))])
    lm.compact_cdc(catalog, "cdc_customers", namespace="lab")
    later = CdcEnvelope.model_validate({
        "before": {"id": 1, "email": "x"}, "after": {"id": 1, "email": "y", "vip": True},
        "op": "u", "source": {"connector": "postgresql", "ts_ms": 1_709_320_000_300, "lsn": 300}})
    sink.write([SinkRecord("cdc.customers", 0, 2, None, later),
                SinkRecord("cdc.customers", 0, 3, None, lab.change("d", 2, 310))])
    sink.flush()
    result = lm.compact_cdc(catalog, "cdc_customers", namespace="lab")
    state = catalog.load_table(result.target).scan().to_arrow().to_pylist()
    assert [(r["key"], r["email"], r["vip"]) for r in state] == [("1", "y", True)]


def test_compact_cdc__an_unknown_table_names_the_ones_there(lab: Lab, catalog: Any) -> None:
    lab.sink("raw")
    with pytest.raises(LakeTableNotFoundError, match=r"lab\.cdc_nope.*tables: raw"):
        lm.compact_cdc(catalog, "cdc_nope", namespace="lab")
