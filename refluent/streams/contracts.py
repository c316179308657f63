"""Typed, versioned event contracts: what travels on Refluent's topics.

Every contract carries ``schema_version`` and exports a JSON Schema (see
:func:`refluent.streams.schemas.export_schemas`). Timestamps are timezone-aware and normalised to
UTC; a naive timestamp is a validation error, not a guess.

:class:`CdcEnvelope` accepts the Debezium JSON converter's output with and without the
``schema``/``payload`` wrapper. With the wrapper, Kafka Connect logical types named in the schema
(``Decimal``, ``io.debezium.time.*``) are decoded into Python values.

Examples:
    >>> env = CdcEnvelope.model_validate_json(
    ...     b'{"before": null, "after": {"id": 1, "email": "a@x.io"}, "op": "c",'
    ...     b' "ts_ms": 1700000000000, "source": {"connector": "postgresql", "db": "shop",'
    ...     b' "table": "customers", "ts_ms": 1700000000000, "lsn": 42}}'
    ... )
    >>> env.op, env.row["email"], env.source.position
    ('c', 'a@x.io', (42,))
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(f"timestamp {value.isoformat()} is out of range in UTC") from exc


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware timestamp, normalised to UTC."""

Scalar = str | int | float | bool | None
FeatureValue = Scalar | list[float]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return uuid.uuid4().hex


