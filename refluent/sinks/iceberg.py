"""The lake sink: micro-batches of consumed records appended to Iceberg tables, exactly once.

One :class:`IcebergSink` writes one table. A :class:`TableMapping` turns each record into a row:
:class:`RawEventsTable` (any topic, the event flattened plus its JSON), :class:`CdcChangelogTable`
(Debezium changes as an append-only changelog) and :class:`FeatureHistoryTable` (every feature
update). Tables are created on :meth:`IcebergSink.setup`, partitioned by the day of event time,
with old metadata files deleted after each commit and manifests merged.

Delivery guarantee: every micro-batch is ONE Iceberg commit whose snapshot summary holds, under
``refluent.offsets``, the next offset to consume of every partition the table has seen
(``{"topic:partition": next_offset}``, carried forward from the parent snapshot). On start the
consumer resumes from those offsets (:meth:`IcebergSink.committed_offsets`), not from the
group's, and a batch drops records whose offset the table already holds. A crash at any point
therefore neither duplicates nor loses rows: either the commit landed with its offsets, or
neither did. Commits are optimistic: a concurrent commit (another sink on the same table,
maintenance) makes the commit fail; the sink then re-reads the offsets from the new head, drops
what is now already there and commits again. Data files of a failed attempt are left for
:func:`refluent.sinks.lake_maintenance.delete_orphan_files`.

Schema: columns a row has beyond the table's are added (``update_schema().union_by_name``) in the
same commit as the rows. A value that does not fit its column widens the column where Iceberg
allows it (int to long, float to double); otherwise the value is written, as text, to the column
``<name>__string`` and the typed column gets null. A batch never fails because of its schema.

Examples:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from refluent.embedded.services import lake_catalog
    >>> from refluent.sinks.base import SinkRecord
    >>> lake = Path(tempfile.mkdtemp())
    >>> catalog = lake_catalog(f"sqlite:///{lake / 'catalog.db'}", lake.as_uri())
    >>> sink = IcebergSink(catalog, RawEventsTable(), "raw_app", namespace="demo")
    >>> sink.setup()
    >>> sink.write([SinkRecord("logs.app", 0, 7, b"u1", {"user": "u1", "clicks": 3})])
    >>> sink.flush()
    >>> sink.committed_offsets()
    {('logs.app', 0): 8}
    >>> sink.table.scan().to_arrow().select(["offset", "key", "clicks"]).to_pylist()
    [{'offset': 7, 'key': 'u1', 'clicks': 3}]
"""

from __future__ import annotations

import base64
import enum
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as dtime
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import orjson

from refluent.errors import MissingExtraError
from refluent.observability import metrics
from refluent.sinks.base import BatchingSink, SinkRecord
from refluent.sinks.errors import SinkError
from refluent.streams.contracts import CdcEnvelope, FeatureUpdate

try:
    import pyarrow as pa
    from pyiceberg.catalog import Catalog
    from pyiceberg.exceptions import (
        CommitFailedException,
        CommitStateUnknownException,
        NoSuchNamespaceError,
        NoSuchTableError,
    )
    from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.table import Table, Transaction
    from pyiceberg.table.metadata import TableMetadata
    from pyiceberg.transforms import DayTransform
    from pyiceberg.types import (
        BooleanType,
        DateType,
        DecimalType,
        DoubleType,
        FloatType,
        IcebergType,
        IntegerType,
        ListType,
        LongType,
        NestedField,
        StringType,
        TimestampType,
        TimestamptzType,
    )
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise MissingExtraError(exc.name or "pyiceberg", "iceberg") from exc

if TYPE_CHECKING:
    from confluent_kafka import TopicPartition

    from refluent.config import Settings

OFFSETS_KEY = "refluent.offsets"
"""Snapshot-summary key holding the next offset per partition, as JSON."""
OPERATION_KEY = "refluent.operation"
"""Snapshot-summary key naming the Refluent operation that made the snapshot."""
CONFLICT_SUFFIX = "__string"
"""Suffix of the text column that receives values which do not fit their typed column."""
OFFSET_BEGINNING = -2
"""Kafka's logical offset for the earliest record (``confluent_kafka.OFFSET_BEGINNING``)."""

DEFAULT_TABLE_PROPERTIES: dict[str, str] = {
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
    "commit.manifest-merge.enabled": "true",
    "format-version": "2",
}
"""Properties of every table Refluent creates: bounded metadata, merged manifests."""

