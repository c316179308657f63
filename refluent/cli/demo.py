"""The end-to-end demo on the embedded services (``refluent demo``)."""

from __future__ import annotations

from importlib import resources

from rich.console import Console
from rich.table import Table

from refluent.config import Settings
from refluent.embedded import services
from refluent.streams.contracts import CdcEnvelope
from refluent.streams.deadletter import DeadLetter
from refluent.streams.io import produce_jsonl, tail
from refluent.streams.kafka import Producer, TopicAdmin
from refluent.streams.topics import TopicCatalog

SAMPLE = "cdc_customers.jsonl"
TOPIC = "cdc.customers"


def run_demo(settings: Settings, console: Console, keep: bool = False) -> dict[str, int]:
    """Start the services, round-trip the sample CDC file through produce and tail, stop.

    Returns the counts shown (produced, read back, dead-lettered), so tests can check them.
    """
    console.rule("[bold]1. start the embedded services")
    services.up(settings, on_step=lambda name, msg: console.print(f"[green]✓[/] {name}: {msg}"))
    try:
        return _round_trip(settings, console)
    finally:
        if keep:
            console.print("services left running; stop them with `refluent down`")
        else:
            console.rule("[bold]5. stop the services")
            for name, pid, ok in services.down(settings):
                console.print(f"{'[green]✓[/]' if ok else '[red]✗[/]'} {name} (pid {pid}) stopped")


def _round_trip(settings: Settings, console: Console) -> dict[str, int]:
    bootstrap = services.resolve_bootstrap(settings)
    catalog = TopicCatalog.from_settings(settings.topics)

    console.rule("[bold]2. create the catalog's topics")
    created = TopicAdmin(settings.kafka, bootstrap).ensure(catalog)
    console.print(f"{sum(v == 'created' for v in created.values())} created, "
                  f"{sum(v == 'exists' for v in created.values())} already there")

    console.rule(f"[bold]3. produce the sample Debezium file to {TOPIC}")
    sample = resources.files("refluent.examples").joinpath(SAMPLE)
    with sample.open("rb") as fh, Producer(settings.kafka, bootstrap) as producer:
        report = produce_jsonl(fh, catalog.get(TOPIC), producer, settings=settings.kafka,
                               source_name=SAMPLE)
    console.print(f"[green]{report.produced}[/] change events produced, "
                  f"[yellow]{report.dead_lettered}[/] bad lines dead-lettered")
    for origin, message in report.errors:
        console.print(f"  {origin}: {message}", markup=False)

    console.rule(f"[bold]4. tail {TOPIC} and {TOPIC}.dlq")
    table = Table(title=f"{TOPIC} (read back)")
    for col in ("partition@offset", "key", "op", "row", "source lsn"):
        table.add_column(col, overflow="fold")
    read = 0
    for rec in tail(settings.kafka, bootstrap, TOPIC, from_beginning=True,
                    max_records=report.produced, idle_timeout=10):
        env = CdcEnvelope.from_debezium(rec.value or b"{}")
        row = ", ".join(f"{k}={v}" for k, v in env.row.items() if k != "id")
        table.add_row(f"{rec.partition}@{rec.offset}", (rec.key or b"").decode(), env.op,
                      row, str(env.source.lsn))
        read += 1
    console.print(table)

    dlq = Table(title=f"{TOPIC}.dlq")
    for col in ("origin", "step", "reason", "error"):
        dlq.add_column(col)
    dead = 0
    for rec in tail(settings.kafka, bootstrap, f"{TOPIC}.dlq", from_beginning=True,
                    max_records=report.dead_lettered, idle_timeout=10):
        letter = DeadLetter.parse(rec.headers, rec.key, rec.value)
        dlq.add_row(letter.origin or f"{letter.topic}[{letter.partition}]@{letter.offset}",
                    letter.step, letter.reason, letter.message[:80])
        dead += 1
    console.print(dlq)
    ok = read == report.produced and dead == report.dead_lettered
    console.print(("[green]round trip complete[/]" if ok else "[red]round trip incomplete[/]")
                  + f": {report.lines} lines in = {read} read back + {dead} dead letters")
    return {"produced": report.produced, "read": read, "dead_lettered": dead}
