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
the engine's :class:`~refluent.engines.ledger.DeliveryLedger` rather than by Faust's own
offset tracking (see :mod:`refluent.engines.faust_transport` for why):

- every record is applied in offset order per partition: one below the partition's frontier
  was applied already and is skipped; one above it leaves a hole, which the engine reads from
  the broker itself and applies first (records Faust dropped or skipped never go missing);
- a state written while applying a record stays in the table's store and reaches the changelog
  only at the next commit, after the outputs sent before it were acknowledged (one changelog
  record per key and commit); the input offsets are committed last;
- each entity state remembers the last source offset applied per source partition, so a record
  consumed again after a crash changes nothing; its update is published again when it was the
  last one applied.

Bad records go to ``<source>.dlq``, flushed before the record counts as processed (see
:class:`~refluent.engines.base.Engine`).
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
from refluent.engines.base import Engine, JsonStates
from refluent.engines.faust_transport import ledger_transport
from refluent.engines.ledger import DeliveryLedger, Partition
from refluent.errors import require
from refluent.observability import metrics
from refluent.processors.features import View
from refluent.processors.runtime import Outcome, ViewRuntime
from refluent.streams.errors import DecodeError
from refluent.streams.kafka import committed_or_start, read_range
from refluent.streams.origin import Origin
from refluent.streams.processing import RecordRejected

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


