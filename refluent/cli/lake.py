"""``refluent lake``: list, query and maintain the Iceberg tables.

The catalog comes from the same settings as the library (``REFLUENT_LAKE__*``, then
``refluent.toml``), else the embedded catalog that ``refluent up`` created.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

console = Console()

lake_app = typer.Typer(help="List, query and maintain the lake's Iceberg tables.",
                       no_args_is_help=True)

NamespaceOption = Annotated[
    str | None,
    typer.Option("--namespace", "-n", envvar="REFLUENT_LAKE__NAMESPACE", show_envvar=True,
                 help="Namespace of the tables (default: lake.namespace, 'refluent')."),
]

def parse_duration(text: str) -> timedelta:
    """A duration option in the views' syntax (``90s``, ``30m``, ``24h``, ``7d``, ``1h30m``).

    Examples:
        >>> parse_duration("36h"), parse_duration("0")
        (datetime.timedelta(days=1, seconds=43200), datetime.timedelta(0))
    """
    from refluent.processors.errors import WindowSpecError
    from refluent.processors.windows import parse_duration as parse

    try:
        return parse(text)
    except WindowSpecError as exc:
        raise typer.BadParameter(
            f"{text!r} is not a duration such as 90s, 30m, 24h, 7d") from exc


def _open(namespace: str | None) -> tuple[Catalog, str]:
    from refluent.cli.app import settings
    from refluent.lake.catalog import open_catalog

    s = settings()
    return open_catalog(s), namespace or s.lake.namespace


def _print_rows(names: Sequence[str], rows: Sequence[Sequence[Text]], *,
                title: str | None = None, right: Collection[str] = ()) -> None:
    """Print ``rows`` as a table when it fits the terminal without cutting a value or a column
    name, else as one block of ``name  value`` lines per row (as psql's expanded display), so
    a narrow terminal never turns a row into a tall column of word fragments."""
    out = Table(title=title)
    for name in names:
        out.add_column(Text(name), justify="right" if name in right else "left",
                       overflow="fold")
    for row in rows:
        out.add_row(*row)
    if not rows or _narrowest(out) <= console.width:
        console.print(out)
        return
    if title:
        console.print(Text(title, style="italic"))
    name_width = min(max(len(name) for name in names), console.width * 2 // 3)
    for n, row in enumerate(rows, start=1):
        console.rule(Text(f"row {n}"), align="left", style="dim")
        record = Table.grid(padding=(0, 2))
        record.add_column(style="bold", overflow="fold", min_width=name_width)
        record.add_column(overflow="fold")
        for name, cell in zip(names, row, strict=True):
            record.add_row(Text(name), cell)
        console.print(record)


def _narrowest(table: Table) -> int:
    """The width ``table`` needs to show every value and column name without breaking a word
    (Rich clamps a measurement to the terminal, so measure against a wide one)."""
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(1_000_000), table).minimum


def _offsets_text(offsets: dict[tuple[str, int], int], limit: int = 6) -> str:
    parts = [f"{t}[{p}]={o}" for (t, p), o in sorted(offsets.items())]
    more = f" (+{len(parts) - limit})" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


@lake_app.command("tables")
def tables(namespace: NamespaceOption = None) -> None:
    """List the namespace's tables: rows, data files, snapshots, last commit, offsets."""
    from refluent.lake.catalog import load_table, table_names
    from refluent.lake.offsets import read_offsets

    catalog, ns = _open(namespace)
    names = table_names(catalog, ns)
    if not names:
        console.print(f"no tables in {ns} yet (`refluent sink lake` lands topics there)")
        return
    rows = []
    for name in names:
        table = load_table(catalog, name, ns)
        snap = table.current_snapshot()
        summary = snap.summary if snap is not None and snap.summary is not None else None
        records = summary.get("total-records") if summary is not None else None
        files = summary.get("total-data-files") if summary is not None else None
        last = (datetime.fromtimestamp(snap.timestamp_ms / 1000, tz=UTC)
                .strftime("%Y-%m-%d %H:%M:%S") if snap is not None else "-")
        rows.append([Text(name), Text(str(records or 0)), Text(str(files or 0)),
                     Text(str(len(table.metadata.snapshots))), Text(last),
                     Text(_offsets_text(read_offsets(table)) or "-")])
    _print_rows(["table", "rows", "files", "snapshots", "last commit (UTC)", "offsets"], rows,
                title=f"Lake tables in {ns}", right={"rows", "files", "snapshots"})


@lake_app.command("maintain")
def maintain(
    namespace: NamespaceOption = None,
    table: Annotated[list[str] | None, typer.Option(
        "--table", "-t", help="Only this table (repeatable).")] = None,
    snapshot_age: Annotated[str | None, typer.Option(
        help="Expire snapshots older than this (default: the table's "
             "history.expire.max-snapshot-age-ms, else 5d).")] = None,
    retain_last: Annotated[int | None, typer.Option(
        min=1, help="Snapshots always kept (default: the table's "
                    "history.expire.min-snapshots-to-keep, else 1).")] = None,
    orphan_age: Annotated[str, typer.Option(
        help="Delete unreferenced files older than this.")] = "3d",
    target_file_rows: Annotated[int | None, typer.Option(
        min=1, help="Compact to files of about this many rows (instead of bytes).")] = None,
    target_file_mb: Annotated[float | None, typer.Option(
        min=0.001, help="Compact to files of about this size (default: the table's "
                        "write.target-file-size-bytes, else 128).")] = None,
    no_compact: Annotated[bool, typer.Option(
        "--no-compact", help="Skip compaction.")] = False,
    no_orphans: Annotated[bool, typer.Option(
        "--no-orphans", help="Skip orphan-file deletion.")] = False,
) -> None:
    """Compact small files per partition, expire snapshots and delete orphan files."""
    from refluent.lake.maintenance import maintain as run_maintenance

    catalog, ns = _open(namespace)
    with console.status(f"maintaining {ns}..."):
        report = run_maintenance(
            catalog, ns, tables=table,
            older_than=parse_duration(snapshot_age) if snapshot_age else None,
            retain_last=retain_last, orphan_older_than=parse_duration(orphan_age),
            target_file_rows=target_file_rows,
            target_file_bytes=int(target_file_mb * 1024 * 1024) if target_file_mb else None,
            compact_files=not no_compact, delete_orphans=not no_orphans,
        )
    if not report.tables:
        console.print(f"no tables in {ns}: nothing to maintain")
        return
    columns = ["table", "compacted files", "new files", "expired snapshots", "files deleted",
               "orphans deleted", "seconds", "result"]
    rows = [[Text(t.table.removeprefix(f"{ns}.")), *(Text(str(n)) for n in (
                t.compaction.files_removed, t.compaction.files_added, t.expire.expired_snapshots,
                t.expire.deleted_files, t.orphans_deleted)), Text(f"{t.seconds:.2f}"),
             Text("ok", style="green") if t.error is None else Text(t.error, style="red")]
            for t in report.tables]
    _print_rows(columns, rows, title=f"Maintenance of {ns}", right=set(columns[1:7]))
    if not report.ok:
        raise typer.Exit(1)


@lake_app.command("reset-offsets")
def reset_offsets(
    table: Annotated[str, typer.Argument(help="The table whose sink offsets to forget.")],
    topic: Annotated[list[str] | None, typer.Option(
        help="Forget only this topic's offsets (repeatable; default every topic).")] = None,
    namespace: NamespaceOption = None,
) -> None:
    """Make the table's sink read its topics from the beginning (after a topic was recreated).

    Rows already in the table stay. Run it only when the topic really is new: records that
    are still on an old topic would be written again.
    """
    from refluent.lake.catalog import load_table
    from refluent.lake.offsets import reset_offsets as run_reset

    catalog, ns = _open(namespace)
    dropped = run_reset(load_table(catalog, table, ns), topic or None)
    if not dropped:
        console.print(f"{table}: no offsets to forget")
        return
    console.print(f"[green]✓[/] {table}: forgot {_offsets_text(dropped)}")


@lake_app.command("compact-cdc")
def compact_cdc(
    table: Annotated[str, typer.Argument(help="The CDC changelog table.")],
    target: Annotated[str | None, typer.Option(
        help="State table to write (default <TABLE>_current).")] = None,
    namespace: NamespaceOption = None,
) -> None:
    """Write the current state of a CDC changelog (latest row per key, deletes removed)."""
    from refluent.lake.maintenance import compact_cdc as run_compact_cdc

    catalog, ns = _open(namespace)
    with console.status(f"compacting {table}..."):
        result = run_compact_cdc(catalog, table, target, namespace=ns)
    console.print(f"[green]✓[/] {result.target}: {result.rows} row(s) from {result.changelog} "
                  f"(snapshot {result.changelog_snapshot_id})")


class OutputFormat(StrEnum):
    """How ``refluent lake query`` prints its result."""

    table = "table"
    csv = "csv"
    jsonl = "jsonl"


def _cell(value: Any) -> Text:
    # Text, not str: a value such as "[bold]" is data, not Rich markup.
    from refluent.lake.schema import as_text

    if value is None:
        return Text("∅", style="dim")
    return Text(as_text(value))


@lake_app.command("query")
def query(
    sql: Annotated[str, typer.Argument(help="DuckDB SQL; tables are views named after them.")],
    namespace: NamespaceOption = None,
    fmt: Annotated[OutputFormat, typer.Option(
        "--format", "-f", help="table (one block per row when the table is wider than the "
                               "terminal), csv (with a header row) or jsonl (one JSON object "
                               "per line).")] = OutputFormat.table,
) -> None:
    """Run DuckDB SQL over the namespace's tables."""
    import pyarrow as pa

    from refluent.lake.query import query as run_query
    from refluent.lake.schema import as_text

    if not sql.strip():
        raise typer.BadParameter("is empty; give a query such as 'SELECT 1'", param_hint="SQL")
    catalog, ns = _open(namespace)
    result = run_query(catalog, ns, sql)
    if result.num_columns == 0:
        console.print("the statement ran; it returns no rows")
        return
    names = _unique(result.column_names)
    rows = list(zip(*(col.to_pylist() for col in result.columns), strict=True))
    if fmt is OutputFormat.jsonl:
        for row in rows:
            typer.echo(orjson.dumps(dict(zip(names, row, strict=True)), default=str).decode())
        return
    if fmt is OutputFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([None if v is None else as_text(v) for v in row] for row in rows)
        return
    numeric = {name for name, field in zip(names, result.schema, strict=True)
               if pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
               or pa.types.is_decimal(field.type)}
    _print_rows(names, [[_cell(v) for v in row] for row in rows], right=numeric)
    console.print(f"{result.num_rows} row(s)", style="dim")


def _unique(names: list[str]) -> list[str]:
    """Column names made unique (``key``, ``key_2``), as a JOIN can repeat one.

    Examples:
        >>> _unique(["key", "n", "key"])
        ['key', 'n', 'key_2']
    """
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out
