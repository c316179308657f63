"""The second half of the demo: serve a River model over Kafka and HTTP, then let delayed
labels teach it.

- register ``basket-converts`` (a River logistic regression over online features of the demo's
  views plus one request-time feature) as champion;
- start ``refluent serve``; produce prediction requests; read the predictions back, with the
  features exactly as served; ask the same model once over HTTP (Open Inference Protocol v2);
- produce a label for each prediction, ``LABEL_DELAY`` predictions later in event time (the
  truth is a fixed rule with some noise, so there is something to learn);
- run the feedback service until it has caught up: it joins every label to its prediction,
  learns with progressive validation and checkpoints the model to the registry (which the
  server picks up);
- land predictions and examples in the lake and query them.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
import uuid
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from refluent.config import Settings
from refluent.demo.processes import spawn
from refluent.embedded import services
from refluent.errors import RefluentError
from refluent.streams.contracts import Feedback, Prediction, PredictionRequest
from refluent.streams.deadletter import DeadLetter
from refluent.streams.io import tail
from refluent.streams.kafka import Producer, wait_until_committed
from refluent.streams.topics import (
    DLQ_SUFFIX,
    EXAMPLES,
    FEEDBACK,
    INFERENCE_REQUESTS,
    PREDICTIONS,
)

MODEL = "basket-converts"
FEATURES = ("customer_orders.spend_1h", "customer_orders.orders_1h", "app_activity.views_1h",
            "basket_value")
"""Online features (``<view>.<feature>``) and one the request brings."""
CUSTOMERS = [str(i) for i in range(1, 10)]
REQUESTS = 600
RATE = 200
LABEL_DELAY = 40
"""Predictions between a prediction and its label, in event time."""
SEED = 7
READY_TIMEOUT_S = 90.0


def truth(prediction: Prediction, rnd: random.Random) -> bool:
    """Whether the basket converted: a fixed rule of what was served, 10% of answers flipped."""
    basket = _number(prediction.features.get("basket_value"))
    spend = _number(prediction.features.get("customer_orders.spend_1h"))
    converted = basket + 0.05 * spend > 95.0
    return converted != (rnd.random() < 0.1)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def serve_and_learn(settings: Settings, console: Console) -> dict[str, Any]:
    """Steps 7 to 9 of the demo; returns what they counted."""
    from river import linear_model, preprocessing

    from refluent.models.river import RiverModel
    from refluent.registry import ModelRegistry

    bootstrap = services.resolve_bootstrap(settings)
    run = uuid.uuid4().hex[:8]
    console.rule("[bold]7. register a River model and serve it (Kafka and HTTP)")
    registry = ModelRegistry.from_settings(settings)
    model = RiverModel(preprocessing.StandardScaler() | linear_model.LogisticRegression(),
                       feature_names=FEATURES)
    version = registry.register(MODEL, model, alias="champion",
                                description="does a basket convert? (demo)")
    console.print(f"[green]✓[/] {MODEL} v{version.version} registered as champion; inputs: "
                  f"{', '.join(FEATURES)}")
    port = services.free_port()
    server = spawn(settings, ["serve", "--models", MODEL, "--port", str(port)], "serve",
                   {"REFLUENT_SERVING__GROUP": f"demo-serving-{run}",
                    # The sample events are from 2025: accept features up to two years old,
                    # and serve a view's defaults (0 orders, 0 views) for a customer it lacks.
                    "REFLUENT_SERVING__MAX_FEATURE_AGE_S": str(2 * 365 * 86400),
                    "REFLUENT_SERVING__STALE_POLICY": "default"})
    try:
        _wait_ready(port, server)
        console.print(f"[green]✓[/] refluent serve is ready (HTTP on 127.0.0.1:{port})")
        predictions = _predict(settings, bootstrap, console, run)
        _show_predictions(console, predictions)
        _infer_http(console, port, "before learning")

        console.rule("[bold]8. labels arrive later: the feedback service joins and learns")
        learned = _learn(settings, bootstrap, console, registry, predictions, run)
        # The server polls the registry: give it a poll to swap to the new checkpoint.
        time.sleep(settings.serving.model_refresh_s + 1.0)
        _infer_http(console, port, "after learning")
    finally:
        server.stop()

    console.rule("[bold]9. predictions and examples in the lake")
    lake = _land(settings, bootstrap, console)
    return {"predictions": len(predictions), **learned, **lake}


def _wait_ready(port: int, server: Any) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            with urllib.request.urlopen(  # noqa: S310 - loopback URL we built
                    f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RefluentError(f"refluent serve was not ready within {READY_TIMEOUT_S:.0f}s")


def _predict(settings: Settings, bootstrap: str, console: Console, run: str
             ) -> list[Prediction]:
    rnd = random.Random(SEED)  # noqa: S311 - sample data, seeded
    with Producer(settings.kafka, bootstrap) as producer:
        with console.status("waiting for the server to join its consumer group..."):
            # One request first: the latencies below then leave out the group join and this
            # producer's own start (connection, producer id).
            warm = PredictionRequest(request_id=f"warm-up-{run}", model=MODEL, entity_id="1",
                                     features={"basket_value": 50.0})
            producer.produce(INFERENCE_REQUESTS, warm.model_dump_json().encode(), "1")
            producer.flush()
            _wait_answered(settings, bootstrap, f"demo-serving-{run}")
        started = time.monotonic()
        for i in range(REQUESTS):
            # Paced at RATE requests/s, so the latencies are those of a steady stream.
            time.sleep(max(0.0, started + i / RATE - time.monotonic()))
            request = PredictionRequest(
                request_id=f"{run}-{i}", model=MODEL, entity_id=rnd.choice(CUSTOMERS),
                features={"basket_value": round(rnd.uniform(5.0, 120.0), 2)})
            producer.produce(INFERENCE_REQUESTS, request.model_dump_json().encode(),
                             request.entity_id)
            producer.poll(0)
    console.print(f"{REQUESTS} prediction requests produced to inference.requests "
                  f"({RATE}/s)")
    with console.status("waiting for the server to answer them..."):
        _wait_answered(settings, bootstrap, f"demo-serving-{run}")
    mine = f"{run}-"
    out = [p for p in (Prediction.model_validate_json(rec.value or b"{}") for rec in tail(
        settings.kafka, bootstrap, PREDICTIONS, from_beginning=True, idle_timeout=3))
        if p.request_id.startswith(mine)]
    rejected: dict[str, int] = {}
    for rec in tail(settings.kafka, bootstrap, INFERENCE_REQUESTS + DLQ_SUFFIX, from_beginning=True,
                    idle_timeout=3):
        letter = DeadLetter.parse(rec.headers, rec.key, rec.value)
        if mine.encode() in (letter.value or b""):
            rejected[letter.reason] = rejected.get(letter.reason, 0) + 1
    if len(out) + sum(rejected.values()) != REQUESTS:
        raise RefluentError(f"{len(out)} predictions and {sum(rejected.values())} dead letters "
                            f"for {REQUESTS} requests (see .refluent/logs/serve.log)")
    if rejected:
        console.print(f"[yellow]{sum(rejected.values())}[/] requests dead-lettered to "
                      f"inference.requests.dlq: {rejected}")
    latencies = sorted(p.latency_ms or 0.0 for p in out)
    console.print(f"[green]✓[/] {len(out)} predictions on the predictions topic; latency "
                  f"p50 {latencies[len(out) // 2]:.1f} ms, p99 "
                  f"{latencies[int(len(out) * 0.99) - 1]:.1f} ms (request to prediction, "
                  "embedded broker)")
    return sorted(out, key=lambda p: p.ts)


def _wait_answered(settings: Settings, bootstrap: str, group: str) -> None:
    """Until the server's group has committed the end of inference.requests (it commits a
    batch only once its predictions and dead letters are acknowledged)."""

    wait_until_committed(settings.kafka, bootstrap, [INFERENCE_REQUESTS], group,
                         timeout_s=READY_TIMEOUT_S, what="the server")


def _show_predictions(console: Console, predictions: list[Prediction]) -> None:
    table = Table(title="predictions (features as served)")
    for col in ("request", "customer", "score", "stale", "features", "version"):
        table.add_column(col, overflow="fold")
    for p in predictions[:5]:
        features = ", ".join(f"{k.rsplit('.', 1)[-1]}={_fmt(v)}"
                             for k, v in sorted(p.features.items()))
        table.add_row(p.request_id, p.entity_id, f"{p.score:.3f}" if p.score is not None
                      else "-", "yes" if p.stale else "no", features, p.model_version)
    console.print(table)


def _infer_http(console: Console, port: int, when: str) -> None:
    body = {"inputs": [{"name": "basket_value", "shape": [1], "datatype": "FP64",
                        "data": [90.0]}], "parameters": {"entity_id": "2"}}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
        answer = json.loads(resp.read())
    outputs = {o["name"]: [round(v, 3) if isinstance(v, float) else v for v in o["data"]]
               for o in answer.get("outputs", [])}
    console.print(f"[green]✓[/] {when}: POST /v2/models/{MODEL}/infer (customer 2, basket "
                  f"90.0): model_version={answer.get('model_version')}, "
                  f"{', '.join(f'{k}={v}' for k, v in outputs.items())}")


def _learn(settings: Settings, bootstrap: str, console: Console, registry: Any,
           predictions: list[Prediction], run: str) -> dict[str, Any]:
    from refluent.feedback.service import FeedbackService

    rnd = random.Random(SEED + 1)  # noqa: S311 - sample data, seeded
    n = len(predictions)
    with Producer(settings.kafka, bootstrap) as producer:
        for i, p in enumerate(predictions):
            # Known LABEL_DELAY predictions later (after the last one, a second apart).
            later = i + LABEL_DELAY
            when = (predictions[later].ts if later < n
                    else predictions[-1].ts + timedelta(seconds=later - n + 1))
            label = Feedback(prediction_id=p.prediction_id, label=truth(p, rnd),
                             event_time=when)
            producer.produce(FEEDBACK, label.model_dump_json().encode(), p.prediction_id)
    console.print(f"{n} labels produced to feedback, each {LABEL_DELAY} predictions after "
                  "its prediction in event time")
    service = FeedbackService.from_settings(settings, registry=registry, models=[MODEL],
                                            group=f"demo-feedback-{run}")
    service.ensure_topics()
    with console.status("joining labels to predictions and learning..."):
        stats = service.run(until_caught_up=True, idle_timeout=60)
    dead = sum(stats.dead_lettered.values())
    console.print(f"[green]✓[/] {stats.joined} labels joined, {stats.examples} examples "
                  f"produced, {dead} dead-lettered, {stats.checkpoints} checkpoint(s)")
    champion = registry.resolve(MODEL)
    checkpoint = registry.latest_checkpoint(MODEL, champion.version)
    if checkpoint is not None:
        console.print(f"[green]✓[/] {MODEL} v{champion.version} checkpoint {checkpoint.seq} in "
                      f"the registry: {checkpoint.examples} examples learned (the server "
                      "swaps to it on its next registry poll)")
    return {"joined": stats.joined, "examples": stats.examples, "feedback_dead": dead}


def _land(settings: Settings, bootstrap: str, console: Console) -> dict[str, Any]:
    from refluent.lake.catalog import open_catalog
    from refluent.lake.query import query
    from refluent.sinks.pipeline import SinkPipeline, lake_routes

    with console.status("landing predictions and examples in Iceberg..."):
        landed = SinkPipeline(settings, bootstrap, "refluent-demo-loop-lake",
                              lake_routes(settings, [PREDICTIONS, EXAMPLES])
                              ).run(until_caught_up=True)
    console.print(f"[green]✓[/] lake: {landed.written} records landed")
    catalog = open_catalog(settings)
    rows = query(catalog, settings.lake.namespace, """
        select count(*) as predictions, round(avg(feature__basket_value), 2) as avg_basket,
               round(avg(score), 3) as avg_score, sum(case when stale then 1 else 0 end)
               as stale
        from predictions""").to_pylist()
    metrics = query(catalog, settings.lake.namespace, """
        select version, seq, examples, round(accuracy, 3) as accuracy,
               round(accuracy_rolling, 3) as accuracy_rolling, round(log_loss, 3) as log_loss,
               round(roc_auc, 3) as roc_auc
        from model_metrics where examples > 0 order by seq""").to_pylist()
    for title, got in (("lake: predictions (feature log)", rows),
                       ("lake: model_metrics (progressive validation)", metrics)):
        table = Table(title=title)
        for col in (got[0] if got else {}):
            table.add_column(col, justify="right")
        for row in got:
            table.add_row(*(_fmt(v) for v in row.values()))
        console.print(table)
    accuracy = metrics[-1]["accuracy"] if metrics else None
    return {"lake_predictions": rows[0]["predictions"] if rows else 0, "accuracy": accuracy}


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)
