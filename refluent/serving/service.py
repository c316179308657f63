"""The prediction service: score requests from Kafka and HTTP with the models being served.

:class:`Scorer` is the scoring path both front ends share. For a batch of requests it takes the
model of each (name, pinned version) once from the :class:`~refluent.serving.holder.ModelHolder`
(so one version scores the batch), reads the online features of every entity the batch needs
with one store call per view, applies the stale-feature policies
(:mod:`refluent.serving.policy`), scores the valid rows with one ``predict_many`` call per model
and builds one :class:`~refluent.streams.contracts.Prediction` per request, or the reason the
request was rejected.

:class:`KafkaPredictionService` consumes ``inference.requests`` with a
:class:`~refluent.streams.kafka.ConsumerLoop`: a batch is the first request that arrives and
whatever else the client has already fetched (at most ``serving.max_batch_size``; no request
waits for others), scored together; predictions go to ``predictions`` keyed by entity id (the
catalog's key; the feedback join finds them by ``prediction_id``) and rejected requests go whole to
``inference.requests.dlq`` with the reason in the headers (``decode`` step: malformed JSON or
contract; ``serving`` step: ``unknown_model``, ``unknown_version``, ``missing_entity``,
``stale_features``, ``missing_features``, ``feature_type``, ``model_input``, ...).

Delivery guarantee: at-least-once, made idempotent. A batch's offsets are committed only after
every prediction and dead letter queued so far was acknowledged by the broker (idempotent
producer, ``acks=all``); the service scores the next batch while the acknowledgements come in
(for at most ``MAX_UNACKED_S``), so waiting for the broker is not on the request path. A crash
replays what was not committed (offsets are committed at most every
``serving.commit_interval_ms``). The ``prediction_id`` is derived from the model name and
``request_id``, so a replayed request gets the same prediction id and downstream consumers (the
feedback join, the lake) can drop the repeat: every request is answered exactly once per
prediction id. A clean stop or a rebalance waits for the acknowledgements and commits, so
those never answer a request twice.

Examples:
    >>> prediction_id("churn", "r-1") == prediction_id("churn", "r-1")
    True
    >>> prediction_id("churn", "r-1") == prediction_id("churn", "r-2")
    False
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import ValidationError

from refluent.observability import metrics as core_metrics
from refluent.observability import serving as m
from refluent.serving.errors import ModelError, ModelInputError
from refluent.serving.holder import LoadedModel, ModelHolder
from refluent.serving.policy import (
    FeatureCatalog,
    FeaturePlan,
    FeaturePlanError,
    StalePolicies,
    StoreRead,
    assemble,
    check_numeric,
    needed_reads,
    rejected,
)
from refluent.streams.contracts import FeatureValue, Prediction, PredictionRequest
from refluent.streams.deadletter import DeadLetterRouter
from refluent.streams.errors import DecodeError
from refluent.streams.kafka import ConsumerLoop, LoopStats, Producer, StopSignal
from refluent.streams.processing import RecordRejected
from refluent.streams.serde import JsonSerde

if TYPE_CHECKING:
    from confluent_kafka import Message

    from refluent.config import Settings
    from refluent.serving.base import ServableModel
    from refluent.serving.online import OnlineFeatureReader

log = logging.getLogger(__name__)

REQUESTS_TOPIC = "inference.requests"
PREDICTIONS_TOPIC = "predictions"
_ID_NAMESPACE = uuid.UUID("5b0c1d4e-8f57-4a55-9a8e-2f0f6f1c8e11")
MAX_UNACKED_S = 1.0
"""Longest the Kafka service scores on while answers are still unacknowledged; then it waits
for them, so a steady stream still commits (and replays at most this much after a crash)."""
IDLE_POLL_S = 0.05
"""Longest the Kafka service blocks waiting for a request before it serves delivery reports
and commits (a request that arrives ends the wait at once)."""
FETCH_WAIT = "fetch.wait.max.ms"
FETCH_WAIT_MS = 10
"""The request consumer's fetch wait (librdkafka's default is 500 ms). A broker answers a fetch
as soon as data arrives, but some Kafka-compatible brokers hold it for the whole wait, which
then becomes request latency; a short wait only costs idle fetches. ``kafka.extra`` wins."""

T = TypeVar("T")
R = TypeVar("R")


def settle_heap() -> None:
    """Collect garbage once, then move every object alive now out of the collector's reach
    (:func:`gc.freeze`).

    A serving process holds hundreds of thousands of long-lived objects after start-up
    (libraries, models, the registry's tables); every full collection scans them all, which
    stalled answers for 100+ ms at a time. Frozen, they are never scanned again and a full
    collection takes a few milliseconds. For long-running processes, once start-up is done:
    objects frozen are never freed.
    """
    gc.collect()
    gc.freeze()


def prediction_id(model: str, request_id: str) -> str:
    """The id of the prediction that answers ``request_id`` with ``model``: the same for a
    replayed request, so its repeat can be recognised downstream."""
    return uuid.uuid5(_ID_NAMESPACE, f"{model}\x00{request_id}").hex


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """One row to score, from Kafka or HTTP.

    Attributes:
        request_id: Caller's id of the request.
        model: Model name.
        entity_id: Entity whose online features are read; None reads none.
        features: Request-time features (they win over online ones).
        ts: When the caller made the request (latency is measured from it), if known.
        received: When the service received it (epoch seconds).
        version: A pinned version; None serves the model's alias (champion).
    """

    request_id: str
    model: str
    entity_id: str | None = None
    features: Mapping[str, FeatureValue] = field(default_factory=dict)
    ts: datetime | None = None
    received: float = field(default_factory=time.time)
    version: int | None = None

    @classmethod
    def from_event(cls, event: PredictionRequest, received: float) -> ScoreRequest:
        """The row of a :class:`~refluent.streams.contracts.PredictionRequest`."""
        return cls(event.request_id, event.model, event.entity_id, event.features, event.ts,
                   received)


Outcome = Prediction | RecordRejected
"""A request's answer: its prediction, or why it was rejected."""


@dataclass
class ScoredBatch:
    """What :meth:`Scorer.score` made of a batch.

    Attributes:
        outcomes: One per request, in order.
        loaded: The model that scored each (name, pinned version) of the batch.
        fetch_s: Seconds spent reading online features.
        model_s: Seconds spent scoring.
    """

    outcomes: list[Outcome]
    loaded: dict[tuple[str, int | None], LoadedModel] = field(default_factory=dict)
    fetch_s: float = 0.0
    model_s: float = 0.0


class Scorer:
    """Turns batches of requests into predictions (see the module docstring).

    Thread safety: one scorer may serve several threads; a batch touches no shared state but
    the holder (safe) and the reader (safe).

    Args:
        holder: The models being served.
        reader: The online store; None serves request-time features only.
        catalog: The declared feature views.
        policies: Stale-feature policies.
        source: Label of the front end in metrics (``kafka``, ``http``).
        clock: Current time in epoch seconds.
    """

    def __init__(
        self,
        holder: ModelHolder,
        reader: OnlineFeatureReader | None,
        catalog: FeatureCatalog,
        policies: StalePolicies,
        *,
        source: str = "kafka",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.holder = holder
        self.reader = reader
        self.catalog = catalog
        self.policies = policies
        self.source = source
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, holder: ModelHolder,
                      reader: OnlineFeatureReader | None, catalog: FeatureCatalog,
                      **kwargs: Any) -> Scorer:
        """A scorer with the policies of ``settings.serving``."""
        serving = settings.serving
        policies = StalePolicies(serving.stale_policy, serving.view_policies,
                                 serving.max_feature_age_s)
        return cls(holder, reader, catalog, policies, **kwargs)

    def with_source(self, source: str) -> Scorer:
        """The same scorer labelled ``source`` in metrics."""
        return Scorer(self.holder, self.reader, self.catalog, self.policies, source=source,
                      clock=self.clock)

    # -- the batch ---------------------------------------------------------------------------

    def score(self, requests: Sequence[ScoreRequest]) -> ScoredBatch:
        """Score ``requests``; one outcome per request, in order.

        Raises:
            OnlineStoreError: the online store could not be read (a fault: nothing is
                answered, the caller retries or stops).
        """
        outcomes: list[Outcome | None] = [None] * len(requests)
        batch = ScoredBatch([])
        groups: dict[tuple[str, int | None], list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault((req.model, req.version), []).append(i)
        plans: dict[tuple[str, int | None], FeaturePlan] = {}
        for key, idx in groups.items():
            try:
                loaded = self.holder.get(*key)
                plan = self.catalog.plan(loaded.model.feature_names, loaded.name)
            except RecordRejected as exc:
                for i in idx:
                    outcomes[i] = exc
                continue
            except FeaturePlanError as exc:
                err = rejected("feature_plan", str(exc))
                for i in idx:
                    outcomes[i] = err
                continue
            batch.loaded[key] = loaded
            plans[key] = plan

        started = time.perf_counter()
        reads = self._read(requests, groups, plans)
        batch.fetch_s = time.perf_counter() - started

        started = time.perf_counter()
        for key, plan in plans.items():
            self._score_group(requests, groups[key], plan, batch.loaded[key], reads, outcomes)
        batch.model_s = time.perf_counter() - started
        batch.outcomes = [o if o is not None else rejected("internal", "not scored")
                          for o in outcomes]
        self._count(requests, batch.outcomes)
        return batch

    def _read(
        self,
        requests: Sequence[ScoreRequest],
        groups: Mapping[tuple[str, int | None], list[int]],
        plans: Mapping[tuple[str, int | None], FeaturePlan],
    ) -> dict[tuple[str, tuple[str, ...] | None, str], StoreRead]:
        """Every (view, features, entity) the batch needs, one store call per view read."""
        wanted: dict[tuple[str, tuple[str, ...] | None], dict[str, None]] = {}
        for key, plan in plans.items():
            if not plan.reads:
                continue
            for i in groups[key]:
                req = requests[i]
                if req.entity_id is None:
                    continue
                for read in needed_reads(plan, req.features):
                    wanted.setdefault((read.view, read.features), {})[req.entity_id] = None
        out: dict[tuple[str, tuple[str, ...] | None, str], StoreRead] = {}
        if not wanted or self.reader is None:
            return out
        now = datetime.fromtimestamp(self.clock(), tz=UTC)
        for (view, features), entities in wanted.items():
            rows = self.reader.get_online_features(view, list(entities), features, now)
            for row in rows:
                age = row.age.total_seconds() if row.age is not None else None
                out[(view, features, row.entity_id)] = StoreRead(row.values, age, row.found)
        return out

    def _score_group(
        self,
        requests: Sequence[ScoreRequest],
        idx: list[int],
        plan: FeaturePlan,
        loaded: LoadedModel,
        reads: Mapping[tuple[str, tuple[str, ...] | None, str], StoreRead],
        outcomes: list[Outcome | None],
    ) -> None:
        model = loaded.model
        numeric = model.kind == "onnx"
        rows: list[int] = []
        inputs: list[Any] = []
        for i in idx:
            req = requests[i]
            entity = req.entity_id
            views: dict[str, StoreRead] = {}
            if entity is not None:
                for read in needed_reads(plan, req.features):
                    got = reads.get((read.view, read.features, entity))
                    if got is not None:
                        views[read.view] = got
            try:
                assembled = assemble(entity, plan, views, req.features, self.policies,
                                     self.catalog)
                if numeric:
                    check_numeric(loaded.name, model.feature_names, assembled.features)
            except RecordRejected as exc:
                outcomes[i] = exc
                continue
            rows.append(i)
            inputs.append(assembled)
        if not rows:
            return
        scored = _predict(model, [a.features for a in inputs], loaded)
        now = self.clock()
        version = str(loaded.number)
        for i, assembled, answer in zip(rows, inputs, scored, strict=True):
            if isinstance(answer, RecordRejected):
                outcomes[i] = answer
                continue
            req = requests[i]
            start = req.received
            if req.ts is not None:
                sent = req.ts.timestamp()
                if sent <= now:
                    start = sent
            # The prediction's event time is the question's: when the request was made (or
            # received, when it does not say), never when a backlog let it be scored. Labels
            # are timed against questions, and a replay then rebuilds the same prediction.
            ts = datetime.fromtimestamp(start, tz=UTC)
            try:
                outcomes[i] = Prediction(
                    prediction_id=prediction_id(loaded.name, req.request_id),
                    request_id=req.request_id, model_name=loaded.name, model_version=version,
                    entity_id=req.entity_id or "", score=answer.score, label=answer.label,
                    probabilities=answer.probabilities, features=assembled.features,
                    feature_ages_ms=assembled.ages_ms, stale=assembled.stale, ts=ts,
                    latency_ms=max(now - start, 0.0) * 1000,
                )
            except ValidationError as exc:
                outcomes[i] = rejected("model_output", f"model {loaded.name} version "
                                       f"{version} answered something that is not a "
                                       f"prediction: {exc.errors()[0]['msg']}")

    def _count(self, requests: Sequence[ScoreRequest], outcomes: Sequence[Outcome]) -> None:
        source = self.source
        counts: dict[tuple[str, str], int] = {}
        rejects: dict[tuple[str, str], int] = {}
        stale: dict[str, int] = {}
        for req, outcome in zip(requests, outcomes, strict=True):
            if isinstance(outcome, Prediction):
                k = (outcome.model_name, outcome.model_version)
                counts[k] = counts.get(k, 0) + 1
                if outcome.stale:
                    stale[outcome.model_name] = stale.get(outcome.model_name, 0) + 1
            else:
                # A name no registry knows stays out of the labels: callers choose it freely.
                name = "(unknown)" if outcome.reason == "unknown_model" else req.model
                r = (name, outcome.reason)
                rejects[r] = rejects.get(r, 0) + 1
        for (name, version), n in counts.items():
            m.PREDICTIONS.labels(name, version, source).inc(n)
        for (name, reason), n in rejects.items():
            m.REJECTED.labels(name, reason, source).inc(n)
        for name, n in stale.items():
            m.STALE_SERVED.labels(name).inc(n)


def _predict(model: ServableModel, xs: list[dict[str, FeatureValue]],
             loaded: LoadedModel) -> list[Any]:
    """One ``predict_many`` call; if the model refuses a row, row by row to find which."""
    try:
        return list(model.predict_many(xs))
    except ModelError:
        pass  # row by row below names the row at fault
    out: list[Any] = []
    for x in xs:
        try:
            out.append(model.predict_one(x))
        except ModelInputError as exc:
            out.append(rejected("model_input", f"version {loaded.number}: {exc}"))
        except ModelError as exc:
            out.append(rejected("model_error", f"version {loaded.number}: {exc}"))
    return out


# ---------------------------------------------------------------------------------------------
# stage timings (kept in the process too, for benchmarks)
# ---------------------------------------------------------------------------------------------


class StageTimes:
    """The last ``size`` batches' stage durations in seconds, and their batch sizes."""

    STAGES = ("fetch", "model", "produce")

    def __init__(self, size: int = 100_000) -> None:
        self.batches: deque[tuple[int, float, float, float]] = deque(maxlen=size)
        self._hist = {s: m.STAGE_SECONDS.labels(s) for s in self.STAGES}

    def observe(self, n: int, fetch_s: float, model_s: float, produce_s: float) -> None:
        """Record one batch of ``n`` requests."""
        self.batches.append((n, fetch_s, model_s, produce_s))
        self._hist["fetch"].observe(fetch_s)
        self._hist["model"].observe(model_s)
        self._hist["produce"].observe(produce_s)
        m.BATCH_SIZE.observe(n)

    def summary(self) -> dict[str, Any]:
        """p50/p99 of each stage (ms) over the batches kept, and the mean batch size."""
        rows = list(self.batches)
        out: dict[str, Any] = {"batches": len(rows)}
        if not rows:
            return out
        out["mean_batch_size"] = round(sum(r[0] for r in rows) / len(rows), 2)
        for j, stage in enumerate(self.STAGES, start=1):
            values = sorted(r[j] * 1000 for r in rows)
            out[f"{stage}_ms_p50"] = round(_quantile(values, 0.5), 3)
            out[f"{stage}_ms_p99"] = round(_quantile(values, 0.99), 3)
        return out


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


# ---------------------------------------------------------------------------------------------
# Kafka front end
# ---------------------------------------------------------------------------------------------


class KafkaPredictionService:
    """Answers :class:`~refluent.streams.contracts.PredictionRequest` records from Kafka.

    Lifecycle: construct, then :meth:`run` until stopped; the consumer, producer and commits
    are handled as described in the module docstring. A fault (online store down, broker not
    acknowledging) stops :meth:`run` with the error and without committing the batch in hand.

    Args:
        settings: Refluent settings (``kafka``, ``serving``).
        bootstrap_servers: Kafka brokers.
        scorer: The scoring path.
        requests_topic: Topic of the requests.
        predictions_topic: Topic the predictions go to.
        group_id: Consumer group (default ``serving.group``).
        **consumer_overrides: librdkafka properties of the request consumer.
    """

    def __init__(
        self,
        settings: Settings,
        bootstrap_servers: str,
        scorer: Scorer,
        *,
        requests_topic: str = REQUESTS_TOPIC,
        predictions_topic: str = PREDICTIONS_TOPIC,
        group_id: str | None = None,
        **consumer_overrides: Any,
    ) -> None:
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.consumer_overrides = consumer_overrides
        self.scorer = scorer
        self.requests_topic = requests_topic
        self.predictions_topic = predictions_topic
        self.group_id = group_id or settings.serving.group
        kafka = settings.kafka
        self._request_serde = JsonSerde(PredictionRequest, max_record_bytes=kafka.max_record_bytes)
        self._prediction_serde = JsonSerde(Prediction)
        self.producer: Producer | None = None
        self.router: DeadLetterRouter | None = None
        self.stages = StageTimes()
        self.answered = 0
        self.dead_lettered = 0
        self._latency = m.REQUEST_SECONDS

    def ensure_topics(self) -> None:
        """Create the requests and predictions topics and their dead-letter siblings, from
        the catalog (names other than the catalog's get the catalog entry's settings)."""
        from refluent.streams.kafka import TopicAdmin
        from refluent.streams.topics import TopicCatalog

        catalog = TopicCatalog.from_settings(self.settings.topics)
        specs = []
        for name, base in ((self.requests_topic, REQUESTS_TOPIC),
                           (self.predictions_topic, PREDICTIONS_TOPIC)):
            spec = replace(catalog.get(base), name=name)
            specs += [spec, spec.dlq()]
        TopicAdmin(self.settings.kafka, self.bootstrap_servers).ensure(specs)

    def run(
        self,
        *,
        stop: StopSignal | None = None,
        max_records: int | None = None,
        idle_timeout: float | None = None,
    ) -> LoopStats:
        """Consume, score and answer until stopped (or ``max_records`` / ``idle_timeout``).

        Raises:
            DeliveryError: the broker did not acknowledge a prediction or dead letter (nothing
                after the last acknowledged batch is committed).
            OnlineStoreError: the online store could not be read.
        """
        serving = self.settings.serving
        kafka = self.settings.kafka
        producer_overrides: dict[str, Any] = {
            "message.max.bytes": kafka.dlq_max_record_bytes + 65536,
            # Reports for every record, so the records in flight count down to zero.
            "delivery.report.only.error": False,
        }
        if "linger.ms" not in kafka.extra:
            # The service batches requests itself: a batch's predictions are queued together
            # and need not wait for more.
            producer_overrides["linger.ms"] = 0
        self.producer = Producer(kafka, self.bootstrap_servers, **producer_overrides)
        self.router = DeadLetterRouter(self.producer)
        overrides = dict(self.consumer_overrides)
        if FETCH_WAIT not in kafka.extra:
            overrides.setdefault(FETCH_WAIT, FETCH_WAIT_MS)
        loop = ConsumerLoop(kafka, self.bootstrap_servers, self.group_id, [self.requests_topic],
                            batch_size=serving.max_batch_size, on_revoke=self._flush,
                            commit_ready=self._commit_ready,
                            commit_interval_s=serving.commit_interval_ms / 1000, **overrides)
        self._durable_at = time.monotonic()
        try:
            # Drained batches: a request never waits for others; a batch is what the client
            # had fetched when the first request was taken (one fetch's worth under load).
            return loop.run(self.handle, stop=stop, max_records=max_records,
                            idle_timeout=idle_timeout, poll_timeout=IDLE_POLL_S, drain=True,
                            on_idle=self._serve_reports, before_close=self._flush)
        finally:
            self.producer.close()

    def _serve_reports(self) -> None:
        assert self.producer is not None  # noqa: S101 - set by run()
        self.producer.poll(0)

    def _flush(self, *_: Any) -> None:
        """Wait until every queued answer is acknowledged (before a rebalance or the end)."""
        assert self.producer is not None  # noqa: S101 - set by run()
        started = time.perf_counter()
        self.producer.flush()
        self._durable_at = time.monotonic()
        m.STAGE_SECONDS.labels("ack").observe(time.perf_counter() - started)

    def _commit_ready(self) -> bool:
        """True once every answer queued so far is acknowledged, so the offsets of the
        batches they answer may be committed.

        The loop does not wait for acknowledgements after each batch: it scores the next one
        while they come in, and commits at the next moment nothing is in flight. Should that
        moment not come for ``MAX_UNACKED_S`` (a steady stream), it waits for them then.

        Raises:
            DeliveryError: a record was refused; the loop stops without committing.
        """
        producer = self.producer
        assert producer is not None  # noqa: S101 - set by run()
        producer.poll(0)
        if len(producer) and time.monotonic() - self._durable_at < MAX_UNACKED_S:
            return False
        self._flush()  # raises DeliveryError for any refused record
        return True

    def handle(self, batch: list[Message]) -> None:
        """Score one consumed batch and queue its answers (see :meth:`_commit_ready` for when
        they are acknowledged and the batch committed)."""
        producer, router = self.producer, self.router
        assert producer is not None and router is not None  # noqa: S101 - set by run()
        received = time.time()
        requests: list[ScoreRequest] = []
        messages: list[Message] = []
        decode = self._request_serde.decode
        for msg in batch:
            try:
                event = decode(msg.value())
            except DecodeError as exc:
                router.route(msg, "decode", exc)
                m.REJECTED.labels("?", exc.reason, "kafka").inc()
                self.dead_lettered += 1
                continue
            assert isinstance(event, PredictionRequest)  # noqa: S101 - the serde's contract
            requests.append(ScoreRequest.from_event(event, received))
            messages.append(msg)
        scored = self.scorer.score(requests)
        started = time.perf_counter()
        encode = self._prediction_serde.encode
        topic = self.predictions_topic
        answered = 0
        for outcome, msg in zip(scored.outcomes, messages, strict=True):
            if isinstance(outcome, Prediction):
                producer.produce(topic, encode(outcome), outcome.entity_id or
                                 outcome.prediction_id)
                answered += 1
            else:
                router.route(msg, outcome.step, outcome)
                self.dead_lettered += 1
        producer.poll(0)
        produce_s = time.perf_counter() - started
        self.answered += answered
        self.stages.observe(len(batch), scored.fetch_s, scored.model_s, produce_s)
        now = time.time()
        for outcome in scored.outcomes:
            if isinstance(outcome, Prediction):
                sent = outcome.ts.timestamp() - (outcome.latency_ms or 0.0) / 1000
                self._latency.labels(outcome.model_name, "kafka").observe(now - sent)


# ---------------------------------------------------------------------------------------------
# micro-batching for request/response front ends
# ---------------------------------------------------------------------------------------------


class MicroBatcher(Generic[T, R]):
    """Collects submissions from many threads into batches for one processing thread.

    A batch starts with the first submission waiting and takes more until it holds
    ``max_batch_size`` items or ``linger_s`` has passed; a submission is never split (one
    larger than ``max_batch_size`` is a batch of its own). ``process`` gets the items of the
    batch and returns one result per item; each submitter's future gets its own results, in
    order, or the exception ``process`` raised.

    Args:
        process: Batch function.
        max_batch_size: Most items per batch.
        linger_s: Longest wait for more items once a batch has one.
        name: Thread name.

    Examples:
        >>> batcher = MicroBatcher(lambda xs: [x * 2 for x in xs], 8, 0.001)
        >>> batcher.start()
        >>> batcher.submit([1, 2]).result(), batcher.submit([5]).result()
        ([2, 4], [10])
        >>> batcher.close()
    """

    def __init__(self, process: Callable[[list[T]], list[R]], max_batch_size: int = 64,
                 linger_s: float = 0.002, name: str = "refluent-batcher") -> None:
        self.process = process
        self.max_batch_size = max_batch_size
        self.linger_s = linger_s
        self.name = name
        self.batches = 0
        self._queue: queue.SimpleQueue[tuple[list[T], Future[list[R]]] | None] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        """Start the processing thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def submit(self, items: Sequence[T]) -> Future[list[R]]:
        """Queue ``items`` for the next batch; the future holds their results."""
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        fut: Future[list[R]] = Future()
        if not items:
            fut.set_result([])
            return fut
        self._queue.put((list(items), fut))
        return fut

    def close(self, timeout: float = 10.0) -> None:
        """Process what was submitted, then stop the thread."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        held: tuple[list[T], Future[list[R]]] | None = None
        stopping = False
        while not stopping or held is not None:
            first = held if held is not None else self._queue.get()
            held = None
            if first is None:
                stopping = True
                continue
            batch = [first]
            size = len(first[0])
            deadline = time.monotonic() + self.linger_s
            while size < self.max_batch_size:
                wait = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                if size + len(nxt[0]) > self.max_batch_size:
                    held = nxt
                    break
                batch.append(nxt)
                size += len(nxt[0])
            self._process(batch)

    def _process(self, batch: list[tuple[list[T], Future[list[R]]]]) -> None:
        items = [item for sub, _ in batch for item in sub]
        self.batches += 1
        try:
            results = self.process(items)
            if len(results) != len(items):
                raise RuntimeError(f"{self.name}: {len(results)} result(s) for {len(items)} "
                                   "item(s)")
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting submitter
            for _, fut in batch:
                fut.set_exception(exc)
            return
        start = 0
        for sub, fut in batch:
            fut.set_result(results[start:start + len(sub)])
            start += len(sub)


class PredictionPublisher:
    """Publishes predictions made outside the Kafka loop (HTTP) to the predictions topic.

    Records are handed to an idempotent producer without waiting for the broker, so a response
    does not wait for Kafka; a background thread serves delivery reports, and a record the
    broker refuses is logged and counted (``refluent_serving_publish_failures_total``).
    :meth:`close` waits for everything queued.

    Args:
        settings: Refluent settings.
        bootstrap_servers: Kafka brokers.
        topic: Predictions topic.
    """

    def __init__(self, settings: Settings, bootstrap_servers: str,
                 topic: str = PREDICTIONS_TOPIC) -> None:
        self.topic = topic
        self.failures = 0
        self.published = 0
        self._producer = Producer(settings.kafka, bootstrap_servers,
                                  on_delivery=self._on_delivery)
        self._serde = JsonSerde(Prediction)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="refluent-publisher",
                                        daemon=True)
        self._thread.start()

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failures += 1
            m.PUBLISH_FAILURES.inc()
            core_metrics.DELIVERY_FAILURES.labels(msg.topic() or self.topic).inc()
            log.error("prediction not published to %s: %s", msg.topic(), err)

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def publish(self, predictions: Sequence[Prediction]) -> None:
        """Queue ``predictions`` (keyed by entity id, else prediction id)."""
        encode = self._serde.encode
        for p in predictions:
            self._producer.produce(self.topic, encode(p), p.entity_id or p.prediction_id)
        self.published += len(predictions)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued prediction is acknowledged.

        Raises:
            DeliveryError: records were still in flight after ``timeout``.
        """
        self._producer.flush(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Flush, then stop the delivery thread and the producer."""
        try:
            self._producer.flush(timeout)
        finally:
            self._stop.set()
            self._thread.join(5)
            self._producer.close(timeout)


# ---------------------------------------------------------------------------------------------
# assembly
# ---------------------------------------------------------------------------------------------


def build_scorer(
    settings: Settings,
    *,
    models: Sequence[str] = (),
    views: str | Sequence[Any] | None = None,
    registry: Any | None = None,
    reader: OnlineFeatureReader | None = None,
    only_named: bool | None = None,
) -> Scorer:
    """The scoring path from ``settings``: the registry, a model holder, the online store and
    the declared views. Nothing is loaded or connected yet (see :meth:`ModelHolder.start`
    and :meth:`~refluent.serving.online.OnlineFeatureReader.setup`).

    Args:
        settings: Refluent settings.
        models: Models loaded at start (and, with ``only_named``, the only ones served).
        views: The views module (default ``processing.views``) or the views themselves;
            none declared means request-time features only.
        registry: The model registry (default: :meth:`ModelRegistry.from_settings`).
        reader: The online store reader (default: the configured Redis).
        only_named: Serve only ``models`` (default: True when some are named).
    """
    from refluent.errors import ConfigError
    from refluent.processors.features import discover

    if registry is None:
        from refluent.registry import ModelRegistry

        registry = ModelRegistry.from_settings(settings)
    target = views if views is not None else settings.processing.views
    declared = list(discover(target)) if isinstance(target, str) else list(target or [])
    names = {v.name for v in declared}
    unknown = sorted(set(settings.serving.view_policies) - names)
    if unknown:
        raise ConfigError("serving.view_policies", f"names view(s) {', '.join(unknown)} that "
                          f"are not declared (declared: {', '.join(sorted(names)) or 'none'})",
                          "fix the view names, or pass the views module with --views")
    if reader is None and declared:
        from refluent.serving.online import OnlineFeatureReader

        reader = OnlineFeatureReader.from_settings(settings)
    holder = ModelHolder(registry, names=models, refresh_s=settings.serving.model_refresh_s,
                         only_named=bool(models) if only_named is None else only_named)
    return Scorer.from_settings(settings, holder, reader, FeatureCatalog(declared))
