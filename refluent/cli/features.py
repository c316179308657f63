"""``refluent features list|validate`` and ``refluent process``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from refluent.tuning import for_streaming

features_app = typer.Typer(help="Feature views declared in the views module.",
                           no_args_is_help=True)

ViewsOption = Annotated[
    str | None,
    typer.Option("--views", envvar="REFLUENT_PROCESSING__VIEWS", show_envvar=True,
                 help="Module (dotted name or .py file) declaring the feature views."),
]


def _load(views_target: str | None) -> tuple[Any, list[Any]]:
    from refluent.cli.app import settings
    from refluent.errors import ConfigError
    from refluent.processors.features import discover

    s = settings()
    target = views_target or s.processing.views
    if not target:
        raise ConfigError("processing.views", "no views module given",
                          "pass --views my_views.py or set REFLUENT_PROCESSING__VIEWS")
    return s, discover(target)


@features_app.command("list")
def features_list(views: ViewsOption = None) -> None:
    """List the declared views: sources, entity, features and windows."""
    from refluent.cli.app import console
    from refluent.processors.features import FeatureView

    _, found = _load(views)
    table = Table(title="Feature views")
    for col in ("view", "kind", "sources", "entity", "features", "ttl"):
        table.add_column(col, overflow="fold")
    for view in found:
        if isinstance(view, FeatureView):
            feats = "\n".join(f"{a.name} = {a.kind}({a.field or '*'}) over {a.window}"
                              for a in view.aggregations)
            table.add_row(view.name, "windowed", ", ".join(view.sources), view.entity, feats,
                          str(view.ttl))
        else:
            cols = ", ".join(view.columns) if view.columns else "all columns"
            table.add_row(view.name, "entity state", view.source, "+".join(view.primary_key),
                          cols, str(view.ttl))
    console.print(table)


@features_app.command("validate")
def features_validate(views: ViewsOption = None) -> None:
    """Check the views load and read topics the catalog knows."""
    from refluent.cli.app import console, err_console
    from refluent.processors.features import validate
    from refluent.streams.errors import UnknownTopicError
    from refluent.streams.topics import TopicCatalog

    s, found = _load(views)
    catalog = TopicCatalog.from_settings(s.topics)

    def known(topic: str) -> bool:
        try:
            return catalog.get(topic).contract is not None
        except UnknownTopicError:
            return False

    problems = validate(found, known)
    for problem in problems:
        err_console.print(f"[red]✗[/] {problem}", highlight=False)
    if problems:
        raise typer.Exit(1)
    console.print(f"[green]✓[/] {len(found)} view(s) valid: "
                  + ", ".join(v.name for v in found))


def process(
    views: ViewsOption = None,
    only: Annotated[list[str] | None, typer.Option("--view", help="Run only these views.")] = None,
    loglevel: Annotated[str, typer.Option(help="Engine log level (crit, error, warn, info).")
                        ] = "warn",
) -> None:
    """Run the feature views on the configured engine until stopped (SIGTERM/Ctrl-C).

    The engine (processing.engine: native by default, or faust) reads the views' source topics,
    keeps window state backed by changelog topics and publishes each view's updates to
    features.<view>.
    """
    from refluent.cli.app import console
    from refluent.embedded.services import resolve_bootstrap
    from refluent.engines.base import engine_class, views_in
    from refluent.observability.metrics import serve_metrics
    from refluent.streams.kafka import TopicAdmin

    s, found = _load(views)
    try:
        selected = views_in(found, only)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0]), param_hint="--view") from exc
    engine_cls = engine_class(s.processing.engine)  # a wrong name fails before any connection
    bootstrap = resolve_bootstrap(s)
    admin = TopicAdmin(s.kafka, bootstrap)
    engine = engine_cls(selected, s, bootstrap, partitions=admin.wait_ready())
    admin.ensure([engine.catalog.get(t) for t in engine.topics_to_create()])
    if s.processing.metrics_port:
        serve_metrics(s.processing.metrics_port)
    console.print(f"processing {', '.join(v.name for v in selected)} on {bootstrap} "
                  f"({engine.name} engine)")
    for_streaming()
    engine.run(loglevel)


sink_app = typer.Typer(help="Write topics to the lake or the online store.", no_args_is_help=True)

IdleOption = Annotated[
    float | None, typer.Option(help="Stop after this many seconds without a record.")]
MetricsOption = Annotated[
    int, typer.Option(envvar="REFLUENT_PROCESSING__METRICS_PORT", show_envvar=True,
                      help="Serve Prometheus metrics on this port (0: off).")]
CaughtUpOption = Annotated[
    bool, typer.Option("--until-caught-up",
                       help="Stop once everything the topics hold now is written.")]


@sink_app.command("lake")
def sink_lake(
    topics: Annotated[list[str] | None, typer.Argument(
        help="Topics to land (default: the catalog's cdc.* and logs.* topics and every view's "
             "features.* topic).")] = None,
    views: ViewsOption = None,
    group: Annotated[str, typer.Option(help="Consumer group.")] = "refluent-lake",
    idle_timeout: IdleOption = None,
    until_caught_up: CaughtUpOption = False,
    metrics_port: MetricsOption = 0,
) -> None:
    """Land topics in Iceberg tables, exactly once (offsets live in the tables' snapshots)."""
    from refluent.cli.app import console, settings
    from refluent.embedded.services import resolve_bootstrap
    from refluent.sinks.pipeline import SinkPipeline, lake_routes, lake_table_for
    from refluent.streams.topics import TopicCatalog

    s = settings()
    if not topics:
        topics = [spec.name for spec in TopicCatalog.from_settings(s.topics)
                  if spec.name.startswith(("cdc.", "logs.")) and not spec.is_dlq]
        if views or s.processing.views:
            topics += [v.topic for v in _load(views)[1]]
    pipeline = SinkPipeline(s, resolve_bootstrap(s), group, lake_routes(s, topics))
    for topic in topics:
        console.print(f"{topic} -> {s.lake.namespace}.{lake_table_for(topic)}")
    _serve_metrics(metrics_port)
    for_streaming()
    stats = pipeline.run(idle_timeout=idle_timeout, until_caught_up=until_caught_up)
    console.print(f"{stats.written} record(s) landed, {stats.dead_lettered} dead-lettered")


@sink_app.command("online")
def sink_online(
    views: ViewsOption = None,
    group: Annotated[str, typer.Option(help="Consumer group.")] = "refluent-online",
    idle_timeout: IdleOption = None,
    until_caught_up: CaughtUpOption = False,
    metrics_port: MetricsOption = 0,
) -> None:
    """Write every view's features.<view> updates to the Redis online store."""
    from refluent.cli.app import console
    from refluent.embedded.services import resolve_bootstrap
    from refluent.sinks.pipeline import ONLINE_FETCH_WAIT_MS, SinkPipeline, online_routes

    s, found = _load(views)
    pipeline = SinkPipeline(s, resolve_bootstrap(s), group, online_routes(s, found),
                            consumer_overrides=s.kafka.short_fetch_wait(ONLINE_FETCH_WAIT_MS))
    console.print(f"online store <- {', '.join(v.topic for v in found)}")
    _serve_metrics(metrics_port)
    for_streaming()
    # An update goes to Redis as soon as it arrives (with whatever else has been fetched).
    stats = pipeline.run(idle_timeout=idle_timeout, until_caught_up=until_caught_up, drain=True)
    console.print(f"{stats.written} update(s) applied, {stats.dead_lettered} dead-lettered")


def _serve_metrics(port: int) -> None:
    if port:
        from refluent.observability.metrics import serve_metrics

        serve_metrics(port)