ENFORCED_TABLE_PROPERTIES: dict[str, str] = {"commit.retry.num-retries": "0"}
"""Properties set on every table Refluent writes. pyiceberg's own commit retry would re-send the
snapshot summary computed against the old head, so a retried commit could move another writer's
offsets backwards; Refluent retries itself, recomputing the offsets against the new head."""

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


class LakeError(SinkError):
    """Something went wrong with a lake table or the lake catalog."""

    def __init__(self, subject: str, detail: str) -> None:
        self.subject = subject
        super().__init__(f"lake {subject}", detail)


def _mask_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***``.

    Examples:
        >>> _mask_uri("postgresql+psycopg://lake:s3cret@db:5432/lake")
        'postgresql+psycopg://lake:***@db:5432/lake'
    """
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:
        return uri
    if password:
        netloc = parts.netloc.replace(f":{password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


class LakeCatalogError(LakeError):
    """The lake catalog could not be opened or answered with an error."""

    def __init__(self, uri: str, detail: str) -> None:
        self.uri = _mask_uri(uri)
        super().__init__(f"catalog {self.uri}", detail)


class LakeNamespaceNotFoundError(LakeError):
    """A namespace named by the user does not exist."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        super().__init__(f"namespace {namespace}", "does not exist (a sink creates it on setup; "
                         "`refluent up` creates the configured one)")


class LakeTableNotFoundError(LakeError):
    """A table named by the user does not exist."""

    def __init__(self, table: str, available: Sequence[str] = ()) -> None:
        self.table = table
        self.available = list(available)
        hint = f" (tables: {', '.join(self.available)})" if self.available else " (no tables)"
        super().__init__(table, f"no such table{hint}")


class LakeCommitError(LakeError):
    """A micro-batch or maintenance commit did not land; nothing was committed."""

    def __init__(self, table: str, attempts: int, detail: str) -> None:
        self.table = table
        self.attempts = attempts
        super().__init__(table, f"commit failed after {attempts} attempt(s): {detail}")


class LakeRowError(LakeError):
    """A record could not be turned into a row of its table."""

    def __init__(self, table: str, topic: str, partition: int, offset: int, detail: str) -> None:
        self.table = table
        self.topic = topic
        self.partition = partition
        self.offset = offset
        super().__init__(table, f"record {topic}[{partition}]@{offset}: {detail}")


class LakeOffsetsError(LakeError):
    """The offsets stored in a snapshot summary cannot be read."""

    def __init__(self, table: str, snapshot_id: int, detail: str) -> None:
        self.table = table
        self.snapshot_id = snapshot_id
        super().__init__(table, f"snapshot {snapshot_id} has unreadable {OFFSETS_KEY}: {detail}")


class LakeQueryError(LakeError):
    """A lake query failed."""

    def __init__(self, sql: str, detail: str) -> None:
        self.sql = sql
        short = sql if len(sql) <= 80 else sql[:77] + "..."
        super().__init__(f"query {short!r}", detail)


class LakeMaintenanceError(LakeError):
    """A maintenance step could not run on a table."""

    def __init__(self, table: str, step: str, detail: str) -> None:
        self.table = table
        self.step = step
        super().__init__(table, f"{step}: {detail}")


# ---------------------------------------------------------------------------------------------
# catalog and tables
# ---------------------------------------------------------------------------------------------


def open_catalog(settings: Settings) -> Catalog:
    """The lake catalog named by ``settings.lake`` (else the embedded one recorded by `up`).

    SQL catalog URIs (``sqlite://``, ``postgresql+psycopg://``) open a pyiceberg SqlCatalog,
    ``http(s)://`` a REST catalog; ``lake.properties`` are passed through (S3 endpoint, keys).

    Raises:
        LakeCatalogError: the catalog cannot be opened.
        ServicesNotRunningError: no catalog is configured and none was recorded.
    """
    from refluent.embedded.services import lake_catalog, resolve_lake

    uri, warehouse = resolve_lake(settings)
    lake = settings.lake
    try:
        if uri.startswith(("http://", "https://")) or lake.properties:
            from pyiceberg.catalog import load_catalog

            kind = "rest" if uri.startswith(("http://", "https://")) else "sql"
            props = {"type": kind, "uri": uri, **lake.properties}
            if warehouse:
                props["warehouse"] = warehouse
            return load_catalog(lake.catalog_name, **props)
        return lake_catalog(uri, warehouse, name=lake.catalog_name)
    except Exception as exc:  # any driver error becomes one clear message
        raise LakeCatalogError(uri, f"{type(exc).__name__}: {exc}") from exc


