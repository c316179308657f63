"""Step 11 of the demo: the drift alerts trigger a DP retrain, whose challenger is shadow-scored
and promoted.

- after the change, only mid-size baskets convert (``|basket_value - 130| < 25``, 5% of answers
  flipped): ``TRAFFIC`` predictions of the champion (the River logistic regression of step 7,
  which no weighting of its inputs turns into a band) and their labels go through the feedback
  service on topics of their own, and land in the lake tables ``predictions`` and ``examples``;
- ``refluent jobs trigger`` reads step 10's alerts on ``alerts``: the first drift alert of the
  model asks for a retrain (the others fall in the cooldown);
- ``refluent jobs launch`` runs the request as a ``refluent retrain`` process: DP-SGD (Opacus)
  under the model's privacy budget, ONNX export, registration as ``challenger-dp`` with its
  epsilon; the job reports ``retrain.completed`` on ``alerts``;
- ``SHADOW`` more predictions and labels go through the feedback service, which scores the
  challenger beside the champion on every label and promotes it once it is better;
- ``UPDATES`` more predictions of the new champion and their labels go through the feedback
  service, which fine-tunes it with DP-SGD on each micro-batch of ``feedback.dp_update_rows``
  labels (an incremental DP update, charged to the same ledger first) and checkpoints it for
  serving to swap in;
- the ledger lists every run and the lineage's epsilon, composed by the accountant.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from rich.console import Console

from refluent.config import Settings
from refluent.demo.loop import MODEL
from refluent.demo.processes import child_env
from refluent.embedded import services
from refluent.errors import RefluentError
from refluent.streams.contracts import FeatureValue, Feedback, Prediction
from refluent.streams.kafka import Producer
from refluent.streams.topics import EXAMPLES, FEEDBACK, PREDICTIONS

if TYPE_CHECKING:
    from refluent.registry.base import ModelRegistry


class DemoError(RefluentError):
    """A step of the demo that did not do what it shows."""

TRAFFIC = 4000
SHADOW = 1500
UPDATES = 2500
SEED = 13
SCALES = {"customer_orders.spend_1h": (250.0, 60.0), "customer_orders.orders_1h": (2.5, 2.0),
          "app_activity.views_1h": (10.0, 6.0), "basket_value": (130.0, 30.0)}
"""The features' documented ranges (centre, scale): public, so scaling by them spends no
privacy."""
TOPICS = {base: f"{base}.demo-retrain" for base in (PREDICTIONS, FEEDBACK, EXAMPLES)}


def converts(basket: float, rnd: random.Random) -> bool:
    """After the change: mid-size baskets convert, 5% of answers flipped."""
    return (abs(basket - 130.0) < 25.0) != (rnd.random() < 0.05)


def _traffic(registry: ModelRegistry, start: int, n: int, t0: datetime, rnd: random.Random
             ) -> tuple[list[Prediction], list[Feedback]]:
    """``n`` predictions of the champion as serving makes them, and their labels."""
    version, model = registry.load(MODEL)
    baskets = [round(rnd.gauss(130.0, 30.0), 2) for _ in range(n)]
    rows: list[dict[str, FeatureValue]] = [
        {"customer_orders.spend_1h": round(max(rnd.gauss(250.0, 60.0), 0.0), 2),
         "customer_orders.orders_1h": rnd.randint(0, 5),
         "app_activity.views_1h": rnd.randint(0, 20), "basket_value": b} for b in baskets]
    preds, labels = [], []
    for i, (x, s, basket) in enumerate(zip(rows, model.predict_many(rows), baskets,
                                           strict=True)):
        t = t0 + timedelta(seconds=start + i)
        pid = f"retrain-{start + i}-{uuid.uuid4().hex[:6]}"
        preds.append(Prediction(prediction_id=pid, request_id=pid, model_name=MODEL,
                                model_version=str(version.version), entity_id=str(i % 9 + 1),
                                score=s.score, label=s.label, probabilities=s.probabilities,
                                features=x, ts=t))
        labels.append(Feedback(prediction_id=pid, label=converts(basket, rnd),
                               event_time=t + timedelta(seconds=40)))
    return preds, labels


def _produce(settings: Settings, bootstrap: str, preds: list[Prediction],
             labels: list[Feedback]) -> None:
    with Producer(settings.kafka, bootstrap) as producer:
        for p, f in zip(preds, labels, strict=True):
            producer.produce(TOPICS[PREDICTIONS], p.model_dump_json().encode(),
                             p.prediction_id)
            producer.produce(TOPICS[FEEDBACK], f.model_dump_json().encode(), f.prediction_id)


def retrain_and_promote(settings: Settings, console: Console) -> dict[str, Any]:
    """Step 11; returns what it counted."""
    from refluent.feedback.service import FeedbackService
    from refluent.jobs.runners.local import LocalRunner
    from refluent.jobs.service import LauncherService, TriggerService
    from refluent.privacy.iceberg import IcebergPrivacyLedger
    from refluent.registry import ModelRegistry
    from refluent.registry.base import CHAMPION

    console.rule("[bold]11. drift triggers a DP retrain; the challenger is shadow-scored and "
                 "promoted")
    run = uuid.uuid4().hex[:8]
    bootstrap = services.resolve_bootstrap(settings)
    registry = ModelRegistry.from_settings(settings)
    rnd = random.Random(SEED)  # noqa: S311 - sample data, seeded
    # After the change, which is now: later than every prediction of the steps before.
    t0 = datetime.now(UTC).replace(microsecond=0)
    feedback = FeedbackService.from_settings(
        settings, registry=registry, models=[MODEL], group=f"demo-retrain-feedback-{run}",
        predictions_topic=TOPICS[PREDICTIONS], feedback_topic=TOPICS[FEEDBACK],
        examples_topic=TOPICS[EXAMPLES])
    feedback.ensure_topics()
    preds, labels = _traffic(registry, 0, TRAFFIC, t0, rnd)
    _produce(settings, bootstrap, preds, labels)
    with console.status("joining the new traffic's labels..."):
        stats = feedback.run(until_caught_up=True, idle_timeout=60)
    console.print(f"{TRAFFIC} predictions of {MODEL} after the change (now only mid-size "
                  f"baskets convert) and their labels: {stats.joined} joined")
    landed = _land(settings, bootstrap, run)
    console.print(f"[green]✓[/] lake: {landed} records landed in predictions and examples")

    jobs = settings.jobs.model_copy(update={
        "trigger_group": f"demo-trigger-{run}", "launcher_group": f"demo-launcher-{run}",
        "min_new_labels": 1000, "cooldown_s": 3600.0})
    settings = settings.model_copy(update={"jobs": jobs})
    trigger = TriggerService(settings, bootstrap).run(until_caught_up=True)
    console.print(f"[green]✓[/] trigger: {trigger.alerts} alerts read, {trigger.requests} "
                  "retrain request(s) on retrain.requests")
    env = child_env(settings, {"REFLUENT_RETRAIN__SEED": str(SEED),
                               "REFLUENT_RETRAIN__FEATURE_SCALES": json.dumps(SCALES)})
    with console.status("retraining under DP-SGD (a refluent retrain process)..."):
        launcher = LauncherService(settings, bootstrap,
                                   runner=LocalRunner(settings, env)).run(until_caught_up=True)
    if launcher.failures:
        raise DemoError("the DP retrain failed: " + "; ".join(launcher.failures.values()))
    challenger = max(registry.versions(MODEL), key=lambda v: v.version)
    lin = challenger.lineage
    console.print(
        f"[green]✓[/] launcher: {launcher.launched} job(s), {launcher.failed} failed; "
        f"{MODEL} v{challenger.version} registered as challenger-dp: {lin.get('rows')} rows, "
        f"{lin.get('steps')} DP-SGD steps at noise {lin.get('noise_multiplier', 0):.3g}, "
        f"validation accuracy {challenger.metrics.get('validation_accuracy', 0):.3f}, "
        f"epsilon {challenger.epsilon or 0:.3f}")

    preds, labels = _traffic(registry, TRAFFIC, SHADOW, t0, rnd)
    _produce(settings, bootstrap, preds, labels)
    # Shadow scoring alone here: the DP updates of the new champion are shown next.
    no_updates = settings.model_copy(update={"feedback": settings.feedback.model_copy(
        update={"dp_updates": False})})
    shadow = FeedbackService.from_settings(  # a new start loads the challenger beside the champion
        no_updates, registry=registry, models=[MODEL], group=f"demo-retrain-feedback-{run}",
        predictions_topic=TOPICS[PREDICTIONS], feedback_topic=TOPICS[FEEDBACK],
        examples_topic=TOPICS[EXAMPLES])
    with console.status("shadow-scoring the challenger beside the champion..."):
        shadow.run(until_caught_up=True, idle_timeout=60)
    champion = registry.resolve(MODEL)
    promoted = champion.version == challenger.version
    if promoted:
        why = registry.alias_events(MODEL, CHAMPION)[-1].reason
        console.print(f"[green]✓[/] {SHADOW} more labels scored by both: {MODEL} "
                      f"v{champion.version} (DP-SGD, epsilon {champion.epsilon or 0:.3f}) "
                      f"promoted to champion: {why}")
    else:
        console.print(f"{SHADOW} more labels scored by both: the champion stays "
                      f"v{champion.version}")
    updates = 0
    if promoted:
        preds, labels = _traffic(registry, TRAFFIC + SHADOW, UPDATES, t0, rnd)
        _produce(settings, bootstrap, preds, labels)
        learning = FeedbackService.from_settings(
            settings, registry=registry, models=[MODEL], group=f"demo-retrain-feedback-{run}",
            predictions_topic=TOPICS[PREDICTIONS], feedback_topic=TOPICS[FEEDBACK],
            examples_topic=TOPICS[EXAMPLES])
        with console.status("the DP champion learning from its labels (DP updates)..."):
            updates = learning.run(until_caught_up=True, idle_timeout=60).dp_updates
        checkpoint = registry.latest_checkpoint(MODEL, champion.version)
        console.print(
            f"[green]✓[/] {UPDATES} more labels of v{champion.version}: {updates} DP "
            f"update(s) of {settings.feedback.dp_update_rows}+ labels each, charged before "
            f"they ran; serving swaps in checkpoint "
            f"{checkpoint.seq if checkpoint is not None else '-'}")
    ledger = IcebergPrivacyLedger.from_settings(settings)
    entries = ledger.entries(MODEL)
    for e in entries:
        run_ = e.spend
        console.print(f"  ledger {e.seq}: {run_.kind} noise {run_.noise_multiplier:.6f}, "
                      f"sample rate {run_.sample_rate:.6f}, {run_.steps} steps: epsilon "
                      f"{e.epsilon_total:.3f}")
    spent, p = ledger.spent(MODEL), settings.privacy
    console.print(f"[green]✓[/] privacy ledger of {MODEL}: epsilon {spent:.3f} of "
                  f"{p.epsilon_budget:g} spent at delta {p.delta:g} ({p.accountant}), "
                  f"{len(entries)} run(s)")
    return {"retrain_requests": trigger.requests, "retrained_version": challenger.version,
            "promoted": promoted, "dp_updates": updates, "epsilon_spent": spent}


def _land(settings: Settings, bootstrap: str, run: str) -> int:
    """The step's predictions and examples into the lake tables ``predictions`` and
    ``examples``, beside step 9's."""
    from refluent.lake.catalog import open_catalog
    from refluent.lake.mappings import PredictionsTable, RawEventsTable
    from refluent.sinks.iceberg import IcebergSink
    from refluent.sinks.pipeline import SinkPipeline

    def catalog() -> Any:
        return open_catalog(settings)

    ns = settings.lake.namespace
    routes: dict[str, list[Any]] = {
        TOPICS[PREDICTIONS]: [IcebergSink(catalog, PredictionsTable(), PREDICTIONS, ns)],
        TOPICS[EXAMPLES]: [IcebergSink(catalog, RawEventsTable(), EXAMPLES, ns)]}
    return SinkPipeline(settings, bootstrap, f"demo-retrain-lake-{run}", routes
                        ).run(until_caught_up=True).written
