"""Hypothesis strategies for every event contract, for property tests of your own code.

Each strategy draws only *valid* events: they pass the contract's validators, timestamps are
timezone-aware (often with a non-UTC offset, which the contract normalises to UTC), floats are
finite and dict values have the contract's value types. CDC rows always have an ``id`` column.

This module imports hypothesis (install ``refluent[dev]`` or ``pip install hypothesis``);
``import refluent`` does not import it.

Examples:
    >>> from hypothesis import given
    >>> from refluent.streams.serde import JsonSerde
    >>> serde = JsonSerde(Feedback)
    >>> @given(feedbacks())
    ... def test_round_trip(fb):
    ...     assert serde.decode(serde.encode(fb)) == fb
    >>> test_round_trip()
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, get_args

import orjson
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from refluent.streams.contracts import (
    AlertEvent,
    CdcEnvelope,
    CdcSource,
    DriftAlert,
    FeatureUpdate,
    Feedback,
    LabeledExample,
    LogEvent,
    Prediction,
    PredictionRequest,
    RetrainRequest,
)

__all__ = [
    "STRATEGIES",
    "aware_datetimes",
    "cdc_envelopes",
    "cdc_rows",
    "cdc_sources",
    "debezium_wrapped",
    "drift_alerts",
    "feature_values",
    "feedbacks",
    "finite_floats",
    "int64s",
    "labeled_examples",
    "log_events",
    "prediction_requests",
    "predictions",
    "retrain_requests",
    "scalars",
    "to_debezium_json",
    "utc_offsets",
]

# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

int64s: SearchStrategy[int] = st.integers(_INT64_MIN, _INT64_MAX)
"""Integers a database column, Kafka Connect and every JSON parser in the path can carry."""

finite_floats: SearchStrategy[float] = st.floats(allow_nan=False, allow_infinity=False)
"""Floats JSON can carry: NaN and infinities are not JSON."""

_names = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
_ids = st.text(min_size=1, max_size=24)
_texts = st.text(max_size=40)


def scalars() -> SearchStrategy[str | int | float | bool | None]:
    """Values of the contracts' ``Scalar`` type."""
    return st.one_of(st.none(), st.booleans(), int64s, finite_floats, _texts)


def feature_values() -> SearchStrategy[Any]:
    """Values of the contracts' ``FeatureValue`` type: a scalar or a vector of floats."""
    return st.one_of(scalars(), st.lists(finite_floats, max_size=8))


def utc_offsets() -> SearchStrategy[timezone]:
    """Fixed UTC offsets from -23:59 to +23:59 in whole minutes, UTC itself included."""
    minutes = st.integers(-(23 * 60 + 59), 23 * 60 + 59)
    return st.one_of(st.just(UTC), minutes.map(lambda m: timezone(timedelta(minutes=m))))


def aware_datetimes(
    min_value: datetime | None = None, max_value: datetime | None = None
) -> SearchStrategy[datetime]:
    """Timezone-aware datetimes with arbitrary offsets, by default between 1970 and 2100.

    Args:
        min_value: Earliest naive wall-clock time (hypothesis bounds are naive).
        max_value: Latest naive wall-clock time.
    """
    # Hypothesis takes naive bounds and attaches the drawn timezone afterwards; the bounds keep
    # clear of datetime.min/max, where converting a non-UTC offset to UTC overflows.
    return st.datetimes(
        min_value=min_value or datetime(1970, 1, 2),  # noqa: DTZ001 - naive bound, see above
        max_value=max_value or datetime(2100, 1, 1),  # noqa: DTZ001 - naive bound, see above
        timezones=utc_offsets(),
    )


def _epoch_ms() -> SearchStrategy[int]:
    return st.integers(0, 4_102_444_800_000)  # 1970 to 2100


def _maybe(strategy: SearchStrategy[Any]) -> SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def _event(
    model: type[Any],
    required: Mapping[str, SearchStrategy[Any]],
    optional: Mapping[str, SearchStrategy[Any]],
) -> SearchStrategy[Any]:
    # Optional keys are sometimes left out, so the contract's defaults are exercised too.
    optional = {"schema_version": st.just(model.SCHEMA_VERSION), **optional}
    return st.fixed_dictionaries(dict(required), optional=dict(optional)).map(model.model_validate)


# --------------------------------------------------------------------------------------------
# Debezium change events
# --------------------------------------------------------------------------------------------

# Column kinds of a generated table and the Kafka Connect type the JSON converter names them by.
_COLUMN_KINDS: dict[str, tuple[str, SearchStrategy[Any]]] = {
    "int64": ("int64", int64s),
    "float64": ("float64", finite_floats),
    "string": ("string", _texts),
    "boolean": ("boolean", st.booleans()),
}


