"""The Kafka prediction service: score ``inference.requests`` with the models being served.

:class:`KafkaPredictionService` consumes ``inference.requests`` with a
:class:`~refluent.streams.kafka.ConsumerLoop`: a batch is the first request that arrives and
whatever else the client has already fetched (at most ``serving.max_batch_size``; no request
waits for others), scored together by a :class:`~refluent.serving.scorer.Scorer`; predictions
go to ``predictions`` keyed by entity id (the catalog's key; the feedback join finds them by
``prediction_id``) and rejected requests go whole to ``inference.requests.dlq`` with the reason
in the headers (``decode`` step: malformed JSON or contract; ``serving`` step: ``unknown_model``,
``unknown_version``, ``missing_entity``, ``stale_features``, ``missing_features``,
``feature_type``, ``model_input``, ...).

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
"""

from __future__ import annotations

import gc
import time
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from refluent.observability import serving as m
from refluent.observability.stats import quantile
from refluent.serving.scorer import Scorer, ScoreRequest
from refluent.streams.contracts import Prediction, PredictionRequest
from refluent.streams.deadletter import DeadLetterRouter
from refluent.streams.errors import DecodeError
from refluent.streams.kafka import ConsumerLoop, LoopStats, Producer, StopSignal
from refluent.streams.serde import JsonSerde
from refluent.streams.topics import INFERENCE_REQUESTS, PREDICTIONS

if TYPE_CHECKING:

    from confluent_kafka import Message

    from refluent.config import Settings

MAX_UNACKED_S = 1.0
"""Longest the Kafka service scores on while answers are still unacknowledged; then it waits
for them, so a steady stream still commits (and replays at most this much after a crash)."""
IDLE_POLL_S = 0.05
"""Longest the Kafka service blocks waiting for a request before it serves delivery reports
and commits (a request that arrives ends the wait at once)."""
FETCH_WAIT_MS = 10
"""The request consumer's fetch wait (librdkafka's default is 500 ms). A broker answers a fetch
as soon as data arrives, but some Kafka-compatible brokers hold it for the whole wait, which
then becomes request latency; a short wait only costs idle fetches. ``kafka.extra`` wins."""


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
            values = [r[j] * 1000 for r in rows]
            out[f"{stage}_ms_p50"] = round(quantile(values, 0.5), 3)
            out[f"{stage}_ms_p99"] = round(quantile(values, 0.99), 3)
        return out


# ---------------------------------------------------------------------------------------------
# the Kafka front end
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
        requests_topic: str = INFERENCE_REQUESTS,
        predictions_topic: str = PREDICTIONS,
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
        for name, base in ((self.requests_topic, INFERENCE_REQUESTS),
                           (self.predictions_topic, PREDICTIONS)):
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
        overrides = {**kafka.short_fetch_wait(FETCH_WAIT_MS), **self.consumer_overrides}
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
