"""The event contracts: the same checks over every contract, then Debezium and serde specifics.

The contract checks follow River's ``yield_checks`` idea: every contract in
:data:`~refluent.streams.contracts.CONTRACTS` goes through the same list, so a new contract gets
them by being registered (and by getting a minimal example in ``_MINIMAL`` below).
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from refluent.streams.contracts import (
    CONTRACTS,
    CdcEnvelope,
    CdcSource,
    DriftAlert,
    Event,
    LogEvent,
)
from refluent.streams.errors import DecodeError, RecordTooLargeError
from refluent.streams.schemas import export_schemas, json_schemas
from refluent.streams.serde import JsonSerde
from refluent.testing.strategies import STRATEGIES

pytestmark = pytest.mark.contract

HAS_JSONSCHEMA = importlib.util.find_spec("jsonschema") is not None

# The smallest valid JSON of each contract: what a producer must send.
_MINIMAL: dict[str, dict[str, Any]] = {
    "CdcEnvelope": {
        "before": None,
        "after": {"id": 1, "email": "a@x.io"},
        "op": "c",
        "source": {"connector": "postgresql", "db": "shop", "table": "customers", "lsn": 42},
        "ts_ms": 1_700_000_000_000,
    },
    "LogEvent": {"source": "checkout", "ts": "2026-01-01T12:00:00+02:00", "message": "paid"},
    "FeatureUpdate": {
        "view": "customer_orders",
        "entity_id": "c1",
        "values": {"orders_1h": 3, "amount_sum_1h": 41.5},
        "event_time": "2026-01-01T12:00:00Z",
    },
    "PredictionRequest": {"model": "churn", "entity_id": "u1"},
    "Prediction": {
        "request_id": "r1",
        "model_name": "churn",
        "model_version": "3",
        "entity_id": "u1",
    },
    "Feedback": {"prediction_id": "p1", "label": 1, "event_time": "2026-01-01T12:00:00Z"},
    "LabeledExample": {
        "prediction_id": "p1",
        "entity_id": "u1",
        "model_name": "churn",
        "model_version": "3",
        "features": {"age": 31, "emb": [0.1, 0.2]},
        "label": True,
        "prediction_time": "2026-01-01T12:00:00Z",
        "label_time": "2026-01-02T12:00:00Z",
    },
    "DriftAlert": {
        "model_name": "churn",
        "model_version": "3",
        "detector": "adwin",
        "kind": "error",
        "statistic": 0.31,
        "threshold": 0.2,
        "detected_at": "2026-01-01T12:00:00Z",
    },
    "RetrainRequest": {
        "model_name": "churn",
        "reason": "drift",
        "requested_at": "2026-01-01T12:00:00Z",
    },
}

_NAMES = list(CONTRACTS)
_OWN_EVENTS = [n for n in _NAMES if issubclass(CONTRACTS[n], Event)]


def _datetime_fields(name: str) -> list[str]:
    props = json_schemas()[name]["properties"]
    assert isinstance(props, dict)
    return sorted(k for k, v in props.items() if v.get("format") == "date-time")


_WITH_DATETIMES = [n for n in _NAMES if _datetime_fields(n)]


def _params(names: list[str]) -> list[Any]:
    return [
        pytest.param(
            n,
            id=n,
        )
        for n in names
    ]


# --------------------------------------------------------------------------------------------
# The same checks for every contract
# --------------------------------------------------------------------------------------------


def test_every_contract__has_a_minimal_example_and_a_strategy() -> None:
    assert set(_MINIMAL) == set(CONTRACTS)
    assert set(STRATEGIES) == set(CONTRACTS)


@pytest.mark.parametrize("name", _params(_NAMES))
def test_contract__minimal_example_is_valid(name: str) -> None:
    model = CONTRACTS[name]

    event = JsonSerde(model).decode(orjson.dumps(_MINIMAL[name]))

    assert isinstance(event, model)
    key = event.entity_key()  # type: ignore[attr-defined]
    assert key is None or isinstance(key, str)


@pytest.mark.parametrize("name", _params(_NAMES))
def test_contract__has_a_schema_version_field(name: str) -> None:
    model = CONTRACTS[name]
    supported = model.SCHEMA_VERSION  # type: ignore[attr-defined]

    field = model.model_fields["schema_version"]
    event = model.model_validate(_MINIMAL[name])

    assert isinstance(supported, int) and supported >= 1
    assert field.annotation is int
    assert field.default == supported
    assert event.schema_version == supported  # type: ignore[attr-defined]
    schema = json_schemas()[name]
    assert "schema_version" in schema["properties"]  # type: ignore[operator]
    assert schema["x-refluent-version"] == supported


@pytest.mark.parametrize("name", _params(_NAMES))
def test_contract__json_schema_exports_and_is_a_valid_json_schema(
    name: str, tmp_path: Path
) -> None:
    schema = json_schemas()[name]

    written = {p.name: p for p in export_schemas(tmp_path)}

    path = written[f"{name}.v{schema['x-refluent-version']}.schema.json"]
    assert json.loads(path.read_text()) == json.loads(json.dumps(schema))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert (
        schema["$id"] == f"https://refluent.dev/schemas/{name}/v{schema['x-refluent-version']}.json"
    )
    # Structural checks that hold with or without jsonschema installed.
    assert schema["type"] == "object"
    properties = schema["properties"]
    assert isinstance(properties, dict)
    assert set(schema.get("required", [])) <= set(properties)  # type: ignore[arg-type]
    defs = schema.get("$defs", {})
    for ref in _refs(schema):
        assert ref.startswith("#/$defs/") and ref.removeprefix("#/$defs/") in defs  # type: ignore[operator]
    if HAS_JSONSCHEMA:
        import jsonschema

        jsonschema.Draft202012Validator.check_schema(schema)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


@pytest.mark.parametrize("name", _params(_NAMES))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_contract__encoded_examples_validate_against_the_json_schema(
    name: str, data: st.DataObject
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(
        json_schemas()[name], format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    event = data.draw(STRATEGIES[name], label=name)

    wire = orjson.loads(JsonSerde(CONTRACTS[name]).encode(event))

    validator.validate(wire)
    validator.validate(_MINIMAL[name])


@pytest.mark.parametrize("name", _params(_NAMES))
def test_contract__is_frozen(name: str) -> None:
    event = CONTRACTS[name].model_validate(_MINIMAL[name])

    with pytest.raises(ValidationError, match="frozen"):
        event.schema_version = 99  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", _params(_OWN_EVENTS))
def test_own_event__rejects_unknown_fields(name: str) -> None:
    serde = JsonSerde(CONTRACTS[name])

    with pytest.raises(DecodeError) as info:
        serde.decode(orjson.dumps({**_MINIMAL[name], "surprise": 1}))

    assert info.value.reason == "validation"
    assert "surprise" in str(info.value)


def test_cdc_envelope__keeps_unknown_fields_debezium_adds() -> None:
    raw = {**_MINIMAL["CdcEnvelope"], "ts_us": 1_700_000_000_000_123}
    raw["source"] = {**raw["source"], "xmin": None, "txId": 7}

    env = JsonSerde(CdcEnvelope).decode(orjson.dumps(raw))

    assert env is not None
    assert env.model_extra == {"ts_us": 1_700_000_000_000_123}
    assert env.source.model_extra == {"xmin": None}
    assert env.source.txId == 7


@pytest.mark.parametrize("name", _params(_WITH_DATETIMES))
def test_contract__rejects_naive_datetimes(name: str) -> None:
    serde = JsonSerde(CONTRACTS[name])
    for field in _datetime_fields(name):
        raw = {**_MINIMAL[name], field: "2026-01-01T12:00:00"}

        with pytest.raises(DecodeError) as info:
            serde.decode(orjson.dumps(raw))

        assert info.value.reason == "validation"
        assert field in info.value.detail
        with pytest.raises(ValidationError, match="timezone"):
            CONTRACTS[name].model_validate(
                {**_MINIMAL[name], field: datetime(2026, 1, 1, 12)}  # noqa: DTZ001 - the point
            )


@pytest.mark.parametrize(
    "name",
    _params(_NAMES),
)
def test_contract__rejects_a_schema_version_newer_than_supported(name: str) -> None:
    model = CONTRACTS[name]
    newer = model.SCHEMA_VERSION + 1  # type: ignore[attr-defined]

    with pytest.raises(DecodeError) as info:
        JsonSerde(model).decode(orjson.dumps({**_MINIMAL[name], "schema_version": newer}))

    assert info.value.reason == "validation"
    assert f"schema_version {newer} is newer" in info.value.detail


# --------------------------------------------------------------------------------------------
# Debezium envelopes
# --------------------------------------------------------------------------------------------

POSTGRES_UPDATE = b"""{
  "before": {"id": 1004, "first_name": "Anne", "last_name": "Kretchmar",
             "email": "annek@noanswer.org"},
  "after": {"id": 1004, "first_name": "Anne Marie", "last_name": "Kretchmar",
            "email": "annek@noanswer.org"},
  "source": {
    "version": "2.7.3.Final", "connector": "postgresql", "name": "PostgreSQL_server",
    "ts_ms": 1559033904863, "ts_us": 1559033904863123, "ts_ns": 1559033904863123000,
    "snapshot": "false", "db": "postgres", "sequence": "[\\"24023119\\",\\"24023128\\"]",
    "schema": "public", "table": "customers", "txId": 556, "lsn": 24023128, "xmin": null
  },
  "transaction": null,
  "op": "u",
  "ts_ms": 1559033904865, "ts_us": 1559033904865123, "ts_ns": 1559033904865123000
}"""

MYSQL_CREATE = b"""{
  "before": null,
  "after": {"id": 1005, "first_name": "Sarah", "last_name": "Thompson",
            "email": "kitt@acme.com"},
  "source": {
    "version": "2.7.3.Final", "connector": "mysql", "name": "mysql-server-1",
    "ts_ms": 1465581029000, "snapshot": "false", "db": "inventory", "sequence": null,
    "table": "customers", "server_id": 223344,
    "gtid": "3e11fa47-71ca-11e1-9e33-c80aa9429562:23", "file": "mysql-bin.000003",
    "pos": 484, "row": 0, "thread": 7,
    "query": "INSERT INTO customers (first_name, last_name, email) VALUES ('Sarah', ...)"
  },
  "op": "c",
  "ts_ms": 1465581029523,
  "transaction": {"id": "3e11fa47-71ca-11e1-9e33-c80aa9429562:23", "total_order": 1,
                  "data_collection_order": 1}
}"""


def _wrapped(payload: bytes, value_fields: list[dict[str, Any]], source: str) -> bytes:
    value = {"type": "struct", "optional": True, "name": "srv.db.t.Value", "fields": value_fields}
    schema = {
        "type": "struct",
        "optional": False,
        "name": "srv.db.t.Envelope",
        "version": 2,
        "fields": [
            {**value, "field": "before"},
            {**value, "field": "after"},
            {
                "type": "struct",
                "optional": False,
                "name": f"io.debezium.connector.{source}.Source",
                "field": "source",
                "fields": [{"type": "string", "optional": False, "field": "connector"}],
            },
            {"type": "string", "optional": False, "field": "op"},
            {"type": "int64", "optional": True, "field": "ts_ms"},
        ],
    }
    return b'{"schema": ' + orjson.dumps(schema) + b', "payload": ' + payload + b"}"


_CUSTOMER_FIELDS = [
    {"type": "int32", "optional": False, "default": 0, "field": "id"},
    {"type": "string", "optional": False, "field": "first_name"},
    {"type": "string", "optional": False, "field": "last_name"},
    {"type": "string", "optional": False, "field": "email"},
]


@pytest.mark.unit
@pytest.mark.parametrize("wrap", [False, True], ids=["plain", "wrapped"])
def test_debezium_postgres_update__decodes_with_lsn_position(wrap: bool) -> None:
    data = _wrapped(POSTGRES_UPDATE, _CUSTOMER_FIELDS, "postgresql") if wrap else POSTGRES_UPDATE

    env = JsonSerde(CdcEnvelope).decode(data)

    assert env is not None
    assert env.op == "u"
    assert env.before is not None and env.before["first_name"] == "Anne"
    assert env.row["first_name"] == "Anne Marie"
    assert env.source.connector == "postgresql"
    assert env.source.schema_ == "public"
    assert env.source.txId == 556
    assert env.source.sequence == '["24023119","24023128"]'
    assert env.source.position == (24023128,)
    assert env.source.model_extra == {
        "ts_us": 1559033904863123,
        "ts_ns": 1559033904863123000,
        "xmin": None,
    }
    assert env.event_time == datetime(2019, 5, 28, 8, 58, 24, 863000, tzinfo=UTC)
    assert env.key() == "1004"
    assert env.entity_key() == "1004"
    assert env == CdcEnvelope.from_debezium(data)


@pytest.mark.unit
@pytest.mark.parametrize("wrap", [False, True], ids=["plain", "wrapped"])
def test_debezium_mysql_create__decodes_with_binlog_position(wrap: bool) -> None:
    data = _wrapped(MYSQL_CREATE, _CUSTOMER_FIELDS, "mysql") if wrap else MYSQL_CREATE

    env = JsonSerde(CdcEnvelope).decode(data)

    assert env is not None
    assert env.op == "c"
    assert env.before is None
    assert env.row == {
        "id": 1005,
        "first_name": "Sarah",
        "last_name": "Thompson",
        "email": "kitt@acme.com",
    }
    assert env.source.position == ("mysql-bin.000003", 484, 0)
    assert env.source.model_extra is not None
    assert env.source.model_extra["server_id"] == 223344
    assert env.transaction is not None and env.transaction["total_order"] == 1
    assert env.event_time == datetime(2016, 6, 10, 17, 50, 29, tzinfo=UTC)
    assert env.key() == "1005"


def _source(**fields: Any) -> CdcSource:
    return CdcSource.model_validate(fields)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        pytest.param(_source(lsn=24023119), _source(lsn=24023128), id="postgres-lsn"),
        pytest.param(
            _source(file="mysql-bin.000003", pos=484, row=0),
            _source(file="mysql-bin.000003", pos=484, row=1),
            id="mysql-row-in-event",
        ),
        pytest.param(
            _source(file="mysql-bin.000003", pos=484),
            _source(file="mysql-bin.000003", pos=485, row=0),
            id="mysql-pos-missing-row-is-0",
        ),
        pytest.param(
            _source(file="mysql-bin.000003", pos=99_999),
            _source(file="mysql-bin.000004", pos=4),
            id="mysql-binlog-rollover",
        ),
        pytest.param(
            _source(change_lsn="00000027:00000758:0005", commit_lsn="00000027:00000758:0009"),
            _source(change_lsn="00000027:00000758:0006", commit_lsn="00000027:00000758:0001"),
            id="sqlserver-change-lsn-wins",
        ),
        pytest.param(_source(ts_ms=1000, ord=5), _source(ts_ms=1000, ord=6), id="mongo-ord"),
        pytest.param(_source(ts_ms=1000, ord=9), _source(ts_ms=1001, ord=1), id="mongo-ts"),
    ],
)
def test_source_position__orders_changes_as_the_source_log_does(
    earlier: CdcSource, later: CdcSource
) -> None:
    assert earlier.position is not None and later.position is not None
    assert earlier.position < later.position


@pytest.mark.unit
def test_source_position__is_none_when_the_connector_gives_none() -> None:
    assert _source(connector="oracle", ts_ms=5).position is None
    assert _source(file="mysql-bin.000001").position is None  # no pos: unknown


@pytest.mark.unit
def test_tombstone__decodes_as_none_only_where_allowed() -> None:
    assert JsonSerde(CdcEnvelope, allow_tombstones=True).decode(None) is None

    with pytest.raises(DecodeError) as info:
        JsonSerde(CdcEnvelope).decode(None)

    assert info.value.reason == "null_value"
    assert str(info.value) == "CdcEnvelope: null_value: record has no value"


def _orders_fields() -> list[dict[str, Any]]:
    return [
        {"type": "int64", "optional": False, "field": "id"},
        {
            "type": "bytes",
            "optional": True,
            "name": "org.apache.kafka.connect.data.Decimal",
            "version": 1,
            "parameters": {"scale": "2", "connect.decimal.precision": "10"},
            "field": "amount",
        },
        {
            "type": "bytes",
            "optional": True,
            "name": "org.apache.kafka.connect.data.Decimal",
            "version": 1,
            "parameters": {"scale": "2", "connect.decimal.precision": "10"},
            "field": "refund",
        },
        {
            "type": "int32",
            "optional": True,
            "name": "io.debezium.time.Date",
            "version": 1,
            "field": "order_date",
        },
        {
            "type": "int64",
            "optional": True,
            "name": "io.debezium.time.MicroTimestamp",
            "version": 1,
            "field": "created_at",
        },
        {
            "type": "string",
            "optional": True,
            "name": "io.debezium.time.ZonedTimestamp",
            "version": 1,
            "field": "shipped_at",
        },
        {
            "type": "struct",
            "optional": True,
            "name": "io.debezium.data.VariableScaleDecimal",
            "fields": [
                {"type": "int32", "optional": False, "field": "scale"},
                {"type": "bytes", "optional": False, "field": "value"},
            ],
            "field": "weight",
        },
        {"type": "string", "optional": True, "field": "note"},
    ]


ORDERS_UPDATE = b"""{
  "before": {"id": 7, "amount": "MDk=", "refund": null, "order_date": 19797,
             "created_at": 1710498600123456, "shipped_at": null,
             "weight": {"scale": 3, "value": "HoQc"}, "note": "MDk="},
  "after": {"id": 7, "amount": "z8c=", "refund": "MDk=", "order_date": -1,
            "created_at": -1, "shipped_at": "2024-03-16T08:00:00.5Z",
            "weight": null, "note": null},
  "source": {"connector": "postgresql", "lsn": 100, "ts_ms": 1710498600200},
  "op": "u",
  "ts_ms": 1710498600300
}"""


@pytest.mark.unit
def test_wrapped_form__decodes_decimal_date_and_micro_timestamp() -> None:
    env = JsonSerde(CdcEnvelope).decode(_wrapped(ORDERS_UPDATE, _orders_fields(), "postgresql"))

    assert env is not None
    assert env.before is not None and env.after is not None
    assert env.before["amount"] == Decimal("123.45")
    assert env.before["amount"].as_tuple().exponent == -2
    assert env.before["refund"] is None
    assert env.before["order_date"] == date(2024, 3, 15)
    assert env.before["created_at"] == datetime(2024, 3, 15, 10, 30, 0, 123456, tzinfo=UTC)
    assert env.before["weight"] == Decimal("1999.900")
    assert env.before["note"] == "MDk="  # a plain string column is not base64-decoded
    assert env.after["amount"] == Decimal("-123.45")
    assert env.after["refund"] == Decimal("123.45")
    assert env.after["order_date"] == date(1969, 12, 31)
    assert env.after["created_at"] == datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert env.after["shipped_at"] == "2024-03-16T08:00:00.5Z"  # ZonedTimestamp stays a string
    assert env.after["weight"] is None


@pytest.mark.unit
def test_unwrapped_form__leaves_logical_values_as_sent() -> None:
    env = JsonSerde(CdcEnvelope).decode(ORDERS_UPDATE)

    assert env is not None and env.before is not None
    assert env.before["amount"] == "MDk="
    assert env.before["order_date"] == 19797


@pytest.mark.unit
def test_wrapped_form__decodes_a_38_digit_decimal_exactly() -> None:
    fields = [
        {"type": "int64", "optional": False, "field": "id"},
        {
            "type": "bytes",
            "optional": True,
            "name": "org.apache.kafka.connect.data.Decimal",
            "parameters": {"scale": "10", "connect.decimal.precision": "38"},
            "field": "amount",
        },
    ]
    payload = (
        b'{"before": null, "after": {"id": 1, "amount": "AAlJsPbwAjMTxEmQUN44804="},'
        b' "source": {"connector": "postgresql", "lsn": 1}, "op": "c"}'
    )

    env = JsonSerde(CdcEnvelope).decode(_wrapped(payload, fields, "postgresql"))

    assert env is not None
    assert env.row["amount"] == Decimal("1234567890123456789012345678.9012345678")


@pytest.mark.unit
def test_json_serde__keeps_the_postgres_source_schema_across_a_round_trip() -> None:
    serde = JsonSerde(CdcEnvelope)
    env = serde.decode(POSTGRES_UPDATE)
    assert env is not None

    again = serde.decode(serde.encode(env))

    assert again is not None
    assert again.source.schema_ == "public"
    assert again == env


@pytest.mark.unit
@pytest.mark.parametrize(
    ("op", "before", "after", "key"),
    [
        ("c", None, {"order_id": 7, "line_no": 2, "qty": 1}, "7|2"),
        (
            "u",
            {"order_id": 7, "line_no": 2, "qty": 1},
            {"order_id": 7, "line_no": 2, "qty": 3},
            "7|2",
        ),
        ("d", {"order_id": "A-7", "line_no": 10}, None, "A-7|10"),
    ],
)
def test_key__joins_a_composite_primary_key(
    op: str, before: dict[str, Any] | None, after: dict[str, Any] | None, key: str
) -> None:
    env = CdcEnvelope.model_validate(
        {"op": op, "before": before, "after": after, "source": {"table": "order_lines"}}
    )

    assert env.key(["order_id", "line_no"]) == key
    assert env.key(("line_no", "order_id")) == "|".join(reversed(key.split("|")))
    assert env.entity_key() is None  # no "id" column
    with pytest.raises(KeyError):
        env.key()


@pytest.mark.unit
def test_truncate__has_no_rows_and_no_key() -> None:
    data = (
        b'{"before": null, "after": null, "op": "t", "ts_ms": 1700000000500,'
        b' "source": {"connector": "postgresql", "db": "shop", "schema": "public",'
        b' "table": "orders", "ts_ms": 1700000000000, "lsn": 77}}'
    )

    env = JsonSerde(CdcEnvelope).decode(data)

    assert env is not None
    assert env.op == "t"
    assert env.row == {}
    assert env.entity_key() is None
    assert env.source.position == (77,)
    assert env.event_time == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    with pytest.raises(KeyError):
        env.key()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("op", "before", "after", "message"),
    [
        ("c", None, None, "op 'c' needs an 'after' row"),
        ("r", {"id": 1}, None, "op 'r' needs an 'after' row"),
        ("u", {"id": 1}, None, "op 'u' needs an 'after' row"),
        ("d", None, {"id": 1}, "op 'd' needs a 'before' row"),
    ],
)
def test_cdc_envelope__rejects_rows_that_do_not_match_the_op(
    op: str, before: Any, after: Any, message: str
) -> None:
    raw = {"op": op, "before": before, "after": after, "source": {}}

    with pytest.raises(DecodeError) as info:
        JsonSerde(CdcEnvelope).decode(orjson.dumps(raw))

    assert info.value.reason == "validation"
    assert message in info.value.detail


@pytest.mark.unit
def test_cdc_envelope__event_time_needs_a_timestamp() -> None:
    env = CdcEnvelope.model_validate({"op": "t", "source": {}})

    with pytest.raises(ValueError, match="neither source.ts_ms nor ts_ms"):
        _ = env.event_time


# --------------------------------------------------------------------------------------------
# Every DecodeError reason
# --------------------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"", "EOF"),
        (b'{"source": "app",', "EOF"),
        (b'{"source": "app" "ts": 1}', "expected"),
        (b"not json", "expected"),
    ],
)
def test_decode_error__json(data: bytes, detail: str) -> None:
    with pytest.raises(DecodeError) as info:
        JsonSerde(LogEvent).decode(data)

    assert info.value.reason == "json"
    assert info.value.contract == "LogEvent"
    assert str(info.value).startswith("LogEvent: json: ")
    assert detail in info.value.detail


@pytest.mark.unit
def test_decode_error__json_in_the_wrapped_form() -> None:
    with pytest.raises(DecodeError) as info:
        JsonSerde(CdcEnvelope).decode(b'{"schema": {}, "payload": {"op": "c",')

    assert info.value.reason == "json"
    assert str(info.value).startswith("CdcEnvelope: json: ")


@pytest.mark.unit
@pytest.mark.parametrize("name", ["LogEvent", "CdcEnvelope"])
@pytest.mark.parametrize(
    ("data", "byte"),
    [
        (b'{"source": "\xff"}', 12),
        (b'{"schema": {}, "payload": "caf\xc3"}', 30),
    ],
    ids=["plain", "wrapped"],
)
def test_decode_error__utf8_names_the_byte(name: str, data: bytes, byte: int) -> None:
    with pytest.raises(DecodeError) as info:
        JsonSerde(CONTRACTS[name]).decode(data)

    assert info.value.reason == "utf8"
    assert str(info.value) == f"{name}: utf8: not UTF-8 at byte {byte}"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "raw", "fields"),
    [
        ("LogEvent", {"source": "app", "ts": "2026-01-01T00:00:00Z"}, ["message"]),
        (
            "LogEvent",
            {**_MINIMAL["LogEvent"], "level": "loud", "attributes": {"x": {"nested": 1}}},
            ["level", "attributes.x"],
        ),
        ("Prediction", {**_MINIMAL["Prediction"], "latency_ms": -1}, ["latency_ms"]),
        ("Feedback", {"label": 1, "event_time": "2026-01-01T00:00:00Z"}, ["<record>"]),
        ("PredictionRequest", {"model": "", "entity_id": "u1"}, ["model"]),
        ("CdcEnvelope", {**_MINIMAL["CdcEnvelope"], "op": "x"}, ["op"]),
        ("CdcEnvelope", {**_MINIMAL["CdcEnvelope"], "source": {"lsn": "abc"}}, ["source.lsn"]),
    ],
)
def test_decode_error__validation_names_the_field(
    name: str, raw: dict[str, Any], fields: list[str]
) -> None:
    with pytest.raises(DecodeError) as info:
        JsonSerde(CONTRACTS[name]).decode(orjson.dumps(raw))

    assert info.value.reason == "validation"
    assert str(info.value).startswith(f"{name}: validation: ")
    for field in fields:
        # A union's errors name the member tried after the field: "attributes.x.str: ...".
        assert re.search(rf"(^|; ){re.escape(field)}[:.]", info.value.detail), field


@pytest.mark.unit
def test_decode_error__validation_lists_three_fields_then_counts_the_rest() -> None:
    with pytest.raises(DecodeError) as info:
        JsonSerde(DriftAlert).decode(b"{}")

    detail = info.value.detail
    assert detail.count(": Field required") == 3
    assert detail.endswith("and 2 more")  # 5 required fields in all


@pytest.mark.unit
def test_decode_error__too_large_names_size_and_limit() -> None:
    serde = JsonSerde(LogEvent, max_record_bytes=32)
    data = orjson.dumps(_MINIMAL["LogEvent"])

    with pytest.raises(RecordTooLargeError) as info:
        serde.decode(data)

    assert info.value.reason == "too_large"
    assert (info.value.size, info.value.limit) == (len(data), 32)
    assert str(info.value) == f"LogEvent: too_large: record of {len(data)} bytes exceeds limit 32"
    with pytest.raises(DecodeError) as at_limit:
        serde.decode(b"x" * 32)
    assert at_limit.value.reason == "json"  # a record at the limit is parsed


@pytest.mark.unit
def test_decode_error__null_value_for_own_events() -> None:
    with pytest.raises(DecodeError) as info:
        JsonSerde(LogEvent).decode(None)

    assert info.value.reason == "null_value"
    assert str(info.value) == "LogEvent: null_value: record has no value"


# --------------------------------------------------------------------------------------------
# Values JSON cannot carry
# --------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_drift_alert__a_nan_statistic_is_rejected_or_survives_the_wire() -> None:
    serde = JsonSerde(DriftAlert)
    try:
        alert = DriftAlert.model_validate({**_MINIMAL["DriftAlert"], "statistic": math.nan})
    except ValidationError:
        return

    decoded = serde.decode(serde.encode(alert))

    assert decoded is not None and math.isnan(decoded.statistic)