@st.composite
def _table_columns(draw: st.DrawFn) -> dict[str, str]:
    """A table's non-key columns: name -> kind."""
    names = draw(st.lists(_names.filter(lambda n: n != "id"), max_size=6, unique=True))
    return {name: draw(st.sampled_from(sorted(_COLUMN_KINDS))) for name in names}


@st.composite
def _row_of(draw: st.DrawFn, columns: Mapping[str, str], row_id: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"id": row_id}
    for name, kind in columns.items():
        # Every non-key column is nullable, as most columns are.
        row[name] = draw(_maybe(_COLUMN_KINDS[kind][1]))
    return row


def _row_ids() -> SearchStrategy[Any]:
    return st.one_of(st.integers(1, _INT64_MAX), st.text(min_size=1, max_size=16))


@st.composite
def cdc_rows(draw: st.DrawFn) -> dict[str, Any]:
    """One table row: an ``id`` plus nullable int, float, string and boolean columns."""
    return draw(_row_of(draw(_table_columns()), draw(_row_ids())))


@st.composite
def cdc_sources(draw: st.DrawFn, connector: str | None = None) -> CdcSource:
    """A Debezium ``source`` block of a Postgres, MySQL or SQL Server connector."""
    connector = connector or draw(st.sampled_from(["postgresql", "mysql", "sqlserver"]))
    ts_ms = draw(_epoch_ms())
    data: dict[str, Any] = {
        "version": draw(st.sampled_from(["2.5.4.Final", "2.7.3.Final", "3.0.0.Final"])),
        "connector": connector,
        "name": draw(_names),
        "ts_ms": ts_ms,
        "snapshot": draw(st.sampled_from(["false", "true", "first", "last", "incremental"])),
        "db": draw(_names),
        "table": draw(_names),
    }
    if connector == "postgresql":
        lsn = draw(st.integers(0, _INT64_MAX))
        data |= {
            "schema": draw(st.sampled_from(["public", "sales", "Auth"])),
            "txId": draw(st.integers(0, 2**32)),
            "lsn": lsn,
            "sequence": f'["{lsn}","{lsn}"]',
            "xmin": None,
        }
    elif connector == "mysql":
        data |= {
            "server_id": draw(st.integers(1, 2**32 - 1)),
            "gtid": draw(_maybe(st.just("3e11fa47-71ca-11e1-9e33-c80aa9429562:23"))),
            "file": f"mysql-bin.{draw(st.integers(1, 999_999)):06d}",
            "pos": draw(st.integers(4, 2**32)),
            "row": draw(st.integers(0, 100)),
            "thread": draw(_maybe(st.integers(0, 2**32))),
            "query": None,
        }
    else:
        data |= {
            "schema": "dbo",
            "change_lsn": draw(_maybe(st.just("00000027:00000758:0005"))),
            "commit_lsn": "00000027:00000758:0006",
            "event_serial_no": draw(st.integers(1, 3)),
        }
    return CdcSource.model_validate(data)


@st.composite
def cdc_envelopes(draw: st.DrawFn, ops: str = "cudrt") -> CdcEnvelope:
    """Debezium change events whose rows match their ``op``.

    Args:
        ops: The ops to draw from (``c``, ``u``, ``d``, ``r``, ``t``).

    ``before`` and ``after`` of an update share the table's columns and its ``id``, as they do
    in Debezium; a delete's ``before`` is sometimes just the key (Postgres without
    ``REPLICA IDENTITY FULL``).
    """
    op = draw(st.sampled_from(list(ops)))
    columns = draw(_table_columns())
    row_id = draw(_row_ids())
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    if op in ("c", "r"):
        after = draw(_row_of(columns, row_id))
    elif op == "u":
        after = draw(_row_of(columns, row_id))
        before = draw(_maybe(_row_of(columns, row_id)))
    elif op == "d":
        before = draw(st.one_of(_row_of(columns, row_id), st.just({"id": row_id})))
    source = draw(cdc_sources())
    data: dict[str, Any] = {
        "before": before,
        "after": after,
        "source": source,
        "op": op,
        "ts_ms": draw(_maybe(_epoch_ms())),
        "transaction": draw(
            _maybe(
                st.fixed_dictionaries(
                    {
                        "id": st.text(min_size=1, max_size=20),
                        "total_order": st.integers(1, 10_000),
                        "data_collection_order": st.integers(1, 10_000),
                    }
                )
            )
        ),
    }
    if data["ts_ms"] is not None and draw(st.booleans()):
        # Debezium 2.x adds the processing time in finer units next to ts_ms.
        data |= {"ts_us": data["ts_ms"] * 1_000, "ts_ns": data["ts_ms"] * 1_000_000}
    return CdcEnvelope.model_validate(data)


_JSON_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),  # before int: bool is an int
    (int, "int64"),
    (float, "float64"),
    (str, "string"),
)


