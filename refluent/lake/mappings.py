"""How consumed records become rows of lake tables.

A :class:`TableMapping` declares a table's fixed columns and turns each record into a row:
:class:`RawEventsTable` (any topic, the event flattened plus its JSON), :class:`PredictionsTable`
(predictions with the features as served), :class:`CdcChangelogTable` (Debezium changes as an
append-only changelog) and :class:`FeatureHistoryTable` (every feature update). Tables are
partitioned by the day of their event-time column. Fields beyond the fixed columns become
columns as they appear (see :mod:`refluent.lake.schema`).

Examples:
    >>> from refluent.sinks.base import SinkRecord
    >>> row = RawEventsTable().to_row(SinkRecord("logs.app", 0, 7, b"u1", {"clicks": 3}),
    ...                               datetime(2024, 3, 1, tzinfo=UTC))
    >>> row["key"], row["clicks"], row["payload"]
    ('u1', 3, '{"clicks":3}')
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from refluent.errors import MissingExtraError
from refluent.lake.catalog import day_partition_spec
from refluent.lake.schema import SKIP, as_text, flat_value, to_json
from refluent.streams.contracts import CdcEnvelope, FeatureUpdate

try:
    from pyiceberg.partitioning import PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.types import (
        BooleanType,
        IcebergType,
        IntegerType,
        LongType,
        NestedField,
        StringType,
        TimestamptzType,
    )
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise MissingExtraError(exc.name or "pyiceberg", "iceberg") from exc

if TYPE_CHECKING:
    from refluent.sinks.base import SinkRecord


@dataclass(frozen=True)
class ColumnSpec:
    """A fixed column of a mapping's table."""

    name: str
    type: IcebergType
    required: bool = False
    doc: str | None = None


def _coords() -> list[ColumnSpec]:
    return [
        ColumnSpec("topic", StringType(), True, "Kafka topic the record was consumed from"),
        ColumnSpec("partition", IntegerType(), True, "Its partition"),
        ColumnSpec("offset", LongType(), True, "Its offset"),
    ]


def _key_text(key: bytes | None) -> str | None:
    return None if key is None else key.decode("utf-8", errors="backslashreplace")


