"""DuckDB SQL over the lake: each table of a namespace is a view named after the table.

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
    >>> sink.write([SinkRecord("logs.web", 0, i, b"u1", {"n": i}) for i in range(3)])
    >>> sink.flush()
    >>> query(catalog, "demo", "SELECT count(*) AS rows, max(n) AS last FROM clicks").to_pylist()
    [{'rows': 3, 'last': 2}]
"""

from __future__ import annotations

import re
from typing import Any

from refluent.errors import MissingExtraError, require
from refluent.lake.catalog import table_names
from refluent.lake.errors import LakeQueryError

try:
    import pyarrow as pa
    from pyiceberg.catalog import Catalog
    from pyiceberg.exceptions import NoSuchTableError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise MissingExtraError(exc.name or "pyiceberg", "iceberg") from exc


def duckdb_module() -> Any:
    """The ``duckdb`` module (raises :class:`MissingExtraError` naming the extra without it)."""
    return require("duckdb", "iceberg")


def to_arrow(relation: Any) -> pa.Table:
    """A DuckDB relation's rows as a pyarrow table (``to_arrow_table`` where DuckDB has it,
    else the older ``fetch_arrow_table``)."""
    to_table = getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table
    return to_table()


def _mentions(sql: str, name: str) -> bool:
    return re.search(rf"(?<![\w$]){re.escape(name)}(?![\w$])", sql, re.IGNORECASE) is not None


def query(catalog: Catalog, namespace: str, sql: str) -> pa.Table:
    """Run DuckDB ``sql`` over the tables of ``namespace``, each a view named after the table
    (read as of now through an Arrow scan; only tables the SQL mentions are read).

    Raises:
        LakeQueryError: DuckDB refused the SQL; an unknown table is answered with the
            namespace's tables.
        LakeNamespaceNotFoundError: no such namespace.
    """
    duckdb = duckdb_module()
    names = table_names(catalog, namespace)
    con = duckdb.connect()
    try:
        for name in names:
            if not _mentions(sql, name):
                continue
            try:
                table = catalog.load_table(f"{namespace}.{name}")
            except NoSuchTableError:
                continue  # dropped since listed
            con.register(name, table.scan().to_arrow())
        relation = con.sql(sql)
        return to_arrow(relation) if relation is not None else pa.table({})
    except duckdb.Error as exc:
        detail = str(exc).strip()
        if isinstance(exc, duckdb.CatalogException) and "Table with name" in detail:
            # DuckDB's "Did you mean" can only offer its own system tables (a lake table is
            # registered only when the SQL names it): name the namespace's tables instead.
            detail = (f"{detail.splitlines()[0]} (tables in {namespace}: "
                      f"{', '.join(names) or 'none'})")
        raise LakeQueryError(sql, detail) from exc
    finally:
        con.close()
