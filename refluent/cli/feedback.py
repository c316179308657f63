"""``refluent feedback``: join labels to predictions and keep the models learning."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from refluent.streams.topics import EXAMPLES, FEEDBACK, PREDICTIONS


def feedback(
    models: Annotated[list[str] | None, typer.Option(
        "--model", help="Models to learn (default: every registered model with a champion, "
                        "and models registered later).")] = None,
    group: Annotated[str | None, typer.Option(
        envvar="REFLUENT_FEEDBACK__GROUP", show_envvar=True,
        help="Consumer group (default: feedback.group).")] = None,
    idle_s: Annotated[float, typer.Option(
        help="Seconds a partition read to its end stays quiet before the event-time merge "
             "stops waiting for it.")] = 1.0,
    idle_timeout: Annotated[float | None, typer.Option(
        help="Stop after this many seconds without a record.")] = None,
    until_caught_up: Annotated[bool, typer.Option(
        "--until-caught-up", help="Stop once everything the topics hold now is processed.")
    ] = False,
    promote: Annotated[bool, typer.Option(
        "--promote/--no-promote", help="Promote challengers that beat the champion.")] = True,
    metrics_port: Annotated[int, typer.Option(
        help="Serve Prometheus metrics on this port (0: off).")] = 0,
    predictions_topic: Annotated[str, typer.Option(
        help="Topic of the predictions to join.")] = PREDICTIONS,
    feedback_topic: Annotated[str, typer.Option(
        help="Topic of the labels.")] = FEEDBACK,
    examples_topic: Annotated[str, typer.Option(
        help="Topic the labelled examples go to.")] = EXAMPLES,
) -> None:
    """Join feedback to predictions, publish the examples and teach the online learners.

    Reads predictions and feedback in event-time order, joins each label to its prediction
    (by id, or by entity and time), writes the labelled examples to the examples topic and
    dead-letters labels it cannot use to feedback.dlq with the reason. Each model's champion
    and challengers score every question before they learn its answer (progressive
    validation); their metrics go to Prometheus and, at each checkpoint, to the lake table
    model_metrics. A challenger that beats the champion by feedback.promotion_margin is
    promoted. Restarts resume from the models' checkpoints without learning anything twice.
    """
    from refluent.cli.app import console, settings
    from refluent.feedback.service import FeedbackService

    s = settings()
    service = FeedbackService.from_settings(
        s, models=models, group=group, idle_s=idle_s, auto_promote=promote,
        predictions_topic=predictions_topic, feedback_topic=feedback_topic,
        examples_topic=examples_topic)
    service.ensure_topics()
    if metrics_port:
        from refluent.observability.metrics import serve_metrics

        serve_metrics(metrics_port)
    console.print(f"feedback join on {service.bootstrap_servers}: {service.predictions_topic} + "
                  f"{service.feedback_topic} -> {service.examples_topic} "
                  f"(group {service.group})")
    stats = service.run(idle_timeout=idle_timeout, until_caught_up=until_caught_up,
                        settle_heap=True)
    table = Table(title="Feedback run")
    table.add_column("count")
    table.add_column("value", justify="right")
    for name, value in (("predictions", stats.predictions), ("labels", stats.labels),
                        ("joined", stats.joined), ("examples produced", stats.examples),
                        ("checkpoints", stats.checkpoints), ("promotions", stats.promotions)):
        table.add_row(name, str(value))
    for reason, n in sorted(stats.dead_lettered.items()):
        table.add_row(f"dead-lettered: {reason}", str(n))
    console.print(table)
    for pool_learner in (service.processor.learners.all() if service.processor
                         and service.processor.learners else []):
        for member in pool_learner.members.values():
            values = ", ".join(f"{k}{'' if w == 'cumulative' else ' (rolling)'} {v:.4f}"
                               for (k, w), v in sorted(member.metrics.values().items()))
            console.print(f"{pool_learner.name} v{member.key} ({', '.join(member.roles)}): "
                          f"{member.examples} learned; {values or 'no labels scored'}")
