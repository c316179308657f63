"""Each table mapping's rows, written through the lake sink to a real catalog."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
import pytest
from pyiceberg.types import TimestamptzType
from support.cdc import customer_change

from refluent.lake.mappings import CdcChangelogTable, FeatureHistoryTable
from refluent.sinks.base import SinkRecord
from refluent.streams.contracts import FeatureUpdate, LogEvent

if TYPE_CHECKING:
    from tests.lake.conftest import Lab

pytestmark = pytest.mark.integration

T0 = datetime(2024, 3, 1, 23, 0, tzinfo=UTC)
TOPIC = "logs.app"




# ---------------------------------------------------------------------------------------------
# raw events
# ---------------------------------------------------------------------------------------------


def test_raw_events__flatten_scalars_and_keep_the_whole_event(lab: Lab) -> None:
    sink = lab.sink()
    event = LogEvent(source="app", ts=T0, message="m0", entity_id="u0", attributes={"i": 0})
    rec = SinkRecord(TOPIC, 0, 0, b"u0", event)
    sink.write([rec, SinkRecord(TOPIC, 0, 1, b"u9", None, timestamp_ms=1_709_340_000_000)])
    sink.flush()
    row, tomb = lab.rows(sink, "offset", "key", "event_time", "message", "entity_id", "level",
                         "payload")
    assert row["event_time"] == T0
    assert (row["message"], row["entity_id"], row["level"]) == ("m0", "u0", "info")
    assert orjson.loads(row["payload"])["attributes"] == {"i": 0}
    assert "attributes" not in sink.table.schema().column_names  # not a scalar
    assert tomb["payload"] is None and tomb["key"] == "u9"
    assert tomb["event_time"] == datetime.fromtimestamp(1_709_340_000, tz=UTC)


# ---------------------------------------------------------------------------------------------
# CDC changelog and feature history
# ---------------------------------------------------------------------------------------------


def test_cdc_changelog__rows_carry_op_key_position_and_source_time(lab: Lab) -> None:
    sink = lab.sink("cdc_customers", CdcChangelogTable())
    sink.write([
        SinkRecord("cdc.customers", 0, 0, b"1", customer_change("c", 1, 42, "a@x.io")),
        SinkRecord("cdc.customers", 0, 1, b"1", customer_change("u", 1, 1042, "b@x.io")),
        SinkRecord("cdc.customers", 0, 2, b"1", customer_change("d", 1, 2042)),
        SinkRecord("cdc.customers", 0, 3, b"1", None),  # tombstone
    ])
    sink.flush()
    rows = lab.rows(sink, "offset", "op", "key", "position", "source_ts", "ts_ms", "email",
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


def test_cdc_changelog__mysql_positions_and_wire_dicts(lab: Lab) -> None:
    sink = lab.sink("cdc_mysql", CdcChangelogTable(primary_key=("tenant", "id")))
    wire = {"before": None, "after": {"tenant": "t1", "id": 5, "op": "shadowed"}, "op": "c",
            "source": {"connector": "mysql", "ts_ms": 1_709_320_000_000,
                       "file": "mysql-bin.000003", "pos": 154, "row": 1}}
    sink.write([SinkRecord("cdc.orders", 0, 0, None, wire)])
    sink.flush()
    (row,) = lab.rows(sink, "key", "position", "op", "op_")
    assert row == {"key": "t1|5", "position": "mysql-bin.000003/00000000000000000154/"
                   "00000000000000000001", "op": "c", "op_": "shadowed"}


def test_feature_history__each_feature_is_a_column(lab: Lab) -> None:
    sink = lab.sink("features_user", FeatureHistoryTable())
    update = FeatureUpdate(view="user_activity", entity_id="u1", event_time=T0,
                           values={"clicks_1h": 3, "ctr": 0.25, "emb": [0.5, 1.0],
                                   "view": "shadowed"},
                           sequence=12, source_topic="logs.app", source_partition=1,
                           source_offset=12)
    sink.write([SinkRecord("features.user_activity", 0, 0, b"u1", update)])
    sink.flush()
    (row,) = lab.rows(sink, "view", "entity_id", "event_time", "deleted", "sequence",
                      "source_offset", "clicks_1h", "ctr", "emb", "view_")
    assert row == {"view": "user_activity", "entity_id": "u1", "event_time": T0,
                   "deleted": False, "sequence": 12, "source_offset": 12, "clicks_1h": 3,
                   "ctr": 0.25, "emb": [0.5, 1.0], "view_": "shadowed"}
    assert isinstance(sink.table.schema().find_field("event_time").field_type,
                      TimestamptzType)
