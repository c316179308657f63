"""The Faust engine: feature views on one machine, state in changelog-backed Faust tables.

Topology, per view:

- A feature view reads each source topic and decodes the record by the topic's contract. A
  record keyed by its entity (logs keyed by ``entity_id``) is applied right there to the view's
  table ``<app>-state-<view>``; any other record is forwarded to ``<app>-<view>-by-entity``
  keyed by entity, with the original topic/partition/offset in headers (a repartition, so one
  entity's state lives on one partition whatever the source is keyed by), and a second agent
  applies it. Updates go to ``features.<view>``.
- An entity-state view reads its ``cdc.<table>`` topic directly: Debezium keys changes by the
  primary key, which is the view's entity.

Delivery: at-least-once from Kafka (the embedded broker cannot run Kafka transactions), kept by
the engine's :class:`~refluent.processors.ledger.DeliveryLedger` rather than by Faust's own
offset tracking (see :mod:`refluent.processors.faust_transport` for why):

- every record is applied in offset order per partition: one below the partition's frontier
  was applied already and is skipped; one above it leaves a hole, which the engine reads from
  the broker itself and applies first (records Faust dropped or skipped never go missing);
- a state written while applying a record stays in the table's store and reaches the changelog
  only at the next commit, after the outputs sent before it were acknowledged (one changelog
  record per key and commit); the input offsets are committed last;
- each entity state remembers the last source offset applied per source partition, so a record
  consumed again after a crash changes nothing; its update is published again when it was the
  last one applied.

Bad records go to ``<source>.dlq``, flushed before the record counts as processed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from refluent.config import Settings
from refluent.errors import require
from refluent.observability import metrics
from refluent.processors.faust_transport import ledger_transport
from refluent.processors.features import EntityStateView, View
from refluent.processors.ledger import DeliveryLedger, Partition
from refluent.processors.runtime import (
    EntityStateRuntime,
    FeatureViewRuntime,
    Outcome,
    Source,
    runtime_for,
)
from refluent.streams.contracts import CdcEnvelope
from refluent.streams.deadletter import DeadLetterRouter
from refluent.streams.errors import DecodeError
from refluent.streams.kafka import Producer, committed_or_start, read_range
from refluent.streams.processing import RecordRejected
from refluent.streams.serde import JsonSerde
from refluent.streams.topics import TopicCatalog

log = logging.getLogger(__name__)

H_TOPIC = "refluent.src.topic"
H_PARTITION = "refluent.src.partition"
H_OFFSET = "refluent.src.offset"
STALL_S = 10.0
"""A partition whose frontier stays below its high watermark this long without a record
arriving is read again from the frontier (records its consumer dropped at the tail)."""


@dataclass(frozen=True)
class Rec:
    """One input record, whichever client read it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]

    @property
    def tp(self) -> Partition:
        return (self.topic, self.partition)


Handler = Callable[[Rec], None]


