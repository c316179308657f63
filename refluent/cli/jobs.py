"""``refluent jobs``: the retraining loop's services, the trigger on alerts and the launcher."""

from __future__ import annotations

from typing import Annotated

import typer

jobs_app = typer.Typer(help="Retraining: alerts to requests, requests to jobs.",
                       no_args_is_help=True)

IdleOption = Annotated[float | None, typer.Option(
    help="Stop after this many seconds without a record.")]
CaughtUpOption = Annotated[bool, typer.Option(
    "--until-caught-up", help="Stop once everything the topic holds now is handled.")]


def _bootstrap() -> str:
    from refluent.cli.app import settings
    from refluent.embedded.services import resolve_bootstrap
    from refluent.streams.kafka import TopicAdmin
    from refluent.streams.topics import ALERTS, RETRAIN_REQUESTS, TopicCatalog

    s = settings()
    bootstrap = resolve_bootstrap(s)
    catalog = TopicCatalog.from_settings(s.topics)
    TopicAdmin(s.kafka, bootstrap).ensure(
        [catalog.get(t) for t in (ALERTS, ALERTS + ".dlq", RETRAIN_REQUESTS,
                                  RETRAIN_REQUESTS + ".dlq")])
    return bootstrap


@jobs_app.command("trigger")
def trigger(idle_timeout: IdleOption = None, until_caught_up: CaughtUpOption = False) -> None:
    """Turn drift and performance alerts into retrain requests (retrain.requests), at most one
    per model per jobs.cooldown_s and only with jobs.min_new_labels new labels in the lake."""
    from refluent.cli.app import console, settings
    from refluent.jobs.service import TriggerService

    service = TriggerService(settings(), _bootstrap())
    st = service.run(idle_timeout=idle_timeout, until_caught_up=until_caught_up)
    console.print(f"trigger: {st.alerts} alerts, {st.requests} retrain requests, "
                  f"{st.dead_lettered} dead-lettered")


@jobs_app.command("launch")
def launch(idle_timeout: IdleOption = None, until_caught_up: CaughtUpOption = False) -> None:
    """Run each retrain request as a job through jobs.runner (local process, Kubernetes Job,
    Kubeflow PyTorchJob), once per request id."""
    from refluent.cli.app import console, settings
    from refluent.jobs.service import LauncherService

    service = LauncherService(settings(), _bootstrap())
    st = service.run(idle_timeout=idle_timeout, until_caught_up=until_caught_up)
    console.print(f"launcher: {st.requests} requests, {st.launched} jobs started, "
                  f"{st.skipped} repeated, {st.failed} failed, {st.dead_lettered} "
                  "dead-lettered")
