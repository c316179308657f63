"""The prediction service: the scoring path, the model holder and the Kafka front end.

Unit tests use a stand-in registry and store; integration tests run the real thing on the
session's broker, Redis and SQLite lake catalog with the real registry.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from refluent.config import Settings
from refluent.examples.models import onnx_mlp_classifier, river_classifier, synthetic_rows
from refluent.models.base import Scored, ServableModel
from refluent.online_store.base import OnlineFeatures
from refluent.processors.aggregations import Aggregation
from refluent.processors.features import FeatureView
from refluent.processors.windows import Tumbling
from refluent.registry import ModelRegistry
from refluent.serving.holder import ModelHolder, UnknownServedModelError
from refluent.serving.policy import FeatureCatalog, StalePolicies
from refluent.serving.scorer import Scorer, ScoreRequest, build_scorer, prediction_id
from refluent.serving.service import KafkaPredictionService, settle_heap
from refluent.sinks.base import SinkRecord
from refluent.sinks.redis import RedisOnlineStore
from refluent.streams.contracts import FeatureUpdate, FeatureValue, Prediction, PredictionRequest
from refluent.streams.deadletter import DeadLetter
from refluent.streams.kafka import Producer, StopSignal
from refluent.streams.processing import RecordRejected
from refluent.testing.kafka import read_all
from refluent.testing.services import RunningServices

HOUR = Tumbling(timedelta(hours=1))
ACCT = FeatureView("acct", "account_id", ("logs.app",), (
    Aggregation("x1", "last", "x1", HOUR),
    Aggregation("x2", "last", "x2", HOUR),
))


def trained_river(seed: int = 0, n: int = 200, flip: bool = False) -> ServableModel:
    model = river_classifier(("x1", "x2"))
    for x, label, _ in synthetic_rows(("x1", "x2"), n, seed):
        model.learn_one(x, (not label) if flip else label)
    return model


# ---------------------------------------------------------------------------------------------
# unit: the scoring path with stand-ins
# ---------------------------------------------------------------------------------------------


@dataclass
class FakeVersion:
    name: str
    version: int


@dataclass
class FakeRegistry:
    """Just what :class:`ModelHolder` calls, over in-memory models."""

    models: dict[tuple[str, int], ServableModel] = field(default_factory=dict)
    champion: dict[str, int] = field(default_factory=dict)
    rev: int = 0

    def revision(self, name: str) -> str:
        return f"{self.rev}"

    def resolve(self, name: str, alias: str = "champion") -> Any:
        from refluent.registry import UnknownModelError

        if name not in self.champion:
            raise UnknownModelError(name, list(self.champion))
        return FakeVersion(name, self.champion[name])

    def get(self, name: str, version: int) -> Any:
        from refluent.registry import UnknownModelVersionError

        if (name, version) not in self.models:
            raise UnknownModelVersionError(name, version)
        return FakeVersion(name, version)

    def latest_checkpoint(self, name: str, version: int) -> None:
        return None

    def load(self, name: str, version: int) -> tuple[Any, ServableModel]:
        return FakeVersion(name, version), self.models[(name, version)]


class CountingModel(ServableModel):
    """Delegates to a River model, counting batched calls; ``bad`` values fail the row."""

    kind = "river"

    def __init__(self, inner: ServableModel) -> None:
        self.inner = inner
        self.task = inner.task
        self.feature_names = inner.feature_names
        self.can_learn = False
        self.name = "counting"
        self.many_calls: list[int] = []

    def predict_one(self, x: Mapping[str, FeatureValue]) -> Scored:
        return self.inner.predict_one(x)

    def predict_many(self, xs: Sequence[Mapping[str, FeatureValue]]) -> list[Scored]:
        self.many_calls.append(len(xs))
        return self.inner.predict_many(xs)

    def learn_one(self, x: Mapping[str, FeatureValue], y: Any) -> None:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        return b""

    def clone(self) -> ServableModel:
        return self


class FakeReader:
    def __init__(self, rows: dict[str, tuple[dict[str, FeatureValue], float]]) -> None:
        self.rows = rows
        self.calls: list[tuple[str, list[str], Any]] = []

    def get_online_features(self, view: str, entity_ids: Sequence[str],
                            features: Sequence[str] | None = None,
                            now: datetime | None = None) -> list[OnlineFeatures]:
        self.calls.append((view, list(entity_ids), features))
        out = []
        for e in entity_ids:
            if e in self.rows:
                values, age = self.rows[e]
                vals = {f: values.get(f) for f in features} if features else dict(values)
                out.append(OnlineFeatures(e, vals, None, timedelta(seconds=age), True, False))
            else:
                out.append(OnlineFeatures(e, {}, None, None, False, False))
        return out


def unit_scorer(policy: str = "flag") -> tuple[Scorer, CountingModel, FakeReader, FakeRegistry]:
    model = CountingModel(trained_river())
    any_input = river_classifier(())
    registry = FakeRegistry({("m", 1): model, ("m", 2): trained_river(1, flip=True),
                             ("any", 1): any_input}, {"m": 1, "any": 1})
    reader = FakeReader({f"e{i}": ({"x1": i / 10, "x2": -i / 10}, 5.0) for i in range(10)})
    holder = ModelHolder(registry)  # type: ignore[arg-type]
    scorer = Scorer(holder, reader, FeatureCatalog([ACCT]),  # type: ignore[arg-type]
                    StalePolicies(policy, {}, 60.0), clock=lambda: 1_700_000_000.0)
    return scorer, model, reader, registry


@pytest.mark.unit
def test_scorer__one_store_call_per_view_and_one_model_call_per_batch() -> None:
    scorer, model, reader, _ = unit_scorer()
    requests = [ScoreRequest(f"r{i}", "m", f"e{i % 5}") for i in range(12)]
    batch = scorer.score(requests)
    assert all(isinstance(o, Prediction) for o in batch.outcomes)
    assert model.many_calls == [12]
    assert len(reader.calls) == 1
    assert sorted(reader.calls[0][1]) == [f"e{i}" for i in range(5)]  # each entity once
    first = batch.outcomes[3]
    assert isinstance(first, Prediction)
    assert first.features == {"x1": 0.3, "x2": -0.3}
    assert first.feature_ages_ms == {"acct": 5000.0}
    assert first.model_version == "1" and first.request_id == "r3"
    assert first.prediction_id == prediction_id("m", "r3")
    assert first.score == model.inner.predict_one({"x1": 0.3, "x2": -0.3}).score


@pytest.mark.unit
def test_scorer__groups_by_pinned_version_and_rejects_unknown_models_per_request() -> None:
    scorer, _, _, _ = unit_scorer()
    requests = [ScoreRequest("a", "m", "e1"), ScoreRequest("b", "nope", "e1"),
                ScoreRequest("c", "m", "e2", version=2), ScoreRequest("d", "m", "e2", version=7)]
    out = scorer.score(requests).outcomes
    assert isinstance(out[0], Prediction) and out[0].model_version == "1"
    assert isinstance(out[2], Prediction) and out[2].model_version == "2"
    assert isinstance(out[1], RecordRejected) and out[1].reason == "unknown_model"
    assert "'nope'" in str(out[1])
    assert isinstance(out[3], RecordRejected) and out[3].reason == "unknown_version"


@pytest.mark.unit
def test_scorer__a_row_the_model_refuses_is_rejected_alone() -> None:
    scorer, model, _, _ = unit_scorer()
    requests = [ScoreRequest("ok1", "m", "e1"),
                ScoreRequest("bad", "m", "e2", features={"x1": "not a number"}),
                ScoreRequest("ok2", "m", "e3")]
    out = scorer.score(requests).outcomes
    assert isinstance(out[0], Prediction) and isinstance(out[2], Prediction)
    assert isinstance(out[1], RecordRejected) and out[1].reason == "model_input"
    assert "'x1'" in str(out[1])


@pytest.mark.unit
def test_scorer__missing_entity_follows_the_policy() -> None:
    flag, _, _, _ = unit_scorer("flag")
    reject, _, _, _ = unit_scorer("reject")
    req = [ScoreRequest("r", "any", "ghost", features={"x1": 1.0}),
           ScoreRequest("s", "any", "e2")]
    flagged, fresh = flag.score(req).outcomes
    assert isinstance(flagged, Prediction) and flagged.stale
    assert flagged.features == {"x1": 1.0} and flagged.feature_ages_ms == {}
    assert isinstance(fresh, Prediction) and not fresh.stale
    assert fresh.features == {"acct.x1": 0.2, "acct.x2": -0.2}
    rejected, _ = reject.score(req).outcomes
    assert isinstance(rejected, RecordRejected) and rejected.reason == "missing_entity"
    # A model with declared inputs cannot be scored without them, stale flag or not.
    refused = flag.score([ScoreRequest("t", "m", "ghost", features={"x1": 1.0})]).outcomes[0]
    assert isinstance(refused, RecordRejected) and "'x2'" in str(refused)


@pytest.mark.unit
def test_scorer__latency_runs_from_the_request_time() -> None:
    scorer, _, _, _ = unit_scorer()
    sent = datetime.fromtimestamp(1_700_000_000.0 - 0.25, tz=UTC)
    out = scorer.score([ScoreRequest("r", "m", "e1", ts=sent, received=1_700_000_000.0)])
    p = out.outcomes[0]
    assert isinstance(p, Prediction) and p.latency_ms == pytest.approx(250.0)


class StubProducer:
    """In flight: ``pending`` records; ``flush`` acknowledges them (or fails)."""

    def __init__(self, pending: int, fail: bool = False) -> None:
        self.pending = pending
        self.fail = fail
        self.flushes = 0

    def poll(self, timeout: float = 0) -> int:
        return 0

    def __len__(self) -> int:
        return self.pending

    def flush(self, timeout: float = 30.0) -> None:
        from refluent.streams.errors import DeliveryError

        self.flushes += 1
        if self.fail:
            raise DeliveryError([("predictions", 0, "refused")])
        self.pending = 0


@pytest.mark.unit
def test_commit_ready__only_once_every_answer_is_acknowledged() -> None:
    from refluent.serving import service as service_module
    from refluent.streams.errors import DeliveryError

    scorer, _, _, _ = unit_scorer()
    svc = KafkaPredictionService(Settings(), "unused:9092", scorer)
    svc._durable_at = time.monotonic()
    svc.producer = StubProducer(0)  # type: ignore[assignment]
    assert svc._commit_ready()  # nothing in flight: commit
    svc.producer = stub = StubProducer(3)  # type: ignore[assignment]
    assert not svc._commit_ready() and stub.flushes == 0  # in flight, recent: score on
    svc._durable_at = time.monotonic() - service_module.MAX_UNACKED_S - 0.1
    assert svc._commit_ready() and stub.flushes == 1 and len(stub) == 0  # waited for them
    svc.producer = StubProducer(0, fail=True)  # type: ignore[assignment]
    with pytest.raises(DeliveryError):  # a refused answer stops the loop uncommitted
        svc._commit_ready()


# ---------------------------------------------------------------------------------------------
# integration fixtures
# ---------------------------------------------------------------------------------------------


@dataclass
class Env:
    settings: Settings
    registry: ModelRegistry
    store: RedisOnlineStore
    requests: str
    predictions: str
    group: str

    def write_features(self, entities: dict[str, dict[str, FeatureValue]],
                       age: timedelta = timedelta(seconds=1)) -> None:
        at = datetime.now(UTC) - age
        records = [
            SinkRecord("features.acct", 0, i, e.encode(),
                       FeatureUpdate(view="acct", entity_id=e, values=v, event_time=at,
                                     sequence=i))
            for i, (e, v) in enumerate(entities.items())
        ]
        self.store.write(records)

    def produce(self, values: Sequence[bytes | PredictionRequest],
                pace_s: float = 0.0) -> None:
        producer = Producer(self.settings.kafka, self.settings.kafka.bootstrap_servers or "")
        for v in values:
            if isinstance(v, PredictionRequest):
                producer.produce(self.requests, v.model_dump_json().encode(), v.entity_id)
            else:
                producer.produce(self.requests, v, b"raw")
            if pace_s:
                producer.poll(0)
                time.sleep(pace_s)
        producer.close()

    def service(self, **kwargs: Any) -> KafkaPredictionService:
        scorer = build_scorer(self.settings, views=[ACCT], registry=self.registry, **kwargs)
        assert scorer.reader is not None
        scorer.reader.setup()
        scorer.holder.start(poll=True)
        svc = KafkaPredictionService(self.settings, self.settings.kafka.bootstrap_servers or "",
                                     scorer, requests_topic=self.requests,
                                     predictions_topic=self.predictions, group_id=self.group)
        svc.ensure_topics()
        return svc

    def predictions_read(self, expected: int, idle: float = 4.0) -> list[Prediction]:
        # One more than expected, so a repeat would show.
        records = read_all(self.settings, self.predictions, expected + 1, timeout=idle)
        return [Prediction.model_validate_json(r.value or b"") for r in records]

    def dead_letters(self, expected: int) -> list[DeadLetter]:
        records = read_all(self.settings, self.requests + ".dlq", expected + 1, timeout=3.0)
        return [DeadLetter.parse(r.headers, r.key, r.value) for r in records]


@pytest.fixture()
def env(services: RunningServices) -> Iterator[Env]:
    tag = uuid.uuid4().hex[:8]
    settings = services.settings(
        lake={"namespace": f"serving_{tag}"}, redis={"key_prefix": f"s{tag}"},
        serving={"model_refresh_s": 0.2, "max_batch_size": 32, "batch_linger_ms": 2.0},
    )
    registry = ModelRegistry.from_settings(settings)
    store = RedisOnlineStore(settings.redis.url or "", key_prefix=settings.redis.key_prefix)
    store.setup()
    yield Env(settings, registry, store, f"inference.requests-{tag}", f"predictions-{tag}",
              f"serving-{tag}")
    store.close()
    registry.close()


def run_in_thread(svc: KafkaPredictionService, stop: StopSignal, **kwargs: Any
                  ) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            svc.run(stop=stop, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, errors


def requests_for(n: int, entities: int = 20, model: str = "churn", start: int = 0
                 ) -> list[PredictionRequest]:
    return [PredictionRequest(request_id=f"r{i}", model=model, entity_id=f"e{i % entities}")
            for i in range(start, start + n)]


ENTITY_FEATURES = {f"e{i}": {"x1": round(i / 20 - 0.5, 3), "x2": round(0.5 - i / 40, 3)}
                   for i in range(20)}


# ---------------------------------------------------------------------------------------------
# integration: the holder against the real registry
# ---------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_holder__swaps_on_promotion_and_checkpoint_and_not_otherwise(env: Env) -> None:
    v1 = env.registry.register("churn", trained_river(0), alias="champion")
    v2 = env.registry.register("churn", trained_river(1, flip=True))
    swaps: list[tuple[int, int]] = []
    holder = ModelHolder(env.registry, names=["churn"],
                         on_swap=lambda old, new: swaps.append((old.number, new.number)))
    holder.start(poll=False)
    assert holder.get("churn").number == v1.version and holder.get("churn").checkpoint is None
    assert holder.refresh() == []

    env.registry.promote("churn", v2.version, reason="test")
    swapped = holder.refresh()
    assert [(s.number, s.checkpoint) for s in swapped] == [(v2.version, None)]
    assert holder.get("churn").number == v2.version

    learned = holder.get("churn").model.clone()
    learned.learn_one({"x1": 3.0, "x2": -3.0}, True)
    cp = env.registry.save_checkpoint("churn", v2.version, learned, offsets={"t": {0: 5}},
                                      examples=1, state={})
    swapped = holder.refresh()
    assert [(s.number, s.checkpoint) for s in swapped] == [(v2.version, cp.seq)]
    x = {"x1": 3.0, "x2": -3.0}
    assert holder.get("churn").model.predict_one(x) == learned.predict_one(x)
    assert holder.refresh() == []
    assert swaps == [(1, 2), (2, 2)]


@pytest.mark.integration
def test_holder__unknown_model_version_and_unnamed_models(env: Env) -> None:
    env.registry.register("churn", trained_river(0), alias="champion")
    holder = ModelHolder(env.registry, names=["churn"], only_named=True)
    holder.start(poll=False)
    with pytest.raises(UnknownServedModelError) as info:
        holder.get("churn", 9)
    assert info.value.reason == "unknown_version" and "version 9" in str(info.value)
    with pytest.raises(UnknownServedModelError) as info:
        holder.get("other")
    assert info.value.reason == "unknown_model" and "serves churn" in str(info.value)
    open_holder = ModelHolder(env.registry)
    with pytest.raises(UnknownServedModelError) as info:
        open_holder.get("never-registered")
    assert info.value.reason == "unknown_model"
    # peek never loads: None until a get() loaded the model, then the same object.
    assert open_holder.peek("churn") is None and open_holder.peek("churn", 1) is None
    loaded = open_holder.get("churn")
    assert open_holder.peek("churn") is loaded
    assert open_holder.peek("churn", 9) is None


# ---------------------------------------------------------------------------------------------
# integration: Kafka front end
# ---------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_kafka__every_request_answered_exactly_once_with_the_features_served(env: Env) -> None:
    version = env.registry.register("churn", trained_river(0), alias="champion")
    env.write_features(ENTITY_FEATURES)
    reqs = requests_for(300)
    env.produce(reqs)
    svc = env.service(models=["churn"])
    stats = svc.run(max_records=300, idle_timeout=30)
    svc.scorer.holder.close()
    assert stats.records == 300

    got = env.predictions_read(300)
    by_request = Counter(p.request_id for p in got)
    assert len(got) == 300 and set(by_request) == {r.request_id for r in reqs}
    assert max(by_request.values()) == 1
    model = env.registry.load("churn")[1]
    for p in got:
        entity = p.entity_id
        assert p.features == ENTITY_FEATURES[entity]
        assert p.model_name == "churn" and p.model_version == str(version.version)
        assert p.score == pytest.approx(model.predict_one(p.features).score, rel=1e-9)
        assert set(p.feature_ages_ms) == {"acct"} and not p.stale
        assert p.prediction_id == prediction_id("churn", p.request_id)


@pytest.mark.integration
def test_kafka__a_restart_answers_the_rest_and_nothing_twice(env: Env) -> None:
    env.registry.register("churn", trained_river(0), alias="champion")
    env.write_features(ENTITY_FEATURES)
    env.produce(requests_for(200))
    first = env.service(models=["churn"])
    first.run(max_records=80, idle_timeout=30)
    first.scorer.holder.close()
    second = env.service(models=["churn"])
    second.run(max_records=120, idle_timeout=30)
    second.scorer.holder.close()
    got = env.predictions_read(200)
    by_request = Counter(p.request_id for p in got)
    assert len(by_request) == 200 and max(by_request.values()) == 1


@pytest.mark.integration
def test_kafka__hot_swap_under_load_loses_nothing_and_names_the_scoring_version(
        env: Env) -> None:
    v1 = env.registry.register("churn", trained_river(0), alias="champion")
    v2 = env.registry.register("churn", trained_river(3, flip=True))
    env.write_features(ENTITY_FEATURES)
    n = 600
    svc = env.service(models=["churn"])
    stop = StopSignal()
    thread, errors = run_in_thread(svc, stop, max_records=n, idle_timeout=30)
    reqs = requests_for(n)
    env.produce(reqs[:50])
    deadline = time.monotonic() + 30
    while svc.answered < 50 and time.monotonic() < deadline:  # the group has joined
        time.sleep(0.05)
    producer = threading.Thread(target=env.produce, args=(reqs[50:], 0.003), daemon=True)
    producer.start()
    time.sleep(0.4)  # a part of the stream is scored by version 1 ...
    env.registry.promote("churn", v2.version, reason="hot swap test")  # ... the rest by 2
    producer.join(60)
    thread.join(60)
    svc.scorer.holder.close()
    assert not errors and not thread.is_alive()

    got = env.predictions_read(n)
    by_request = Counter(p.request_id for p in got)
    assert len(by_request) == n and max(by_request.values()) == 1
    versions = Counter(p.model_version for p in got)
    assert versions[str(v1.version)] > 0 and versions[str(v2.version)] > 0
    models = {str(v): env.registry.load("churn", v)[1] for v in (v1.version, v2.version)}
    for p in got:
        assert p.score == pytest.approx(models[p.model_version].predict_one(p.features).score,
                                        rel=1e-9)
    # The swap happens between batches: once version 2 answers, version 1 never does again.
    records = read_all(env.settings, env.predictions, n + 1, timeout=3.0)
    for part in {r.partition for r in records}:
        seq = [int(orjson.loads(r.value or b"")["model_version"]) for r in records
               if r.partition == part]
        assert seq == sorted(seq)
    assert svc.scorer.holder.swaps == 1


@pytest.mark.integration
def test_kafka__bad_requests_go_to_the_dead_letter_topic_and_the_service_goes_on(
        env: Env) -> None:
    onnx = onnx_mlp_classifier(("x1", "x2"), seed=2).model()
    env.registry.register("churn", trained_river(0), alias="champion")
    env.registry.register("scorer", onnx, alias="champion")
    env.write_features({"e1": {"x1": 0.1, "x2": 0.2}})
    settings = env.settings.model_copy(update={"serving": env.settings.serving.model_copy(
        update={"view_policies": {"acct": "reject"}})})
    env.settings = settings
    values: list[bytes | PredictionRequest] = [
        b"{not json",
        b'{"entity_id": "e1"}',
        PredictionRequest(request_id="unknown", model="nope", entity_id="e1"),
        PredictionRequest(request_id="missing", model="churn", entity_id="ghost"),
        PredictionRequest(request_id="type", model="scorer", entity_id="e1",
                          features={"x1": "high"}),
        PredictionRequest(request_id="ok1", model="churn", entity_id="e1"),
        PredictionRequest(request_id="ok2", model="scorer", entity_id="e1"),
    ]
    env.produce(values)
    svc = env.service()
    svc.run(max_records=len(values), idle_timeout=30)
    svc.scorer.holder.close()

    got = env.predictions_read(2)
    assert sorted(p.request_id for p in got) == ["ok1", "ok2"]
    letters = env.dead_letters(5)
    reasons = sorted((d.step, d.reason) for d in letters)
    assert reasons == [("decode", "json"), ("decode", "validation"),
                       ("serving", "feature_type"), ("serving", "missing_entity"),
                       ("serving", "unknown_model")]
    by_reason = {d.reason: d for d in letters}
    assert "view 'acct'" in by_reason["missing_entity"].message
    assert "'x1'" in by_reason["feature_type"].message
    assert "'nope'" in by_reason["unknown_model"].message
    assert by_reason["json"].value == b"{not json"
    assert all(d.topic == env.requests for d in letters)
    assert svc.dead_lettered == 5 and svc.answered == 2


# ---------------------------------------------------------------------------------------------
# integration: `refluent serve` as a process
# ---------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_cli_serve__answers_kafka_and_http_then_stops_cleanly_on_sigterm(
        env: Env, services: RunningServices) -> None:
    import signal
    import subprocess
    import sys

    import httpx2 as httpx

    from refluent.embedded.services import free_port
    from refluent.streams.kafka import TopicAdmin
    from refluent.streams.topics import TopicCatalog

    env.registry.register("churn", trained_river(0), alias="champion")
    catalog = TopicCatalog.from_settings(env.settings.topics)
    bootstrap = env.settings.kafka.bootstrap_servers or ""
    TopicAdmin(env.settings.kafka, bootstrap).ensure(
        [s for name in ("inference.requests", "predictions")
         for s in (catalog.get(name), catalog.get(name).dlq())])
    tag = uuid.uuid4().hex[:8]
    env.requests, env.predictions = "inference.requests", "predictions"
    env.produce([PredictionRequest(request_id=f"cli-{tag}-{i}", model="churn",
                                   entity_id=f"e{i}", features={"x1": 0.1 * i, "x2": -0.2})
                 for i in range(20)])
    port = free_port()
    proc_env = services.command_env(namespace=env.settings.lake.namespace,
                                    REFLUENT_SERVING__GROUP=f"cli-{tag}")
    code = "import typer; from refluent.cli.serve import serve; typer.run(serve)"
    proc = subprocess.Popen([sys.executable, "-c", code, "--models", "churn", "--port",
                             str(port)], env=proc_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        resp = httpx.post(f"{url}/v2/models/churn/infer", timeout=10, json={
            "id": f"cli-{tag}-http", "inputs": [
                {"name": "x1", "datatype": "FP64", "shape": [1], "data": [0.3]},
                {"name": "x2", "datatype": "FP64", "shape": [1], "data": [0.1]}]})
        assert resp.status_code == 200, resp.text
        assert resp.json()["model_version"] == "1"
        wanted = {f"cli-{tag}-{i}" for i in range(20)} | {f"cli-{tag}-http"}
        seen: Counter[str] = Counter()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and set(seen) != wanted:
            records = read_all(env.settings, "predictions", 10_000, timeout=2.0)
            seen = Counter(p.request_id for p in (Prediction.model_validate_json(r.value or b"")
                                                 for r in records)
                           if p.request_id.startswith(f"cli-{tag}"))
        assert set(seen) == wanted and max(seen.values()) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    # Other tests of the session may have used the catalog's request topic too.
    assert re.search(r"\d+ request\(s\) answered, \d+ dead-lettered", out), out


# ---------------------------------------------------------------------------------------------
# integration: feature logging lands in the lake
# ---------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_lake__predictions_land_with_the_features_served_queryable(env: Env) -> None:
    from refluent.lake.catalog import open_catalog
    from refluent.lake.query import query
    from refluent.sinks.pipeline import SinkPipeline, lake_routes, lake_table_for

    env.registry.register("churn", trained_river(0), alias="champion")
    env.write_features(ENTITY_FEATURES)
    tag = uuid.uuid4().hex[:8]
    env.predictions = "predictions"  # the catalog's topic: the lake sink knows its contract
    reqs = [PredictionRequest(request_id=f"lake-{tag}-{i}", model="churn", entity_id=f"e{i}")
            for i in range(10)]
    env.produce(reqs)
    svc = env.service(models=["churn"])
    svc.run(max_records=10, idle_timeout=30)
    svc.scorer.holder.close()

    bootstrap = env.settings.kafka.bootstrap_servers or ""
    pipeline = SinkPipeline(env.settings, bootstrap, f"lake-{tag}",
                            lake_routes(env.settings, ["predictions"]))
    pipeline.run(until_caught_up=True, idle_timeout=30)
    table = lake_table_for("predictions")
    rows = query(open_catalog(env.settings), env.settings.lake.namespace, f"""
        select request_id, model_version, entity_id, score, stale,
               cast(json_extract(payload, '$.features.x1') as double) as x1,
               cast(json_extract(payload, '$.feature_ages_ms.acct') as double) as age_ms
        from {table} where request_id like 'lake-{tag}-%' order by request_id"""  # noqa: S608
                 ).to_pylist()
    assert len(rows) == 10
    for row in rows:
        assert row["model_version"] == "1" and row["stale"] is False
        assert row["x1"] == ENTITY_FEATURES[row["entity_id"]]["x1"]
        assert row["age_ms"] is not None and row["age_ms"] > 0
        assert row["score"] is not None


@pytest.mark.unit
def test_build_scorer__a_policy_for_an_undeclared_view_is_a_config_error() -> None:
    from refluent.errors import ConfigError

    settings = Settings(serving={"view_policies": {"acct": "reject", "acount": "flag"}})
    with pytest.raises(ConfigError, match=r"view\(s\) acount .*declared: acct"):
        build_scorer(settings, views=[ACCT], registry=FakeRegistry())


@pytest.mark.unit
def test_settle_heap__frees_garbage_and_freezes_what_is_alive() -> None:
    import gc

    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector frees it

    cycle = Node()
    alive = [object()]
    del cycle
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert not any(isinstance(o, Node) for o in gc.get_objects()), "garbage was frozen"
        # Frozen objects leave the collector's generations.
        assert all(o is not alive for o in gc.get_objects())
    finally:
        gc.unfreeze()
