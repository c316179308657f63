"""``refluent monitor``: drift monitors over the joined examples and the predictions."""

from __future__ import annotations

from typing import Annotated

import typer


def monitor(
    examples_topic: Annotated[str, typer.Option(help="Joined examples to watch.")] = "examples",
    predictions_topic: Annotated[str, typer.Option(help="Predictions to watch.")
                                 ] = "predictions",
    alerts_topic: Annotated[str, typer.Option(help="Where alerts go.")] = "alerts",
    idle_timeout: Annotated[float | None, typer.Option(
        help="Stop after this many seconds without a record.")] = None,
    until_caught_up: Annotated[bool, typer.Option(
        "--until-caught-up", help="Stop once everything the topics hold now is watched.")
    ] = False,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port (0: off).")] = 0,
) -> None:
    """Watch every served model and send alerts until stopped (SIGTERM/Ctrl-C).

    Per model version: the error stream (from the joined examples) under a River detector
    (monitor.detector); its features and score (from the predictions) against its first
    requests (PSI, KS, Wasserstein; chi-square, Jensen-Shannon); its estimated accuracy from
    the scores (CBPE) and realised accuracy from the labels. Also stale features, rejected
    requests, dead letters per minute, consumer lag and the registry's promotions. Alerts go to
    the alerts topic, from where `refluent webhooks dispatch` delivers them. The state is
    checkpointed in Redis (monitor.checkpoint_interval_s), so a restart goes on where it was.
    """
    from dataclasses import replace

    from refluent.cli.app import console, settings
    from refluent.embedded.services import resolve_bootstrap
    from refluent.monitoring.concept import DETECTORS
    from refluent.monitoring.errors import UnknownDetectorError
    from refluent.monitoring.service import MonitorService
    from refluent.observability.metrics import serve_metrics
    from refluent.streams.kafka import TopicAdmin
    from refluent.streams.topics import ALERTS, EXAMPLES, PREDICTIONS, TopicCatalog

    s = settings()
    if s.monitor.detector not in DETECTORS:
        raise UnknownDetectorError(s.monitor.detector, tuple(DETECTORS))
    bootstrap = resolve_bootstrap(s)
    catalog = TopicCatalog.from_settings(s.topics)
    specs = []
    for base, name in ((EXAMPLES, examples_topic), (PREDICTIONS, predictions_topic),
                       (ALERTS, alerts_topic)):
        specs += [replace(catalog.get(base), name=name),
                  replace(catalog.get(base + ".dlq"), name=name + ".dlq")]
    TopicAdmin(s.kafka, bootstrap).ensure(specs)
    if metrics_port:
        serve_metrics(metrics_port)
    service = MonitorService(s, bootstrap, examples_topic=examples_topic,
                             predictions_topic=predictions_topic, alerts_topic=alerts_topic)
    console.print(f"monitoring {examples_topic}, {predictions_topic} on {bootstrap} "
                  f"({s.monitor.detector}) -> {alerts_topic}")
    st = service.run(idle_timeout=idle_timeout, until_caught_up=until_caught_up)
    console.print(f"examples {st.examples}, predictions {st.predictions}, alerts {st.alerts}, "
                  f"dead letters {st.dead_lettered}")
