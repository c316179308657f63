"""The feedback service against the real broker, Redis, lake catalog and model registry:
predictions and delayed labels from River's ``simulate_qa`` give the champion exactly River's
progressive validation score, a restart from a checkpoint learns nothing twice, and bad input
is dead-lettered with its reason while the service carries on."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis as redis_lib
from river import datasets, evaluate, metrics
from support.qa import logreg
from support.qa import qa_records as shared_qa_records

from refluent.config import Settings
from refluent.embedded.services import check_lake
from refluent.feedback.service import FeedbackService
from refluent.lake.catalog import load_table, open_catalog
from refluent.models.river import RiverModel
from refluent.online_learning.metrics import ProgressiveMetrics
from refluent.registry import ModelRegistry
from refluent.streams.contracts import Feedback, LabeledExample, Prediction
from refluent.streams.deadletter import DeadLetter
from refluent.streams.kafka import Producer
from refluent.testing.kafka import read_all, topic_ends
from refluent.testing.services import RunningServices

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
N = 300
DELAY = 5


@dataclass
class Env:
    """Settings, topics and a registry of the test's own."""

    settings: Settings
    services: RunningServices
    suffix: str
    registry: ModelRegistry

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka.bootstrap_servers or ""

    @property
    def predictions(self) -> str:
        return f"predictions-{self.suffix}"

    @property
    def feedback(self) -> str:
        return f"feedback-{self.suffix}"

    @property
    def examples(self) -> str:
        return f"examples-{self.suffix}"

    def service(self, **kwargs: Any) -> FeedbackService:
        kwargs.setdefault("idle_s", 0.5)
        return FeedbackService(
            self.settings, self.bootstrap, self.services.redis_url, registry=self.registry,
            predictions_topic=self.predictions, feedback_topic=self.feedback,
            examples_topic=self.examples, group=f"fb-{self.suffix}", **kwargs)

    def produce(self, records: list[tuple[str, bytes, str]]) -> None:
        with Producer(self.settings.kafka, self.bootstrap) as producer:
            for topic, value, key in records:
                producer.produce(topic, value, key)

    def read(self, topic: str, expected: int) -> list[Any]:
        return read_all(self.settings, topic, expected + 5, timeout=2.0)


@pytest.fixture()
def env(services: RunningServices) -> Env:
    suffix = uuid.uuid4().hex[:10]
    namespace = f"t_{suffix}"
    check_lake(services.catalog_uri, services.warehouse, namespace, create=True)
    settings = services.settings(
        kafka={"session_timeout_ms": 3000}, lake={"namespace": namespace},
        redis={"key_prefix": f"t{suffix}"},
        feedback={"checkpoint_every": 40, "rolling_window": 100, "early_label_wait_s": 10,
                  "max_label_delay_s": 100})
    e = Env(settings, services, suffix, ModelRegistry.from_settings(settings))
    e.service().ensure_topics()
    return e


def qa_records(env: Env, data: list[tuple[dict[str, Any], Any]], model: str
               ) -> list[tuple[str, bytes, str]]:
    """Predictions at i seconds and their labels at i + DELAY seconds, in the order River's
    simulate_qa reveals them."""
    return shared_qa_records(data, DELAY, model=model, t0=T0, predictions=env.predictions,
                             feedback=env.feedback)


def river_reference(data: list[tuple[dict[str, Any], Any]]) -> tuple[float, Any]:
    """River's delayed progressive accuracy on ``data``, and the model after it."""
    model = logreg()
    score = evaluate.progressive_val_score(data, model, metrics.Accuracy(), delay=DELAY)
    return score.get(), model


def champion_state(env: Env, model: str) -> tuple[int, ProgressiveMetrics, Any]:
    cp = env.registry.latest_checkpoint(model, 1)
    assert cp is not None
    return cp.examples, ProgressiveMetrics.from_state(cp.state["metrics"]), cp


