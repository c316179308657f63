"""The lake sink: micro-batches of consumed records appended to one Iceberg table, exactly once.

One :class:`IcebergSink` writes one table; a :class:`~refluent.lake.mappings.TableMapping` turns
each record into a row. The table is created on :meth:`IcebergSink.setup` (see
:func:`refluent.lake.catalog.ensure_table`), partitioned by the day of event time.

Delivery guarantee: every micro-batch is ONE Iceberg commit whose snapshot summary holds, under
``refluent.offsets``, the next offset to consume of every partition the table has seen
(:mod:`refluent.lake.offsets`). On start the consumer resumes from those offsets
(:meth:`IcebergSink.start_offsets`), not from the group's, and a batch drops records whose offset
the table already holds. A crash at any point therefore neither duplicates nor loses rows: either
the commit landed with its offsets, or neither did. Commits are optimistic: a concurrent commit
(another sink on the same table, maintenance) makes the commit fail; the sink then re-reads the
offsets from the new head, drops what is now already there and commits again. Data files of a
failed attempt are left for :func:`refluent.lake.maintenance.delete_orphan_files`.

Schema: columns a row has beyond the table's are added in the same commit as the rows, and a
value that does not fit its column never fails the batch (:mod:`refluent.lake.schema`).

Examples:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from refluent.embedded.services import lake_catalog
    >>> from refluent.lake.mappings import RawEventsTable
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

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from refluent.errors import MissingExtraError
from refluent.lake.catalog import (
    OPERATION_KEY,
    ensure_table,
    identifier,
    open_catalog,
    retry_commit,
    transaction,
)
from refluent.lake.errors import LakeCommitError, LakeError, LakeRowError
from refluent.lake.mappings import TableMapping
from refluent.lake.offsets import OFFSETS_KEY, encode_offsets, read_offsets
from refluent.lake.schema import arrow_table, plan_columns
from refluent.observability import metrics
from refluent.sinks.base import BatchingSink, SinkRecord

try:
    from pyiceberg.catalog import Catalog
    from pyiceberg.exceptions import NoSuchTableError
    from pyiceberg.schema import Schema
    from pyiceberg.table import Table
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise MissingExtraError(exc.name or "pyiceberg", "iceberg") from exc

if TYPE_CHECKING:
    from confluent_kafka import TopicPartition

    from refluent.config import Settings

OFFSET_BEGINNING = -2
"""Kafka's logical offset for the earliest record (``confluent_kafka.OFFSET_BEGINNING``)."""


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
        on_bad_record: Called with a record the mapping rejects and the error, a
            :class:`~refluent.lake.errors.LakeRowError` (to dead-letter it; a
            :class:`~refluent.sinks.pipeline.SinkPipeline` sets it); the record is then
            skipped and its offset counts as consumed, so the callback must have made it
            durable when it returns. Without it a bad record fails the batch with
            :class:`~refluent.lake.errors.LakeRowError`.
    """

    keeps_offsets: ClassVar[bool] = True

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
        on_bad_record: Callable[[SinkRecord[Any], Exception], None] | None = None,
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

        def attempt(_: int) -> None:
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
            except (OSError, ValueError, TypeError, NoSuchTableError) as exc:
                raise LakeError(self.identifier, f"commit of {len(fresh)} row(s) failed: "
                                f"{type(exc).__name__}: {exc}") from exc
            self._m_commit.observe(time.perf_counter() - started)
            self._m_rows.inc(len(fresh))
            self._m_replayed.inc(replayed)
            self._m_tombstones.inc(tombstones)

        def on_conflict() -> None:
            # Someone committed first (or the outcome is unknown): re-read the head. If our
            # commit did land, its offsets now make every record a replay.
            self._m_conflicts.inc()
            self._refresh(table)

        retry_commit(attempt, attempts=self.commit_attempts, on_conflict=on_conflict,
                     error=lambda n, last: LakeCommitError(self.identifier, n, last))

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
