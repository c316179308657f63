"""Property tests of the event contracts on the wire: round-trips and bad-input handling."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from refluent.streams.contracts import CONTRACTS, CdcEnvelope
from refluent.streams.errors import DecodeError
from refluent.streams.schemas import json_schemas
from refluent.streams.serde import JsonSerde
from refluent.testing.strategies import (
    STRATEGIES,
    aware_datetimes,
    cdc_envelopes,
    debezium_wrapped,
    to_debezium_json,
    utc_offsets,
)

pytestmark = pytest.mark.property

# Modest budgets: the whole module must stay well under 15 s on two cores.
_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _serde(name: str) -> JsonSerde[Any]:
    return JsonSerde(CONTRACTS[name], allow_tombstones=True)


def _datetime_fields(name: str) -> list[str]:
    return _DATETIME_FIELDS[name]


def _find_datetime_fields() -> dict[str, list[str]]:
    out = {}
    for name, schema in json_schemas().items():
        props = schema.get("properties", {})
        assert isinstance(props, dict)
        out[name] = sorted(k for k, v in props.items() if v.get("format") == "date-time")
    return out


_DATETIME_FIELDS = _find_datetime_fields()


# --------------------------------------------------------------------------------------------
# Round-trips
# --------------------------------------------------------------------------------------------


def _round_trip_params() -> list[Any]:
    params: list[Any] = []
    for name in CONTRACTS:
        params.append(pytest.param(name, id=name))
    return params


@pytest.mark.parametrize("name", _round_trip_params())
@_SETTINGS
@given(data=st.data())
def test_json_serde__every_contract_round_trips(name: str, data: st.DataObject) -> None:
    serde = _serde(name)
    event = data.draw(STRATEGIES[name], label=name)

    encoded = serde.encode(event)
    decoded = serde.decode(encoded)

    assert decoded == event
    # Equality is lax about 1 == 1.0 == True; the bytes are not, so types survive too.
    assert serde.encode(decoded) == encoded


@pytest.mark.parametrize("name", [n for n in CONTRACTS if _datetime_fields(n)])
@_SETTINGS
@given(data=st.data())
def test_json_serde__datetimes_come_back_in_utc_at_the_same_instant(
    name: str, data: st.DataObject
) -> None:
    serde = _serde(name)
    event = data.draw(STRATEGIES[name], label=name)
    fields = _datetime_fields(name)
    raw = event.model_dump(mode="json")
    sent: dict[str, datetime] = {}
    for field in fields:
        # Write each timestamp with an offset of its own, as a producer in any zone might.
        local = getattr(event, field).astimezone(data.draw(utc_offsets(), label=field))
        sent[field] = local
        raw[field] = local.isoformat()

    decoded = serde.decode(orjson.dumps(raw))

    assert isinstance(decoded, BaseModel)
    for field, local in sent.items():
        value = getattr(decoded, field)
        assert value.utcoffset() == timedelta(0)
        assert value == local
        assert value.tzinfo is UTC
    encoded = orjson.loads(serde.encode(decoded))
    assert all(encoded[field].endswith("Z") for field in fields)


@_SETTINGS
@given(cdc_envelopes())
def test_cdc_envelope__round_trips_through_the_debezium_wrapped_form(
    envelope: CdcEnvelope,
) -> None:
    wrapped = to_debezium_json(envelope)

    assert _serde("CdcEnvelope").decode(wrapped) == envelope
    assert CdcEnvelope.from_debezium(wrapped) == envelope
    assert CdcEnvelope.from_debezium(orjson.loads(wrapped)) == envelope


@_SETTINGS
@given(debezium_wrapped(cdc_envelopes()))
def test_cdc_envelope__serde_and_from_debezium_agree_on_wrapped_bytes(wrapped: bytes) -> None:
    via_serde = _serde("CdcEnvelope").decode(wrapped)
    via_classmethod = CdcEnvelope.from_debezium(wrapped)

    assert via_serde == via_classmethod
    payload = orjson.loads(wrapped)["payload"]
    assert via_serde is not None
    assert via_serde.op == payload["op"]
    assert via_serde.before == payload["before"]
    assert via_serde.after == payload["after"]
    # Re-wrapping what was decoded gives the same event back.
    assert CdcEnvelope.from_debezium(to_debezium_json(via_serde)) == via_serde


# --------------------------------------------------------------------------------------------
# Kafka Connect logical types in the wrapped form
# --------------------------------------------------------------------------------------------


def _wrapped_with_column(value: Any, column_schema: dict[str, Any]) -> bytes:
    schema = {
        "type": "struct",
        "fields": [
            {
                "type": "struct",
                "optional": True,
                "field": "after",
                "name": "shop.public.orders.Value",
                "fields": [
                    {"type": "int64", "optional": False, "field": "id"},
                    {**column_schema, "field": "x"},
                ],
            },
        ],
    }
    payload = {
        "before": None,
        "after": {"id": 1, "x": value},
        "op": "c",
        "source": {"connector": "postgresql", "lsn": 1},
    }
    return orjson.dumps({"schema": schema, "payload": payload})


def _connect_decimal(unscaled: int) -> str:
    length = max(1, (unscaled.bit_length() + 8) // 8)  # room for the sign bit
    return base64.b64encode(unscaled.to_bytes(length, "big", signed=True)).decode()


@_SETTINGS
@given(
    unscaled=st.integers(-(10**28) + 1, 10**28 - 1),
    scale=st.integers(0, 20),
)
def test_wrapped_decimal__decodes_to_the_exact_decimal(unscaled: int, scale: int) -> None:
    wrapped = _wrapped_with_column(
        _connect_decimal(unscaled),
        {
            "type": "bytes",
            "optional": True,
            "name": "org.apache.kafka.connect.data.Decimal",
            "version": 1,
            "parameters": {"scale": str(scale), "connect.decimal.precision": "28"},
        },
    )

    decoded = _serde("CdcEnvelope").decode(wrapped)

    assert decoded is not None
    value = decoded.row["x"]
    assert isinstance(value, Decimal)
    assert value.as_tuple().exponent == -scale
    assert value == Decimal(unscaled) / (Decimal(10) ** scale)


@_SETTINGS
@given(day=st.dates(date(1, 1, 1), date(9999, 12, 31)))
def test_wrapped_debezium_date__decodes_to_the_same_day(day: date) -> None:
    days = (day - date(1970, 1, 1)).days
    wrapped = _wrapped_with_column(
        days, {"type": "int32", "optional": True, "name": "io.debezium.time.Date", "version": 1}
    )

    decoded = _serde("CdcEnvelope").decode(wrapped)

    assert decoded is not None
    assert decoded.row["x"] == day


@_SETTINGS
@given(moment=aware_datetimes())
def test_wrapped_micro_timestamp__decodes_to_the_same_utc_instant(moment: datetime) -> None:
    micros = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    wrapped = _wrapped_with_column(
        micros,
        {"type": "int64", "optional": True, "name": "io.debezium.time.MicroTimestamp"},
    )

    decoded = _serde("CdcEnvelope").decode(wrapped)

    assert decoded is not None
    assert decoded.row["x"] == moment
    assert decoded.row["x"].utcoffset() == timedelta(0)


# --------------------------------------------------------------------------------------------
# Bad input is a DecodeError, never a crash
# --------------------------------------------------------------------------------------------

_NOISE = st.one_of(
    st.binary(max_size=300),
    # Reach the wrapped-form path of contracts that have one.
    st.binary(max_size=200).map(lambda b: b'{"schema": {}, "payload"' + b),
    st.binary(max_size=200).map(lambda b: b'{"schema": {}, "payload": {"op": "c", ' + b),
)


@pytest.mark.parametrize("name", list(CONTRACTS))
@_SETTINGS
@given(data=_NOISE)
def test_decode__arbitrary_bytes_raise_only_decode_error(name: str, data: bytes) -> None:
    try:
        result = _serde(name).decode(data)
    except DecodeError as exc:
        assert exc.reason in {"json", "utf8", "validation", "too_large"}
        assert exc.contract == name
    else:
        assert result is None or isinstance(result, CONTRACTS[name])


@pytest.mark.parametrize("name", list(CONTRACTS))
@_SETTINGS
@given(data=st.data())
def test_decode__truncated_json_is_a_json_error(name: str, data: st.DataObject) -> None:
    serde = _serde(name)
    text = serde.encode(data.draw(STRATEGIES[name], label=name)).decode()
    # Cut on a character boundary: a cut inside a multi-byte character is (rightly) "utf8".
    cut = data.draw(st.integers(0, len(text) - 1), label="cut")

    with pytest.raises(DecodeError) as info:
        serde.decode(text[:cut].encode())

    assert info.value.reason == "json"


_INVALID_UTF8 = st.sampled_from(
    [
        b"\xff",  # never valid
        b"\x80",  # lone continuation byte
        b"\xc3",  # lead byte without its continuation
        b"\xe2\x82",  # three-byte sequence cut short
        b"\xc0\xaf",  # overlong encoding of "/"
        b"\xed\xa0\x80",  # UTF-16 surrogate
        b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    ]
)


@pytest.mark.parametrize("name", list(CONTRACTS))
@_SETTINGS
@given(data=st.data())
def test_decode__invalid_utf8_is_a_utf8_or_json_error(name: str, data: st.DataObject) -> None:
    serde = _serde(name)
    encoded = serde.encode(data.draw(STRATEGIES[name], label=name))
    at = data.draw(st.integers(0, len(encoded)), label="at")
    bad = data.draw(_INVALID_UTF8, label="bad")
    corrupted = encoded[:at] + bad + encoded[at:]

    with pytest.raises(DecodeError) as info:
        serde.decode(corrupted)

    assert info.value.reason in {"utf8", "json"}
    if info.value.reason == "utf8":
        # The message points at the first bad byte: within a character of the insertion (a
        # continuation byte inserted inside a character can complete it, leaving the next bad).
        position = int(info.value.detail.rsplit(" ", 1)[-1])
        assert abs(position - at) <= 3


# --------------------------------------------------------------------------------------------
# Bad input anywhere in a record is a DecodeError, never another exception
# --------------------------------------------------------------------------------------------


@_SETTINGS
@example(moment=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))))
@given(moment=st.datetimes(timezones=utc_offsets()))
def test_decode__any_parseable_timestamp_is_an_event_or_a_decode_error(moment: datetime) -> None:
    raw = {"source": "app", "ts": moment.isoformat(), "message": "m"}
    try:
        _serde("LogEvent").decode(orjson.dumps(raw))
    except DecodeError:
        pass


_JSON_INTS = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what orjson can write


@_SETTINGS
@example(schema={"fields": 5}, value=1)
@given(
    schema=st.one_of(
        st.fixed_dictionaries({"fields": st.one_of(_JSON_INTS, st.lists(st.none()))}),
        st.builds(
            lambda name: {"fields": [{"field": "after", "fields": [{"field": "x", "name": name}]}]},
            st.sampled_from(
                ["org.apache.kafka.connect.data.Decimal", "io.debezium.data.VariableScaleDecimal"]
            ),
        ),
    ),
    value=st.one_of(_JSON_INTS, st.text(max_size=5), st.just({"scale": 2})),
)
def test_decode__malformed_wrapped_form_is_a_decode_error(schema: Any, value: Any) -> None:
    payload = {"op": "c", "source": {}, "after": {"id": 1, "x": value}}
    try:
        _serde("CdcEnvelope").decode(orjson.dumps({"schema": schema, "payload": payload}))
    except DecodeError:
        pass