def example_ids(env: Env, expected: int) -> Counter[str]:
    records = env.read(env.examples, expected)
    return Counter(LabeledExample.model_validate_json(r.value).prediction_id for r in records)


def test_service__champion_scores_exactly_as_river_progressive_validation(env: Env) -> None:
    data = list(itertools.islice(datasets.Phishing(), N))
    model = f"phish-{env.suffix}"
    env.registry.register(model, RiverModel(logreg()), alias="champion")
    env.produce(qa_records(env, data, model))

    stats = env.service(models=[model]).run(until_caught_up=True)

    assert (stats.predictions, stats.labels, stats.joined) == (N, N, N)
    assert stats.dead_lettered == {}
    ids = example_ids(env, N)
    assert ids == Counter({f"p{i}": 1 for i in range(N)})  # one example per label
    expected, reference = river_reference(data)
    examples, measured, cp = champion_state(env, model)
    assert examples == N
    assert measured.get("accuracy") == expected  # exact: same questions, same order
    loaded = env.registry.load_checkpoint(cp)
    probe = data[-1][0]
    assert loaded.predict_one(probe).probabilities == {
        str(k): v for k, v in reference.predict_proba_one(probe).items()}
    table = load_table(open_catalog(env.settings), "model_metrics",
                       env.settings.lake.namespace)
    rows = table.scan().to_arrow().to_pylist()
    last = max((r for r in rows if r["model"] == model), key=lambda r: r["seq"])
    assert last["accuracy"] == expected and last["examples"] == N
    assert last["accuracy_rolling"] == measured.get("accuracy", "rolling")


def test_service__restart_from_checkpoint_learns_nothing_twice(env: Env) -> None:
    data = list(itertools.islice(datasets.Phishing(), N))
    model = f"phish-{env.suffix}"
    env.registry.register(model, RiverModel(logreg()), alias="champion")
    records = qa_records(env, data, model)
    env.produce(records[:370])

    # Stops without a last checkpoint, as after a crash: what it learned since its latest
    # checkpoint is lost with it, and its outputs are out.
    first = env.service(models=[model], batch_size=50, checkpoint_on_stop=False).run(
        until_caught_up=True)
    examples_at_stop, _, _ = champion_state(env, model)
    assert 0 < examples_at_stop < first.joined  # it learned past its last checkpoint

    env.produce(records[370:])
    second = env.service(models=[model], batch_size=50).run(until_caught_up=True)

    examples, measured, cp = champion_state(env, model)
    assert examples == N
    expected, reference = river_reference(data)
    assert measured.get("accuracy") == expected
    assert measured.labels == N
    probe = data[7][0]
    assert env.registry.load_checkpoint(cp).predict_one(probe).probabilities == {
        str(k): v for k, v in reference.predict_proba_one(probe).items()}
    ids = example_ids(env, N)
    assert ids == Counter({f"p{i}": 1 for i in range(N)})  # none produced twice
    assert first.examples + second.examples == N
    assert second.joined > N - first.joined  # it read again what followed the checkpoint
    assert not first.dead_lettered and not second.dead_lettered


