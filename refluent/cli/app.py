"""The ``refluent`` command line (Typer + Rich).

Every flag falls back to the same settings as the library (``REFLUENT_*`` environment, then
``refluent.toml``) and ``--help`` shows the variable. Errors print one line naming the problem and
the fix, and exit with status 1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from refluent.config import CONFIG_ENV_VAR, Settings, load_settings, masked
from refluent.errors import RefluentError

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="refluent",
    help="Refluent: CDC and log events to features, lake tables, predictions and feedback.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show the effective settings.", no_args_is_help=True)
schemas_app = typer.Typer(help="Event contract schemas.", no_args_is_help=True)
topics_app = typer.Typer(help="Create and inspect the catalog's topics.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(schemas_app, name="schemas")
app.add_typer(topics_app, name="topics")


def _register_subcommands() -> None:
    from refluent.cli.features import features_app, process, sink_app
    from refluent.cli.feedback import feedback
    from refluent.cli.jobs import jobs_app
    from refluent.cli.lake import lake_app
    from refluent.cli.models import models_app
    from refluent.cli.monitor import monitor
    from refluent.cli.privacy import privacy_app
    from refluent.cli.retrain import retrain
    from refluent.cli.serve import serve
    from refluent.cli.webhooks import webhooks_app

    app.add_typer(features_app, name="features")
    app.add_typer(sink_app, name="sink")
    app.add_typer(lake_app, name="lake")
    app.add_typer(models_app, name="models")
    app.add_typer(webhooks_app, name="webhooks")
    app.add_typer(privacy_app, name="privacy")
    app.add_typer(jobs_app, name="jobs")
    app.command()(process)
    app.command()(feedback)
    app.command()(monitor)
    app.command()(serve)
    app.command()(retrain)


class _State:
    overrides: dict[str, Any] = {}


def settings() -> Settings:
    """The effective settings: command-line flags over environment over config file."""
    return load_settings(**_State.overrides)


@app.callback()
def _root(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", envvar=CONFIG_ENV_VAR, show_envvar=True,
                     help="TOML settings file (default ./refluent.toml)."),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(envvar="REFLUENT_EMBEDDED__STATE_DIR", show_envvar=True,
                     help="Folder of the embedded services' state (default .refluent)."),
    ] = None,
    bootstrap_servers: Annotated[
        str | None,
        typer.Option(envvar="REFLUENT_KAFKA__BOOTSTRAP_SERVERS", show_envvar=True,
                     help="Kafka brokers (default: the embedded broker)."),
    ] = None,
) -> None:
    if config is not None:
        os.environ[CONFIG_ENV_VAR] = str(config)
    overrides: dict[str, Any] = {}
    if state_dir is not None:
        overrides["embedded"] = {"state_dir": state_dir}
    if bootstrap_servers:
        overrides["kafka"] = {"bootstrap_servers": bootstrap_servers}
    _State.overrides = overrides


# ---------------------------------------------------------------------------------------------
# config, schemas
# ---------------------------------------------------------------------------------------------


@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print the effective settings, secrets masked."""
    data = masked(settings())
    if as_json:
        console.print_json(orjson.dumps(data).decode())
        return
    table = Table(title="Effective settings", show_lines=False)
    table.add_column("setting")
    table.add_column("value")
    table.add_column("environment variable", style="dim")
    for section, values in data.items():
        for key, value in values.items():
            table.add_row(f"{section}.{key}", orjson.dumps(value).decode(),
                          f"REFLUENT_{section.upper()}__{key.upper()}")
    console.print(table)


@schemas_app.command("export")
def schemas_export(
    directory: Annotated[Path, typer.Argument(help="Folder to write the schemas into.")],
) -> None:
    """Write the JSON Schema of every event contract into DIRECTORY."""
    from refluent.streams.schemas import export_schemas

    for path in export_schemas(directory):
        console.print(f"wrote {path}")


# ---------------------------------------------------------------------------------------------
# embedded services
# ---------------------------------------------------------------------------------------------


@app.command()
def up() -> None:
    """Start the embedded broker and Redis, create the lake catalog, and record their addresses.

    Services configured as external (REFLUENT_KAFKA__BOOTSTRAP_SERVERS, REFLUENT_REDIS__URL,
    REFLUENT_LAKE__CATALOG_URI) are health-checked instead of started.
    """
    from refluent.embedded import services

    s = settings()
    with console.status("starting services..."):
        services.up(s, on_step=lambda name, msg: console.print(f"[green]✓[/] {name}: {msg}"))
    console.print(f"state recorded in {s.embedded.state_dir.resolve() / services.STATE_FILE}")


