"""The feedback service: predictions and labels in, labelled examples out, models learning.

:class:`FeedbackService` consumes ``predictions`` and ``feedback`` with one
:class:`~refluent.streams.kafka.ConsumerLoop`, decodes them with their contracts (a record that
does not decode goes to ``<topic>.dlq`` with step ``decode``), merges them by event time
(:class:`~refluent.feedback.merge.EventTimeMerger`), joins labels to predictions
(:class:`~refluent.feedback.join.FeedbackJoin` over
:class:`~refluent.feedback.state.redis.RedisJoinStore`), teaches the online learners
(:class:`~refluent.online_learning.learner.LearnerPool`) and produces one
:class:`~refluent.streams.contracts.LabeledExample` per joined label to ``examples``.
Rejected labels go to ``feedback.dlq`` with step ``feedback_join`` and the reason.
:class:`FeedbackProcessor` is the part without Kafka (join and learning over events already in
merge order), which benchmarks and tests drive directly.

Per released batch: process every event; produce the examples and dead letters and flush the
producer; commit the join's Redis writes together with the progress (the next offset of every
input partition whose outputs are now delivered); then checkpoint the members that are due,
append their rows to the lake table ``model_metrics``, and promote a winning challenger. The
Redis write is sent right after the next batch's read and runs while that batch is processed
(see :meth:`~refluent.feedback.state.redis.RedisJoinStore.begin`); the next batch's outputs are
produced only once it is confirmed, and an idle poll, a checkpoint, a rebalance and the stop
send and confirm it at once. When one input partition lags, the merge buffers the others'
events; once it holds ``feedback.merge_max_buffered`` of them, the partitions ahead are paused
until the lagging one catches up (see :mod:`refluent.feedback.merge`).

Delivery and restart. The service resumes from its own offsets, not from the group's: per
partition the lowest offset of any learning member's latest checkpoint, else the progress
recorded in Redis, else the beginning (a partition assigned again during a run resumes where
the run got to). Events between a checkpoint and a crash are read again:
the join recognises what they already wrote (see :mod:`refluent.feedback.join`), each member
skips the events its checkpoint holds, and outputs of events below the recorded progress are
not produced again. So a restarted service ends with the models, metrics and examples of a run
that never stopped; only a crash between a producer flush and the sending of the Redis write
that follows it repeats that one batch's examples and dead letters (at-least-once; examples
are keyed by entity and carry their prediction id, which is unique per example). The group's
offsets are committed for monitoring only.

Scale: the learners keep models in memory, so one member of the group should own every
partition of both topics (run one replica per set of models).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from refluent.config import Settings
from refluent.feedback.errors import JOIN_STEP, LabelRecordExpiredError
from refluent.feedback.join import FeedbackJoin, Joined, RejectedLabel
from refluent.feedback.merge import EventTimeMerger, Kind, TimedEvent
from refluent.feedback.state.base import JoinState
from refluent.feedback.state.memory import MemoryJoinState
from refluent.feedback.state.redis import RedisJoinBatch, RedisJoinStore
from refluent.observability import learning as m
from refluent.streams.contracts import Feedback, LabeledExample, Prediction
from refluent.streams.errors import DecodeError
from refluent.streams.origin import Origin
from refluent.streams.serde import JsonSerde
from refluent.streams.topics import EXAMPLES, FEEDBACK, PREDICTIONS

if TYPE_CHECKING:
    from confluent_kafka import Message, TopicPartition

    from refluent.online_learning.learner import LearnerPool
    from refluent.online_learning.metrics import MetricsRow
    from refluent.privacy.errors import BudgetExceededError
    from refluent.registry import ModelRegistry
    from refluent.sinks.iceberg import IcebergSink
    from refluent.streams.deadletter import DeadLetterRouter
    from refluent.streams.kafka import ConsumerLoop, LoopStats, Producer, StopSignal

log = logging.getLogger(__name__)

OFFSET_BEGINNING = -2
OFFSET_END = -1
METRICS_TABLE = "model_metrics"

Offsets = dict[tuple[str, int], int]


@dataclass
class BatchResult:
    """What processing one batch produced.

    Attributes:
        examples: Labelled examples to produce.
        rejected: Labels to dead-letter (step ``feedback_join``).
        undecodable: Records that did not decode, to dead-letter (step ``decode``).
        orphans: Waiting labels whose record expired from the store before their deadline.
        state: The join state the batch wrote to (committed by
            :meth:`FeedbackProcessor.commit`).
        events: Events processed.
    """

    examples: list[LabeledExample] = field(default_factory=list)
    rejected: list[RejectedLabel] = field(default_factory=list)
    undecodable: list[TimedEvent] = field(default_factory=list)
    orphans: list[Origin] = field(default_factory=list)
    state: JoinState | None = None
    events: int = 0


@dataclass
class FeedbackStats:
    """Counts of one run (outputs replayed and not produced again are not counted)."""

    events: int = 0
    predictions: int = 0
    labels: int = 0
    joined: int = 0
    examples: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    checkpoints: int = 0
    dp_updates: int = 0
    promotions: int = 0
    pauses: int = 0
    """Times partitions ahead of a lagging one were paused (the merge's buffer was full)."""
    peak_buffered: int = 0
    """Most events the merge held after a poll."""
    loop: LoopStats | None = None

    def count_dead(self, reason: str, n: int = 1) -> None:
        """Count ``n`` dead letters of ``reason``."""
        self.dead_lettered[reason] = self.dead_lettered.get(reason, 0) + n


class FeedbackProcessor:
    """Join and online learning over events in merge order, without Kafka.

    Args:
        join: The join logic (its ``visible`` is set to :meth:`visible`).
        learners: The learners (None: join only).
        store: The Redis store (None: state in memory, as in tests and benchmarks).
        memory: The in-memory state to use without a store (default: a new one).
        emitted: Per partition, the offset below which outputs were already delivered.
        start: Per partition, where reading starts (the positions before anything is
            processed).
        feedback_partitions: The feedback partitions this process owns (their waiting labels
            are its to expire); None: every one.
        group: Consumer group, naming the progress record in the store.
        refresh_s: How often the learners look for alias changes made elsewhere.
    """

    def __init__(self, join: FeedbackJoin, learners: LearnerPool | None = None,
                 store: RedisJoinStore | None = None, *, memory: MemoryJoinState | None = None,
                 emitted: Offsets | None = None,
                 start: Offsets | None = None,
                 feedback_partitions: Callable[[], Collection[tuple[str, int]]] | None = None,
                 group: str = "refluent-feedback", refresh_s: float = 5.0) -> None:
        self.join = join
        join.visible = self.visible
        self.learners = learners
        self.store = store
        self.memory = (memory or MemoryJoinState()) if store is None else None
        self.emitted: Offsets = dict(emitted or {})
        self.positions: Offsets = dict(start or {})
        self.feedback_partitions = feedback_partitions
        self.group = group
        self.refresh_s = refresh_s
        self._next_refresh = time.monotonic() + refresh_s
        self.stats = FeedbackStats()
        self._m_pending = m.PREDICTIONS_SEEN.labels("pending")
        self._m_repeated = m.PREDICTIONS_SEEN.labels("repeated")
        self._m_joined: dict[str, Any] = {}

    def visible(self, ref: Origin) -> bool:
        """Whether the event at ``ref`` was processed in this run (below its partition's
        position); events of partitions this process does not read are."""
        position = self.positions.get((ref.topic, ref.partition))
        return position is None or ref.offset < position

    def _fresh(self, trigger: Origin | None) -> bool:
        """Whether an output caused by ``trigger`` is still to be delivered (not a replay of
        one delivered before the restart)."""
        if trigger is None or not self.emitted:
            return True
        return trigger.offset >= self.emitted.get((trigger.topic, trigger.partition), 0)

    def _partitions(self) -> Collection[tuple[str, int]] | None:
        return self.feedback_partitions() if self.feedback_partitions is not None else None

    def process(self, events: Sequence[TimedEvent]) -> BatchResult:
        """Join and learn ``events`` (in merge order), then expire labels that waited too
        long. Outputs are returned, not sent; call :meth:`commit` once they are delivered."""
        partitions = self._partitions()
        state: JoinState
        if self.store is not None:
            state = self.store.begin(events, clock_us=self.join.clock_us,
                                     feedback_partitions=partitions or ())
        else:
            assert self.memory is not None  # noqa: S101 - set when there is no store
            state = self.memory
        result = BatchResult(state=state, events=len(events))
        join, learners, stats = self.join, self.learners, self.stats
        learner_of = learners.get if learners is not None else None
        positions = self.positions
        predictions = labels = pending = repeated = waiting = 0
        joined_by_model: Counter[str] = Counter()
        for e in events:
            source = e.source
            event = e.event
            if event is None:
                if self._fresh(source):
                    result.undecodable.append(e)
            elif isinstance(event, Feedback):
                labels += 1
                out = join.on_feedback(state, event, source, e.raw, e.record_key)
                if out.waiting is not None:
                    waiting += 1
                if out.joined or out.rejected:
                    self._outcomes(out.joined, out.rejected, result, joined_by_model)
            else:
                predictions += 1
                out = join.on_prediction(state, event, source, e.raw or b"")
                question = out.question
                if out.repeated:
                    repeated += 1
                elif question is not None:
                    pending += 1
                    learner = learner_of(event.model_name) if learner_of is not None else None
                    if learner is not None:
                        learner.answer(question)
                        state.save_prediction(question, new=False)
                if out.joined or out.rejected:
                    self._outcomes(out.joined, out.rejected, result, joined_by_model)
            positions[(source.topic, source.partition)] = source.offset + 1
        stats.predictions += predictions
        stats.labels += labels
        for rejected in join.expire(state, partitions):
            self._reject(rejected, result)
        if isinstance(state, RedisJoinBatch):
            result.orphans = list(state.orphans)
        stats.events += len(events)
        # Counted per batch: a labelled metric costs a lock and a lookup per call.
        self._m_pending.inc(pending)
        self._m_repeated.inc(repeated)
        m.FEEDBACK_WAITING.inc(waiting)
        for model, n in joined_by_model.items():
            counter = self._m_joined.get(model)
            if counter is None:
                counter = self._m_joined[model] = m.FEEDBACK_JOINED.labels(model)
            counter.inc(n)
        if join.clock_us is not None:
            m.JOIN_CLOCK.set(join.clock_us / 1e6)
        if self.store is not None:
            self.store.confirm()  # the previous batch's write, which ran meanwhile
        return result

    def _outcomes(self, joined: Sequence[Joined], rejected: Sequence[RejectedLabel],
                  result: BatchResult, joined_by_model: Counter[str]) -> None:
        learners = self.learners
        for j in joined:
            model = j.example.model_name
            learner = learners.get(model) if learners is not None else None
            if learner is not None:
                learner.learn(j)
            joined_by_model[model] += 1
            if self._fresh(j.trigger):
                result.examples.append(j.example)
        self.stats.joined += len(joined)
        for r in rejected:
            self._reject(r, result)

    def _reject(self, rejected: RejectedLabel, result: BatchResult) -> None:
        m.FEEDBACK_REJECTED.labels(rejected.error.reason).inc()
        if self._fresh(rejected.trigger):
            result.rejected.append(rejected)

    def commit(self, result: BatchResult, *, defer: bool = False) -> None:
        """Make the batch's join state durable with the progress (its outputs delivered).

        With ``defer`` the write is sent with the next batch's read and runs while that batch
        is processed; :meth:`process` waits for it before returning (so a failed write stops
        the next batch's outputs) and :meth:`flush` waits for it now.
        """
        if isinstance(result.state, RedisJoinBatch):
            result.state.commit(self.positions, self.group, defer=defer)

    def flush(self) -> None:
        """Wait until every committed batch is written to the store."""
        if self.store is not None:
            self.store.sync()

    def after_batch(self, *, force: bool = False) -> list[MetricsRow]:
        """Run the DP updates whose micro-batch is full, checkpoint the members that are due
        (every member that changed, with ``force``; never one with examples waiting in its DP
        micro-batch), promote a winning challenger and publish the metrics; returns the
        ``model_metrics`` rows of the checkpoints saved."""
        if self.learners is None:
            return []
        rows: list[MetricsRow] = []
        clock = self.join.clock_us
        now = time.monotonic()
        refresh = now >= self._next_refresh
        if refresh:
            self._next_refresh = now + self.refresh_s
        for learner in self.learners.all():
            leaving = learner.maybe_refresh() if refresh else []
            self.stats.dp_updates += len(learner.run_updates())
            due = ([mb for mb in learner.members.values() if mb.can_checkpoint] if force
                   else learner.due())
            for member in list(due) + leaving:
                if force and member.checkpoint_seen == member.seen:
                    continue
                self.flush()  # a checkpoint's offsets must not pass the store's state
                rows.append(learner.checkpoint(member, self.positions, clock)[1])
            promotion = learner.check_promotion() if learner.auto_promote else None
            if promotion is not None:
                self.flush()
                self.stats.promotions += 1
                for member in learner.promote(promotion):
                    rows.append(learner.checkpoint(member, self.positions, clock)[1])
            learner.publish()
        self.stats.checkpoints += len(rows)
        return rows


class FeedbackService:
    """``refluent feedback``: the Kafka side around :class:`FeedbackProcessor` (see the module
    docstring).

    Lifecycle: :meth:`run` opens the store, the registry's learners, the producer and the lake
    table, consumes until stopped (SIGTERM/Ctrl-C, ``max_records``, ``idle_timeout`` or
    ``until_caught_up``), then checkpoints (unless ``checkpoint_on_stop`` is False) and closes.

    Args:
        settings: Refluent settings (``feedback``, ``kafka``, ``redis``, ``lake``).
        bootstrap_servers: Kafka brokers.
        redis_url: Redis URL of the join's state.
        registry: The model registry (default: the one in the lake of ``settings``).
        models: Models to learn (None: every model with a champion).
        predictions_topic: Topic of the predictions.
        feedback_topic: Topic of the labels.
        examples_topic: Topic the examples go to.
        group: Consumer group (default ``feedback.group``).
        idle_s: How long a partition read to its end stays quiet before the merge stops
            waiting for it.
        batch_size: Most records per poll.
        from_beginning: Where a partition nothing is known of starts (else at its end).
        checkpoint_on_stop: Checkpoint every member that changed when the run ends.
        metrics_table: Lake table of the checkpoints' metrics (None: not written).
        auto_promote: Promote challengers that beat the champion.
    """

    def __init__(self, settings: Settings, bootstrap_servers: str, redis_url: str, *,
                 registry: ModelRegistry | None = None, models: Sequence[str] | None = None,
                 predictions_topic: str = PREDICTIONS, feedback_topic: str = FEEDBACK,
                 examples_topic: str = EXAMPLES, group: str | None = None,
                 idle_s: float = 1.0, batch_size: int = 500, from_beginning: bool = True,
                 checkpoint_on_stop: bool = True, metrics_table: str | None = METRICS_TABLE,
                 auto_promote: bool = True) -> None:
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.redis_url = redis_url
        self.registry = registry
        self.models = list(models) if models is not None else None
        self.predictions_topic = predictions_topic
        self.feedback_topic = feedback_topic
        self.examples_topic = examples_topic
        self.group = group or settings.feedback.group
        self.idle_s = idle_s
        self.batch_size = batch_size
        self.from_beginning = from_beginning
        self.checkpoint_on_stop = checkpoint_on_stop
        self.metrics_table = metrics_table
        self.auto_promote = auto_promote
        self.kinds: dict[str, Kind] = {predictions_topic: "prediction",
                                       feedback_topic: "feedback"}
        max_bytes = settings.kafka.max_record_bytes
        self._serdes: dict[str, JsonSerde[Any]] = {
            predictions_topic: JsonSerde(Prediction, max_record_bytes=max_bytes),
            feedback_topic: JsonSerde(Feedback, max_record_bytes=max_bytes)}
        self._examples = JsonSerde(LabeledExample)
        self._assigned: set[tuple[str, int]] = set()
        self._paused: set[tuple[str, int]] = set()
        self.processor: FeedbackProcessor | None = None
        self.merger: EventTimeMerger | None = None
        self._loop: ConsumerLoop | None = None
        self._producer: Producer | None = None
        self._router: DeadLetterRouter | None = None
        self._lake: IcebergSink | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> FeedbackService:
        """A service on the brokers and Redis of ``settings`` (else the embedded ones)."""
        from refluent.embedded.services import resolve_bootstrap, resolve_redis_url

        return cls(settings, resolve_bootstrap(settings), resolve_redis_url(settings), **kwargs)

    def ensure_topics(self) -> None:
        """Create the input, output and dead-letter topics if missing."""
        from dataclasses import replace

        from refluent.streams.kafka import TopicAdmin
        from refluent.streams.topics import TopicCatalog

        catalog = TopicCatalog.from_settings(self.settings.topics)
        specs = []
        for base, name in ((PREDICTIONS, self.predictions_topic),
                           (FEEDBACK, self.feedback_topic),
                           (EXAMPLES, self.examples_topic)):
            spec = replace(catalog.get(base), name=name)
            specs += [spec, spec.dlq()]
        TopicAdmin(self.settings.kafka, self.bootstrap_servers).ensure(specs)

    def _exhausted(self, model: str, version: int, error: BudgetExceededError) -> None:
        """The budget refused a DP update: ``budget.exhausted`` to ``alerts``, one alert id
        per version."""
        from refluent.jobs import outcomes

        outcomes.report(self.settings, outcomes.exhausted(model, f"update:{model}:v{version}",
                                                          error))

    # -- running ---------------------------------------------------------------------------
    def run(self, *, stop: StopSignal | None = None, max_records: int | None = None,
            idle_timeout: float | None = None, until_caught_up: bool = False,
            settle_heap: bool = False) -> FeedbackStats:
        """Consume, join and learn until stopped (see :meth:`ConsumerLoop.run` for the stop
        conditions); returns the run's counts.

        With ``settle_heap`` the objects alive once everything is set up (libraries, models,
        the registry's tables) are moved out of the garbage collector's reach before the first
        record (:func:`refluent.serving.service.settle_heap`): for a long-running process.

        Raises:
            FeedbackStoreError: Redis failed (nothing of the batch in hand is committed).
            RegistryError: the registry failed.
            StreamError: Kafka failed.
        """
        from refluent.online_learning.learner import LearnerPool
        from refluent.streams.deadletter import DeadLetterRouter
        from refluent.streams.kafka import ConsumerLoop, Producer

        settings = self.settings
        if self.registry is None:
            from refluent.registry import ModelRegistry

            self.registry = ModelRegistry.from_settings(settings)
        store = RedisJoinStore(self.redis_url, settings.feedback.pending_ttl_s,
                               password=settings.redis.password,
                               key_prefix=settings.redis.key_prefix)
        store.setup()
        producer: Producer | None = None
        try:
            updates = None
            if settings.feedback.dp_updates:
                from refluent.online_learning.dp_updates import DPUpdates

                updates = DPUpdates.from_settings(settings, on_exhausted=self._exhausted)
            pool = LearnerPool(self.registry, settings.feedback, names=self.models,
                               auto_promote=self.auto_promote, updates=updates)
            pool.load()
            join = FeedbackJoin.from_settings(settings.feedback, task_of=pool.task_of,
                                              clock_us=pool.clock_us())
            self.processor = FeedbackProcessor(
                join, pool, store, emitted=store.progress(self.group),
                feedback_partitions=self._feedback_partitions, group=self.group)
            self.merger = EventTimeMerger(self.kinds, idle_s=self.idle_s,
                                          max_buffered=settings.feedback.merge_max_buffered)
            producer = Producer(settings.kafka, self.bootstrap_servers, **{
                "message.max.bytes": settings.kafka.dlq_max_record_bytes + 65536})
            self._producer = producer
            self._router = DeadLetterRouter(producer)
            self._lake = self._open_lake()
            self._loop = ConsumerLoop(
                settings.kafka, self.bootstrap_servers, self.group,
                [self.predictions_topic, self.feedback_topic], batch_size=self.batch_size,
                start_offsets=self._start_offsets, on_assign=self._on_assign,
                on_revoke=self._on_revoke)
            if settle_heap:
                from refluent.serving.service import settle_heap as settle

                settle()
            loop_stats = self._loop.run(
                self._handle, stop=stop, max_records=max_records, idle_timeout=idle_timeout,
                on_idle=self._on_idle, before_close=self._before_close,
                until_caught_up=until_caught_up)
            stats = self.processor.stats
            stats.loop = loop_stats
            return stats
        finally:
            if producer is not None:
                producer.close()
            if self._lake is not None:
                self._lake.close()
            store.close()

    def _open_lake(self) -> IcebergSink | None:
        if not self.metrics_table:
            return None
        from refluent.online_learning.metrics import ModelMetricsTable
        from refluent.sinks.iceberg import IcebergSink

        sink = IcebergSink.from_settings(self.settings, ModelMetricsTable(), self.metrics_table,
                                         max_records=1_000_000, max_seconds=1e9)
        sink.setup()
        return sink

    def _feedback_partitions(self) -> Collection[tuple[str, int]]:
        return {tp for tp in self._assigned if tp[0] == self.feedback_topic}

    def _start_offsets(self, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
        assert self.processor is not None and self.processor.learners is not None  # noqa: S101
        store = self.processor.store
        checkpoints = self.processor.learners.start_offsets()
        self.processor.flush()
        progress = store.progress(self.group) if store is not None else {}
        out: dict[tuple[str, int], int] = {}
        for tp in partitions:
            key = (tp.topic, tp.partition)
            if key in self.processor.positions:
                # Assigned again in this run: the learners already hold what was processed.
                out[key] = self.processor.positions[key]
            elif key in checkpoints:
                out[key] = checkpoints[key]
            elif key in progress:
                out[key] = progress[key]
            else:
                out[key] = OFFSET_BEGINNING if self.from_beginning else OFFSET_END
            if out[key] >= 0:
                self.processor.positions[key] = out[key]
        log.info("feedback service starts at %s", {f"{t}[{p}]": o for (t, p), o in out.items()})
        return out

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._assigned |= set(keys)
        assert self.merger is not None  # noqa: S101 - set before the loop runs
        self.merger.assign(keys)

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        if self.processor is not None:
            self.processor.flush()  # the partitions' next owner reads what this one wrote
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._assigned -= set(keys)
        self._paused -= set(keys)
        assert self.merger is not None  # noqa: S101 - set before the loop runs
        dropped = self.merger.revoke(keys)
        if dropped:
            log.info("dropped %d buffered event(s) of revoked partitions; their next owner "
                     "reads them again", dropped)

    def _drained(self) -> set[tuple[str, int]]:
        """Assigned partitions read up to their high watermark (as of the last fetch)."""
        if self._loop is None:
            return set()
        out = set()
        for lag in self._loop.lag():
            if lag.high_watermark >= 0 and (lag.position is None
                                            or lag.position >= lag.high_watermark):
                out.add((lag.topic, lag.partition))
        return out

    def _handle(self, batch: list[Message]) -> None:
        merger = self.merger
        assert merger is not None  # noqa: S101 - set before the loop runs
        kinds, serdes = self.kinds, self._serdes
        for msg in batch:
            topic: str = msg.topic()  # type: ignore[assignment]  # set on consumed records
            source = Origin(topic, msg.partition(), msg.offset())  # type: ignore[arg-type]
            kind = kinds[topic]
            raw = msg.value()
            try:
                event = serdes[topic].decode(raw)
            except DecodeError as exc:
                merger.push_undecodable(kind, source, raw, msg.key(), exc)
                continue
            merger.push(TimedEvent.of(kind, event, source, raw, msg.key()))  # type: ignore[arg-type]
        stats = self.processor.stats if self.processor is not None else None
        if stats is not None and len(merger) > stats.peak_buffered:
            stats.peak_buffered = len(merger)
        self._drain(merger.release(self._drained()))
        self._backpressure()

    def _on_idle(self) -> None:
        if self.merger is not None and len(self.merger):
            self._drain(self.merger.release(self._drained()))
            self._backpressure()
        if self.processor is not None:
            self.processor.flush()  # no next batch to carry the last write

    def _before_close(self) -> None:
        merger = self.merger
        assert merger is not None and self.processor is not None  # noqa: S101
        if len(merger) and self._assigned and self._drained() >= self._assigned:
            # Everything the topics hold is read: nothing can precede what is buffered.
            self._drain(merger.release_all())
        elif len(merger):
            log.info("leaving %d buffered event(s) to the next run", len(merger))
        self.processor.flush()
        if self.checkpoint_on_stop:
            self._write_rows(self.processor.after_batch(force=True))

    def _backpressure(self) -> None:
        """Pause the partitions the merge names as ahead of a lagging one, resume the others
        (see :mod:`refluent.feedback.merge`). A paused partition's fetched records are dropped
        by the client and fetched again from its position on resume: nothing is lost or
        reordered."""
        merger, loop = self.merger, self._loop
        if merger is None or loop is None:
            return
        want = merger.ahead() & self._assigned
        pause, resume = want - self._paused, self._paused - want
        if not pause and not resume:
            return
        if resume:
            loop.resume(resume)
            log.debug("resumed %s: the merge's buffer is below its cap", sorted(resume))
        if pause:
            loop.pause(pause)
            if self.processor is not None:
                self.processor.stats.pauses += 1
            log.info("paused %s: the merge holds %d event(s), its cap; the lagging "
                     "partitions are read until they catch up", sorted(pause), len(merger))
        self._paused = want

    def _drain(self, events: list[TimedEvent]) -> None:
        m.REORDER_BUFFERED.set(len(self.merger or ()))
        # At most batch_size events per cycle, so checkpoints keep their pace when the merge
        # releases a long run of events at once.
        for start in range(0, len(events), self.batch_size):
            self._cycle(events[start:start + self.batch_size])

    def _cycle(self, events: list[TimedEvent]) -> None:
        processor, producer, router = self.processor, self._producer, self._router
        assert processor is not None and producer is not None and router is not None  # noqa: S101
        result = processor.process(events)
        stats = processor.stats
        encode = self._examples.encode
        for example in result.examples:
            producer.produce(self.examples_topic, encode(example), example.entity_id)
        stats.examples += len(result.examples)
        for r in result.rejected:
            router.route_raw(r.source.topic, r.key, r.raw, JOIN_STEP, r.error,
                             partition=r.source.partition, offset=r.source.offset)
            stats.count_dead(r.error.reason)
        for e in result.undecodable:
            assert e.error is not None  # noqa: S101 - undecodable events carry their error
            router.route_raw(e.source.topic, e.record_key, e.raw, "decode", e.error,
                             partition=e.source.partition, offset=e.source.offset)
            stats.count_dead(str(getattr(e.error, "reason", "decode")))
        for ref in result.orphans:
            error = LabelRecordExpiredError(ref.text(), self.settings.feedback.pending_ttl_s)
            router.route_raw(ref.topic, None, None, JOIN_STEP, error, partition=ref.partition,
                             offset=ref.offset)
            stats.count_dead(error.reason)
        producer.flush()
        processor.commit(result, defer=True)
        self._write_rows(processor.after_batch())

    def _write_rows(self, rows: list[MetricsRow]) -> None:
        if not rows or self._lake is None:
            return
        from refluent.sinks.base import SinkRecord

        records = []
        for row in rows:
            topic, partition, offset = row.coordinates()
            records.append(SinkRecord(topic, partition, offset, row.model.encode(), row))
        self._lake.write(records)
        self._lake.flush()