def identifier(table: str, namespace: str) -> str:
    """``namespace.table``, unless ``table`` is already qualified.

    Examples:
        >>> identifier("raw_app", "refluent"), identifier("lab.raw_app", "refluent")
        ('refluent.raw_app', 'lab.raw_app')
    """
    return table if "." in table else f"{namespace}.{table}"


def table_names(catalog: Catalog, namespace: str) -> list[str]:
    """The names of the tables in ``namespace``, sorted.

    Raises:
        LakeNamespaceNotFoundError: no such namespace.
    """
    try:
        return sorted(t[-1] for t in catalog.list_tables(namespace))
    except NoSuchNamespaceError as exc:
        raise LakeNamespaceNotFoundError(namespace) from exc


def load_table(catalog: Catalog, table: str, namespace: str = "refluent") -> Table:
    """Load ``table`` (qualified or in ``namespace``).

    Raises:
        LakeTableNotFoundError: no such table; the message lists the namespace's tables.
    """
    ident = identifier(table, namespace)
    try:
        return catalog.load_table(ident)
    except NoSuchTableError as exc:
        try:
            available = table_names(catalog, ident.rsplit(".", 1)[0])
        except LakeNamespaceNotFoundError:
            available = []
        raise LakeTableNotFoundError(ident, available) from exc


def ensure_table(
    catalog: Catalog,
    ident: str,
    schema: Schema,
    partition_spec: PartitionSpec = UNPARTITIONED_PARTITION_SPEC,
    properties: Mapping[str, str] | None = None,
) -> Table:
    """Create ``ident`` (and its namespace) unless it exists, with Refluent's table properties.

    An existing table keeps its schema and partitioning; the properties in
    :data:`ENFORCED_TABLE_PROPERTIES` are set on it if missing.
    """
    ns = ident.rsplit(".", 1)[0]
    try:
        catalog.create_namespace_if_not_exists(ns)
        props = {**DEFAULT_TABLE_PROPERTIES, **(properties or {}), **ENFORCED_TABLE_PROPERTIES}
        table = catalog.create_table_if_not_exists(
            ident, schema=schema, partition_spec=partition_spec, properties=props
        )
        missing = {k: v for k, v in ENFORCED_TABLE_PROPERTIES.items()
                   if table.properties.get(k) != v}
        if missing:
            with table.transaction() as tx:
                tx.set_properties(missing)
        return table
    except (CommitFailedException, OSError, ValueError) as exc:
        raise LakeError(ident, f"cannot create or open the table: {exc}") from exc