def _load_state(raw: Any) -> dict[str, Any]:
    """An entity state from the table: JSON bytes as written, or what recovery decoded."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, (bytes, bytearray, memoryview, str)):
        return dict(orjson.loads(raw))
    raise TypeError(f"unexpected state value of type {type(raw).__name__}: {raw!r:.80}")


def _broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in bootstrap.split(",") if server.strip()]


def _worker_class() -> Any:
    """A Faust worker whose root logger drops records below its level.

    mode's worker filters by level in its handlers only, so every debug call of Faust and
    aiokafka on the hot path would still build a log record (a tenth of the engine's time).
    """
    faust: Any = require("faust", "faust")

    class Worker(faust.Worker):
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            logger.setLevel(level or logging.WARNING)

    return Worker


class FaustEngine:
    """Builds the Faust app that runs ``views``.

    Args:
        views: The views to run.
        settings: Refluent settings (Kafka, topics, processing).
        bootstrap_servers: Kafka brokers.
        partitions: Partition count of each existing source topic. A table read straight from a
            source topic (entity-state views) must have as many partitions as the topic.
    """

    def __init__(self, views: Sequence[View], settings: Settings, bootstrap_servers: str,
                 *, partitions: dict[str, int] | None = None) -> None:
        self._partitions = partitions or {}
        self.views = list(views)
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.catalog = TopicCatalog.from_settings(settings.topics)
        proc = settings.processing
        batch = proc.producer_max_batch_size
        faust: Any = require("faust", "faust")
        options: dict[str, Any] = {
            "broker": _broker_urls(bootstrap_servers),
            "store": proc.table_store,
            "processing_guarantee": "at_least_once",
            "topic_partitions": settings.topics.default_partitions,
            "topic_replication_factor": settings.topics.replication_factor,
            "broker_session_timeout": settings.kafka.session_timeout_ms / 1000,
            "broker_heartbeat_interval": max(settings.kafka.session_timeout_ms / 10000, 0.5),
            "web_enabled": False,
            "stream_buffer_maxsize": 8192,
            # A few milliseconds of linger turn many one-record produce requests into a few.
            "producer_linger": settings.kafka.linger_ms / 1000,
            "autodiscover": False,
            # A record whose processing raised must be consumed again, not acknowledged.
            "stream_ack_exceptions": False,
        }
        if batch:
            options["producer_max_batch_size"] = batch
        self.app = faust.App(proc.app_id, **options)
        # Changelog ends from fetch responses, and commits of the ledger's frontiers after
        # the outputs and the changelog are durable (Faust's own offset tracking is not safe).
        self.ledger = DeliveryLedger()
        self.assigned: set[Partition] = set()
        self.app.transport = ledger_transport(self.app, settings, bootstrap_servers, self)
        self._dlq = Producer(settings.kafka, bootstrap_servers,
                             **{"message.max.bytes": settings.kafka.dlq_max_record_bytes + 65536})
        self._router = DeadLetterRouter(self._dlq)
        self._serdes: dict[str, JsonSerde[Any]] = {}
        self._tables: dict[str, Any] = {}
        self._sent: list[Any] = []
        self.stats = {"in": 0, "updates": 0, "dead_lettered": 0, "holes_filled": 0,
                      "duplicates_skipped": 0, "rereads": 0}
        self._m_in: dict[str, Any] = {}
        for view in self.views:
            self._wire(view)
        self.app.timer(STALL_S / 4, name="refluent-stalled-partitions")(self._reread_stalled)

    # -- helpers ---------------------------------------------------------------------------

    def _serde(self, topic: str) -> JsonSerde[Any]:
        serde = self._serdes.get(topic)
        if serde is None:
            spec = self.catalog.get(topic)
            if spec.contract is None:
                raise DecodeError(topic, "no_contract", f"topic {topic} has no event contract")
            serde = JsonSerde(spec.contract, max_record_bytes=self.settings.kafka.max_record_bytes,
                              allow_tombstones=spec.allow_tombstones)
            self._serdes[topic] = serde
        return serde

    def _count_in(self, topic: str) -> None:
        self.stats["in"] += 1
        counter = self._m_in.get(topic)
        if counter is None:
            counter = self._m_in[topic] = metrics.RECORDS_IN.labels(
                topic, self.settings.processing.app_id)
        counter.inc()

    def _reject(self, source: Source, key: bytes | None, value: bytes | None, step: str,
                error: BaseException) -> None:
        self._router.route_raw(source.topic, key, value, step, error,
                               partition=source.partition, offset=source.offset)
        # Flushed now, so a commit never covers a lost dead letter.
        self._dlq.flush()
        self.stats["dead_lettered"] += 1

    def _topic(self, name: str, partitions: int | None = None, internal: bool = False) -> Any:
        return self.app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                              value_serializer="raw", partitions=partitions, internal=internal)

    def _send(self, channel: Any, key: bytes, value: bytes,
              headers: dict[str, bytes] | None = None) -> None:
        """Queue a record; the next commit waits for its delivery."""
        self._sent.append(channel.send_soon(key=key, value=value, headers=headers))

    def _publish(self, out: Any, outcome: Outcome) -> None:
        for update in outcome.updates:
            self._send(out, update.entity_id.encode(), update.model_dump_json().encode())
            metrics.FEATURE_UPDATES.labels(update.view).inc()
        self.stats["updates"] += len(outcome.updates)

    def _store(self, table: Any, partition: int, states: dict[str, dict[str, Any]]) -> None:
        """Write states to the table's store now and stage them for the changelog, which the
        next commit writes once the outputs sent before it are acknowledged."""
        for key, state in states.items():
            raw = orjson.dumps(state)
            table.data[key] = raw
            self.ledger.stage(table.name, key, partition, raw)

    # -- delivery --------------------------------------------------------------------------

    def _in_order(self, msg: Any, key: bytes | None, value: bytes | None,
                  headers: Any) -> list[Rec]:
        """The records to apply now, in offset order, for a record Faust delivered: none when
        it was applied already (or its partition is not ready here), else the records of a
        hole before it (read from the broker) and then the record itself."""
        rec = Rec(msg.topic, msg.partition, msg.offset, key, value, _headers(headers))
        tp = rec.tp
        if tp not in self.assigned or not self.app.tables.actives_ready:
            return []  # a record fetched before a rebalance or before recovery finished
        if not self.ledger.known(tp):
            start = committed_or_start(self.settings.kafka, self.bootstrap_servers,
                                       self.app.conf.id, [tp])[tp]
            self.ledger.start(tp, start)
        missing = self.ledger.admit(tp, rec.offset)
        if missing < 0:
            self.stats["duplicates_skipped"] += 1
            return []
        if missing == 0:
            return [rec]
        start = self.ledger.next_offset(tp) or 0
        filled = [Rec(m.topic() or "", m.partition() or 0, m.offset() or 0, m.key(), m.value(),
                      _headers(m.headers())) for m in read_range(
                          self.settings.kafka, self.bootstrap_servers, rec.topic, rec.partition,
                          start, rec.offset)]
        log.warning("%s[%d]: records %d..%d were not delivered in order; read %d of them "
                    "from the broker", rec.topic, rec.partition, start, rec.offset - 1,
                    len(filled))
        self.stats["holes_filled"] += len(filled)
        return [*filled, rec]

    def _apply_in_order(self, recs: Iterable[Rec], handle: Handler) -> None:
        for rec in recs:
            self.ledger.skip(rec.tp, rec.offset)  # offsets the broker does not hold
            handle(rec)
            self.ledger.processed(rec.tp, rec.offset)

    async def prepare_commit(self, tps: Iterable[Partition]) -> dict[Partition, int]:
        """Checkpoint, wait for the outputs sent before it, write its states to the
        changelog and wait for them; the offsets that may be committed now."""
        checkpoint = self.ledger.checkpoint(tps)
        sent, self._sent = self._sent, []
        if sent:
            await asyncio.gather(*sent)
        writes = [self._tables[store].send_changelog(partition, key, value)
                  for (store, key), (partition, value) in checkpoint.states.items()]
        if writes:
            await asyncio.gather(*writes)
        return checkpoint.offsets

    async def _reread_stalled(self) -> None:
        """Read a partition again from its frontier when records below its high watermark
        stopped arriving (Faust dropped them as already read)."""
        app = self.app
        if not app.tables.actives_ready or app.rebalancing:
            return
        consumer = app.consumer
        now = time.monotonic()
        for tp in self.ledger.partitions():
            faust_tp = _faust_tp(tp)
            nxt = self.ledger.next_offset(tp)
            if tp not in self.assigned or nxt is None:
                continue
            high = consumer.highwater(faust_tp)
            if high is not None and nxt < high and now - self.ledger.idle_since(tp) > STALL_S:
                log.warning("%s[%d]: nothing delivered from offset %d for %.0fs (high "
                            "watermark %d); reading again from there", tp[0], tp[1], nxt,
                            STALL_S, high)
                self.stats["rereads"] += 1
                await consumer.seek(faust_tp, nxt)

    # -- topology --------------------------------------------------------------------------

    def _wire(self, view: View) -> None:
        runtime = runtime_for(view)
        faust: Any = require("faust", "faust")
        # Keys as JSON strings (they come back as str after recovery); states as raw JSON bytes.
        schema = faust.Schema(key_type=str, value_type=bytes, key_serializer="json",
                              value_serializer="raw")
        partitions = self.settings.topics.default_partitions
        if isinstance(view, EntityStateView):
            partitions = self._partitions.get(view.source, partitions)
        table = self.app.Table(f"state-{view.name}", default=None, schema=schema,
                               partitions=partitions)
        self._tables[table.name] = table
        out = self._topic(view.topic)
        if isinstance(runtime, FeatureViewRuntime):
            self._wire_feature_view(runtime, table, out)
        else:
            self._wire_entity_state(runtime, table, out)

    def _wire_feature_view(self, runtime: FeatureViewRuntime, table: Any, out: Any) -> None:
        view = runtime.view
        partitions = self.settings.topics.default_partitions
        by_entity = self._topic(f"{self.app.conf.id}-{view.name}-by-entity", internal=True,
                                partitions=partitions)
        engine = self

        seconds = metrics.ENGINE_RECORD_SECONDS.labels(view.name)

        def apply_one(src: Source, rec: Rec, keyed: tuple[str, dict[str, Any], int]) -> None:
            started = time.perf_counter()
            entity, row, ts_ms = keyed
            try:
                outcome = runtime.process(_load_state(table.data.get(entity)), entity, row,
                                          ts_ms, src)
            except RecordRejected as exc:
                engine._reject(src, rec.key, rec.value, exc.step, exc)
                return
            engine._store(table, rec.partition, outcome.states)
            engine._publish(out, outcome)
            seconds.observe(time.perf_counter() - started)

        for source_topic in view.sources:
            # A record keyed by its entity, on a topic partitioned like the view's table, is
            # applied where it is: murmur2 puts the key on the same partition number in both.
            # Anything else is forwarded to the by-entity topic first.
            local = self._partitions.get(source_topic, partitions) == partitions

            def route_one(rec: Rec, _topic: str = source_topic, _local: bool = local) -> None:
                src = Source(rec.topic, rec.partition, rec.offset)
                engine._count_in(rec.topic)
                try:
                    keyed = runtime.key(engine._serde(_topic).decode(rec.value))
                except (DecodeError, RecordRejected) as exc:
                    engine._reject(src, rec.key, rec.value, getattr(exc, "step", "decode"), exc)
                    return
                if keyed is None:
                    return
                entity = keyed[0].encode()
                if _local and rec.key == entity:
                    apply_one(src, rec, keyed)
                    return
                engine._send(by_entity, entity, rec.value or b"",
                             {H_TOPIC: src.topic.encode(), H_PARTITION: str(src.partition).encode(),
                              H_OFFSET: str(src.offset).encode()})

            async def route(stream: Any, _route_one: Handler = route_one) -> None:
                async for event in stream.events():
                    engine._apply_in_order(engine._in_order(
                        event.message, event.key, event.value, event.headers), _route_one)

            self.app.agent(self._topic(source_topic), name=f"{view.name}-from-{source_topic}")(
                route)

        def apply_forwarded(rec: Rec) -> None:
            src = Source(rec.headers[H_TOPIC].decode(), int(rec.headers[H_PARTITION]),
                         int(rec.headers[H_OFFSET]))
            try:
                keyed = runtime.key(engine._serde(src.topic).decode(rec.value))
            except (DecodeError, RecordRejected) as exc:
                engine._reject(src, rec.key, rec.value, getattr(exc, "step", "decode"), exc)
                return
            if keyed is not None:
                apply_one(src, rec, keyed)

        async def apply(stream: Any) -> None:
            async for event in stream.events():
                engine._apply_in_order(engine._in_order(
                    event.message, event.key, event.value, event.headers), apply_forwarded)

        self.app.agent(by_entity, name=f"{view.name}-apply")(apply)

    def _wire_entity_state(self, runtime: EntityStateRuntime, table: Any, out: Any) -> None:
        view: EntityStateView = runtime.view
        engine = self

        def lookup(key: str) -> dict[str, Any]:
            return _load_state(table.data.get(key))

        def apply_one(rec: Rec) -> None:
            src = Source(rec.topic, rec.partition, rec.offset)
            engine._count_in(rec.topic)
            try:
                decoded = engine._serde(view.source).decode(rec.value)
                if decoded is None:
                    return  # a tombstone after a delete
                assert isinstance(decoded, CdcEnvelope)  # noqa: S101 - cdc.* contract
                if decoded.op == "t":
                    states = {k: _load_state(v) for k, v in table.data.items()}
                    outcome = runtime.truncate(decoded, src, states)
                else:
                    outcome = runtime.process(decoded, src, lookup)
            except (DecodeError, RecordRejected) as exc:
                engine._reject(src, rec.key, rec.value, getattr(exc, "step", "decode"), exc)
                return
            engine._store(table, rec.partition, outcome.states)
            engine._publish(out, outcome)

        async def apply(stream: Any) -> None:
            async for event in stream.events():
                engine._apply_in_order(engine._in_order(
                    event.message, event.key, event.value, event.headers), apply_one)

        self.app.agent(self._topic(view.source), name=f"{view.name}-apply")(apply)

    # -- running ---------------------------------------------------------------------------

    def topics_to_create(self) -> list[str]:
        """Source, output and dead-letter topics the engine expects to exist."""
        names: list[str] = []
        for view in self.views:
            for source in view.sources:
                names += [source, source + ".dlq"]
            names.append(view.topic)
        return list(dict.fromkeys(names))

    def run(self, loglevel: str = "warn") -> None:
        """Run the worker until SIGTERM/SIGINT (blocks)."""
        worker = _worker_class()(self.app, loglevel=loglevel, quiet=True)
        try:
            worker.execute_from_commandline()
        finally:
            self._dlq.close()


def _headers(raw: Any) -> dict[str, bytes]:
    """Record headers as a dict, from Faust's mapping or the client's list of pairs."""
    if not raw:
        return {}
    items = raw.items() if hasattr(raw, "items") else raw
    return {k: v for k, v in items if v is not None}


def _faust_tp(tp: Partition) -> Any:
    faust_types: Any = require("faust.types", "faust")
    return faust_types.TP(*tp)


def views_in(views: Sequence[View], names: Sequence[str] | None) -> list[View]:
    """The views named in ``names`` (all when None).

    Raises:
        KeyError: a name is not a declared view.
    """
    if not names:
        return list(views)
    by_name = {v.name: v for v in views}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise KeyError(f"unknown view(s) {missing}; declared: {sorted(by_name)}")
    return [by_name[n] for n in names]


__all__ = ["FaustEngine", "views_in"]
