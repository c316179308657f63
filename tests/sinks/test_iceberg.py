"""The lake sink against a real SQLite-backed Iceberg catalog in a temporary folder."""

from __future__ import annotations

from collections import namedtuple
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform
from pyiceberg.types import IntegerType, LongType, NestedField, StringType, TimestamptzType

from refluent.embedded.services import lake_catalog
from refluent.sinks.base import SinkRecord
from refluent.sinks.iceberg import (
    OFFSETS_KEY,
    CdcChangelogTable,
    FeatureHistoryTable,
    IcebergSink,
    LakeRowError,
    RawEventsTable,
    TableMapping,
    decode_offsets,
    read_offsets,
)
from refluent.streams.contracts import CdcEnvelope, FeatureUpdate, LogEvent

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


def _cdc(op: str, row_id: int, lsn: int, email: str | None = None,
         before_id: int | None = None) -> CdcEnvelope:
    after = {"id": row_id, "email": email} if op in ("c", "u", "r") else None
    before = None
    if op in ("u", "d"):
        before = {"id": before_id if before_id is not None else row_id, "email": "old"}
    return CdcEnvelope.model_validate({
        "before": before, "after": after, "op": op, "ts_ms": 1_709_330_000_000 + lsn,
        "source": {"connector": "postgresql", "db": "shop", "table": "customers",
                   "ts_ms": 1_709_320_000_000 + lsn, "lsn": lsn},
    })


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


def test_raw_events__flatten_scalars_and_keep_the_whole_event(catalog: Any) -> None:
    sink = _sink(catalog)
    (rec,) = _log_records(1)
    sink.write([rec, SinkRecord(TOPIC, 0, 1, b"u9", None, timestamp_ms=1_709_340_000_000)])
    sink.flush()
    row, tomb = _rows(sink, "offset", "key", "event_time", "message", "entity_id", "level",
                      "payload")
    assert row["event_time"] == T0
    assert (row["message"], row["entity_id"], row["level"]) == ("m0", "u0", "info")
    assert orjson.loads(row["payload"])["attributes"] == {"i": 0}
    assert "attributes" not in sink.table.schema().column_names  # not a scalar
    assert tomb["payload"] is None and tomb["key"] == "u9"
    assert tomb["event_time"] == datetime.fromtimestamp(1_709_340_000, tz=UTC)


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
# schema evolution
# ---------------------------------------------------------------------------------------------


def _raw(offset: int, value: dict[str, Any]) -> SinkRecord[Any]:
    return SinkRecord("events", 0, offset, None, value,
                      timestamp_ms=int(T0.timestamp() * 1000))


def test_schema__a_new_field_adds_a_column(catalog: Any) -> None:
    sink = _sink(catalog, table="evolving")
    sink.write([_raw(0, {"a": 1})])
    sink.flush()
    assert "b" not in sink.table.schema().column_names
    sink.write([_raw(1, {"a": 2, "b": "x", "c": None})])
    sink.flush()
    schema = sink.table.schema()
    assert isinstance(schema.find_field("b").field_type, StringType)
    assert "c" not in schema.column_names  # all-null: no type to give it yet
    assert _rows(sink, "offset", "a", "b") == [
        {"offset": 0, "a": 1, "b": None}, {"offset": 1, "a": 2, "b": "x"}]


def test_schema__a_conflicting_value_goes_to_a_text_column_not_a_failure(catalog: Any) -> None:
    sink = _sink(catalog, table="conflicts", max_records=100)
    sink.write([_raw(0, {"a": 1, "f": 0.5})])
    sink.flush()
    sink.write([_raw(1, {"a": "oops", "f": 2}), _raw(2, {"a": 2.5, "f": True})])
    sink.flush()
    assert isinstance(sink.table.schema().find_field("a").field_type, LongType)
    assert _rows(sink, "offset", "a", "a__string", "f", "f__string") == [
        {"offset": 0, "a": 1, "a__string": None, "f": 0.5, "f__string": None},
        {"offset": 1, "a": None, "a__string": "oops", "f": 2.0, "f__string": None},
        {"offset": 2, "a": None, "a__string": "2.5", "f": None, "f__string": "true"},
    ]


def test_schema__an_int_column_is_widened_to_long(catalog: Any) -> None:
    mapping = RawEventsTable()
    base = mapping.schema()
    schema = Schema(*base.fields, NestedField(99, "n", IntegerType(), required=False))
    catalog.create_namespace_if_not_exists("lab")
    catalog.create_table("lab.legacy", schema=schema, partition_spec=mapping.partition_spec(
        schema))
    sink = _sink(catalog, mapping, table="legacy")
    sink.write([_raw(0, {"n": 7}), _raw(1, {"n": 2**40})])
    sink.flush()
    assert isinstance(sink.table.schema().find_field("n").field_type, LongType)
    assert [r["n"] for r in _rows(sink, "offset", "n")] == [7, 2**40]


# ---------------------------------------------------------------------------------------------
# CDC changelog and feature history
# ---------------------------------------------------------------------------------------------