@app.command()
def status() -> None:
    """Show each service, its address and whether it answers."""
    from refluent.embedded import services

    rows = services.status(settings())
    table = Table(title="Refluent services")
    for col in ("service", "address", "pid", "kind", "health", "detail"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.name, r.address, str(r.pid or "-"), "external" if r.external else
                      "embedded", "[green]up[/]" if r.healthy else "[red]down[/]", r.detail)
    console.print(table)
    if not all(r.healthy for r in rows):
        raise typer.Exit(3)


@app.command()
def down() -> None:
    """Stop the embedded services that `refluent up` started (and nothing else)."""
    from refluent.embedded import services

    stopped = services.down(settings())
    if not stopped:
        console.print("nothing to stop")
    for name, pid, ok in stopped:
        console.print(f"{'[green]✓[/]' if ok else '[red]✗[/]'} {name} (pid {pid}) "
                      f"{'stopped' if ok else 'did not stop'}")
    if not all(ok for _, _, ok in stopped):
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------
# topics
# ---------------------------------------------------------------------------------------------


def _kafka() -> tuple[Settings, str]:
    from refluent.embedded.services import resolve_bootstrap

    s = settings()
    return s, resolve_bootstrap(s)


def _catalog(s: Settings) -> Any:
    from refluent.streams.topics import TopicCatalog

    return TopicCatalog.from_settings(s.topics)


@topics_app.command("create")
def topics_create() -> None:
    """Create every topic of the catalog (and its dead-letter sibling) that does not exist."""
    from refluent.streams.kafka import TopicAdmin

    s, bootstrap = _kafka()
    result = TopicAdmin(s.kafka, bootstrap).ensure(_catalog(s))
    table = Table(title=f"Topics on {bootstrap}")
    table.add_column("topic")
    table.add_column("result")
    for name, outcome in result.items():
        table.add_row(name, "[green]created[/]" if outcome == "created" else "exists")
    console.print(table)


@topics_app.command("list")
def topics_list() -> None:
    """List the catalog's topics beside what the broker has."""
    from refluent.streams.kafka import TopicAdmin

    s, bootstrap = _kafka()
    existing = TopicAdmin(s.kafka, bootstrap).wait_ready()
    catalog = _catalog(s)
    table = Table(title=f"Topics on {bootstrap}")
    for col in ("topic", "contract", "key", "partitions", "retention", "cleanup", "on broker"):
        table.add_column(col)
    names = catalog.names()
    for spec in catalog:
        table.add_row(spec.name, spec.contract.__name__ if spec.contract else "raw", spec.key,
                      str(spec.partitions), _retention(spec.retention_ms), spec.cleanup_policy,
                      f"[green]{existing[spec.name]} partitions[/]" if spec.name in existing
                      else "[yellow]missing[/]")
    for name in sorted(set(existing) - set(names)):
        if not name.startswith("__"):
            table.add_row(name, "-", "-", "-", "-", "-", f"{existing[name]} partitions "
                          "(not in catalog)")
    console.print(table)


def _retention(ms: int) -> str:
    return "forever" if ms < 0 else f"{ms / 86_400_000:g}d"


@topics_app.command("describe")
def topics_describe(
    topic: Annotated[str, typer.Argument(help="Topic name.")],
    group: Annotated[str | None, typer.Option(help="Consumer group whose lag to show.")] = None,
) -> None:
    """Show a topic's partitions, offsets, configs and (with --group) a group's lag."""
    from refluent.streams.kafka import TopicAdmin, partition_offsets

    s, bootstrap = _kafka()
    spec = _catalog(s).get(topic)
    rows = partition_offsets(s.kafka, bootstrap, topic, group)
    table = Table(title=f"{topic} ({spec.contract.__name__ if spec.contract else 'raw'}, "
                        f"key: {spec.key})")
    cols = ["partition", "low", "high"] + (["committed", "lag"] if group else [])
    for col in cols:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*[str(row.get(c) if row.get(c) is not None else "-") for c in cols])
    console.print(table)
    configs = TopicAdmin(s.kafka, bootstrap).describe_config(topic)
    shown = {k: v for k, v in configs.items() if k in ("retention.ms", "cleanup.policy",
                                                         "max.message.bytes")}
    console.print(f"configs: {shown}")
    if group:
        console.print(f"total lag of {group}: {sum(int(r['lag'] or 0) for r in rows)}")


# ---------------------------------------------------------------------------------------------
# produce, tail
# ---------------------------------------------------------------------------------------------


