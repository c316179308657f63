"""The lake sink against a real SQLite-backed Iceberg catalog in a temporary folder."""

from __future__ import annotations

from collections import namedtuple
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pyiceberg.transforms import DayTransform
from support.cdc import customer_change

from refluent.embedded.services import lake_catalog
from refluent.lake.errors import LakeRowError
from refluent.lake.mappings import CdcChangelogTable, RawEventsTable, TableMapping
from refluent.lake.offsets import OFFSETS_KEY, decode_offsets
from refluent.sinks.base import SinkRecord
from refluent.sinks.iceberg import IcebergSink
from refluent.streams.contracts import LogEvent

pytestmark = pytest.mark.integration

T0 = datetime(2024, 3, 1, 23, 0, tzinfo=UTC)
TOPIC = "logs.app"
TP = namedtuple("TP", "topic partition")


@pytest.fixture()
def catalog(tmp_path: Path) -> Any:
    (tmp_path / "warehouse").mkdir()
    return lake_catalog(f"sqlite:///{tmp_path / 'catalog.db'}", (tmp_path / "warehouse").as_uri())


def _sink(catalog: Any, mapping: TableMapping | None = None, table: str = "raw_app",
          **kwargs: Any) -> IcebergSink:
    kwargs.setdefault("max_records", 10)
    kwargs.setdefault("max_seconds", 3600)
    sink = IcebergSink(catalog, mapping or RawEventsTable(), table, namespace="lab", **kwargs)
    sink.setup()
    return sink


def _log_records(n: int, partitions: int = 2) -> list[SinkRecord[Any]]:
    """``n`` log events spread over ``partitions`` partitions (offsets in order per partition),
    half an hour apart, so they cross a day boundary."""
    out = []
    for i in range(n):
        event = LogEvent(source="app", ts=T0 + timedelta(minutes=30 * i), message=f"m{i}",
                         entity_id=f"u{i % 5}", attributes={"i": i})
        out.append(SinkRecord(TOPIC, i % partitions, i // partitions, f"u{i % 5}".encode(),
                              event, timestamp_ms=None))
    return out


def _rows(sink: IcebergSink, *cols: str) -> list[dict[str, Any]]:
    sink.table.refresh()
    return sorted(sink.table.scan().to_arrow().select(list(cols)).to_pylist(),
                  key=lambda r: tuple(str(r[c]) for c in cols))




# ---------------------------------------------------------------------------------------------
# table layout
# ---------------------------------------------------------------------------------------------


def test_setup__creates_day_partitioned_table_with_maintenance_properties(catalog: Any) -> None:
    sink = _sink(catalog)
    table = sink.table
    (part,) = table.spec().fields
    assert part.transform == DayTransform()
    assert table.schema().find_field(part.source_id).name == "event_time"
    props = table.properties
    assert props["write.metadata.delete-after-commit.enabled"] == "true"
    assert int(props["write.metadata.previous-versions-max"]) > 0
    assert props["commit.manifest-merge.enabled"] == "true"
    assert props["commit.retry.num-retries"] == "0"
    assert sink.committed_offsets() == {}


def test_write__rows_land_in_one_partition_per_event_day(catalog: Any) -> None:
    sink = _sink(catalog, max_records=100)
    sink.write(_log_records(6))  # 23:00 .. 01:30 next day
    sink.flush()
    days = {task.file.partition[0] for task in sink.table.scan().plan_files()}
    assert len(days) == 2
    assert len(sink.table.metadata.snapshots) == 1


# ---------------------------------------------------------------------------------------------
# exactly once
# ---------------------------------------------------------------------------------------------