def test_cdc_changelog__rows_carry_op_key_position_and_source_time(catalog: Any) -> None:
    sink = _sink(catalog, CdcChangelogTable(), table="cdc_customers")
    sink.write([
        SinkRecord("cdc.customers", 0, 0, b"1", _cdc("c", 1, 42, "a@x.io")),
        SinkRecord("cdc.customers", 0, 1, b"1", _cdc("u", 1, 1042, "b@x.io")),
        SinkRecord("cdc.customers", 0, 2, b"1", _cdc("d", 1, 2042)),
        SinkRecord("cdc.customers", 0, 3, b"1", None),  # tombstone
    ])
    sink.flush()
    rows = _rows(sink, "offset", "op", "key", "position", "source_ts", "ts_ms", "email",
                 "before", "after")
    assert [r["op"] for r in rows] == ["c", "u", "d"]
    assert {r["key"] for r in rows} == {"1"}
    assert [r["position"] for r in rows] == sorted(r["position"] for r in rows)
    assert rows[0]["position"] == "00000000000000000042"
    assert rows[0]["source_ts"] == datetime.fromtimestamp(1_709_320_000.042, tz=UTC)
    assert rows[0]["ts_ms"] == 1_709_330_000_042
    assert [r["email"] for r in rows] == ["a@x.io", "b@x.io", "old"]  # d: the before-row
    assert orjson.loads(rows[1]["after"]) == {"id": 1, "email": "b@x.io"}
    assert rows[2]["after"] is None
    (part,) = sink.table.spec().fields
    assert sink.table.schema().find_field(part.source_id).name == "source_ts"
    assert sink.committed_offsets() == {("cdc.customers", 0): 4}  # the tombstone counts


def test_cdc_changelog__a_batch_of_only_tombstones_still_moves_the_offsets(catalog: Any) -> None:
    sink = _sink(catalog, CdcChangelogTable(), table="cdc_tomb")
    sink.write([SinkRecord("cdc.customers", 1, 9, b"1", None)])
    sink.flush()
    assert sink.committed_offsets() == {("cdc.customers", 1): 10}
    assert sink.table.scan().to_arrow().num_rows == 0


def test_cdc_changelog__mysql_positions_and_wire_dicts(catalog: Any) -> None:
    sink = _sink(catalog, CdcChangelogTable(primary_key=("tenant", "id")), table="cdc_mysql")
    wire = {"before": None, "after": {"tenant": "t1", "id": 5, "op": "shadowed"}, "op": "c",
            "source": {"connector": "mysql", "ts_ms": 1_709_320_000_000,
                       "file": "mysql-bin.000003", "pos": 154, "row": 1}}
    sink.write([SinkRecord("cdc.orders", 0, 0, None, wire)])
    sink.flush()
    (row,) = _rows(sink, "key", "position", "op", "op_")
    assert row == {"key": "t1|5", "position": "mysql-bin.000003/00000000000000000154/"
                   "00000000000000000001", "op": "c", "op_": "shadowed"}


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
                SinkRecord("cdc.customers", 0, 1, b"1", _cdc("c", 1, 42, "a@x.io"))])
    sink.flush()
    assert [(offset, exc.offset) for offset, exc in rejected] == [(0, 0)]
    assert [r["offset"] for r in _rows(sink, "offset")] == [1]
    assert sink.committed_offsets() == {("cdc.customers", 0): 2}
    replay = _sink(catalog, CdcChangelogTable(), table="cdc_dlq",
                   on_bad_record=lambda rec, exc: rejected.append((rec.offset, exc)))
    replay.write([SinkRecord("cdc.customers", 0, 0, None, {"op": "c"})])
    replay.flush()
    assert len(rejected) == 1  # a replayed bad record is not dead-lettered twice


def test_feature_history__each_feature_is_a_column(catalog: Any) -> None:
    sink = _sink(catalog, FeatureHistoryTable(), table="features_user")
    update = FeatureUpdate(view="user_activity", entity_id="u1", event_time=T0,
                           values={"clicks_1h": 3, "ctr": 0.25, "emb": [0.5, 1.0],
                                   "view": "shadowed"},
                           sequence=12, source_topic="logs.app", source_partition=1,
                           source_offset=12)
    sink.write([SinkRecord("features.user_activity", 0, 0, b"u1", update)])
    sink.flush()
    (row,) = _rows(sink, "view", "entity_id", "event_time", "deleted", "sequence",
                   "source_offset", "clicks_1h", "ctr", "emb", "view_")
    assert row == {"view": "user_activity", "entity_id": "u1", "event_time": T0,
                   "deleted": False, "sequence": 12, "source_offset": 12, "clicks_1h": 3,
                   "ctr": 0.25, "emb": [0.5, 1.0], "view_": "shadowed"}
    assert isinstance(sink.table.schema().find_field("event_time").field_type,
                      TimestamptzType)


def test_read_offsets__skips_snapshots_made_by_other_tools(catalog: Any) -> None:
    sink = _sink(catalog)
    sink.write(_log_records(2, partitions=1))
    sink.flush()
    sink.table.delete("offset = 0")  # a commit without refluent.offsets
    sink.table.refresh()
    # Summary.__getitem__ answers None for a missing key, so `in` is always True: use get.
    assert sink.table.current_snapshot().summary.get(OFFSETS_KEY) is None
    assert read_offsets(sink.table) == {(TOPIC, 0): 2}