class FaustEngine(Engine):
    """Builds the Faust app that runs ``views`` (arguments as :class:`Engine`'s)."""

    name = "faust"

    def __init__(self, views: Sequence[View], settings: Settings, bootstrap_servers: str,
                 *, partitions: dict[str, int] | None = None) -> None:
        super().__init__(views, settings, bootstrap_servers, partitions=partitions)
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
        self._tables: dict[str, Any] = {}
        self._sent: list[Any] = []
        self._inputs: set[str] = set()
        """Topics the engine's agents read (sources and by-entity topics)."""
        self.stats.update(holes_filled=0, duplicates_skipped=0, rereads=0)
        for runtime in self.runtimes:
            self._wire(runtime)
        self.app.timer(STALL_S / 4, name="refluent-stalled-partitions")(self._reread_stalled)

    # -- helpers ---------------------------------------------------------------------------

    def _topic(self, name: str, partitions: int | None = None, internal: bool = False) -> Any:
        return self.app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                              value_serializer="raw", partitions=partitions, internal=internal)

    def _send(self, channel: Any, key: bytes, value: bytes,
              headers: dict[str, bytes] | None = None) -> None:
        """Queue a record; the next commit waits for its delivery."""
        self._sent.append(channel.send_soon(key=key, value=value, headers=headers))

    def _publish(self, out: Any, outcome: Outcome) -> None:
        for update in outcome.updates:
            self._send(out, update["entity_id"].encode(), orjson.dumps(update))
        self.published(outcome.updates)

    def _store(self, table: Any, partition: int, runtime: ViewRuntime,
               states: dict[str, dict[str, Any]]) -> None:
        """Write states to the table's store now and stage them for the changelog, which the
        next commit writes once the outputs sent before it are acknowledged."""
        for key, state in states.items():
            raw = orjson.dumps(runtime.dump(state))
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
        await self._start_undelivered()
        consumer = app.consumer
        highs = {tp: consumer.highwater(_faust_tp(tp))
                 for tp in self.ledger.partitions() if tp in self.assigned}
        for tp, nxt in self.ledger.stalled(highs, STALL_S).items():
            log.warning("%s[%d]: nothing delivered from offset %d for %.0fs (high "
                        "watermark %d); reading again from there", tp[0], tp[1], nxt,
                        STALL_S, highs[tp])
            self.stats["rereads"] += 1
            await consumer.seek(_faust_tp(tp), nxt)

    async def _start_undelivered(self) -> None:
        """Give every assigned input partition without a frontier one: its committed offset.

        A frontier is otherwise started by the first record delivered. Records fetched before
        recovery finished are dropped here (their states are not there yet), yet Faust counts
        them as read, and after it seeks back to the committed offset it drops them again as
        already seen. When no record follows them (the producers are done), nothing would start
        the partition's frontier and the stall check above would never see the partition.
        """
        unseen = sorted(tp for tp in self.assigned
                        if tp[0] in self._inputs and not self.ledger.known(tp))
        if not unseen:
            return
        starts = await asyncio.to_thread(committed_or_start, self.settings.kafka,
                                         self.bootstrap_servers, self.app.conf.id, unseen)
        if self.app.rebalancing:
            return  # the assignment may have changed meanwhile: the next tick asks again
        for tp in unseen:
            if tp in self.assigned and not self.ledger.known(tp):
                self.ledger.start(tp, starts[tp])

    # -- topology --------------------------------------------------------------------------

    def _wire(self, runtime: ViewRuntime) -> None:
        """One table per view; records applied where they are read when the view's state is
        partitioned like them, else forwarded by entity first (a repartition)."""
        view = runtime.view
        faust: Any = require("faust", "faust")
        # Keys as JSON strings (they come back as str after recovery); states as raw JSON bytes.
        schema = faust.Schema(key_type=str, value_type=bytes, key_serializer="json",
                              value_serializer="raw")
        partitions = self.state_partitions(runtime)
        table = self.app.Table(f"state-{view.name}", default=None, schema=schema,
                               partitions=partitions)
        self._tables[table.name] = table
        out = self._topic(view.topic)
        states = JsonStates(table.data)
        engine = self
        seconds = metrics.ENGINE_RECORD_SECONDS.labels(view.name)
        by_entity = None
        if not runtime.keyed_by_source:
            by_entity_name = f"{self.app.conf.id}-{view.name}-by-entity"
            by_entity = self._topic(by_entity_name, internal=True, partitions=partitions)
            self._inputs.add(by_entity_name)

        def apply_one(origin: Origin, rec: Rec, event: Any) -> None:
            started = time.perf_counter()
            try:
                outcome = runtime.process(event, origin, states)
            except RecordRejected as exc:
                engine.reject(origin, rec.key, rec.value, exc)
                return
            engine._store(table, rec.partition, runtime, outcome.states)
            engine._publish(out, outcome)
            seconds.observe(time.perf_counter() - started)

        def route_one(rec: Rec) -> None:
            origin = Origin(rec.topic, rec.partition, rec.offset)
            engine.count_in(rec.topic)
            try:
                event = engine.decode(rec.topic, rec.value)
                entity = None if by_entity is None else runtime.entity(event)
            except (DecodeError, RecordRejected) as exc:
                engine.reject(origin, rec.key, rec.value, exc)
                return
            if by_entity is None:
                apply_one(origin, rec, event)
                return
            if entity is None:
                return
            key = entity.encode()
            # A record keyed by its entity, on a topic partitioned like the view's table, is
            # applied where it is: murmur2 puts the key on the same partition number in both.
            if rec.key == key and self.partitions.get(rec.topic, partitions) == partitions:
                apply_one(origin, rec, event)
                return
            engine._send(by_entity, key, rec.value or b"",
                         {H_TOPIC: origin.topic.encode(),
                          H_PARTITION: str(origin.partition).encode(),
                          H_OFFSET: str(origin.offset).encode()})

        def apply_forwarded(rec: Rec) -> None:
            origin = Origin(rec.headers[H_TOPIC].decode(), int(rec.headers[H_PARTITION]),
                            int(rec.headers[H_OFFSET]))
            try:
                event = engine.decode(origin.topic, rec.value)
            except DecodeError as exc:
                engine.reject(origin, rec.key, rec.value, exc)
                return
            apply_one(origin, rec, event)

        self._inputs.update(view.sources)
        for source_topic in view.sources:
            self._agent(self._topic(source_topic), f"{view.name}-from-{source_topic}", route_one)
        if by_entity is not None:
            self._agent(by_entity, f"{view.name}-apply", apply_forwarded)

    def _agent(self, channel: Any, name: str, handle: Handler) -> None:
        engine = self

        async def agent(stream: Any) -> None:
            async for event in stream.events():
                engine._apply_in_order(engine._in_order(
                    event.message, event.key, event.value, event.headers), handle)

        self.app.agent(channel, name=name)(agent)

    # -- running ---------------------------------------------------------------------------

    def run(self, loglevel: str = "warn") -> None:
        """Run the worker until SIGTERM/SIGINT (blocks)."""
        self.setup()
        worker = _worker_class()(self.app, loglevel=loglevel, quiet=True)
        try:
            worker.execute_from_commandline()
        finally:
            self.close()


def _headers(raw: Any) -> dict[str, bytes]:
    """Record headers as a dict, from Faust's mapping or the client's list of pairs."""
    if not raw:
        return {}
    items = raw.items() if hasattr(raw, "items") else raw
    return {k: v for k, v in items if v is not None}


def _faust_tp(tp: Partition) -> Any:
    faust_types: Any = require("faust.types", "faust")
    return faust_types.TP(*tp)


__all__ = ["FaustEngine"]