class _MemoTransaction(Transaction):
    """A transaction that works out its staged metadata once per change.

    pyiceberg's ``Transaction.table_metadata`` applies the staged updates to a deep copy of the
    table metadata on every access, and one append reads it a couple of dozen times: that is
    most of a commit's time, and it grows with the number of snapshots. Metadata models are
    frozen, so the result stays valid until the staged updates or the table's metadata change
    (both are replaced, never mutated, when they do).
    """

    _memo: tuple[TableMetadata, tuple[Any, ...], TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        """The table metadata with the staged updates applied."""
        base, updates = self._table.metadata, self._updates
        memo = self._memo
        if memo is not None and memo[0] is base and memo[1] is updates:
            return memo[2]
        result = super().table_metadata
        self._memo = (base, updates, result)
        return result


def transaction(table: Table, autocommit: bool = False) -> Transaction:
    """A transaction on ``table`` (see :class:`_MemoTransaction` for why not
    ``table.transaction()``)."""
    return _MemoTransaction(table, autocommit=autocommit)


def day_partition_spec(schema: Schema, column: str) -> PartitionSpec:
    """``day(column)``: one partition per UTC day of the event-time column."""
    source = schema.find_field(column)
    return PartitionSpec(PartitionField(source_id=source.field_id, field_id=1000,
                                        transform=DayTransform(), name=f"{column}_day"))


def encode_offsets(offsets: Mapping[tuple[str, int], int]) -> str:
    """The snapshot-summary form of ``offsets``: ``{"topic:partition": next_offset}``.

    Examples:
        >>> encode_offsets({("cdc.orders", 1): 10, ("cdc.orders", 0): 4})
        '{"cdc.orders:0":4,"cdc.orders:1":10}'
    """
    data = {f"{t}:{p}": int(o) for (t, p), o in offsets.items()}
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()


def decode_offsets(text: str) -> dict[tuple[str, int], int]:
    """Inverse of :func:`encode_offsets` (Kafka topic names cannot contain ``:``).

    Raises:
        ValueError: not the expected JSON object.
    """
    data = orjson.loads(text)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    out: dict[tuple[str, int], int] = {}
    for name, offset in data.items():
        topic, sep, part = str(name).rpartition(":")
        if not sep or not topic:
            raise ValueError(f"key {name!r} is not topic:partition")
        out[(topic, int(part))] = int(offset)
    return out


def offsets_summary(table: Table) -> tuple[int | None, str | None]:
    """The id of the newest snapshot on the current branch carrying ``refluent.offsets``, and
    that raw value; (None, None) when there is none.

    Snapshots without offsets (a commit made by another tool) are skipped over, so their
    ancestors' offsets still count.
    """
    snapshot = table.current_snapshot()
    while snapshot is not None:
        raw = snapshot.summary.get(OFFSETS_KEY) if snapshot.summary is not None else None
        if raw is not None:
            return snapshot.snapshot_id, str(raw)
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return None, None


def read_offsets(table: Table) -> dict[tuple[str, int], int]:
    """The next offset to consume per (topic, partition), from the table's snapshots.

    Raises:
        LakeOffsetsError: the summary holds something that is not offsets.
    """
    snapshot_id, raw = offsets_summary(table)
    if raw is None or snapshot_id is None:
        return {}
    try:
        return decode_offsets(raw)
    except (ValueError, TypeError) as exc:
        raise LakeOffsetsError(_name(table), snapshot_id, str(exc)) from exc


def reset_offsets(table: Table, topics: Sequence[str] | None = None
                  ) -> dict[tuple[str, int], int]:
    """Forget the offsets ``table`` keeps for ``topics`` (every topic when None), so its sink
    reads them from their beginning; rows already in the table stay.

    For a topic that was deleted and created again: its old offsets would make the sink skip
    the new records. One empty commit records the remaining offsets.

    Returns:
        The offsets forgotten (empty when there were none, and then nothing is committed).
    """
    before = read_offsets(table)
    dropped = {tp: o for tp, o in before.items() if topics is None or tp[0] in topics}
    if not dropped:
        return {}
    kept = {tp: o for tp, o in before.items() if tp not in dropped}
    tx = transaction(table)
    tx.append(arrow_table(tx.table_metadata.schema(), {}, 0),
              snapshot_properties={OFFSETS_KEY: encode_offsets(kept),
                                   OPERATION_KEY: "reset-offsets"})
    tx.commit_transaction()
    return dropped


def _name(table: Table) -> str:
    return ".".join(table.name())


# ---------------------------------------------------------------------------------------------
# values and column types
# ---------------------------------------------------------------------------------------------


_SKIP = object()


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)


def to_json(value: Any) -> str:
    """Compact JSON of any value (Decimals as strings, bytes as base64).

    Examples:
        >>> from decimal import Decimal
        >>> to_json({"price": Decimal("9.90"), "tags": ["a"]})
        '{"price":"9.90","tags":["a"]}'
    """
    if hasattr(value, "model_dump_json"):
        return str(value.model_dump_json())
    opts = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    return orjson.dumps(value, default=_json_default, option=opts).decode()


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def flat_value(value: Any, scalars_only: bool = False) -> Any:
    """The column value of a field: scalars as they are, a list of numbers as a vector, anything
    else as JSON text (or skipped, with ``scalars_only``). Decimals become exact text."""
    if value is None or isinstance(value, bool | int | float | str | date):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return flat_value(value.value, scalars_only)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dtime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if scalars_only:
        return _SKIP
    if isinstance(value, list | tuple) and all(_is_number(v) for v in value):
        return [float(v) for v in value]
    return to_json(value)


def column_name(name: str, taken: Iterable[str]) -> str:
    """A column name for a field: dots (Iceberg's path separator) become ``_``, and a name
    already used by a fixed column gets a trailing ``_``.

    Examples:
        >>> column_name("op", {"op", "key"}), column_name("a.b", ())
        ('op_', 'a_b')
    """
    name = name.replace(".", "_") or "_"
    taken = set(taken)
    while name in taken:
        name += "_"
    return name


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int" if _INT64[0] <= v <= _INT64[1] else "other"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, datetime):
        return "ts" if v.tzinfo is None else "tstz"
    if isinstance(v, date):
        return "date"
    if isinstance(v, list) and all(_is_number(x) for x in v):
        return "vector"
    return "other"


