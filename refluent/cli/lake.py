"""``refluent lake``: list, query and maintain the Iceberg tables.

The catalog comes from the same settings as the library (``REFLUENT_LAKE__*``, then
``refluent.toml``), else the embedded catalog that ``refluent up`` created.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
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

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w`` (a bare number is seconds).

    Examples:
        >>> parse_duration("36h"), parse_duration("0")
        (datetime.timedelta(days=1, seconds=43200), datetime.timedelta(0))
    """
    match = _DURATION.match(text)
    if not match:
        raise typer.BadParameter(f"{text!r} is not a duration such as 90s, 30m, 24h, 7d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])


def _open(namespace: str | None) -> tuple[Catalog, str]:
    from refluent.cli.app import settings
    from refluent.lake.catalog import open_catalog

    s = settings()
    return open_catalog(s), namespace or s.lake.namespace


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
    out = Table(title=f"Lake tables in {ns}")
    for col in ("table", "rows", "files", "snapshots", "last commit (UTC)", "offsets"):
        out.add_column(col, justify="right" if col in ("rows", "files", "snapshots") else "left")
    for name in table_names(catalog, ns):
        table = load_table(catalog, name, ns)
        snap = table.current_snapshot()
        summary = snap.summary if snap is not None and snap.summary is not None else None
        rows = summary.get("total-records") if summary is not None else None
        files = summary.get("total-data-files") if summary is not None else None
        last = (datetime.fromtimestamp(snap.timestamp_ms / 1000, tz=UTC)
                .strftime("%Y-%m-%d %H:%M:%S") if snap is not None else "-")
        out.add_row(Text(name), str(rows or 0), str(files or 0),
                    str(len(table.metadata.snapshots)), last,
                    Text(_offsets_text(read_offsets(table)) or "-"))
    console.print(out)


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
    out = Table(title=f"Maintenance of {ns}")
    for col in ("table", "compacted files", "new files", "expired snapshots", "files deleted",
                "orphans deleted", "seconds", "result"):
        out.add_column(col)
    for t in report.tables:
        out.add_row(t.table, str(t.compaction.files_removed), str(t.compaction.files_added),
                    str(t.expire.expired_snapshots), str(t.expire.deleted_files),
                    str(t.orphans_deleted), f"{t.seconds:.2f}",
                    Text("ok", style="green") if t.error is None else Text(t.error, style="red"))
    console.print(out)
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


def _cell(value: Any) -> Text:
    # Text, not str: a value such as "[bold]" is data, not Rich markup.
    if value is None:
        return Text("∅", style="dim")
    if isinstance(value, datetime):
        return Text(value.isoformat())
    if isinstance(value, str):
        return Text(value)
    return Text(orjson.dumps(value, default=str).decode())


@lake_app.command("query")
def query(
    sql: Annotated[str, typer.Argument(help="DuckDB SQL; tables are views named after them.")],
    namespace: NamespaceOption = None,
    fmt: Annotated[str, typer.Option(
        "--format", "-f", help="table (rich) or jsonl (one JSON object per line).")] = "table",
) -> None:
    """Run DuckDB SQL over the namespace's tables."""
    from refluent.lake.query import query as run_query

    if fmt not in ("table", "jsonl"):
        raise typer.BadParameter(f"{fmt!r} is not table or jsonl", param_hint="--format")
    catalog, ns = _open(namespace)
    result = run_query(catalog, ns, sql)
    names = _unique(result.column_names)
    rows = zip(*(col.to_pylist() for col in result.columns), strict=True)
    if fmt == "jsonl":
        for row in rows:
            typer.echo(orjson.dumps(dict(zip(names, row, strict=True)), default=str).decode())
        return
    out = Table(caption=f"{result.num_rows} row(s)")
    for name in names:
        out.add_column(Text(name))
    for row in rows:
        out.add_row(*(_cell(v) for v in row))
    console.print(out)


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