def _aware(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo is not None else None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed.astimezone(UTC) if parsed.tzinfo is not None else None
    return None


def _record_time(record: SinkRecord[Any], ingest_time: datetime) -> datetime:
    if record.timestamp_ms is not None and record.timestamp_ms > 0:
        return datetime.fromtimestamp(record.timestamp_ms / 1000, tz=UTC)
    return ingest_time


def _flatten_into(row: dict[str, Any], fields: Mapping[str, Any], reserved: frozenset[str],
                  scalars_only: bool) -> None:
    for name, value in fields.items():
        flat = flat_value(value, scalars_only)
        if flat is SKIP:
            continue
        col = str(name).replace(".", "_") or "_"
        while col in reserved or col in row:  # as column_name(), without building a set per field
            col += "_"
        row[col] = flat


class TableMapping(ABC):
    """How a consumed record becomes a row of one lake table.

    A mapping declares the fixed columns (created with the table; the event-time column named by
    :attr:`time_column` is the partition source) and turns a record into a dict of column name
    to value. Keys beyond the fixed columns become columns as they appear. :meth:`to_row`
    returns None to skip a record; its offset still counts as consumed.
    """

    kind: ClassVar[str] = "table"
    time_column: ClassVar[str] = "event_time"

    @abstractmethod
    def columns(self) -> list[ColumnSpec]:
        """The fixed columns, in table order."""

    @abstractmethod
    def to_row(self, record: SinkRecord[Any], ingest_time: datetime) -> dict[str, Any] | None:
        """The row of ``record`` (None to skip it). May raise ValueError for a bad record."""

    @cached_property
    def reserved(self) -> frozenset[str]:
        """Names of the fixed columns, which flattened fields never take."""
        return frozenset(c.name for c in self.columns())

    def schema(self) -> Schema:
        """The table's schema at creation."""
        return Schema(*(NestedField(i, c.name, c.type, required=c.required, doc=c.doc)
                        for i, c in enumerate(self.columns(), start=1)))

    def partition_spec(self, schema: Schema) -> PartitionSpec:
        """``day(time_column)``."""
        return day_partition_spec(schema, self.time_column)


DEFAULT_EVENT_TIME_FIELDS = ("event_time", "ts", "label_time", "prediction_time", "detected_at",
                             "requested_at", "timestamp", "time")
"""Fields tried, in order, for a raw event's event time."""


@dataclass(frozen=True)
class RawEventsTable(TableMapping):
    """Any topic's records as they came: coordinates, key, event time, the event's top-level
    scalar fields as columns and the whole event as JSON in ``payload``.

    Event time is the first of ``event_time_fields`` that holds a timezone-aware time, else the
    record's Kafka timestamp, else the ingest time. Tombstones are kept (``payload`` null)
    unless ``keep_tombstones`` is False.

    Args:
        event_time_fields: Fields (attributes of a model, keys of a dict) tried for event time.
        keep_tombstones: Write a row for a record with a null value.
    """

    event_time_fields: tuple[str, ...] = DEFAULT_EVENT_TIME_FIELDS
    keep_tombstones: bool = True
    kind: ClassVar[str] = "raw"

    def columns(self) -> list[ColumnSpec]:
        """topic, partition, offset, key, event_time, ingest_time, payload."""
        return [
            *_coords(),
            ColumnSpec("key", StringType(), False, "Record key (UTF-8)"),
            ColumnSpec("event_time", TimestamptzType(), True, "When the event happened"),
            ColumnSpec("ingest_time", TimestamptzType(), True, "When the row was written"),
            ColumnSpec("payload", StringType(), False, "The whole event as JSON"),
        ]

    def to_row(self, record: SinkRecord[Any], ingest_time: datetime) -> dict[str, Any] | None:
        """The record's row (see the class docstring)."""
        value = record.value
        if value is None and not self.keep_tombstones:
            return None
        fields: Mapping[str, Any]
        if value is None:
            fields, payload = {}, None
        elif hasattr(value, "model_dump_json"):
            fields, payload = dict(value), value.model_dump_json()
        elif isinstance(value, Mapping):
            fields, payload = value, to_json(value)
        elif isinstance(value, bytes | bytearray):
            fields, payload = {}, bytes(value).decode("utf-8", errors="backslashreplace")
        elif isinstance(value, str):
            fields, payload = {}, value
        else:
            fields, payload = {}, to_json(value)
        event_time = self._event_time(value) or _record_time(record, ingest_time)
        row: dict[str, Any] = {
            "topic": record.topic, "partition": record.partition, "offset": record.offset,
            "key": _key_text(record.key), "event_time": event_time, "ingest_time": ingest_time,
            "payload": payload,
        }
        # The event's own event_time is the column already; other colliding names get "_".
        flat = {k: v for k, v in fields.items()
                if not (k == "event_time" and _aware(v) == event_time)}
        _flatten_into(row, flat, self.reserved, scalars_only=True)
        return row

    def _event_time(self, value: Any) -> datetime | None:
        if value is None:
            return None
        for name in self.event_time_fields:
            try:
                candidate = value.get(name) if isinstance(value, Mapping) else getattr(
                    value, name, None)
            except (ValueError, TypeError):
                continue
            found = _aware(candidate)
            if found is not None:
                return found
        return None


def encode_position(position: Sequence[Any] | None) -> str | None:
    """A source-log position as text that sorts like the position: integers zero-padded to 20
    digits, parts joined by ``/``.

    Examples:
        >>> encode_position((42,))
        '00000000000000000042'
        >>> encode_position(("mysql-bin.000003", 154, 0)) < encode_position(
        ...     ("mysql-bin.000003", 1200, 0))
        True
        >>> encode_position(None) is None
        True
    """
    if position is None:
        return None
    parts = []
    for part in position:
        if isinstance(part, int) and not isinstance(part, bool):
            parts.append(f"{part:020d}" if part >= 0 else f"-{-part:019d}")
        else:
            parts.append(str(part))
    return "/".join(parts)


@dataclass(frozen=True)
class PredictionsTable(RawEventsTable):
    """Predictions with the features exactly as served, for training sets (feature logging).

    The raw-event columns, plus each feature the model saw as ``feature__<name>``, each view's
    age at serving time as ``age_ms__<view>`` and each class probability as ``proba__<class>``.
    ``label`` is text, since classes may be strings, integers or booleans.
    """

    kind: ClassVar[str] = "predictions"

    def to_row(self, record: SinkRecord[Any], ingest_time: datetime) -> dict[str, Any] | None:
        """The raw-event row with the served features as columns."""
        row = super().to_row(record, ingest_time)
        value = record.value
        if row is None or value is None or not hasattr(value, "features"):
            return row
        row["label"] = None if value.label is None else as_text(value.label)
        for prefix, values in (("feature__", value.features),
                               ("age_ms__", value.feature_ages_ms),
                               ("proba__", value.probabilities or {})):
            _flatten_into(row, {prefix + str(k): v for k, v in values.items()}, self.reserved,
                          scalars_only=True)
        return row


@dataclass(frozen=True)
class CdcChangelogTable(TableMapping):
    """Debezium changes as an append-only changelog: one row per change with ``op``, the entity
    ``key`` (primary-key values joined by ``|``), ``before_key`` (when the before-row's key is
    known), the sortable source ``position``, ``source_ts`` (event time: when the change
    happened in the source), the connector's ``ts_ms``, the record coordinates, ``before`` and
    ``after`` as JSON, and the after-row (else before-row) columns flattened under their own
    names. Tombstones are skipped (their offsets still count as consumed).

    :func:`refluent.lake.maintenance.compact_cdc` turns the changelog into current state.

    Args:
        primary_key: Primary-key columns of the source table.
    """

    primary_key: tuple[str, ...] = ("id",)
    kind: ClassVar[str] = "cdc"
    time_column: ClassVar[str] = "source_ts"

    def columns(self) -> list[ColumnSpec]:
        """op, key, before_key, position, source_ts, ts_ms, coordinates, before, after,
        ingest_time."""
        return [
            ColumnSpec("op", StringType(), True, "c, u, d, r (snapshot read) or t (truncate)"),
            ColumnSpec("key", StringType(), False, "Primary key of the row (entity id)"),
            ColumnSpec("before_key", StringType(), False, "Primary key of the before-row"),
            ColumnSpec("position", StringType(), False, "Sortable position in the source log"),
            ColumnSpec("source_ts", TimestamptzType(), True, "When the change happened"),
            ColumnSpec("ts_ms", LongType(), False, "When the connector processed it (ms)"),
            *_coords(),
            ColumnSpec("before", StringType(), False, "Row before the change (JSON)"),
            ColumnSpec("after", StringType(), False, "Row after the change (JSON)"),
            ColumnSpec("ingest_time", TimestamptzType(), True, "When the row was written"),
        ]

    def to_row(self, record: SinkRecord[Any], ingest_time: datetime) -> dict[str, Any] | None:
        """The change's row; None for a tombstone."""
        value = record.value
        if value is None:
            return None
        env = value if isinstance(value, CdcEnvelope) else CdcEnvelope.from_debezium(value)
        pk = list(self.primary_key)
        key = None
        if env.op != "t":
            missing = [c for c in pk if c not in env.row]
            if missing:
                raise ValueError(f"row lacks primary-key column(s) {', '.join(missing)}")
            key = env.key(pk)
        before_key = None
        if env.before is not None and all(c in env.before for c in pk):
            before_key = "|".join(str(env.before[c]) for c in pk)
        try:
            source_ts = env.event_time
        except ValueError:
            source_ts = _record_time(record, ingest_time)
        row: dict[str, Any] = {
            "op": env.op, "key": key, "before_key": before_key,
            "position": encode_position(env.source.position), "source_ts": source_ts,
            "ts_ms": env.ts_ms, "topic": record.topic, "partition": record.partition,
            "offset": record.offset,
            "before": None if env.before is None else to_json(env.before),
            "after": None if env.after is None else to_json(env.after),
            "ingest_time": ingest_time,
        }
        _flatten_into(row, env.row, self.reserved, scalars_only=False)
        return row


@dataclass(frozen=True)
class FeatureHistoryTable(TableMapping):
    """Every feature update: view, entity, event time, deleted flag, sequence, the source
    event's coordinates, the record's own coordinates, window bounds as JSON and each feature
    as a column (vectors as ``list<double>``)."""

    kind: ClassVar[str] = "features"

    def columns(self) -> list[ColumnSpec]:
        """view, entity_id, event_time, deleted, sequence, source coordinates, windows,
        coordinates, ingest_time."""
        return [
            ColumnSpec("view", StringType(), True, "Feature view"),
            ColumnSpec("entity_id", StringType(), True, "Entity the values belong to"),
            ColumnSpec("event_time", TimestamptzType(), True, "Event time of the source event"),
            ColumnSpec("deleted", BooleanType(), True, "The entity row was deleted"),
            ColumnSpec("sequence", LongType(), True, "Tie-breaker after event time"),
            ColumnSpec("source_topic", StringType(), False, "Topic of the source event"),
            ColumnSpec("source_partition", IntegerType(), False, "Its partition"),
            ColumnSpec("source_offset", LongType(), False, "Its offset"),
            ColumnSpec("windows", StringType(), False, "Feature -> [start, end) (JSON)"),
            *_coords(),
            ColumnSpec("ingest_time", TimestamptzType(), True, "When the row was written"),
        ]

    def to_row(self, record: SinkRecord[Any], ingest_time: datetime) -> dict[str, Any] | None:
        """The update's row; None for a tombstone."""
        value = record.value
        if value is None:
            return None
        if isinstance(value, FeatureUpdate):
            upd = value
        elif isinstance(value, bytes | str):
            upd = FeatureUpdate.model_validate_json(value)
        else:
            upd = FeatureUpdate.model_validate(value)
        row: dict[str, Any] = {
            "view": upd.view, "entity_id": upd.entity_id, "event_time": upd.event_time,
            "deleted": upd.deleted, "sequence": upd.sequence,
            "source_topic": upd.source_topic or None,
            "source_partition": upd.source_partition if upd.source_partition >= 0 else None,
            "source_offset": upd.source_offset if upd.source_offset >= 0 else None,
            # orjson writes each bound as isoformat() does (RFC 3339).
            "windows": orjson.dumps(upd.windows).decode() if upd.windows else None,
            "topic": record.topic, "partition": record.partition, "offset": record.offset,
            "ingest_time": ingest_time,
        }
        _flatten_into(row, upd.values, self.reserved, scalars_only=False)
        return row