_ELEMENT_IDS = iter(range(1_000_000, 2_000_000_000))


def infer_type(values: Iterable[Any]) -> IcebergType | None:
    """The Iceberg type for a new column holding ``values``; None when all are null.

    Examples:
        >>> str(infer_type([1, None, 2])), str(infer_type([1, 2.5])), str(infer_type([1, "a"]))
        ('long', 'double', 'string')
        >>> infer_type([None]) is None
        True
    """
    kinds = {_kind(v) for v in values if v is not None}
    if not kinds:
        return None
    if kinds == {"bool"}:
        return BooleanType()
    if kinds == {"int"}:
        return LongType()
    if kinds <= {"int", "float"}:
        return DoubleType()
    if kinds == {"tstz"}:
        return TimestamptzType()
    if kinds == {"ts"}:
        return TimestampType()
    if kinds == {"date"}:
        return DateType()
    if kinds == {"vector"}:
        return ListType(element_id=next(_ELEMENT_IDS), element_type=DoubleType(),
                        element_required=False)
    return StringType()


def as_text(v: Any) -> str:
    """A value as text for a string column.

    Examples:
        >>> as_text(True), as_text(2.5), as_text([1.0, 2.0])
        ('true', '2.5', '[1.0,2.0]')
    """
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float | Decimal):
        return str(v)
    if isinstance(v, datetime | date):
        return v.isoformat()
    return to_json(v)


@dataclass
class _Fit:
    values: list[Any]
    rejected: dict[int, str] = field(default_factory=dict)
    promote_to: IcebergType | None = None


def fit_values(field_type: IcebergType, values: Sequence[Any]) -> _Fit:
    """Convert ``values`` for a column of ``field_type``: what fits, a wider type when Iceberg
    allows the widening (int to long, float to double), and the rows whose value does not fit
    (as text, for the conflict column)."""
    out: list[Any] = [None] * len(values)
    fit = _Fit(out)
    rejected = fit.rejected
    t = field_type
    if isinstance(t, StringType):
        for i, v in enumerate(values):
            if v is not None:
                out[i] = as_text(v)
        return fit
    for i, v in enumerate(values):
        if v is None:
            continue
        ok: Any = _SKIP
        if isinstance(t, BooleanType):
            ok = v if isinstance(v, bool) else _SKIP
        elif isinstance(t, IntegerType | LongType):
            if isinstance(v, int) and not isinstance(v, bool) and _INT64[0] <= v <= _INT64[1]:
                ok = v
                if isinstance(t, IntegerType) and not _INT32[0] <= v <= _INT32[1]:
                    fit.promote_to = LongType()
        elif isinstance(t, FloatType | DoubleType):
            if _is_number(v):
                ok = float(v)
                if isinstance(t, FloatType):
                    fit.promote_to = DoubleType()
        elif isinstance(t, TimestamptzType):
            ok = v if isinstance(v, datetime) and v.tzinfo is not None else _SKIP
        elif isinstance(t, TimestampType):
            ok = v if isinstance(v, datetime) and v.tzinfo is None else _SKIP
        elif isinstance(t, DateType):
            ok = v if isinstance(v, date) and not isinstance(v, datetime) else _SKIP
        elif isinstance(t, ListType):
            numeric = isinstance(t.element_type, FloatType | DoubleType)
            if numeric and isinstance(v, list) and all(_is_number(x) for x in v):
                ok = [float(x) for x in v]
        elif isinstance(t, DecimalType):
            ok = _fit_decimal(v, t)
        if ok is _SKIP:
            rejected[i] = as_text(v)
        else:
            out[i] = ok
    return fit


def _fit_decimal(v: Any, t: DecimalType) -> Any:
    if isinstance(v, bool) or not isinstance(v, int | str | Decimal):
        return _SKIP
    try:
        d = Decimal(v)
        q = d.quantize(Decimal(1).scaleb(-t.scale))
    except (InvalidOperation, ValueError):
        return _SKIP
    if q != d or len(q.as_tuple().digits) > t.precision:
        return _SKIP
    return q


