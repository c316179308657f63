"""Keeping lake tables fast: snapshot expiry, orphan-file deletion, small-file compaction and
the current state of a CDC changelog.

Iceberg commits get slower as metadata grows and scans slower as small files pile up, so a
streaming writer needs these regularly (``refluent lake maintain``):

- :func:`expire_snapshots` drops old snapshots (always keeping the newest ``retain_last`` of the
  current branch) and deletes the files only they referenced.
- :func:`delete_orphan_files` deletes files under the table's location that no live snapshot or
  metadata file references (data files of failed commits, for instance), if older than a cutoff
  so that a commit in flight keeps its files.
- :func:`compact` rewrites the small files of each partition into fewer, larger ones in one
  commit that carries the sink's ``refluent.offsets`` forward, so compaction never makes the sink
  forget where it was (a concurrent sink commit makes compaction start over, never the reverse).
- :func:`compact_cdc` writes the latest row of every entity in a changelog to a state table.

Every function refreshes nothing it does not need and commits at most once per table.

Examples:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from refluent.embedded.services import lake_catalog
    >>> from refluent.lake.mappings import RawEventsTable
    >>> from refluent.sinks.base import SinkRecord
    >>> from refluent.sinks.iceberg import IcebergSink
    >>> lake = Path(tempfile.mkdtemp())
    >>> catalog = lake_catalog(f"sqlite:///{lake / 'catalog.db'}", lake.as_uri())
    >>> sink = IcebergSink(catalog, RawEventsTable(), "clicks", namespace="demo")
    >>> sink.setup()
    >>> for i in range(3):
    ...     sink.write([SinkRecord("logs.web", 0, i, b"u1", {"n": i})])
    ...     sink.flush()
    >>> compact(sink.table).files_removed
    3
    >>> sink.committed_offsets()
    {('logs.web', 0): 3}
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from refluent.errors import MissingExtraError
from refluent.lake.catalog import (
    COMMIT_CONFLICTS,
    OPERATION_KEY,
    enforce_table_properties,
    ensure_table,
    identifier,
    load_table,
    qualified_name,
    retry_commit,
    table_names,
    transaction,
)
from refluent.lake.errors import LakeCommitError, LakeError, LakeMaintenanceError
from refluent.lake.offsets import OFFSETS_KEY, offsets_summary
from refluent.lake.query import duckdb_module, to_arrow
from refluent.lake.schema import optional_schema

try:
    import pyarrow as pa
    from pyiceberg.catalog import Catalog
    from pyiceberg.exceptions import (
        CommitFailedException,
        ValidationException,
    )
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan, PyArrowFileIO
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import FileScanTask, Table
    from pyiceberg.table.snapshots import Snapshot
    from pyiceberg.table.update.snapshot import ExpireSnapshots
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise MissingExtraError(exc.name or "pyiceberg", "iceberg") from exc


DEFAULT_SNAPSHOT_AGE = timedelta(days=5)
"""Snapshots older than this are expired unless the table's
``history.expire.max-snapshot-age-ms`` says otherwise."""
DEFAULT_ORPHAN_AGE = timedelta(days=3)
"""Unreferenced files younger than this are left alone (a commit may still be writing them)."""
DEFAULT_TARGET_FILE_BYTES = 128 * 1024 * 1024
"""Target data-file size of compaction when the table does not set
``write.target-file-size-bytes``."""
SMALL_FILE_RATIO = 0.75
"""A file below this fraction of the target (rows or bytes) is small."""
COMMIT_ATTEMPTS = 4
"""Tries of a maintenance commit that meets concurrent commits."""

CDC_META_COLUMNS = ("op", "before_key", "ts_ms", "topic", "partition", "offset", "before",
                    "after", "ingest_time")
"""Changelog columns that describe the change, not the row; left out of the state table."""
CDC_STATE_KEY_COLUMNS = ("key", "position", "source_ts")
"""Columns of a state table before the row's own columns."""

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpireResult:
    """What :func:`expire_snapshots` did."""

    expired_snapshots: int
    deleted_files: int


