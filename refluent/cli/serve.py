"""``refluent serve``: the prediction service over Kafka and HTTP (Open Inference Protocol v2)."""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any

import typer

ViewsOption = Annotated[
    str | None,
    typer.Option("--views", envvar="REFLUENT_PROCESSING__VIEWS", show_envvar=True,
                 help="Module (dotted name or .py file) declaring the feature views whose "
                      "online features the models read."),
]


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def serve(
    models: Annotated[
        str | None,
        typer.Option("--models", help="Comma-separated models to serve (loaded at start); "
                                      "default: any model of the registry, loaded on first "
                                      "request."),
    ] = None,
    views: ViewsOption = None,
    no_http: Annotated[bool, typer.Option("--no-http", help="Do not serve HTTP.")] = False,
    no_kafka: Annotated[
        bool, typer.Option("--no-kafka", help="Do not consume inference.requests.")] = False,
    host: Annotated[
        str | None,
        typer.Option(envvar="REFLUENT_SERVING__HOST", show_envvar=True,
                     help="Interface of the HTTP endpoint (default serving.host)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(envvar="REFLUENT_SERVING__PORT", show_envvar=True,
                     help="Port of the HTTP endpoint (default serving.port, 8080)."),
    ] = None,
    metrics_port: Annotated[
        int, typer.Option(envvar="REFLUENT_SERVING__METRICS_PORT", show_envvar=True,
                          help="Serve Prometheus metrics on this port (0: off).")] = 0,
) -> None:
    """Serve predictions until stopped (SIGTERM/Ctrl-C).

    Kafka: answers PredictionRequest records on inference.requests with Prediction records on
    predictions (bad requests go to inference.requests.dlq with the reason). HTTP: the Open
    Inference Protocol v2 endpoints under /v2. Both read the entity's online features, apply
    the stale-feature policy and log every prediction with the features served. New
    champions and checkpoints are picked up without a restart.
    """
    from refluent.cli.app import console, settings
    from refluent.embedded.services import resolve_bootstrap
    from refluent.streams.kafka import StopSignal

    if no_http and no_kafka:
        raise typer.BadParameter("nothing to serve with both --no-http and --no-kafka",
                                 param_hint="--no-http/--no-kafka")
    s = settings()
    names = _names(models)
    bootstrap = resolve_bootstrap(s)
    from refluent.serving.scorer import build_scorer
    from refluent.serving.service import KafkaPredictionService, settle_heap

    scorer = build_scorer(s, models=names, views=views)
    if scorer.reader is not None:
        scorer.reader.setup()
    holder = scorer.holder
    holder.start()
    for (name, _), loaded in sorted(holder.held().items()):
        console.print(f"model {name}: version {loaded.number} "
                      f"(checkpoint {loaded.checkpoint if loaded.checkpoint is not None else '-'})")
    if metrics_port:
        from refluent.observability.metrics import serve_metrics

        serve_metrics(metrics_port)
    settle_heap()  # start-up is done: keep full collections short (tail latency)
    stop = StopSignal()
    server: Any = None
    thread: threading.Thread | None = None
    publisher = None
    try:
        if not no_http:
            server, thread, publisher = start_http(s, bootstrap, scorer, host, port)
            console.print(f"HTTP (Open Inference Protocol v2) on "
                          f"http://{server.config.host}:{server.config.port}/v2")
        with stop.installed():
            if not no_kafka:
                service = KafkaPredictionService(s, bootstrap, scorer)
                service.ensure_topics()
                console.print(f"answering {service.requests_topic} -> "
                              f"{service.predictions_topic} on {bootstrap} "
                              f"(group {service.group_id})")
                service.run(stop=stop)
                console.print(f"{service.answered} request(s) answered, "
                              f"{service.dead_lettered} dead-lettered")
            else:
                while not stop.is_set() and thread is not None and thread.is_alive():
                    time.sleep(0.2)
    finally:
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(10)
        if publisher is not None:
            publisher.close()
        holder.close()


def start_http(s: Any, bootstrap: str, scorer: Any, host: str | None,
                port: int | None) -> tuple[Any, threading.Thread, Any]:
    """Start the HTTP front end (uvicorn in a thread) over ``scorer``; returns the server, its
    thread and the publisher of its predictions. Set ``server.should_exit`` to stop it."""
    from refluent.errors import require
    from refluent.serving.http import HttpFrontEnd, create_app
    from refluent.serving.publisher import PredictionPublisher

    uvicorn: Any = require("uvicorn", "serving")
    publisher = PredictionPublisher(s, bootstrap)
    front = HttpFrontEnd(scorer, publisher, max_batch_size=s.serving.max_batch_size,
                         linger_s=s.serving.batch_linger_ms / 1000,
                         max_request_bytes=s.serving.max_request_bytes,
                         max_request_rows=s.serving.max_request_rows)
    app = create_app(front, registry=scorer.holder.registry)
    config = uvicorn.Config(app, host=host or s.serving.host, port=s.serving.port if port is None
                            else port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="refluent-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        publisher.close()
        raise typer.BadParameter(f"the HTTP server did not start on {config.host}:"
                                 f"{config.port} (is the port taken?)", param_hint="--port")
    return server, thread, publisher