class Event(BaseModel):
    """Base of Refluent's own events: strict about unknown fields, immutable, and without
    NaN or infinities (which JSON cannot carry)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False
    )

    SCHEMA_VERSION: ClassVar[int] = 1
    schema_version: int = 1
    """Version of this contract the producer wrote."""

    @model_validator(mode="after")
    def _known_version(self) -> Event:
        if self.schema_version > self.SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version} is newer than the supported "
                f"{self.SCHEMA_VERSION} for {type(self).__name__}"
            )
        return self

    def entity_key(self) -> str | None:
        """The partitioning key (an entity id) of this event, if it has one."""
        return getattr(self, "entity_id", None)


# --------------------------------------------------------------------------------------------
# Debezium change events
# --------------------------------------------------------------------------------------------

CdcOp = Literal["c", "u", "d", "r", "t"]


class CdcSource(BaseModel):
    """Debezium's ``source`` block: where and when the change happened.

    Connector-specific fields (MySQL's ``file``/``pos``/``row``, Postgres's ``lsn``/``txId``,
    SQL Server's ``change_lsn``, MongoDB's ``ord``) are kept as extra fields.
    """

    # ``schema`` shadows a BaseModel attribute, so the field is ``schema_`` with that alias,
    # written back under the alias so Debezium's field name survives a round trip.
    model_config = ConfigDict(
        extra="allow", frozen=True, use_attribute_docstrings=True, serialize_by_alias=True,
        validate_by_name=True, validate_by_alias=True,
    )

    version: str | None = None
    connector: str | None = None
    name: str | None = None
    ts_ms: int | None = None
    snapshot: str | bool | None = None
    db: str | None = None
    schema_: str | None = Field(default=None, alias="schema")
    table: str | None = None
    collection: str | None = None
    sequence: str | None = None
    lsn: int | None = None
    txId: int | None = None  # noqa: N815 - Debezium's field name
    file: str | None = None
    pos: int | None = None
    row: int | None = None

    @property
    def position(self) -> tuple[Any, ...] | None:
        """A comparable position of the change in the source log, or None if unknown.

        Postgres: ``(lsn,)``; MySQL/MariaDB: ``(file, pos, row)``; otherwise the extra fields
        ``change_lsn``/``commit_lsn`` (SQL Server) or ``ord`` (MongoDB).
        """
        if self.lsn is not None:
            return (self.lsn,)
        if self.file is not None and self.pos is not None:
            return (self.file, self.pos, self.row or 0)
        extra = self.model_extra or {}
        for name in ("change_lsn", "commit_lsn", "scn"):
            if extra.get(name) is not None:
                return (str(extra[name]),)
        if extra.get("ord") is not None:
            return (self.ts_ms or 0, int(extra["ord"]))
        return None


class CdcEnvelope(BaseModel):
    """A Debezium change event (the value of a record on ``cdc.<table>``).

    ``op`` is c (create), u (update), d (delete), r (snapshot read) or t (truncate). A delete is
    followed by a tombstone (a record with the same key and a null value), which is not an
    envelope: serde decodes it as ``None``.
    """

    model_config = ConfigDict(extra="allow", frozen=True, use_attribute_docstrings=True)

    SCHEMA_VERSION: ClassVar[int] = 1
    schema_version: int = 1
    """Version of Refluent's reading of the Debezium envelope."""
    before: dict[str, Any] | None = None
    """Row before the change (u, d; with REPLICA IDENTITY FULL or MySQL)."""
    after: dict[str, Any] | None = None
    """Row after the change (c, u, r)."""
    source: CdcSource
    """Where the change came from."""
    op: CdcOp
    """Kind of change."""
    ts_ms: int | None = None
    """When the connector processed the change (ms since the epoch)."""
    transaction: dict[str, Any] | None = None
    """Transaction metadata, when the connector emits it."""

    @classmethod
    def unwrap_wire(cls, data: Any) -> Any:
        """Strip the JSON converter's ``schema``/``payload`` wrapper, decoding logical types.

        Kept out of the model's own validation so the common, unwrapped case parses at full
        speed; :class:`~refluent.streams.serde.JsonSerde` calls it when a record has a wrapper.
        """
        if isinstance(data, dict) and "payload" in data and "schema" in data:
            payload = data["payload"]
            if isinstance(payload, dict):
                try:
                    return _decode_logical(payload, data["schema"])
                except (ValueError, TypeError, KeyError, AttributeError, OverflowError,
                        binascii.Error) as exc:
                    raise ValueError(f"wrapped Debezium record: {exc}") from exc
            return payload
        return data

    @classmethod
    def from_debezium(cls, data: bytes | str | dict[str, Any]) -> CdcEnvelope:
        """Validate a Debezium JSON value, with or without the ``schema``/``payload`` wrapper."""
        if not isinstance(data, dict):
            data = orjson.loads(data)
        return cls.model_validate(cls.unwrap_wire(data))

    @model_validator(mode="after")
    def _rows_match_op(self) -> CdcEnvelope:
        if self.schema_version > self.SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version} is newer than the supported "
                f"{self.SCHEMA_VERSION} for CdcEnvelope"
            )
        if self.op in ("c", "r") and self.after is None:
            raise ValueError(f"op {self.op!r} needs an 'after' row")
        if self.op == "u" and self.after is None:
            raise ValueError("op 'u' needs an 'after' row")
        if self.op == "d" and self.before is None:
            raise ValueError("op 'd' needs a 'before' row")
        return self

    @property
    def row(self) -> dict[str, Any]:
        """The row this change is about: ``after``, else ``before`` (empty for truncates)."""
        return self.after if self.after is not None else (self.before or {})

    @property
    def event_time(self) -> datetime:
        """When the change happened in the source database (UTC), else when it was captured."""
        ms = self.source.ts_ms if self.source.ts_ms is not None else self.ts_ms
        if ms is None:
            raise ValueError("change has neither source.ts_ms nor ts_ms")
        return datetime.fromtimestamp(ms / 1000, tz=UTC)

    def key(self, primary_key: list[str] | tuple[str, ...] = ("id",)) -> str:
        """The record key: the primary-key values joined by ``|`` (the entity id).

        Raises:
            KeyError: the row lacks a primary-key column.
        """
        row = self.row
        return "|".join(str(row[col]) for col in primary_key)

    def entity_key(self) -> str | None:
        """The entity id of the changed row with the default primary key ``id``."""
        row = self.row
        return str(row["id"]) if "id" in row else None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIME_UNITS = {
    "io.debezium.time.Timestamp": 1_000,
    "org.apache.kafka.connect.data.Timestamp": 1_000,
    "io.debezium.time.MicroTimestamp": 1_000_000,
    "io.debezium.time.NanoTimestamp": 1_000_000_000,
}


def _exact_decimal(b64: str, scale: int) -> Decimal:
    """The Decimal whose unscaled big-endian two's-complement value is ``b64``, exactly (no
    rounding to the default 28-digit context)."""
    unscaled = int.from_bytes(base64.b64decode(b64, validate=True), "big", signed=True)
    sign, digits, _ = Decimal(unscaled).as_tuple()
    return Decimal((sign, digits, -scale))


