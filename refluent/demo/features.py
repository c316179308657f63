"""The first half of the demo: events to features.

- create the catalog's topics; produce sample Debezium changes (customers, orders; a few bad
  lines) and app logs; read the changes and the dead letters back;
- run the example feature views on the engine;
- land everything in the lake and the features in the online store; show online features and
  query the lake.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from rich.console import Console
from rich.table import Table

from refluent.config import Settings
from refluent.demo.processes import VIEWS, spawn
from refluent.embedded import services
from refluent.embedded.commands import RefluentCommand
from refluent.streams.contracts import CdcEnvelope
from refluent.streams.deadletter import DeadLetter
from refluent.streams.io import produce_jsonl, tail
from refluent.streams.kafka import Producer, TopicAdmin, wait_until_committed
from refluent.streams.topics import TopicCatalog

SAMPLES = (("cdc.customers", "cdc_customers.jsonl"), ("cdc.orders", "cdc_orders.jsonl"),
           ("logs.app", "logs_app.jsonl"))
TOPIC = "cdc.customers"
ENGINE_TIMEOUT_S = 240


def empty_namespace(settings: Settings) -> None:
    """Drop the tables of the demo's lake namespace (the broker starts with empty topics)."""
    from refluent.lake.catalog import open_catalog

    catalog = open_catalog(settings)
    catalog.create_namespace_if_not_exists(settings.lake.namespace)
    for identifier in catalog.list_tables(settings.lake.namespace):
        catalog.drop_table(identifier)


def produce_and_read_back(settings: Settings, console: Console) -> dict[str, int]:
    bootstrap = services.resolve_bootstrap(settings)
    catalog = TopicCatalog.from_settings(settings.topics)

    console.rule("[bold]2. create the catalog's topics")
    created = TopicAdmin(settings.kafka, bootstrap).ensure(catalog)
    console.print(f"{sum(v == 'created' for v in created.values())} created, "
                  f"{sum(v == 'exists' for v in created.values())} already there")

    console.rule("[bold]3. produce the sample Debezium changes and app logs")
    counts = {"produced": 0, "dead_lettered": 0}
    lines = 0
    with Producer(settings.kafka, bootstrap) as producer:
        for topic, sample in SAMPLES:
            with resources.files("refluent.examples").joinpath(sample).open("rb") as fh:
                report = produce_jsonl(fh, catalog.get(topic), producer,
                                       settings=settings.kafka, source_name=sample)
            console.print(f"{topic}: [green]{report.produced}[/] produced, "
                          f"[yellow]{report.dead_lettered}[/] bad lines dead-lettered")
            for origin, message in report.errors:
                console.print(f"  {origin}: {message}", markup=False)
            if topic == TOPIC:
                counts = {"produced": report.produced, "dead_lettered": report.dead_lettered}
                lines = report.lines

    console.rule(f"[bold]4. tail {TOPIC} and {TOPIC}.dlq")
    table = Table(title=f"{TOPIC} (read back)")
    for col in ("partition@offset", "key", "op", "row", "source lsn"):
        table.add_column(col, overflow="fold")
    read = 0
    for rec in tail(settings.kafka, bootstrap, TOPIC, from_beginning=True,
                    max_records=counts["produced"], idle_timeout=10):
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
                    max_records=counts["dead_lettered"], idle_timeout=10):
        letter = DeadLetter.parse(rec.headers, rec.key, rec.value)
        dlq.add_row(letter.origin or f"{letter.topic}[{letter.partition}]@{letter.offset}",
                    letter.step, letter.reason, letter.message[:80])
        dead += 1
    console.print(dlq)
    ok = read == counts["produced"] and dead == counts["dead_lettered"]
    console.print(("[green]round trip complete[/]" if ok else "[red]round trip incomplete[/]")
                  + f": {lines} lines in = {read} read back + {dead} dead letters")
    return {"produced": counts["produced"], "read": read, "dead_lettered": dead}