def test_service__bad_input_is_dead_lettered_with_its_reason(env: Env) -> None:
    model = f"bad-{env.suffix}"
    env.registry.register(model, RiverModel(logreg()), alias="champion")

    def pred(pid: str, t: float, entity: str = "u1") -> tuple[str, bytes, str]:
        p = Prediction(prediction_id=pid, request_id=pid, model_name=model, model_version="1",
                       entity_id=entity, score=0.6, label=True,
                       probabilities={"False": 0.4, "True": 0.6},
                       features={"a": float(t), "b": 1.0}, ts=T0 + timedelta(seconds=t))
        return env.predictions, p.model_dump_json().encode(), entity

    def fb(t: float, label: Any, pid: str | None = None, entity: str | None = None
           ) -> tuple[str, bytes, str]:
        f = Feedback(prediction_id=pid, entity_id=entity, label=label,
                     event_time=T0 + timedelta(seconds=t))
        return env.feedback, f.model_dump_json().encode(), pid or entity or ""

    env.produce([
        pred("p1", 0), pred("p2", 1), pred("p3", 2), pred("p4", 3, entity="u4"),
        pred("p_late", 4), (env.predictions, b'{"prediction_id": "x"}', "u9"),
        fb(5, True, pid="p1"), fb(6, "maybe", pid="p2"), fb(7, True, pid="ghost"),
        fb(8, False, pid="p1"), (env.feedback, b'{"prediction_id": "p3", "label": ', "p3"),
        fb(9, 1, pid="p3"), fb(10, False, entity="u4"), fb(20, True, pid="p_early"),
        pred("p_early", 25), fb(200, True, pid="p_late"), pred("p_end", 500)])

    stats = env.service(models=[model]).run(until_caught_up=True)

    letters = [DeadLetter.parse(r.headers, r.key, r.value)
               for r in env.read(env.feedback + ".dlq", 5)]
    by_reason = {d.reason: d for d in letters}
    assert sorted(by_reason) == ["duplicate_label", "json", "label_type", "too_late",
                                 "unknown_prediction"]
    assert len(letters) == 5
    assert by_reason["json"].step == "decode"
    assert by_reason["label_type"].step == "feedback_join"
    assert "'maybe'" in by_reason["label_type"].message
    assert "ghost" in by_reason["unknown_prediction"].message
    assert by_reason["unknown_prediction"].value is not None  # the label kept whole
    assert Feedback.model_validate_json(by_reason["too_late"].value).prediction_id == "p_late"
    (bad_prediction,) = [DeadLetter.parse(r.headers, r.key, r.value)
                         for r in env.read(env.predictions + ".dlq", 1)]
    assert bad_prediction.reason == "validation" and bad_prediction.offset >= 0
    assert example_ids(env, 4) == Counter({"p1": 1, "p3": 1, "p4": 1, "p_early": 1})
    assert stats.joined == 4
    assert stats.dead_lettered == {"duplicate_label": 1, "json": 1, "label_type": 1,
                                   "too_late": 1, "unknown_prediction": 1, "validation": 1}


def test_service__a_lagging_partition_pauses_the_others_at_the_merge_cap(env: Env) -> None:
    # Only predictions: the empty feedback partitions hold the merge back until they have
    # been quiet for idle_s, so without a cap every prediction would pile up in the buffer.
    # With a cap of 20 the prediction partitions are paused at 20 (plus at most one poll of
    # 10) and resumed once the feedback partitions stop holding back; every prediction is
    # processed once.
    data = list(itertools.islice(datasets.Phishing(), N))
    model = f"phish-{env.suffix}"
    env.registry.register(model, RiverModel(logreg()), alias="champion")
    env.produce([r for r in qa_records(env, data, model) if r[0] == env.predictions])
    settings = env.settings.model_copy(update={"feedback": env.settings.feedback.model_copy(
        update={"merge_max_buffered": 20})})
    service = FeedbackService(
        settings, env.bootstrap, env.services.redis_url, registry=env.registry,
        predictions_topic=env.predictions, feedback_topic=env.feedback,
        examples_topic=env.examples, group=f"fb-{env.suffix}", models=[model], idle_s=2.0,
        batch_size=10, metrics_table=None)

    stats = service.run(until_caught_up=True)

    assert stats.pauses >= 1
    # after a poll every partition with events buffered is paused: only those with nothing
    # buffered yet may bring a poll's worth more
    partitions = len(topic_ends(env.settings, env.predictions))
    assert stats.peak_buffered <= 20 + 10 * partitions < N
    # a rebalance (session timeout on a loaded machine) reads the revoked buffer again
    assert stats.predictions >= N and (stats.labels, stats.dead_lettered) == (0, {})
    store = redis_lib.Redis.from_url(env.services.redis_url)
    try:  # every prediction reached the join's state: none was dropped by a pause
        assert store.exists(*(f"t{env.suffix}:fb:p:p{i}" for i in range(N))) == N
    finally:
        store.close()

