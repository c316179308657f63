"""The native engine: feature views in micro-batches on confluent-kafka, state in memory.

One consumer-group member (:class:`~refluent.streams.kafka.ConsumerLoop`, group
``processing.app_id``) takes up to ``processing.batch_size`` records at a time from the views'
source topics and their by-entity topics, and for each batch:

1. decodes each record once by its topic's contract (a record that does not decode, or that a
   view rejects, goes to ``<source>.dlq`` as with every engine) and applies it through the
   view's pure :class:`~refluent.processors.runtime.ViewRuntime` to the entity states held in
   memory (decoded, one dict per entity);
2. produces the batch's feature updates to ``features.<view>``, and the records to repartition
   to ``<app>-<view>-by-entity`` (a record not keyed by the view's entity, or on a topic
   partitioned otherwise than the view's state: keyed by entity, with its source topic,
   partition and offset in headers), and waits until they are acknowledged;
3. writes the last state of each entity the batch changed to the view's changelog
   ``<app>-state-<view>-changelog`` (compacted; key the entity as a JSON string, value the state
   as JSON) and waits for it;
4. hands the batch back to the loop, which commits the next offsets.

So a committed offset never passes an update, a forward or a state that is not durable, and a
crash at any moment loses nothing. A record replayed after a crash changes nothing: each state
keeps the last source offset applied per source partition (its last update is published again).

Partitioning: partition ``p`` of a view's state is fed by partition ``p`` of its by-entity
topic and, for records applied where they are read, by partition ``p`` of a source topic with
as many partitions. The group uses the range assignor, which gives a member the same partition
numbers of every subscribed topic with the same partition count, so one member holds all that
feeds a state partition. When partitions are assigned, their states are read back from the
changelog (to its exact end: fetch-response high watermark); when they are revoked, dropped.
Scale-out is more members of the group: each restores only its own partitions.

A CDC truncate has no key, so it arrives on one partition of its topic: an entity-state view
applies it to every state partition the member holds (with several members, each applies only
the truncates of its own partitions, as with Faust).

The changelog and by-entity topics are named and written as the Faust engine's are: an app
moved from the Faust engine to this one (same ``processing.app_id``) carries on from Faust's
states and committed offsets.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from refluent.config import Settings
from refluent.engines.base import Engine
from refluent.errors import require
from refluent.observability import metrics
from refluent.processors.cdc import is_newer
from refluent.processors.features import View
from refluent.processors.runtime import TRUNCATED, State, ViewRuntime
from refluent.streams.contracts import CdcEnvelope
from refluent.streams.errors import DecodeError, StreamError
from refluent.streams.origin import Origin
from refluent.streams.processing import RecordRejected

if TYPE_CHECKING:
    from confluent_kafka import Message, TopicPartition

    from refluent.streams.kafka import Producer

log = logging.getLogger(__name__)

H_TOPIC = "refluent.src.topic"
H_PARTITION = "refluent.src.partition"
H_OFFSET = "refluent.src.offset"
LEVELS = {"crit": logging.CRITICAL, "error": logging.ERROR, "warn": logging.WARNING,
          "info": logging.INFO, "debug": logging.DEBUG}
"""``refluent process --loglevel`` names."""
FETCH_WAIT_MS = 20
"""The consumer's fetch wait (librdkafka's default is 500 ms). Kafka answers a fetch as soon as
data arrives, but some Kafka-compatible brokers (the embedded one) hold it for the whole wait,
which would be feature latency; a short wait costs only idle fetches. ``kafka.extra`` wins."""
_RANGE: dict[str, Any] = {"partition.assignment.strategy": "range"}
"""The same partition numbers of every input topic to one member (see the module)."""


class MemoryStates:
    """One state partition of a view: entity -> decoded state (the runtime's ``States``).

    A state handed out is the stored one: the runtime changes it in place only when it applies
    an event, and returns it in the outcome, which the engine marks for the changelog.
    """

    __slots__ = ("data",)

    def __init__(self, data: dict[str, State] | None = None) -> None:
        self.data: dict[str, State] = data if data is not None else {}

    def get(self, key: str) -> State:
        return self.data.get(key) or {}

    def items(self) -> list[tuple[str, State]]:
        return list(self.data.items())


class HeldStates:
    """Every state partition of a view this member holds, as one ``States``: a truncate is a
    change of the whole table, and arrives on one partition of its topic (it has no key)."""

    __slots__ = ("partitions",)

    def __init__(self, partitions: dict[int, MemoryStates]) -> None:
        self.partitions = partitions

    def get(self, key: str) -> State:
        p = self.holder(key)
        return {} if p is None else self.partitions[p].get(key)

    def items(self) -> list[tuple[str, State]]:
        """Every state held (the truncate marker once: the runtime skips it)."""
        return [item for p in sorted(self.partitions) for item in self.partitions[p].items()
                if item[0] != TRUNCATED]

    def holder(self, key: str) -> int | None:
        """The state partition holding ``key`` (None: none)."""
        return next((p for p, states in self.partitions.items() if key in states.data), None)


@dataclass
class _ViewPlan:
    """How the engine runs one view."""

    runtime: ViewRuntime
    partitions: int
    """State partitions."""
    changelog: str
    by_entity: str | None
    """The repartition topic (None: every record is applied where it is read)."""
    direct: frozenset[str] = frozenset()
    """Source topics partitioned like the state: records keyed by their entity are applied
    where they are read."""
    states: dict[int, MemoryStates] = field(default_factory=dict)
    dirty: dict[int, dict[str, State]] = field(default_factory=lambda: defaultdict(dict))
    seconds: Any = None
    updates: Any = None
    published: int = 0
    """Updates of the batch in hand (counted once per batch)."""
    applied: int = 0
    busy: float = 0.0
    """Records applied in the batch in hand and the seconds it took (observed per batch)."""


class NativeEngine(Engine):
    """Runs ``views`` in micro-batches (see the module; arguments as :class:`Engine`'s)."""

    name = "native"

    def __init__(self, views: Sequence[View], settings: Settings, bootstrap_servers: str,
                 *, partitions: dict[str, int] | None = None) -> None:
        super().__init__(views, settings, bootstrap_servers, partitions=partitions)
        self.app_id = settings.processing.app_id
        self.batch_size = settings.processing.batch_size
        self.plans: list[_ViewPlan] = []
        for runtime in self.runtimes:
            view = runtime.view
            n = self.state_partitions(runtime)
            direct = frozenset(view.sources) if runtime.keyed_by_source else frozenset(
                t for t in view.sources if self.partitions.get(t, n) == n)
            self.plans.append(_ViewPlan(
                runtime, n, f"{self.app_id}-state-{view.name}-changelog",
                None if runtime.keyed_by_source else f"{self.app_id}-{view.name}-by-entity",
                direct, seconds=metrics.ENGINE_RECORD_SECONDS.labels(view.name),
                updates=metrics.FEATURE_UPDATES.labels(view.name)))
        self._by_source: dict[str, list[_ViewPlan]] = defaultdict(list)
        self._by_entity: dict[str, _ViewPlan] = {}
        for plan in self.plans:
            for source in plan.runtime.view.sources:
                self._by_source[source].append(plan)
            if plan.by_entity is not None:
                self._by_entity[plan.by_entity] = plan
        self._out: Producer | None = None
        self.stats.update(batches=0, forwarded=0, restored=0, changelog=0)

    # -- topics ----------------------------------------------------------------------------

    def internal_topics(self) -> list[Any]:
        """The changelog (compacted, kept forever) and by-entity topics, as topic specs."""
        from refluent.streams.topics import TopicSpec

        specs = []
        for plan in self.plans:
            specs.append(TopicSpec(plan.changelog, None, "entity (JSON string)",
                                   plan.partitions, self.settings.topics.replication_factor,
                                   retention_ms=-1, cleanup_policy="compact",
                                   doc=f"state of view {plan.runtime.view.name}"))
            if plan.by_entity is not None:
                specs.append(TopicSpec(plan.by_entity, None, "entity", plan.partitions,
                                       self.settings.topics.replication_factor,
                                       doc=f"records of view {plan.runtime.view.name} "
                                           "repartitioned by entity"))
        return specs

    def inputs(self) -> list[str]:
        """The topics the engine consumes: sources and by-entity topics."""
        return sorted({*self._by_source, *self._by_entity})

    # -- state partitions ------------------------------------------------------------------

    def _owned(self, assigned: list[tuple[str, int]]) -> set[tuple[int, int]]:
        """(plan index, state partition) pairs the assigned input partitions feed."""
        owned = set()
        for i, plan in enumerate(self.plans):
            for topic, p in assigned:
                if topic == plan.by_entity or topic in plan.direct:
                    owned.add((i, p))
        return owned

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        log.info("native engine: assigned %s", _names(partitions))
        owned = self._owned([(tp.topic, tp.partition) for tp in partitions])
        for i, plan in enumerate(self.plans):
            for p in list(plan.states):
                if (i, p) not in owned:
                    del plan.states[p]
        todo = sorted((i, p) for i, p in owned if p not in self.plans[i].states)
        if todo:
            self._restore(todo)
        log.info("native engine: ready, %d state partition(s) held", len(owned))

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Drop the states of revoked (or lost) partitions: whoever holds them next writes
        their changelog, so a copy kept here would go stale."""
        if partitions:
            log.info("native engine: revoked %s", _names(partitions))
        gone = self._owned([(tp.topic, tp.partition) for tp in partitions])
        for i, p in gone:
            self.plans[i].states.pop(p, None)
            self.plans[i].dirty.pop(p, None)

    def _restore(self, todo: list[tuple[int, int]]) -> None:
        """Read the states of ``todo`` from their changelog partitions, to the exact end."""
        from refluent.streams.kafka import exact_ends

        ck: Any = require("confluent_kafka", "kafka")
        kafka = self.settings.kafka
        wanted = {(self.plans[i].changelog, p): (i, p) for i, p in todo}
        ends = exact_ends(kafka, self.bootstrap_servers, wanted)
        started = time.perf_counter()
        loaded: dict[tuple[int, int], dict[str, State]] = {ip: {} for ip in todo}
        left = {tp for tp, end in ends.items() if end > 0}
        if left:
            conf = kafka.client_config(self.bootstrap_servers)
            conf.update({"group.id": f"{self.app_id}-restore", "enable.auto.commit": False,
                         "enable.partition.eof": True, **kafka.large_fetch_config()})
            consumer = ck.Consumer(conf)
            try:
                consumer.assign([ck.TopicPartition(t, p, ck.OFFSET_BEGINNING)
                                 for t, p in sorted(left)])
                deadline = time.monotonic() + 120
                while left:
                    if time.monotonic() > deadline:
                        raise StreamError(f"restoring {sorted(left)}: the changelog did not "
                                          "reach its end within 120 s")
                    for msg in consumer.consume(10_000, 0.5):
                        tp = (msg.topic(), msg.partition())
                        err = msg.error()
                        if err is not None:
                            if err.code() == ck.KafkaError._PARTITION_EOF:
                                if ends[tp] <= (msg.offset() or 0):
                                    left.discard(tp)
                                continue
                            raise StreamError(f"restoring {tp}: {err.str()}")
                        states = loaded[wanted[tp]]
                        key = orjson.loads(msg.key() or b'""')
                        value = msg.value()
                        if value is None:
                            states.pop(key, None)
                        else:
                            states[key] = orjson.loads(value)
                        if (msg.offset() or 0) + 1 >= ends[tp]:
                            left.discard(tp)
            finally:
                consumer.close()
        for (i, p), states in loaded.items():
            self.plans[i].states[p] = MemoryStates(states)
            self.stats["restored"] += len(states)
        log.info("restored %d state partition(s), %d entities, in %.2fs", len(todo),
                 sum(len(s) for s in loaded.values()), time.perf_counter() - started)

    # -- one batch -------------------------------------------------------------------------

    def handle(self, records: list[Message]) -> None:
        """Apply, publish, make durable (see the module); raises to stop without commit."""
        out = self._out
        assert out is not None  # noqa: S101 - run() opened it
        for msg in records:
            topic = msg.topic() or ""
            plan = self._by_entity.get(topic)
            if plan is not None:
                self._apply_forwarded(plan, msg)
            else:
                self._route(topic, msg)
        out.flush()  # updates and forwards acknowledged before the states that follow them
        written = 0
        for plan in self.plans:
            for p, changed in plan.dirty.items():
                dump = plan.runtime.dump
                for key, state in changed.items():
                    out.produce(plan.changelog, orjson.dumps(dump(state)), orjson.dumps(key),
                                partition=p)
                written += len(changed)
            plan.dirty.clear()
            if plan.published:
                plan.updates.inc(plan.published)
                self.stats["updates"] += plan.published
                plan.published = 0
            if plan.applied:
                plan.seconds.observe(plan.busy / plan.applied)
                plan.applied, plan.busy = 0, 0.0
        if written:
            out.flush()
        self.stats["changelog"] += written
        self.stats["batches"] += 1

    def _route(self, topic: str, msg: Message) -> None:
        origin = Origin(topic, msg.partition() or 0, msg.offset() or 0)
        self.stats["in"] += 1  # the loop counts refluent_records_in_total per topic
        value = msg.value()
        try:
            event = self.decode(topic, value)
        except DecodeError as exc:
            self.reject(origin, msg.key(), value, exc)
            return
        for plan in self._by_source.get(topic, ()):
            runtime = plan.runtime
            if plan.by_entity is None:
                self._apply(plan, origin.partition, origin, msg, event)
                continue
            try:
                entity = runtime.entity(event)
            except RecordRejected as exc:
                self.reject(origin, msg.key(), value, exc)
                continue
            if entity is None:
                continue
            key = entity.encode()
            if topic in plan.direct and msg.key() == key:
                self._apply(plan, origin.partition, origin, msg, event)
                continue
            assert self._out is not None  # noqa: S101
            self._out.produce(plan.by_entity, value or b"", key, headers=[
                (H_TOPIC, topic.encode()), (H_PARTITION, str(origin.partition).encode()),
                (H_OFFSET, str(origin.offset).encode())])
            self.stats["forwarded"] += 1

    def _apply_forwarded(self, plan: _ViewPlan, msg: Message) -> None:
        headers: dict[str, Any] = dict(msg.headers() or ())
        try:
            origin = Origin(bytes(headers[H_TOPIC]).decode(), int(headers[H_PARTITION]),
                            int(headers[H_OFFSET]))
        except (KeyError, TypeError, ValueError) as exc:
            raise StreamError(f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: a forwarded "
                              f"record without its source headers ({exc})") from exc
        try:
            event = self.decode(origin.topic, msg.value())
        except DecodeError as exc:
            self.reject(origin, msg.key(), msg.value(), exc)
            return
        self._apply(plan, msg.partition() or 0, origin, msg, event)

    def _apply(self, plan: _ViewPlan, partition: int, origin: Origin, msg: Message,
               event: Any) -> None:
        started = time.perf_counter()
        states = plan.states.get(partition)
        if states is None:  # assigned without its state: never, unless the assignor differs
            raise StreamError(f"view {plan.runtime.view.name}: state partition {partition} is "
                              f"not held by this member (record {origin})")
        whole_table = (plan.runtime.keyed_by_source and isinstance(event, CdcEnvelope)
                       and event.op == "t")
        held = HeldStates(plan.states) if whole_table else None
        try:
            outcome = plan.runtime.process(event, origin, states if held is None else held)
        except RecordRejected as exc:
            self.reject(origin, msg.key(), msg.value(), exc)
            return
        if held is not None:  # each state changed goes back to the partition holding it
            for key, state in outcome.states.items():
                if key == TRUNCATED:  # every partition checks its own changes against it
                    for p, part in plan.states.items():
                        if is_newer(state["order"], part.get(TRUNCATED).get("order")):
                            part.data[key] = state
                            plan.dirty[p][key] = state
                    continue
                where = held.holder(key)
                assert where is not None  # noqa: S101 - a truncate changes only states it was given
                plan.states[where].data[key] = state
                plan.dirty[where][key] = state
        elif outcome.states:
            states.data.update(outcome.states)
            plan.dirty[partition].update(outcome.states)
        if outcome.updates:
            out = self._out
            assert out is not None  # noqa: S101
            topic = plan.runtime.view.topic
            for update in outcome.updates:
                out.produce(topic, orjson.dumps(update), update["entity_id"])
            plan.published += len(outcome.updates)
        plan.applied += 1
        plan.busy += time.perf_counter() - started

    # -- running ---------------------------------------------------------------------------

    def run(self, loglevel: str = "warn") -> None:
        """Consume until SIGTERM/SIGINT (blocks)."""
        from refluent.streams.kafka import ConsumerLoop, Producer, TopicAdmin

        logging.basicConfig(level=LEVELS.get(loglevel, logging.WARNING),
                            format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
        logging.getLogger("refluent").setLevel(LEVELS.get(loglevel, logging.WARNING))
        kafka = self.settings.kafka
        TopicAdmin(kafka, self.bootstrap_servers).ensure(self.internal_topics())
        self.setup()
        self._out = Producer(kafka, self.bootstrap_servers)
        loop = ConsumerLoop(
            kafka, self.bootstrap_servers, self.app_id, self.inputs(),
            batch_size=self.batch_size, on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_revoke, **_RANGE, **kafka.short_fetch_wait(FETCH_WAIT_MS))
        log.info("native engine: joining group %s for %s", self.app_id, ", ".join(self.inputs()))
        try:
            loop.run(self.handle, drain=True)
        finally:
            self._out.close()
            self._out = None
            self.close()


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"


__all__ = ["MemoryStates", "NativeEngine"]