@app.command()
def produce(
    topic: Annotated[str, typer.Argument(help="Topic to produce to (its contract validates).")],
    file: Annotated[Path, typer.Option("--file", "-f", help="JSON Lines file; - for stdin.")],
    key_field: Annotated[
        str | None,
        typer.Option(help="Dotted path of the key in each record (default: the entity id; "
                          "for CDC the table's primary key)."),
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="Check the whole file first; produce nothing if a line is bad.")
    ] = False,
) -> None:
    """Validate each line of FILE against TOPIC's contract and produce it.

    Bad lines go to TOPIC.dlq with the file and line number in their headers.
    """
    from refluent.streams.io import produce_jsonl
    from refluent.streams.kafka import Producer, TopicAdmin

    s, bootstrap = _kafka()
    spec = _catalog(s).get(topic)
    pk = s.topics.cdc_primary_keys.get(topic.removeprefix("cdc."), ["id"])
    TopicAdmin(s.kafka, bootstrap).ensure([spec, spec.dlq()])
    source_name = "stdin" if str(file) == "-" else file.name
    if strict:
        _check_file(file, spec, s, source_name, key_field, pk)
    producer = Producer(s.kafka, bootstrap,
                        **{"message.max.bytes": s.kafka.dlq_max_record_bytes + 65536})
    size = None if str(file) == "-" else file.stat().st_size
    with producer, _open(file) as fh, Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
        TransferSpeedColumn(), TimeRemainingColumn(), console=err_console,
        disable=not err_console.is_terminal,
    ) as progress:
        task = progress.add_task(f"producing to {topic}", total=size)
        report = produce_jsonl(fh, spec, producer, settings=s.kafka, source_name=source_name,
                               key_field=key_field, primary_key=pk,
                               on_line=lambda n: progress.advance(task, n))
    console.print(f"[green]{report.produced}[/] record(s) produced to {topic}")
    if report.dead_lettered:
        console.print(f"[yellow]{report.dead_lettered}[/] bad line(s) sent to {topic}.dlq:")
        for origin, message in report.errors:
            console.print(f"  {origin}: {message}", markup=False)


def _check_file(
    file: Path, spec: Any, s: Settings, source_name: str, key_field: str | None, pk: list[str]
) -> None:
    from refluent.streams.errors import DecodeError
    from refluent.streams.io import record_key
    from refluent.streams.serde import JsonSerde

    serde = JsonSerde(spec.contract, max_record_bytes=s.kafka.max_record_bytes)
    bad = []
    with _open(file) as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line:
                continue
            try:
                record_key(serde.decode(line), line, key_field, pk)
            except (DecodeError, KeyError, TypeError) as exc:
                bad.append(f"{source_name}:{lineno}: {exc}")
    if bad:
        for line in bad[:20]:
            err_console.print(line, markup=False)
        err_console.print(f"[red]{len(bad)} bad line(s); nothing produced (--strict)[/]")
        raise typer.Exit(1)


class _open:  # noqa: N801 - used like open()
    def __init__(self, file: Path) -> None:
        self.file = file

    def __enter__(self) -> Any:
        self._fh = sys.stdin.buffer if str(self.file) == "-" else self.file.open("rb")
        return self._fh

    def __exit__(self, *exc: object) -> None:
        if self._fh is not sys.stdin.buffer:
            self._fh.close()


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="Topic to read.")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest record.")
    ] = False,
    max_records: Annotated[
        int | None, typer.Option("--max", help="Stop after this many records.")
    ] = None,
    idle_timeout: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without a record.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="pretty (default) or jsonl.")
    ] = "pretty",
) -> None:
    """Print TOPIC's records as they arrive (Ctrl-C to stop)."""
    from refluent.streams.io import tail as tail_records

    s, bootstrap = _kafka()
    try:
        for rec in tail_records(s.kafka, bootstrap, topic, from_beginning=from_beginning,
                                max_records=max_records, idle_timeout=idle_timeout):
            data = rec.as_json()
            if fmt == "jsonl":
                sys.stdout.write(orjson.dumps(data).decode() + "\n")
                sys.stdout.flush()
                continue
            console.rule(f"{rec.topic}[{rec.partition}]@{rec.offset} key={data['key']}",
                         style="dim")
            if data["headers"]:
                console.print({k: v for k, v in data["headers"].items()})
            if data["value"] is None:
                console.print("[dim]null (tombstone)[/]")
            elif isinstance(data["value"], str):
                console.print(data["value"], markup=False)
            else:
                console.print_json(orjson.dumps(data["value"]).decode())
    except KeyboardInterrupt:
        pass


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------


@app.command()
def demo(
    keep: Annotated[bool, typer.Option(help="Leave the services running afterwards.")] = False,
) -> None:
    """The whole loop on the embedded services: sample changes and logs to features, the lake
    and the online store; a River model served over Kafka and HTTP; delayed labels joined and
    learned; then everything stopped."""
    from refluent.demo.run import run_demo

    run_demo(settings(), console, keep=keep)


_register_subcommands()


def main() -> None:
    """Console-script entry point: run the app, turning Refluent errors into one clear line."""
    try:
        app()
    except RefluentError as exc:
        err_console.print(f"[red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