def _connect_type(values: list[Any]) -> str:
    for py_type, connect_type in _JSON_TYPES:
        if any(isinstance(v, py_type) for v in values):
            return connect_type
    return "string"  # only nulls seen: the column's type is unknowable, any will do


def _struct_schema(
    name: str | None, field: str | None, rows: list[Mapping[str, Any]], *, optional: bool
) -> dict[str, Any]:
    columns: dict[str, list[Any]] = {}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, []).append(value)
    schema: dict[str, Any] = {
        "type": "struct",
        "fields": [
            {
                "type": _connect_type(values),
                "optional": key != "id" or any(v is None for v in values),
                "field": key,
            }
            for key, values in columns.items()
        ],
        "optional": optional,
    }
    if name is not None:
        schema["name"] = name
    if field is not None:
        schema["field"] = field
    return schema


def to_debezium_json(envelope: CdcEnvelope) -> bytes:
    """The Debezium JSON converter's value for ``envelope``, with ``schemas.enable=true``.

    The ``schema`` half describes the envelope as Kafka Connect would (a struct of ``before``,
    ``after``, ``source``, ``op``, ``ts_ms``, ``transaction``); the ``payload`` half is the
    envelope as Debezium writes it, without Refluent's ``schema_version``.
    """
    payload = envelope.model_dump(mode="json", by_alias=True, exclude={"schema_version"})
    payload["source"] = envelope.source.model_dump(mode="json", by_alias=True, exclude_unset=True)
    source = envelope.source
    prefix = f"{source.name or 'server'}.{source.db or 'db'}.{source.table or 'table'}"
    rows = [r for r in (payload["before"], payload["after"]) if r is not None]
    value = _struct_schema(f"{prefix}.Value", None, rows, optional=True)
    fields: list[dict[str, Any]] = [
        {**value, "field": "before"},
        {**value, "field": "after"},
        _struct_schema(
            f"io.debezium.connector.{source.connector or 'unknown'}.Source",
            "source",
            [payload["source"]],
            optional=False,
        ),
        {"type": "string", "optional": False, "field": "op"},
        {"type": "int64", "optional": True, "field": "ts_ms"},
        {
            "type": "struct",
            "fields": [
                {"type": "string", "optional": False, "field": "id"},
                {"type": "int64", "optional": False, "field": "total_order"},
                {"type": "int64", "optional": False, "field": "data_collection_order"},
            ],
            "optional": True,
            "name": "event.block",
            "version": 1,
            "field": "transaction",
        },
    ]
    named = {f["field"] for f in fields}
    for key, value_ in payload.items():
        if key not in named:  # the envelope's extras, such as ts_us and ts_ns
            fields.append({"type": _connect_type([value_]), "optional": True, "field": key})
    schema = {
        "type": "struct",
        "fields": fields,
        "optional": False,
        "name": f"{prefix}.Envelope",
        "version": 2,
    }
    return orjson.dumps({"schema": schema, "payload": payload})


def debezium_wrapped(envelopes: SearchStrategy[CdcEnvelope]) -> SearchStrategy[bytes]:
    """Bytes of the Debezium JSON converter's ``{"schema": ..., "payload": ...}`` form.

    Args:
        envelopes: The change events to wrap, e.g. :func:`cdc_envelopes`.
    """
    return envelopes.map(to_debezium_json)


# --------------------------------------------------------------------------------------------
# Refluent's own events
# --------------------------------------------------------------------------------------------

_model_names = st.sampled_from(["churn", "fraud-v2", "eta", "ctr_ranker"])
_versions = st.one_of(st.integers(1, 999).map(str), st.text(min_size=1, max_size=12))
_features = st.dictionaries(_names, feature_values(), max_size=6)


def log_events() -> SearchStrategy[LogEvent]:
    """Application log lines."""
    return _event(
        LogEvent,
        {"source": _ids, "ts": aware_datetimes(), "message": _texts},
        {
            "level": st.sampled_from(["debug", "info", "warning", "error", "critical"]),
            "entity_id": _maybe(_ids),
            "attributes": st.dictionaries(_names, scalars(), max_size=6),
        },
    )


def prediction_requests() -> SearchStrategy[PredictionRequest]:
    """Requests for a prediction."""
    return _event(
        PredictionRequest,
        {"model": _model_names, "entity_id": _ids},
        {"request_id": _ids, "features": _features, "ts": aware_datetimes()},
    )


def predictions() -> SearchStrategy[Prediction]:
    """Models' answers, as regression scores or class labels with probabilities."""
    return _event(
        Prediction,
        {
            "request_id": _ids,
            "model_name": _model_names,
            "model_version": _versions,
            "entity_id": _ids,
        },
        {
            "prediction_id": _ids,
            "score": _maybe(finite_floats),
            "label": st.one_of(st.none(), _texts, int64s, st.booleans()),
            "probabilities": _maybe(st.dictionaries(_names, st.floats(0, 1), max_size=4)),
            "features": _features,
            "feature_ages_ms": st.dictionaries(
                _names, st.floats(0, 1e12, allow_nan=False), max_size=4
            ),
            "stale": st.booleans(),
            "ts": aware_datetimes(),
            "latency_ms": _maybe(st.floats(0, 1e7, allow_nan=False)),
        },
    )


