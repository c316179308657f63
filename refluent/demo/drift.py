"""Step 10 of the demo: the world changes, the monitor raises drift and performance alerts and
signed webhooks reach a receiver that verifies them.

- a verifying receiver (:class:`~refluent.webhooks.receiver.WebhookReceiver`) starts on a
  loopback port and is added as a subscriber of every event type with a fresh secret;
- a monitored stream of the demo model is produced to topics of its own: ``REQUESTS``
  predictions and their examples, in which, from request ``CHANGE`` on, the baskets grow
  (``basket_value`` shifts) and the model, which was sure of most answers, becomes unsure of
  them (its scores gather around 0.5), so it errs four times as often. Its scores are
  calibrated (a label is drawn with the score's probability), so the estimated accuracy (CBPE)
  sees the fall from the scores alone; the labels come 40 seconds after each request;
- ``refluent monitor``'s service reads them until caught up and produces the alerts;
- the webhook dispatcher delivers them; the receiver verifies each signature with the
  ``standardwebhooks`` library and prints the alert.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console

from refluent.config import Settings
from refluent.embedded import services
from refluent.streams.contracts import LabeledExample, Prediction
from refluent.streams.kafka import Producer, StopSignal, TopicAdmin
from refluent.streams.topics import ALERTS, EXAMPLES, PREDICTIONS, TopicCatalog

MODEL = "basket-converts"
REQUESTS = 3000
CHANGE = 1800
"""Request at which the stream changes."""
SEED = 11


def _stream(run: str) -> tuple[list[Prediction], list[LabeledExample]]:
    rnd = random.Random(SEED)  # noqa: S311 - sample data, seeded
    t0 = datetime(2025, 6, 2, 9, tzinfo=UTC)
    preds, examples = [], []
    for i in range(REQUESTS):
        changed = i >= CHANGE
        t = t0 + timedelta(seconds=i)
        basket = rnd.gauss(130.0 if changed else 90.0, 20.0)
        spend = rnd.gauss(250.0, 60.0)
        features: dict[str, Any] = {"basket_value": round(basket, 2),
                                    "customer_orders.spend_1h": round(spend, 2)}
        if changed:
            score = rnd.uniform(0.3, 0.7)
        else:
            score = rnd.uniform(0.02, 0.15) if rnd.random() < 0.5 else rnd.uniform(0.85, 0.98)
        score = round(score, 4)
        predicted = score >= 0.5
        label = rnd.random() < score
        pid = f"{run}-{i}"
        preds.append(Prediction(prediction_id=pid, request_id=pid, model_name=MODEL,
                                model_version="1", entity_id=str(i % 9 + 1), score=score,
                                label=predicted,
                                probabilities={"False": 1 - score, "True": score},
                                features=features, ts=t))
        examples.append(LabeledExample(prediction_id=pid, entity_id=str(i % 9 + 1),
                                       model_name=MODEL, model_version="1", features=features,
                                       label=label, score=score, predicted_label=predicted,
                                       prediction_time=t, label_time=t + timedelta(seconds=40)))
    return preds, examples


def drift_and_webhook(settings: Settings, console: Console) -> dict[str, Any]:
    """Step 10; returns what it counted."""
    from refluent.monitoring.service import MonitorService
    from refluent.webhooks.base import Subscriber, new_secret, subscriber_id
    from refluent.webhooks.dispatcher import WebhookDispatcher
    from refluent.webhooks.receiver import WebhookReceiver
    from refluent.webhooks.redis import RedisOutbox

    console.rule("[bold]10. the stream changes: drift and performance alerts as signed webhooks")
    run = uuid.uuid4().hex[:8]
    bootstrap = services.resolve_bootstrap(settings)
    settings = settings.model_copy(update={
        "webhooks": settings.webhooks.model_copy(update={
            "allow_networks": ["127.0.0.0/8"], "group": f"demo-webhooks-{run}"}),
        "monitor": settings.monitor.model_copy(update={
            "group": f"demo-monitor-{run}", "warmup": 300, "min_samples": 200,
            "reference_size": 600, "window_size": 600})})
    ex_topic, pred_topic = f"{EXAMPLES}.demo-drift", f"{PREDICTIONS}.demo-drift"
    catalog = TopicCatalog.from_settings(settings.topics)
    TopicAdmin(settings.kafka, bootstrap).ensure(
        [replace(catalog.get(EXAMPLES), name=ex_topic),
         replace(catalog.get(PREDICTIONS), name=pred_topic),
         catalog.get(ALERTS), catalog.get(ALERTS + ".dlq")])

    secret = new_secret()
    verified: list[dict[str, Any]] = []

    def show(payload: dict[str, Any]) -> None:
        a = payload["data"]
        what = a["feature"] or a["kind"]
        about = f"{a['model_name']} v{a['model_version']}" if a["model_name"] else a["subject"]
        if a["kind"] == "promotion":
            what = f"{a['window']['alias']} ({a['detector']}, {a['window']['reason']})"
        else:
            what += (f" ({a['detector']} {a['statistic']:.3f}, threshold "
                     f"{a['threshold']:.3f})")
        console.print(f"[green]✓[/] receiver: signature verified, {payload['type']} for "
                      f"{about}: {what} at {a['detected_at']}")
        verified.append(payload)

    receiver = WebhookReceiver(secret, on_event=show).start()
    outbox = RedisOutbox.from_settings(settings)
    sub = Subscriber(subscriber_id(receiver.url), receiver.url, ("*",), secret)
    outbox.put_subscriber(sub)
    console.print(f"receiver on {receiver.url}, subscribed to every event type as {sub.id}")
    preds, examples = _stream(run)
    with Producer(settings.kafka, bootstrap) as producer:
        for p, e in zip(preds, examples, strict=True):
            producer.produce(pred_topic, p.model_dump_json().encode(), MODEL.encode())
            producer.produce(ex_topic, e.model_dump_json().encode(), MODEL.encode())
    console.print(f"{REQUESTS} predictions and examples of {MODEL} produced; from request "
                  f"{CHANGE} on, baskets grow and the model grows unsure and errs more often")
    stop = StopSignal()
    dispatcher = WebhookDispatcher(settings, bootstrap, outbox, seed=SEED)
    thread = threading.Thread(target=dispatcher.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        with console.status("monitoring..."):
            stats = MonitorService(settings, bootstrap, examples_topic=ex_topic,
                                   predictions_topic=pred_topic).run(until_caught_up=True,
                                                                     idle_timeout=60)
        console.print(f"[green]✓[/] monitor: {stats.examples} examples and "
                      f"{stats.predictions} predictions watched, {stats.alerts} alert(s) on "
                      f"{ALERTS}")
        deadline = time.monotonic() + 60
        while len(verified) < stats.alerts and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(30)
        receiver.stop()
        outbox.remove_subscriber(sub.id)
        outbox.close()
    console.print(f"[green]✓[/] {len(verified)} webhook(s) received and verified, "
                  f"{len(receiver.rejected)} refused")
    _ahead_of_labels(verified, console)
    return {"drift_alerts": stats.alerts, "webhooks_verified": len(verified)}


def _ahead_of_labels(verified: list[dict[str, Any]], console: Console) -> None:
    """Say how much earlier the estimate saw the fall than the labels did."""
    at = {a["detector"]: datetime.fromisoformat(a["detected_at"])
          for a in (p["data"] for p in verified) if a["kind"] == "performance"}
    if "cbpe" in at and "realised" in at:
        ahead = (at["realised"] - at["cbpe"]).total_seconds()
        console.print(f"[green]✓[/] the estimated accuracy (cbpe) saw the fall {ahead:.0f} s "
                      f"(event time) before the labels showed it")