def _decode_value(value: Any, field: dict[str, Any]) -> Any:
    if value is None:
        return None
    name = field.get("name")
    if name == "org.apache.kafka.connect.data.Decimal" and isinstance(value, str):
        scale = int((field.get("parameters") or {}).get("scale", 0))
        return _exact_decimal(value, scale)
    if name == "io.debezium.data.VariableScaleDecimal" and isinstance(value, dict):
        return _exact_decimal(value["value"], int(value["scale"]))
    if name in ("io.debezium.time.Date", "org.apache.kafka.connect.data.Date") and isinstance(
        value, int
    ):
        return date(1970, 1, 1) + timedelta(days=value)
    if name in _TIME_UNITS and isinstance(value, int):
        unit = _TIME_UNITS[name]
        return _EPOCH + timedelta(seconds=value // unit, microseconds=(value % unit) * 1_000_000
                                  // unit)
    return value


def _decode_row(row: Any, schema: dict[str, Any] | None) -> Any:
    if not isinstance(row, dict) or not schema:
        return row
    fields = {f.get("field"): f for f in schema.get("fields") or []}
    if not any(f.get("name") for f in fields.values()):
        return row
    return {k: _decode_value(v, fields.get(k) or {}) for k, v in row.items()}


def _decode_logical(payload: dict[str, Any], schema: Any) -> dict[str, Any]:
    """Decode logical types in ``before``/``after`` using the Kafka Connect schema."""
    if not isinstance(schema, dict):
        return payload
    by_field = {f.get("field"): f for f in schema.get("fields") or [] if isinstance(f, dict)}
    out = dict(payload)
    for side in ("before", "after"):
        if out.get(side) is not None:
            out[side] = _decode_row(out[side], by_field.get(side))
    return out


# --------------------------------------------------------------------------------------------
# Refluent's own events
# --------------------------------------------------------------------------------------------


class LogEvent(Event):
    """An application log line, on ``logs.<source>``."""

    source: str = Field(min_length=1)
    """Application that wrote the line."""
    ts: UtcDatetime
    """When it was written (event time)."""
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    """Severity."""
    message: str
    """The line itself."""
    entity_id: str | None = None
    """Entity the line is about (user, session, device), used as the record key."""
    attributes: dict[str, Scalar] = Field(default_factory=dict)
    """Structured fields of the line."""


class FeatureUpdate(Event):
    """A feature view's values for one entity after one source event, on ``features.<view>``.

    Replaying the source replays the same updates (same ``source_*`` coordinates), so sinks use
    ``(event_time, sequence)`` to let a newer update win and to drop a repeated one.
    """

    view: str = Field(min_length=1)
    """Feature view name."""
    entity_id: str = Field(min_length=1)
    """Entity the values belong to (the record key)."""
    values: dict[str, FeatureValue]
    """Feature name -> value as of ``event_time``."""
    event_time: UtcDatetime
    """Event time the values are as of: the entity's watermark (windowed views) or the
    change's source time (entity-state views)."""
    windows: dict[str, tuple[UtcDatetime, UtcDatetime]] = Field(default_factory=dict)
    """Feature name -> [start, end) of the window its value covers (windowed features)."""
    deleted: bool = False
    """For entity-state views: the row was deleted (values empty)."""
    sequence: int = 0
    """Tie-breaker after event time: a per-entity version (windowed views) or the source
    offset (entity-state views)."""
    source_topic: str = ""
    """Topic of the event that produced the update."""
    source_partition: int = -1
    """Its partition."""
    source_offset: int = -1
    """Its offset."""

    def entity_key(self) -> str | None:
        """Partition by entity."""
        return self.entity_id


class PredictionRequest(Event):
    """A request for a prediction, on ``inference.requests``."""

    request_id: str = Field(default_factory=_new_id, min_length=1)
    """Caller's id of the request; a prediction answers it exactly once."""
    model: str = Field(min_length=1)
    """Model name (its champion answers)."""
    entity_id: str = Field(min_length=1)
    """Entity whose online features are fetched."""
    features: dict[str, FeatureValue] = Field(default_factory=dict)
    """Request-time features, added to the online ones."""
    ts: UtcDatetime = Field(default_factory=_utcnow)
    """When the request was made."""


class Prediction(Event):
    """A model's answer, on ``predictions``; also logged to the lake with the features served."""

    prediction_id: str = Field(default_factory=_new_id, min_length=1)
    """Id feedback refers to."""
    request_id: str
    """The request answered."""
    model_name: str
    """Model that answered."""
    model_version: str
    """Its version."""
    entity_id: str
    """Entity scored."""
    score: float | None = None
    """Regression value or probability of the positive class."""
    label: str | int | bool | None = None
    """Predicted class, for classifiers."""
    probabilities: dict[str, float] | None = None
    """Class probabilities, for classifiers."""
    features: dict[str, FeatureValue] = Field(default_factory=dict)
    """Features exactly as the model saw them."""
    feature_ages_ms: dict[str, float] = Field(default_factory=dict)
    """Age of each online feature view at serving time."""
    stale: bool = False
    """True when a feature older than its view's limit was served."""
    ts: UtcDatetime = Field(default_factory=_utcnow)
    """Event time of the question: when the request was made (when it was received, if it
    does not say); labels are timed against it. ``latency_ms`` says when it was answered."""
    latency_ms: float | None = Field(default=None, ge=0)
    """Request to prediction latency."""


class Feedback(Event):
    """A label that arrives later, on ``feedback``: for a prediction id, or an entity and time."""

    prediction_id: str | None = None
    """Prediction the label is for."""
    entity_id: str | None = None
    """Entity the label is for, when the prediction id is unknown."""
    label: float | int | bool | str
    """The truth."""
    event_time: UtcDatetime
    """When the truth became known."""

    @model_validator(mode="after")
    def _has_target(self) -> Feedback:
        if self.prediction_id is None and self.entity_id is None:
            raise ValueError("feedback needs a prediction_id or an entity_id")
        return self

    def entity_key(self) -> str | None:
        """Partition by prediction id when there is one, so a label meets its prediction."""
        return self.prediction_id or self.entity_id


class LabeledExample(Event):
    """A prediction joined to its label, on ``examples``: what models learn from."""

    prediction_id: str
    """The prediction labelled."""
    entity_id: str
    """Entity scored."""
    model_name: str
    """Model that made the prediction."""
    model_version: str
    """Its version."""
    features: dict[str, FeatureValue]
    """Features as served."""
    label: float | int | bool | str
    """The truth."""
    score: float | None = None
    """What the model predicted (score or probability)."""
    predicted_label: str | int | bool | None = None
    """What the model predicted (class)."""
    prediction_time: UtcDatetime
    """When the prediction was made."""
    label_time: UtcDatetime
    """When the label became known."""


AlertEvent = Literal["drift.detected", "performance.degraded", "features.stale",
                     "deadletters.rising", "model.failing", "consumer.lagging", "model.promoted",
                     "retrain.completed", "retrain.failed", "budget.exhausted"]
"""Webhook event types an alert is delivered as."""


class DriftAlert(Event):
    """A drift, performance or operational alert, on ``alerts`` and to webhooks (one id per
    alert). Model alerts name the model and version; operational ones about a topic or a
    consumer group name it in ``subject``."""

    alert_id: str = Field(default_factory=_new_id, min_length=1)
    """Idempotency key of the alert and of its webhook deliveries."""
    event: AlertEvent = "drift.detected"
    """Webhook event type it is delivered as."""
    model_name: str | None = None
    """Model concerned."""
    model_version: str | None = None
    """Its version."""
    subject: str | None = None
    """What an alert that is not about one model version is about (dead-letter topic, consumer
    group)."""
    detector: str
    """Detector that fired (adwin, page_hinkley, ddm, psi, ks, wasserstein, cbpe, realised,
    stale_share, failure_share, per_minute, lag)."""
    kind: Literal["error", "feature", "score", "performance", "freshness", "requests",
                  "deadletters", "lag", "promotion", "retrain", "privacy"]
    """What it is about: the error stream, a feature, the score distribution, the accuracy,
    the features' age, the requests rejected, dead letters, a group's lag, a promotion, a
    retraining job, a privacy budget."""
    feature: str | None = None
    """Feature concerned, for feature drift."""
    statistic: float
    """Detector's statistic."""
    threshold: float
    """Threshold it crossed (from below, or from above for an accuracy)."""
    severity: Literal["info", "warning", "critical"] = "warning"
    """How bad."""
    detected_at: UtcDatetime
    """Event time at which the drift was detected."""
    window: dict[str, Scalar] = Field(default_factory=dict)
    """Window the statistic was computed over (size, first and last index, reference) and the
    record that closed it (topic, partition, offset)."""

    @model_validator(mode="after")
    def _has_subject(self) -> DriftAlert:
        if self.model_name is None and self.subject is None:
            raise ValueError("an alert needs a model_name or a subject")
        return self

    def entity_key(self) -> str | None:
        """Partition by model (or subject), so one model's alerts stay in order."""
        return self.model_name or self.subject


class RetrainRequest(Event):
    """A request to retrain a model, on ``retrain.requests``."""

    request_id: str = Field(default_factory=_new_id, min_length=1)
    """Idempotency key of the retraining."""
    model_name: str
    """Model lineage to retrain."""
    reason: Literal["drift", "schedule", "manual", "quality"]
    """Why."""
    alert_id: str | None = None
    """Alert that triggered it."""
    requested_at: UtcDatetime
    """When it was asked for."""
    snapshot_id: int | None = None
    """Iceberg snapshot to train on; None means the latest."""
    params: dict[str, Scalar] = Field(default_factory=dict)
    """Training parameters overriding the model's defaults."""

    def entity_key(self) -> str | None:
        """Partition by model, so one lineage's retrainings stay in order."""
        return self.model_name


CONTRACTS: dict[str, type[BaseModel]] = {
    model.__name__: model
    for model in (
        CdcEnvelope,
        LogEvent,
        FeatureUpdate,
        PredictionRequest,
        Prediction,
        Feedback,
        LabeledExample,
        DriftAlert,
        RetrainRequest,
    )
}
"""Every event contract by name."""
