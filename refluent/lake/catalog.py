"""The lake catalog and its tables: opening the catalog, naming, loading and creating tables
with Refluent's properties, and transactions.

Every table Refluent creates is format version 2, deletes old metadata files after each commit
and merges manifests; every table it writes lets no pyiceberg-level commit retry happen (Refluent
retries itself, see :data:`ENFORCED_TABLE_PROPERTIES`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from refluent.errors import MissingExtraError
from refluent.lake.errors import (
    LakeCatalogError,
    LakeError,
    LakeNamespaceNotFoundError,
    LakeTableNotFoundError,
)

try:
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
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise MissingExtraError(exc.name or "pyiceberg", "iceberg") from exc

if TYPE_CHECKING:
    from refluent.config import Settings

T = TypeVar("T")

COMMIT_CONFLICTS: tuple[type[Exception], ...] = (CommitFailedException,
                                                 CommitStateUnknownException)
"""What a commit raises when another writer committed first, or its outcome is unknown."""

OPERATION_KEY = "refluent.operation"
"""Snapshot-summary key naming the Refluent operation that made the snapshot."""

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
        enforce_table_properties(table)
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


def enforce_table_properties(table: Table) -> None:
    """Set the properties of :data:`ENFORCED_TABLE_PROPERTIES` that ``table`` lacks."""
    missing = {k: v for k, v in ENFORCED_TABLE_PROPERTIES.items()
               if table.properties.get(k) != v}
    if missing:
        with table.transaction() as tx:
            tx.set_properties(missing)


def transaction(table: Table, autocommit: bool = False) -> Transaction:
    """A transaction on ``table`` (see :class:`_MemoTransaction` for why not
    ``table.transaction()``)."""
    return _MemoTransaction(table, autocommit=autocommit)


def day_partition_spec(schema: Schema, column: str) -> PartitionSpec:
    """``day(column)``: one partition per UTC day of the event-time column."""
    source = schema.find_field(column)
    return PartitionSpec(PartitionField(source_id=source.field_id, field_id=1000,
                                        transform=DayTransform(), name=f"{column}_day"))


def qualified_name(table: Table) -> str:
    """``namespace.table`` of a loaded table."""
    return ".".join(table.name())


def retry_commit(attempt: Callable[[int], T], *, attempts: int,
                 on_conflict: Callable[[], object],
                 error: Callable[[int, str], Exception],
                 conflicts: tuple[type[Exception], ...] = COMMIT_CONFLICTS,
                 backoff_s: float = 0.05, max_backoff_s: float = 1.0) -> T:
    """Run ``attempt(n)`` (n = 1, 2, ...) until it commits: a conflict calls ``on_conflict``
    (re-read the table: the next attempt works against the new head), waits an exponential
    backoff and tries again, at most ``attempts`` times; then raises ``error(attempts, last
    conflict)``. Anything but a conflict propagates at once.

    Examples:
        >>> tries = []
        >>> def attempt(n):
        ...     tries.append(n)
        ...     if n < 3:
        ...         raise CommitFailedException("someone committed first")
        ...     return "landed"
        >>> retry_commit(attempt, attempts=4, on_conflict=lambda: None, backoff_s=0,
        ...              error=lambda n, last: RuntimeError(last)), tries
        ('landed', [1, 2, 3])
    """
    last = ""
    for n in range(1, attempts + 1):
        try:
            return attempt(n)
        except conflicts as exc:
            last = f"{type(exc).__name__}: {exc}"
            on_conflict()
            if n < attempts:
                time.sleep(min(backoff_s * 2 ** (n - 1), max_backoff_s))
    raise error(attempts, last)