def test_crash__replay_from_committed_and_from_zero_gives_each_row_once(catalog: Any) -> None:
    records = _log_records(47)
    first = _sink(catalog)
    for rec in records[:25]:  # commits at 10 and 20; 5 buffered, then the process dies
        first.write([rec])
    assert first.pending == 5
    del first

    second = _sink(catalog)
    start = second.committed_offsets()
    assert start == {(TOPIC, 0): 10, (TOPIC, 1): 10}
    replay = [r for r in records if r.offset >= start.get((r.topic, r.partition), 0)]
    for i in range(0, len(replay), 7):
        second.write(replay[i:i + 7])
    second.flush()

    # A consumer that lost its group offsets and starts from 0 changes nothing.
    snapshots = len(second.table.metadata.snapshots)
    third = _sink(catalog)
    third.write(records)
    third.flush()
    third.table.refresh()
    assert len(third.table.metadata.snapshots) == snapshots

    rows = _rows(third, "partition", "offset", "message")
    expected = sorted(({"partition": r.partition, "offset": r.offset,
                        "message": r.value.message} for r in records),
                      key=lambda r: (str(r["partition"]), str(r["offset"]), r["message"]))
    assert rows == expected
    assert third.committed_offsets() == {(TOPIC, 0): 24, (TOPIC, 1): 23}