@dataclass
class ColumnPlan:
    """What a batch needs from the table schema, and its column values."""

    new_fields: list[NestedField]
    columns: dict[str, list[Any]]

    @property
    def evolves(self) -> bool:
        """True when the schema must change before the rows can be appended."""
        return bool(self.new_fields)


def plan_columns(schema: Schema, rows: Sequence[Mapping[str, Any]],
                 declared: Mapping[str, IcebergType] | None = None) -> ColumnPlan:
    """Match ``rows`` against ``schema``: the fields to add or widen and each column's values.

    ``declared`` gives the type of a column the table may lack (a mapping's fixed columns);
    other new columns take the type of their values (:func:`infer_type`). A value that fits
    neither goes, as text, to ``<column>__string``. All-null new columns are not created.
    """
    declared = declared or {}
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    new_fields: list[NestedField] = []
    columns: dict[str, list[Any]] = {}
    conflicts: dict[str, list[Any]] = {}
    next_id = iter(range(1, 1_000_000))

    def place(name: str, values: list[Any]) -> None:
        existing = _find(schema, name)
        if existing is not None:
            t: IcebergType | None = existing.field_type
        else:
            t = declared.get(name) or infer_type(values)
        if t is None:
            return
        fit = fit_values(t, values)
        if existing is None:
            new_fields.append(NestedField(next(next_id), name, t, required=False))
        elif fit.promote_to is not None:
            new_fields.append(NestedField(next(next_id), name, fit.promote_to,
                                          required=existing.required))
        columns[name] = fit.values
        if fit.rejected:
            text = conflicts.setdefault(name + CONFLICT_SUFFIX, [None] * len(values))
            for i, v in fit.rejected.items():
                text[i] = v

    for name in names:
        place(name, [row.get(name) for row in rows])
    for name, values in conflicts.items():
        place(name, values)
    return ColumnPlan(new_fields, columns)


def _find(schema: Schema, name: str) -> NestedField | None:
    try:
        return schema.find_field(name)
    except ValueError:
        return None


def arrow_table(schema: Schema, columns: Mapping[str, list[Any]], num_rows: int) -> pa.Table:
    """A pyarrow table in exactly the table's schema (missing columns null)."""
    arrow_schema = schema.as_arrow()
    arrays = []
    for f in arrow_schema:
        values = columns.get(f.name)
        arrays.append(pa.array(values if values is not None else [None] * num_rows, type=f.type))
    return pa.Table.from_arrays(arrays, schema=arrow_schema)


def optional_schema(schema: Schema) -> Schema:
    """``schema`` with every top-level field optional (for ``union_by_name``)."""
    return Schema(*(NestedField(f.field_id, f.name, f.field_type, required=False, doc=f.doc)
                    for f in schema.fields))


# ---------------------------------------------------------------------------------------------
# row mappings
# ---------------------------------------------------------------------------------------------


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
        if flat is _SKIP:
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

    :func:`refluent.sinks.lake_maintenance.compact_cdc` turns the changelog into current state.

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
            "windows": to_json({k: [s.isoformat(), e.isoformat()]
                                for k, (s, e) in upd.windows.items()}) if upd.windows else None,
            "topic": record.topic, "partition": record.partition, "offset": record.offset,
            "ingest_time": ingest_time,
        }
        _flatten_into(row, upd.values, self.reserved, scalars_only=False)
        return row


# ---------------------------------------------------------------------------------------------
# the sink
# ---------------------------------------------------------------------------------------------


CatalogSource = Catalog | Callable[[], Catalog]