def features(settings: Settings, console: Console) -> dict[str, int]:
    from refluent.online_store.redis import RedisOnlineReader
    from refluent.processors.features import discover
    from refluent.sinks.pipeline import SinkPipeline, lake_routes, online_routes

    bootstrap = services.resolve_bootstrap(settings)
    views = discover(VIEWS)
    console.rule(f"[bold]5. run the feature views on the {settings.processing.engine} engine")
    for view in views:
        console.print(f"{view.name}: {view.description} ({', '.join(view.sources)} -> "
                      f"{view.topic})")
    engine = _start_engine(settings)
    try:
        with console.status("processing (the engine joins its group, then catches up)..."):
            _wait_for_engine(settings, bootstrap, [s for v in views for s in v.sources], engine)
        console.print("[green]✓[/] the engine has processed every source record")

        console.rule("[bold]6. land the topics in the lake and the features online")
        sources = sorted({s for v in views for s in v.sources})
        lake_topics = sources + [v.topic for v in views]
        with console.status("landing in Iceberg..."):
            lake = SinkPipeline(settings, bootstrap, "refluent-demo-lake",
                                lake_routes(settings, lake_topics)).run(until_caught_up=True)
        console.print(f"[green]✓[/] lake: {lake.written} records landed in "
                      f"{len(lake_topics)} tables")
        with console.status("writing the online store..."):
            online = SinkPipeline(settings, bootstrap, "refluent-demo-online",
                                  online_routes(settings, views)).run(until_caught_up=True)
        console.print(f"[green]✓[/] online store: {online.written} feature updates applied")
    finally:
        engine.stop()

    console.rule("[bold]6. read online features and query the lake")
    reader = RedisOnlineReader.from_settings(settings)
    reader.setup()
    try:
        for name, entities in (("customers", ["1", "2", "3", "9"]),
                               ("customer_orders", ["1", "2", "4"]),
                               ("app_activity", ["1", "5"])):
            rows = reader.get_online_features(name, entities)
            table = Table(title=f"online features: {name}")
            table.add_column("entity")
            table.add_column("values", overflow="fold")
            table.add_column("as of (event time)")
            for row in rows:
                shown = ("deleted" if row.deleted else
                         ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(row.values.items()))
                         if row.found else "not found")
                table.add_row(row.entity_id, shown,
                              row.event_time.isoformat() if row.event_time else "-")
            console.print(table)
    finally:
        reader.close()
    lake_rows = _show_lake(settings, console)
    return {"landed": lake.written, "online_updates": online.written, "lake_rows": lake_rows}


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _start_engine(settings: Settings) -> RefluentCommand:
    return spawn(settings, ["process"], "engine")


def _wait_for_engine(settings: Settings, bootstrap: str, sources: list[str],
                     engine: RefluentCommand) -> None:
    """Until the engine's group has committed every source partition's end."""
    wait_until_committed(settings.kafka, bootstrap, sources, settings.processing.app_id,
                         timeout_s=ENGINE_TIMEOUT_S, what="the engine",
                         check=engine.check_alive, poll_s=1.0)


def _show_lake(settings: Settings, console: Console) -> int:
    from refluent.lake.catalog import open_catalog
    from refluent.lake.query import query

    catalog = open_catalog(settings)
    ns = settings.lake.namespace
    counts = query(catalog, ns, """
        select 'cdc_customers_changelog' as tbl, count(*) as n from cdc_customers_changelog
        union all select 'cdc_orders_changelog', count(*) from cdc_orders_changelog
        union all select 'raw_logs_app', count(*) from raw_logs_app
        union all select 'features_customer_orders_history', count(*)
            from features_customer_orders_history
        order by tbl""").to_pylist()
    table = Table(title=f"lake tables ({ns})")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for row in counts:
        table.add_row(row["tbl"], str(row["n"]))
    console.print(table)
    top = query(catalog, ns, """
        select customer_id, count(*) as orders, round(sum(amount), 2) as spend
        from cdc_orders_changelog where op = 'c'
        group by customer_id order by spend desc limit 3""").to_pylist()
    spenders = Table(title="top spenders (DuckDB over the orders changelog)")
    for col in ("customer", "orders", "spend"):
        spenders.add_column(col)
    for row in top:
        spenders.add_row(str(row["customer_id"]), str(row["orders"]), str(row["spend"]))
    console.print(spenders)
    return sum(int(r["n"]) for r in counts)