def test_crash__during_commit_leaves_nothing_and_the_replay_lands_once(
    catalog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyiceberg.table import Transaction

    records = _log_records(20)
    sink = _sink(catalog)
    sink.write(records[:10])  # committed

    def killed(self: Transaction) -> None:
        raise RuntimeError("process killed after writing data files, before the commit")

    with monkeypatch.context() as m:
        m.setattr(Transaction, "commit_transaction", killed)
        with pytest.raises(RuntimeError, match="killed"):
            sink.write(records[10:])

    restarted = _sink(catalog)
    start = restarted.committed_offsets()
    restarted.write([r for r in records if r.offset >= start[(r.topic, r.partition)]])
    restarted.flush()
    assert [r["offset"] for r in _rows(restarted, "offset")] == sorted(
        r.offset for r in records)


def test_offsets__a_commit_carries_the_offsets_of_every_partition_seen(catalog: Any) -> None:
    sink = _sink(catalog)
    records = _log_records(4)  # p0: 0,1  p1: 0,1
    sink.write([r for r in records if r.partition == 0])
    sink.flush()
    sink.write([SinkRecord("logs.other", 3, 41, None, {"x": 1})])
    sink.flush()
    summary = sink.table.current_snapshot().summary
    assert decode_offsets(summary[OFFSETS_KEY]) == {(TOPIC, 0): 2, ("logs.other", 3): 42}


def test_offsets__a_batch_with_duplicates_inside_is_written_once(catalog: Any) -> None:
    sink = _sink(catalog, max_records=100)
    records = _log_records(6)
    sink.write(records + records[2:5])
    sink.flush()
    assert len(_rows(sink, "offset")) == 6


def test_concurrent_writers__retry_on_conflict_and_keep_each_others_offsets(
    catalog: Any,
) -> None:
    records = _log_records(8)
    a = _sink(catalog)
    b = _sink(catalog)  # its table object is about to be stale
    conflicts = REGISTRY.get_sample_value("refluent_lake_commit_conflicts_total",
                                          {"table": "lab.raw_app"}) or 0
    a.write([r for r in records if r.partition == 0])
    a.flush()
    b.write([r for r in records if r.partition == 1])
    b.flush()
    after = REGISTRY.get_sample_value("refluent_lake_commit_conflicts_total",
                                      {"table": "lab.raw_app"})
    assert after == conflicts + 1
    assert b.committed_offsets() == {(TOPIC, 0): 4, (TOPIC, 1): 4}
    assert len(_rows(b, "partition", "offset")) == 8


def test_consumer_hooks__start_from_the_table_and_commit_only_when_flushed(
    catalog: Any,
) -> None:
    sink = _sink(catalog)
    sink.write(_log_records(2, partitions=1))
    assert sink.commit_ready() is False
    sink.flush()
    assert sink.commit_ready() is True
    starts = sink.start_offsets([TP(TOPIC, 0), TP(TOPIC, 1)])
    assert starts == {(TOPIC, 0): 2, (TOPIC, 1): -2}
    group = IcebergSink(catalog, RawEventsTable(), "raw_app", namespace="lab",
                        unknown_partitions="group")
    group.setup()
    assert group.start_offsets([TP(TOPIC, 0), TP(TOPIC, 1)]) == {(TOPIC, 0): 2}


def test_from_settings__opens_the_catalog_on_setup_and_closes_it(tmp_path: Path) -> None:
    from refluent.config import Settings

    (tmp_path / "wh").mkdir()
    settings = Settings(lake={"catalog_uri": f"sqlite:///{tmp_path / 'c.db'}",
                              "warehouse": (tmp_path / "wh").as_uri(), "namespace": "lab"})
    sink = IcebergSink.from_settings(settings, RawEventsTable(), "raw_app")
    assert sink.identifier == "lab.raw_app"
    sink.setup()
    sink.write(_log_records(2))
    sink.close()  # flushes
    reopened = IcebergSink.from_settings(settings, RawEventsTable(), "raw_app")
    reopened.setup()
    assert reopened.committed_offsets() == {(TOPIC, 0): 1, (TOPIC, 1): 1}
    reopened.close()


def test_metrics__commit_latency_is_observed(catalog: Any) -> None:
    labels = {"table": "lab.metered"}
    before = REGISTRY.get_sample_value("refluent_lake_commit_seconds_count", labels) or 0
    sink = _sink(catalog, table="metered")
    sink.write(_log_records(3))
    sink.flush()
    assert REGISTRY.get_sample_value("refluent_lake_commit_seconds_count", labels) == before + 1
    assert REGISTRY.get_sample_value("refluent_lake_rows_written_total", labels) == 3


# ---------------------------------------------------------------------------------------------
# rows a mapping skips or rejects
# ---------------------------------------------------------------------------------------------


def test_cdc_changelog__a_batch_of_only_tombstones_still_moves_the_offsets(catalog: Any) -> None:
    sink = _sink(catalog, CdcChangelogTable(), table="cdc_tomb")
    sink.write([SinkRecord("cdc.customers", 1, 9, b"1", None)])
    sink.flush()
    assert sink.committed_offsets() == {("cdc.customers", 1): 10}
    assert sink.table.scan().to_arrow().num_rows == 0


def test_cdc_changelog__a_bad_record_names_its_coordinates(catalog: Any) -> None:
    sink = _sink(catalog, CdcChangelogTable(), table="cdc_bad")
    sink.write([SinkRecord("cdc.customers", 2, 17, None, {"op": "c"})])
    with pytest.raises(LakeRowError, match=r"cdc.customers\[2\]@17"):
        sink.flush()
    assert sink.committed_offsets() == {}


def test_cdc_changelog__a_bad_record_goes_to_the_callback_and_is_skipped(catalog: Any) -> None:
    rejected: list[tuple[int, LakeRowError]] = []
    sink = _sink(catalog, CdcChangelogTable(), table="cdc_dlq",
                 on_bad_record=lambda rec, exc: rejected.append((rec.offset, exc)))
    sink.write([SinkRecord("cdc.customers", 0, 0, None, {"op": "c"}),
                SinkRecord("cdc.customers", 0, 1, b"1", customer_change("c", 1, 42, "a@x.io"))])
    sink.flush()
    assert [(offset, exc.offset) for offset, exc in rejected] == [(0, 0)]
    assert [r["offset"] for r in _rows(sink, "offset")] == [1]
    assert sink.committed_offsets() == {("cdc.customers", 0): 2}
    replay = _sink(catalog, CdcChangelogTable(), table="cdc_dlq",
                   on_bad_record=lambda rec, exc: rejected.append((rec.offset, exc)))
    replay.write([SinkRecord("cdc.customers", 0, 0, None, {"op": "c"})])
    replay.flush()
    assert len(rejected) == 1  # a replayed bad record is not dead-lettered twice