@dataclass(frozen=True)
class CompactionResult:
    """What :func:`compact` did."""

    partitions: int = 0
    files_removed: int = 0
    files_added: int = 0
    rows: int = 0


@dataclass(frozen=True)
class CdcCompactionResult:
    """What :func:`compact_cdc` wrote."""

    changelog: str
    target: str
    rows: int
    changelog_snapshot_id: int | None


@dataclass
class TableMaintenance:
    """One table's part of a :class:`MaintenanceReport`."""

    table: str
    compaction: CompactionResult = field(default_factory=CompactionResult)
    expire: ExpireResult = field(default_factory=lambda: ExpireResult(0, 0))
    orphans_deleted: int = 0
    seconds: float = 0.0
    error: str | None = None


@dataclass
class MaintenanceReport:
    """What :func:`maintain` did to each table of a namespace."""

    namespace: str
    tables: list[TableMaintenance] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no table failed."""
        return all(t.error is None for t in self.tables)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _cutoff(older_than: datetime | timedelta, now: datetime | None) -> datetime:
    if isinstance(older_than, timedelta):
        return (now or datetime.now(UTC)) - older_than
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware")
    return older_than


def _prop_int(table: Table, name: str, default: int) -> int:
    raw = table.properties.get(name)
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


def _retrying(table: Table, step: str, attempt_fn: Callable[[], T]) -> T:
    """Run ``attempt_fn`` until its commit lands; refresh the table between tries."""
    return retry_commit(
        lambda _: attempt_fn(), attempts=COMMIT_ATTEMPTS, on_conflict=table.refresh,
        conflicts=(*COMMIT_CONFLICTS, ValidationException),
        error=lambda n, last: LakeCommitError(qualified_name(table), n, f"{step}: {last}"))


def _ancestors(table: Table) -> list[Snapshot]:
    out = []
    snapshot = table.current_snapshot()
    while snapshot is not None:
        out.append(snapshot)
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return out


def reachable_files(table: Table, snapshots: Iterable[Snapshot],
                    cache: dict[str, set[str]] | None = None) -> set[str]:
    """Every file the ``snapshots`` need: manifest lists, manifests, live data and delete files.

    ``cache`` (manifest path -> its files) saves re-reading manifests shared by snapshots.
    """
    cache = {} if cache is None else cache
    io = table.io
    out: set[str] = set()
    for snapshot in snapshots:
        out.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            out.add(manifest.manifest_path)
            files = cache.get(manifest.manifest_path)
            if files is None:
                files = {e.data_file.file_path
                         for e in manifest.fetch_manifest_entry(io, discard_deleted=True)}
                cache[manifest.manifest_path] = files
            out |= files
    return out


def _delete_quietly(table: Table, paths: Iterable[str]) -> int:
    n = 0
    for path in paths:
        try:
            table.io.delete(path)
            n += 1
        except FileNotFoundError:
            continue
    return n


# ---------------------------------------------------------------------------------------------
# expiry and orphans
# ---------------------------------------------------------------------------------------------


def expire_snapshots(
    table: Table,
    older_than: datetime | timedelta | None = None,
    retain_last: int | None = None,
    *,
    delete_files: bool = True,
    now: datetime | None = None,
) -> ExpireResult:
    """Expire snapshots older than ``older_than``, keeping the newest ``retain_last`` of the
    current branch (and every branch or tag head), then delete the files only they needed.

    Args:
        table: The table.
        older_than: A UTC time, or an age; default the table's
            ``history.expire.max-snapshot-age-ms`` (else 5 days).
        retain_last: Newest snapshots of the current branch always kept; default the table's
            ``history.expire.min-snapshots-to-keep`` (else 1). At least 1.
        delete_files: Delete manifests, manifest lists and data files that no remaining snapshot
            references (pyiceberg's expiry only edits the metadata).
        now: The current time (tests).

    Raises:
        LakeCommitError: concurrent commits kept the expiry from landing.
    """
    if older_than is None:
        age_ms = _prop_int(table, "history.expire.max-snapshot-age-ms",
                           int(DEFAULT_SNAPSHOT_AGE.total_seconds() * 1000))
        older_than = timedelta(milliseconds=age_ms)
    if retain_last is None:
        retain_last = _prop_int(table, "history.expire.min-snapshots-to-keep", 1)
    cutoff_ms = int(_cutoff(older_than, now).timestamp() * 1000)
    retain_last = max(1, retain_last)
    table.refresh()

    def attempt() -> tuple[int, set[str]]:
        keep = {s.snapshot_id for s in _ancestors(table)[:retain_last]}
        keep |= {ref.snapshot_id for ref in table.metadata.refs.values()}
        expired = [s for s in table.metadata.snapshots
                   if s.timestamp_ms < cutoff_ms and s.snapshot_id not in keep]
        if not expired:
            return 0, set()
        doomed: set[str] = set()
        if delete_files:
            ids = {s.snapshot_id for s in expired}
            cache: dict[str, set[str]] = {}
            live = [s for s in table.metadata.snapshots if s.snapshot_id not in ids]
            doomed = reachable_files(table, expired, cache) - reachable_files(table, live, cache)
        ExpireSnapshots(transaction=transaction(table, autocommit=True)).by_ids(
            [s.snapshot_id for s in expired]).commit()
        return len(expired), doomed

    count, doomed = _retrying(table, "expire snapshots", attempt)
    # Deleted only once the expiry has landed: until then a snapshot still needs them.
    return ExpireResult(count, _delete_quietly(table, doomed))


def _filesystem_at(io: Any, location: str) -> tuple[Any, str]:
    """The pyarrow filesystem ``io`` reaches ``location`` with (its credentials and endpoint),
    and the location as a path on it."""
    if isinstance(io, PyArrowFileIO):
        scheme, netloc, path = io.parse_location(location)
        return io.fs_by_scheme(scheme, netloc), path
    from pyarrow import fs as pafs

    return pafs.FileSystem.from_uri(location)


def _fs_path(location: str) -> str:
    return PyArrowFileIO.parse_location(location)[2]


def live_metadata_files(table: Table) -> set[str]:
    """Metadata files a reader may still open: the current and logged metadata JSON files and
    statistics files."""
    meta = table.metadata
    files = {e.metadata_file for e in meta.metadata_log}
    if table.metadata_location:
        files.add(table.metadata_location)
    files |= {s.statistics_path for s in meta.statistics}
    files |= {s.statistics_path for s in getattr(meta, "partition_statistics", [])}
    return files


def delete_orphan_files(
    table: Table,
    older_than: datetime | timedelta = DEFAULT_ORPHAN_AGE,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[str]:
    """Delete files under the table's location that nothing live references and that were last
    modified before ``older_than`` (a time, or an age).

    Referenced: the current and logged metadata files, statistics files, and the manifest lists,
    manifests, data and delete files of every snapshot still in the metadata.

    Returns:
        The paths deleted (or, with ``dry_run``, that would be).
    """
    table.refresh()
    referenced = reachable_files(table, table.metadata.snapshots) | live_metadata_files(table)
    try:
        return delete_unreferenced_files(table.io, table.location(), referenced, older_than,
                                         dry_run=dry_run, now=now,
                                         keep_names=("version-hint.text",))
    except OSError as exc:
        raise LakeMaintenanceError(qualified_name(table), "delete orphan files", str(exc)) from exc


def delete_unreferenced_files(
    io: Any,
    location: str,
    referenced: Iterable[str],
    older_than: datetime | timedelta = DEFAULT_ORPHAN_AGE,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    keep_names: Collection[str] = (),
) -> list[str]:
    """Delete the files under ``location`` (read through the FileIO ``io``) that are not in
    ``referenced`` (locations) and were last modified before ``older_than``; files named as in
    ``keep_names`` stay. Returns the paths deleted (or, with ``dry_run``, that would be).

    Raises:
        OSError: ``location`` cannot be listed (the message names it).
    """
    from pyarrow import fs as pafs

    cutoff = _cutoff(older_than, now)
    keep = {_fs_path(p) for p in referenced}
    filesystem, base = _filesystem_at(io, location)
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(base, recursive=True,
                                                           allow_not_found=True))
    except OSError as exc:
        raise OSError(f"cannot list {base}: {exc}") from exc
    orphans = []
    for info in infos:
        if info.type != pafs.FileType.File or info.path in keep:
            continue
        if info.path.rsplit("/", 1)[-1] in keep_names:
            continue
        mtime = info.mtime
        if mtime is None:
            continue
        if mtime.tzinfo is None:
            mtime = mtime.replace(tzinfo=UTC)
        if mtime < cutoff:
            orphans.append(info.path)
    if not dry_run:
        for path in orphans:
            try:
                filesystem.delete_file(path)
            except FileNotFoundError:
                continue
    return sorted(orphans)


# ---------------------------------------------------------------------------------------------
# compaction
# ---------------------------------------------------------------------------------------------


def _target_bytes(table: Table, target_file_bytes: int | None) -> int:
    if target_file_bytes is not None:
        return target_file_bytes
    return _prop_int(table, "write.target-file-size-bytes", DEFAULT_TARGET_FILE_BYTES)


def _write_files(table: Table, data: pa.Table, target_file_rows: int | None,
                 writer_target_bytes: int | None, write_uuid: uuid.UUID,
                 counter: itertools.count[int]) -> list[DataFile]:
    # pyiceberg has no public "write these rows as data files" call; the function append()
    # uses partitions and bin-packs exactly as the table expects, by the table's
    # write.target-file-size-bytes (in Arrow bytes), which is overridden here when given.
    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    metadata = table.metadata
    if writer_target_bytes is not None:
        props = {**metadata.properties,
                 "write.target-file-size-bytes": str(max(1, writer_target_bytes))}
        metadata = metadata.model_copy(update={"properties": props})
    if target_file_rows:
        chunks = [data.slice(i, target_file_rows)
                  for i in range(0, data.num_rows, target_file_rows)]
    else:
        chunks = [data]
    out: list[DataFile] = []
    for chunk in chunks:
        out.extend(_dataframe_to_data_files(table_metadata=metadata, df=chunk, io=table.io,
                                            write_uuid=write_uuid, counter=counter))
    return out


def compact(
    table: Table,
    target_file_rows: int | None = None,
    target_file_bytes: int | None = None,
    *,
    min_input_files: int = 2,
) -> CompactionResult:
    """Rewrite the small data files of each partition into target-sized ones, in one commit.

    A file is small below 75% of ``target_file_rows`` (when given) or of ``target_file_bytes``
    (default the table's ``write.target-file-size-bytes``, else 128 MiB, on disk). A partition
    is rewritten when it has at least ``min_input_files`` small files and more of them than the
    files they would make, so compacting twice rewrites nothing the second time. Files with
    delete files attached are left alone. Rows are cut into files of ``target_file_rows`` rows,
    or of about ``target_file_bytes`` on disk (pyiceberg sizes files in Arrow bytes, so the
    target is scaled by the partition's measured Arrow-to-disk ratio).

    The commit carries ``refluent.offsets`` of the snapshot it replaces, so the sink resumes
    where it was; if the sink commits meanwhile, compaction plans again on the new head.

    Raises:
        LakeMaintenanceError: the rewritten rows do not add up (nothing is committed).
        LakeCommitError: concurrent commits kept the compaction from landing.
    """
    if offsets_summary(table)[1] is not None:
        enforce_table_properties(table)
    target_bytes = _target_bytes(table, target_file_bytes)

    target = target_file_rows or target_bytes

    def size(task: FileScanTask) -> int:
        f = task.file
        return int(f.record_count if target_file_rows else f.file_size_in_bytes)

    def worth_it(tasks: list[FileScanTask]) -> bool:
        outputs = -(-sum(size(t) for t in tasks) // target)
        return len(tasks) >= max(2, min_input_files) and len(tasks) > outputs

    def attempt() -> CompactionResult:
        if table.current_snapshot() is None:
            return CompactionResult()
        groups: dict[tuple[int, Any], list[FileScanTask]] = {}
        for task in table.scan().plan_files():
            if not task.delete_files and size(task) < SMALL_FILE_RATIO * target:
                groups.setdefault((task.file.spec_id, task.file.partition), []).append(task)
        groups = {k: v for k, v in groups.items() if worth_it(v)}
        if not groups:
            return CompactionResult()
        schema = table.schema()
        scan = ArrowScan(table.metadata, table.io, schema, AlwaysTrue())
        write_uuid, counter = uuid.uuid4(), itertools.count(0)
        removed: list[DataFile] = []
        added: list[DataFile] = []
        rows = 0
        committing = False
        try:
            for tasks in groups.values():
                data = scan.to_table(tasks)
                expected = sum(t.file.record_count for t in tasks)
                if data.num_rows != expected:
                    raise LakeMaintenanceError(qualified_name(table), "compact",
                                               f"read {data.num_rows} rows from files holding "
                                               f"{expected}; nothing rewritten")
                writer_target = None
                if not target_file_rows:
                    on_disk = sum(t.file.file_size_in_bytes for t in tasks)
                    writer_target = int(target_bytes * data.nbytes / max(1, on_disk))
                added.extend(_write_files(table, data, target_file_rows, writer_target,
                                          write_uuid, counter))
                removed.extend(t.file for t in tasks)
                rows += data.num_rows
            _, raw_offsets = offsets_summary(table)
            props = {OPERATION_KEY: "compact"}
            if raw_offsets is not None:
                props[OFFSETS_KEY] = raw_offsets
            tx = transaction(table)
            with tx.update_snapshot(snapshot_properties=props).overwrite() as rewrite:
                for f in removed:
                    rewrite.delete_data_file(f)
                for f in added:
                    rewrite.append_data_file(f)
            committing = True
            tx.commit_transaction()
        except (CommitFailedException, ValidationException):
            # The commit did not land: the new files are garbage.
            _delete_quietly(table, (f.file_path for f in added))
            raise
        except BaseException:
            # Before the commit nothing references the new files; during it, the outcome may be
            # unknown and the files possibly live, so they are left for orphan deletion.
            if not committing:
                _delete_quietly(table, (f.file_path for f in added))
            raise
        return CompactionResult(len(groups), len(removed), len(added), rows)

    return _retrying(table, "compact", attempt)


# ---------------------------------------------------------------------------------------------
# CDC state
# ---------------------------------------------------------------------------------------------


_LATEST_SQL = """
WITH base AS (
    SELECT __idx, key, before_key, op,
           row_number() OVER (ORDER BY position ASC NULLS FIRST, source_ts, topic,
                              "partition", "offset") AS ord
    FROM changes
),
truncated AS (SELECT coalesce(max(ord), 0) AS upto FROM base WHERE op = 't'),
events AS (
    SELECT __idx, key AS k, op, ord FROM base WHERE op <> 't' AND key IS NOT NULL
    UNION ALL
    -- An update that changed the primary key removes the old key.
    SELECT NULL AS __idx, before_key AS k, 'd' AS op, ord FROM base
    WHERE op = 'u' AND before_key IS NOT NULL AND key IS NOT NULL AND before_key <> key
),
latest AS (
    SELECT * FROM events QUALIFY row_number() OVER (PARTITION BY k ORDER BY ord DESC) = 1
)
SELECT __idx FROM latest, truncated WHERE op <> 'd' AND ord > truncated.upto ORDER BY k
"""


def _latest_rows(changes: pa.Table) -> list[int]:
    """Row indices of the current state: the latest change per key, deletes and rows before the
    last truncate removed."""
    cols = {name: (changes.column(name) if name in changes.column_names
                   else pa.nulls(changes.num_rows, pa.string()))
            for name in ("key", "before_key", "op", "position", "source_ts", "topic",
                         "partition", "offset")}
    cols["__idx"] = pa.array(range(changes.num_rows), pa.int64())
    con = duckdb_module().connect()
    try:
        con.register("changes", pa.table(cols))
        result = to_arrow(con.sql(_LATEST_SQL))
    finally:
        con.close()
    return [int(i) for i in result.column("__idx").to_pylist()]


def compact_cdc(
    catalog: Catalog,
    changelog: str,
    target: str | None = None,
    *,
    namespace: str = "refluent",
) -> CdcCompactionResult:
    """Write the current state of a CDC changelog to ``target`` (default
    ``<changelog>_current``), replacing what it held, in one commit.

    The state is the latest change of every key, ordered by source position (then source time
    and offset); keys whose latest change is a delete are left out, as are keys an update moved
    to a new primary key, and every row older than the latest truncate. Columns are the key,
    position and source time followed by the row's columns, named as in the changelog. The
    snapshot summary records the changelog snapshot it was built from.

    Raises:
        LakeTableNotFoundError: the changelog does not exist.
    """
    source = load_table(catalog, changelog, namespace)
    src_name = qualified_name(source)
    target_id = identifier(target or f"{source.name()[-1]}_current",
                           src_name.rsplit(".", 1)[0])
    snapshot = source.current_snapshot()
    schema = source.schema()
    names = [f.name for f in schema.fields]
    missing = [c for c in ("op", *CDC_STATE_KEY_COLUMNS) if c not in names]
    if missing:
        raise LakeMaintenanceError(src_name, "compact-cdc",
                                   f"not a CDC changelog (no column(s) {', '.join(missing)})")
    state_cols = [*CDC_STATE_KEY_COLUMNS,
                  *(n for n in names if n not in CDC_META_COLUMNS
                    and n not in CDC_STATE_KEY_COLUMNS)]
    data = source.scan().to_arrow() if snapshot is not None else schema.as_arrow().empty_table()
    state = data.select(state_cols).take(pa.array(_latest_rows(data), pa.int64()))
    state_schema = optional_schema(schema.select(*state_cols))
    table = ensure_table(catalog, target_id, state_schema)
    props = {OPERATION_KEY: "compact-cdc", "refluent.changelog": src_name,
             "refluent.changelog-snapshot-id": str(snapshot.snapshot_id if snapshot else -1)}

    def attempt() -> None:
        tx = transaction(table)
        with tx.update_schema() as update:
            update.union_by_name(state_schema)
        arrow_schema = tx.table_metadata.schema().as_arrow()
        arrays = [state.column(f.name).cast(f.type) if f.name in state.column_names
                  else pa.nulls(state.num_rows, f.type) for f in arrow_schema]
        data = pa.Table.from_arrays(arrays, schema=arrow_schema)
        if table.current_snapshot() is None:
            tx.append(data, snapshot_properties=props)
        else:
            tx.overwrite(data, snapshot_properties=props)
        tx.commit_transaction()

    _retrying(table, "compact-cdc", attempt)
    return CdcCompactionResult(src_name, target_id, state.num_rows,
                               snapshot.snapshot_id if snapshot else None)


# ---------------------------------------------------------------------------------------------
# everything
# ---------------------------------------------------------------------------------------------


def maintain(
    catalog: Catalog,
    namespace: str,
    *,
    tables: Sequence[str] | None = None,
    older_than: datetime | timedelta | None = None,
    retain_last: int | None = None,
    orphan_older_than: datetime | timedelta = DEFAULT_ORPHAN_AGE,
    target_file_rows: int | None = None,
    target_file_bytes: int | None = None,
    compact_files: bool = True,
    delete_orphans: bool = True,
    now: datetime | None = None,
) -> MaintenanceReport:
    """Compact, expire snapshots and delete orphan files on every table of ``namespace`` (or
    the ones named), carrying on past a failing table; its error is in the report.

    Compaction runs first, so the snapshots it makes obsolete can expire in a later run and
    their files then be deleted.
    """
    report = MaintenanceReport(namespace)
    names = list(tables) if tables else table_names(catalog, namespace)
    for name in names:
        entry = TableMaintenance(identifier(name, namespace))
        report.tables.append(entry)
        started = time.perf_counter()
        try:
            table = load_table(catalog, name, namespace)
            if compact_files:
                entry.compaction = compact(table, target_file_rows, target_file_bytes)
            entry.expire = expire_snapshots(table, older_than, retain_last, now=now)
            if delete_orphans:
                entry.orphans_deleted = len(delete_orphan_files(table, orphan_older_than,
                                                                now=now))
        except (LakeError, OSError, ValueError) as exc:
            entry.error = str(exc)
        entry.seconds = time.perf_counter() - started
    return report