class IcebergSink(BatchingSink[Any]):
    """Appends micro-batches to one Iceberg table, exactly once (see the module docstring).

    Use the table's offsets as the consumer's start and commit the group only once the buffer
    is flushed::

        sink.setup()
        ConsumerLoop(..., start_offsets=sink.start_offsets, commit_ready=sink.commit_ready)

    Lifecycle: ``setup()`` opens the catalog (when given a factory), creates the table if
    missing and reads its offsets; ``write()`` buffers; a micro-batch is committed every
    ``max_records`` records or ``max_seconds`` seconds and on ``flush()``/``close()``.

    Args:
        catalog: A pyiceberg catalog, or a function returning one (called in ``setup``).
        mapping: How records become rows.
        table: Table name (in ``namespace``) or ``namespace.table``.
        namespace: Namespace of an unqualified table name.
        max_records: Records per micro-batch.
        max_seconds: Longest a record waits before its micro-batch is committed.
        properties: Extra table properties at creation (override the defaults).
        commit_attempts: Tries per micro-batch when concurrent commits get in the way.
        unknown_partitions: Where :meth:`start_offsets` starts a partition the table has never
            seen: ``"beginning"`` (the table is the truth: nothing of it is in the table yet) or
            ``"group"`` (the group's committed offset).
        on_bad_record: Called with a record the mapping rejects and the error (to dead-letter
            it); the record is then skipped and its offset counts as consumed, so the callback
            must have made it durable when it returns. Without it a bad record fails the batch
            with :class:`LakeRowError`.
    """

    def __init__(
        self,
        catalog: CatalogSource,
        mapping: TableMapping,
        table: str,
        namespace: str = "refluent",
        *,
        max_records: int = 10_000,
        max_seconds: float = 5.0,
        properties: Mapping[str, str] | None = None,
        commit_attempts: int = 5,
        unknown_partitions: Literal["beginning", "group"] = "beginning",
        on_bad_record: Callable[[SinkRecord[Any], LakeRowError], None] | None = None,
    ) -> None:
        super().__init__(max_records=max_records, max_seconds=max_seconds)
        self._catalog_source = catalog
        self.mapping = mapping
        self.identifier = identifier(table, namespace)
        self.name = f"lake:{self.identifier}"
        self.properties = dict(properties or {})
        self.commit_attempts = max(1, commit_attempts)
        self.unknown_partitions = unknown_partitions
        self.on_bad_record = on_bad_record
        self._catalog: Catalog | None = None
        self._table: Table | None = None
        self._declared = {c.name: c.type for c in mapping.columns()}
        self._m_commit = metrics.LAKE_COMMIT_SECONDS.labels(self.identifier)
        self._m_rows = metrics.LAKE_ROWS_WRITTEN.labels(self.identifier)
        self._m_replayed = metrics.LAKE_RECORDS_SKIPPED.labels(self.identifier, "replayed")
        self._m_tombstones = metrics.LAKE_RECORDS_SKIPPED.labels(self.identifier, "tombstone")
        self._m_bad = metrics.LAKE_RECORDS_SKIPPED.labels(self.identifier, "bad_record")
        self._m_conflicts = metrics.LAKE_COMMIT_CONFLICTS.labels(self.identifier)

    @classmethod
    def from_settings(cls, settings: Settings, mapping: TableMapping, table: str,
                      **kwargs: Any) -> IcebergSink:
        """A sink on the catalog and namespace of ``settings.lake`` (opened in ``setup``)."""
        kwargs.setdefault("namespace", settings.lake.namespace)
        return cls(lambda: open_catalog(settings), mapping, table, **kwargs)

    # -- lifecycle -----------------------------------------------------------------------------
    def setup(self) -> None:
        """Open the catalog, create the table if missing, and read its committed offsets."""
        source = self._catalog_source
        self._catalog = source if isinstance(source, Catalog) else source()
        schema = self.mapping.schema()
        self._table = ensure_table(self._catalog, self.identifier, schema,
                                   self.mapping.partition_spec(schema), self.properties)
        read_offsets(self._table)  # unreadable offsets fail here, not at the first commit

    def close(self) -> None:
        """Flush, then close the catalog if the sink opened it."""
        try:
            self.flush()
        finally:
            if self._catalog is not None and self._catalog is not self._catalog_source:
                self._catalog.close()
            self._catalog = None

    @property
    def table(self) -> Table:
        """The pyiceberg table (after :meth:`setup`)."""
        if self._table is None:
            raise LakeError(self.identifier, "the sink is not set up; call setup() first")
        return self._table

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        """The next offset to consume per (topic, partition), read from the table now (so a
        partition another consumer wrote meanwhile is current)."""
        table = self.table
        try:
            table.refresh()
        except (OSError, NoSuchTableError) as exc:
            raise LakeError(self.identifier, f"cannot read the table: {exc}") from exc
        return read_offsets(table)

    def start_offsets(self, partitions: Sequence[TopicPartition]) -> dict[tuple[str, int], int]:
        """``ConsumerLoop(start_offsets=...)``: the table's offsets for the assigned partitions
        (a partition the table has never seen starts at the beginning, unless
        ``unknown_partitions="group"``)."""
        offsets = self.committed_offsets()
        out = {}
        for tp in partitions:
            key = (tp.topic, tp.partition)
            if key in offsets:
                out[key] = offsets[key]
            elif self.unknown_partitions == "beginning":
                out[key] = OFFSET_BEGINNING
        return out

    def commit_ready(self) -> bool:
        """``ConsumerLoop(commit_ready=...)``: True when nothing is buffered."""
        return self.pending == 0

    # -- writing -------------------------------------------------------------------------------
    def write_batch(self, batch: list[SinkRecord[Any]]) -> None:
        """Append ``batch`` in one commit with the updated offsets, skipping what the table
        already holds; retried against the new head when a concurrent commit gets in first.

        Raises:
            LakeRowError: a record cannot be turned into a row and there is no
                ``on_bad_record`` callback (nothing is committed).
            LakeCommitError: every attempt met a concurrent commit.
            LakeError: the catalog or storage failed (nothing is known to be committed; the
                batch is replayed and deduplicated on restart).
        """
        if not batch:
            return
        table = self.table
        ingest_time = datetime.now(UTC)
        # Rows are made only for records the table lacks (a replay is neither mapped nor
        # dead-lettered again), once even when the commit is retried.
        rows: dict[int, dict[str, Any] | None] = {}
        last_error = ""
        for attempt in range(1, self.commit_attempts + 1):
            base = read_offsets(table)
            offsets = dict(base)
            fresh: list[dict[str, Any]] = []
            seen: set[tuple[str, int, int]] = set()
            replayed = tombstones = 0
            for i, rec in enumerate(batch):
                tp = (rec.topic, rec.partition)
                offsets[tp] = max(offsets.get(tp, 0), rec.offset + 1)
                coord = (rec.topic, rec.partition, rec.offset)
                if rec.offset < base.get(tp, 0) or coord in seen:
                    replayed += 1
                    continue
                seen.add(coord)
                if rec.skip:  # dead-lettered upstream: consumed, no row
                    continue
                if i not in rows:
                    rows[i] = self._row(rec, ingest_time)
                row = rows[i]
                if row is None:
                    tombstones += int(rec.value is None)
                else:
                    fresh.append(row)
            if offsets == base:
                self._m_replayed.inc(replayed)
                return
            started = time.perf_counter()
            try:
                self._commit(table, fresh, offsets)
            except (CommitFailedException, CommitStateUnknownException) as exc:
                # Someone committed first (or the outcome is unknown): re-read the head. If our
                # commit did land, its offsets now make every record a replay.
                self._m_conflicts.inc()
                last_error = f"{type(exc).__name__}: {exc}"
                self._refresh(table)
                if attempt < self.commit_attempts:
                    time.sleep(min(0.05 * 2 ** (attempt - 1), 1.0))
                continue
            except (OSError, ValueError, TypeError, NoSuchTableError) as exc:
                raise LakeError(self.identifier, f"commit of {len(fresh)} row(s) failed: "
                                f"{type(exc).__name__}: {exc}") from exc
            self._m_commit.observe(time.perf_counter() - started)
            self._m_rows.inc(len(fresh))
            self._m_replayed.inc(replayed)
            self._m_tombstones.inc(tombstones)
            return
        raise LakeCommitError(self.identifier, self.commit_attempts, last_error)

    def _row(self, record: SinkRecord[Any], ingest_time: datetime) -> dict[str, Any] | None:
        try:
            return self.mapping.to_row(record, ingest_time)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            error = LakeRowError(self.identifier, record.topic, record.partition, record.offset,
                                 f"{type(exc).__name__}: {exc}")
            if self.on_bad_record is None:
                raise error from exc
            self.on_bad_record(record, error)
            self._m_bad.inc()
            return None

    def _refresh(self, table: Table) -> None:
        try:
            table.refresh()
        except (OSError, NoSuchTableError) as exc:
            raise LakeError(self.identifier, f"cannot re-read the table: {exc}") from exc

    def _commit(self, table: Table, rows: list[dict[str, Any]],
                offsets: Mapping[tuple[str, int], int]) -> None:
        plan = plan_columns(table.schema(), rows, self._declared)
        tx = transaction(table)
        if plan.evolves:
            with tx.update_schema() as update:
                update.union_by_name(Schema(*plan.new_fields))
        data = arrow_table(tx.table_metadata.schema(), plan.columns, len(rows))
        tx.append(data, snapshot_properties={OFFSETS_KEY: encode_offsets(offsets),
                                             OPERATION_KEY: f"sink:{self.mapping.kind}"})
        tx.commit_transaction()
