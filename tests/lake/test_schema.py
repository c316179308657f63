"""Schema evolution: how a batch's rows meet the table's schema (alone, and through the sink)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from pyiceberg.schema import Schema
from pyiceberg.types import DoubleType, IntegerType, LongType, NestedField, StringType

from refluent.lake.mappings import RawEventsTable
from refluent.lake.schema import CONFLICT_SUFFIX, plan_columns
from refluent.sinks.base import SinkRecord

if TYPE_CHECKING:
    from tests.lake.conftest import Lab

T0 = datetime(2024, 3, 1, 23, 0, tzinfo=UTC)


@pytest.mark.unit
def test_plan_columns__adds_widens_and_sends_misfits_to_a_text_column() -> None:
    schema = Schema(NestedField(1, "n", IntegerType(), required=False),
                    NestedField(2, "s", StringType(), required=False))
    rows = [{"n": 1, "s": 5, "new": 1.5, "empty": None}, {"n": 2**40, "s": "x", "new": 2},
            {"n": "many", "s": None, "new": None}]

    plan = plan_columns(schema, rows)

    added = {f.name: f.field_type for f in plan.new_fields}
    assert added == {"n": LongType(), "new": DoubleType(), "n" + CONFLICT_SUFFIX: StringType()}
    assert plan.columns["n"] == [1, 2**40, None]
    assert plan.columns["n" + CONFLICT_SUFFIX] == [None, None, "many"]
    assert plan.columns["s"] == ["5", "x", None]  # a string column takes anything, as text
    assert plan.columns["new"] == [1.5, 2.0, None]
    assert "empty" not in plan.columns  # all-null: no type to give it yet


def _raw(offset: int, value: dict[str, Any]) -> SinkRecord[Any]:
    return SinkRecord("events", 0, offset, None, value,
                      timestamp_ms=int(T0.timestamp() * 1000))


@pytest.mark.integration
def test_sink__a_new_field_adds_a_column(lab: Lab) -> None:
    sink = lab.sink("evolving")
    sink.write([_raw(0, {"a": 1})])
    sink.flush()
    assert "b" not in sink.table.schema().column_names
    sink.write([_raw(1, {"a": 2, "b": "x", "c": None})])
    sink.flush()
    schema = sink.table.schema()
    assert isinstance(schema.find_field("b").field_type, StringType)
    assert "c" not in schema.column_names  # all-null: no type to give it yet
    assert lab.rows(sink, "offset", "a", "b") == [
        {"offset": 0, "a": 1, "b": None}, {"offset": 1, "a": 2, "b": "x"}]


@pytest.mark.integration
def test_sink__a_conflicting_value_goes_to_a_text_column_not_a_failure(lab: Lab) -> None:
    sink = lab.sink("conflicts", max_records=100)
    sink.write([_raw(0, {"a": 1, "f": 0.5})])
    sink.flush()
    sink.write([_raw(1, {"a": "oops", "f": 2}), _raw(2, {"a": 2.5, "f": True})])
    sink.flush()
    assert isinstance(sink.table.schema().find_field("a").field_type, LongType)
    assert lab.rows(sink, "offset", "a", "a__string", "f", "f__string") == [
        {"offset": 0, "a": 1, "a__string": None, "f": 0.5, "f__string": None},
        {"offset": 1, "a": None, "a__string": "oops", "f": 2.0, "f__string": None},
        {"offset": 2, "a": None, "a__string": "2.5", "f": None, "f__string": "true"},
    ]


@pytest.mark.integration
def test_sink__an_int_column_is_widened_to_long(lab: Lab) -> None:
    catalog = lab.catalog
    mapping = RawEventsTable()
    base = mapping.schema()
    schema = Schema(*base.fields, NestedField(99, "n", IntegerType(), required=False))
    catalog.create_namespace_if_not_exists("lab")
    catalog.create_table("lab.legacy", schema=schema, partition_spec=mapping.partition_spec(
        schema))
    sink = lab.sink("legacy", mapping)
    sink.write([_raw(0, {"n": 7}), _raw(1, {"n": 2**40})])
    sink.flush()
    assert isinstance(sink.table.schema().find_field("n").field_type, LongType)
    assert [r["n"] for r in lab.rows(sink, "offset", "n")] == [7, 2**40]