_labels = st.one_of(finite_floats, int64s, st.booleans(), _texts)


@st.composite
def feedbacks(draw: st.DrawFn) -> Feedback:
    """Late labels, for a prediction id, an entity, or both."""
    target = draw(st.sampled_from(["prediction", "entity", "both"]))
    return draw(
        _event(
            Feedback,
            {
                "label": _labels,
                "event_time": aware_datetimes(),
                "prediction_id": st.none() if target == "entity" else _ids,
                "entity_id": st.none() if target == "prediction" else _ids,
            },
            {},
        )
    )


@st.composite
def labeled_examples(draw: st.DrawFn) -> LabeledExample:
    """Predictions joined to their labels; the label never precedes the prediction."""
    prediction_time = draw(aware_datetimes())
    delay = draw(st.timedeltas(timedelta(0), timedelta(days=30)))
    return draw(
        _event(
            LabeledExample,
            {
                "prediction_id": _ids,
                "entity_id": _ids,
                "model_name": _model_names,
                "model_version": _versions,
                "features": _features,
                "label": _labels,
                "prediction_time": st.just(prediction_time),
                "label_time": st.just((prediction_time + delay).astimezone(prediction_time.tzinfo)),
            },
            {
                "score": _maybe(finite_floats),
                "predicted_label": st.one_of(st.none(), _texts, int64s, st.booleans()),
            },
        )
    )


def drift_alerts() -> SearchStrategy[DriftAlert]:
    """Drift and quality alerts."""
    return _event(
        DriftAlert,
        {
            "model_name": _model_names,
            "model_version": _versions,
            "detector": st.sampled_from(
                ["adwin", "page_hinkley", "ddm", "psi", "ks", "wasserstein", "cbpe", "realised",
                 "stale_share", "failure_share", "per_minute", "lag"]
            ),
            "kind": st.sampled_from(["error", "feature", "score", "performance", "freshness",
                                     "requests", "deadletters", "lag", "promotion"]),
            "statistic": finite_floats,
            "threshold": finite_floats,
            "detected_at": aware_datetimes(),
        },
        {
            "alert_id": _ids,
            "event": st.sampled_from(list(get_args(AlertEvent))),
            "subject": _maybe(_names),
            "feature": _maybe(_names),
            "severity": st.sampled_from(["info", "warning", "critical"]),
            "window": st.dictionaries(_names, scalars(), max_size=4),
        },
    )


def retrain_requests() -> SearchStrategy[RetrainRequest]:
    """Requests to retrain a model."""
    return _event(
        RetrainRequest,
        {
            "model_name": _model_names,
            "reason": st.sampled_from(["drift", "schedule", "manual", "quality"]),
            "requested_at": aware_datetimes(),
        },
        {
            "request_id": _ids,
            "alert_id": _maybe(_ids),
            "snapshot_id": _maybe(st.integers(0, _INT64_MAX)),
            "params": st.dictionaries(_names, scalars(), max_size=4),
        },
    )


def feature_updates() -> SearchStrategy[FeatureUpdate]:
    """Feature view updates, some with window bounds."""
    window = aware_datetimes().flatmap(
        lambda start: st.integers(1, 86_400).map(
            lambda secs: (start, start + timedelta(seconds=secs))))
    return _event(
        FeatureUpdate,
        {
            "view": st.sampled_from(["customer_orders", "user_clicks", "customers"]),
            "entity_id": _ids,
            "values": _features,
            "event_time": aware_datetimes(),
        },
        {
            "windows": st.dictionaries(_names, window, max_size=3),
            "deleted": st.booleans(),
            "sequence": st.integers(0, _INT64_MAX),
            "source_topic": st.sampled_from(["cdc.orders", "logs.app"]),
            "source_partition": st.integers(0, 63),
            "source_offset": st.integers(0, _INT64_MAX),
        },
    )


STRATEGIES: dict[str, SearchStrategy[Any]] = {
    "FeatureUpdate": feature_updates(),
    "CdcEnvelope": cdc_envelopes(),
    "LogEvent": log_events(),
    "PredictionRequest": prediction_requests(),
    "Prediction": predictions(),
    "Feedback": feedbacks(),
    "LabeledExample": labeled_examples(),
    "DriftAlert": drift_alerts(),
    "RetrainRequest": retrain_requests(),
}
"""A strategy for every contract in :data:`refluent.streams.contracts.CONTRACTS`, by name."""
