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

Delivery: at-least-once from Kafka (the embedded broker cannot run Kafka transactions). Exactly-once
state comes from the views' runtime: each entity state remembers the last source offset applied
per source partition, so records consumed again after a crash change nothing. Bad records go to
``<source>.dlq`` (flushed before the record's offset can be committed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson

from refluent.config import Settings
from refluent.errors import require
from refluent.observability import metrics
from refluent.processors.features import EntityStateView, View
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
from refluent.streams.kafka import Producer, fetched_high_watermarks
from refluent.streams.processing import RecordRejected
from refluent.streams.serde import JsonSerde
from refluent.streams.topics import TopicCatalog

log = logging.getLogger(__name__)

H_TOPIC = "refluent.src.topic"
H_PARTITION = "refluent.src.partition"
H_OFFSET = "refluent.src.offset"


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


def _exact_ends_transport(app: Any, settings: Settings, bootstrap_servers: str) -> Any:
    """Faust's Kafka transport, with changelog ends taken from a fetch response.

    Table recovery reads each changelog partition up to the end ListOffsets reports. The
    embedded broker reports the start of the last batch plus one, so recovery would stop short
    of the rest of that batch. This transport asks ListOffsets, then fetches the last batch and
    takes the high watermark the fetch response carries, which is exact on every broker. Only
    recovery and standby catch-up call it, so the extra fetch costs nothing per record.
    """
    drivers: Any = require("faust.transport.drivers.aiokafka", "faust")

    class ExactEndsConsumerThread(drivers.AIOKafkaConsumerThread):
        async def _highwaters(self, partitions: list[Any]) -> dict[Any, int | None]:
            listed = dict(await super()._highwaters(partitions))
            starts: dict[tuple[str, int], int | None] = {
                (tp.topic, tp.partition): end - 1 for tp, end in listed.items() if end}
            if not starts:
                return listed
            marks = await asyncio.to_thread(fetched_high_watermarks, settings.kafka,
                                            bootstrap_servers, starts)
            return {tp: max(end or 0, marks.get((tp.topic, tp.partition), (0, 0))[1])
                    if end is not None else end for tp, end in listed.items()}

    class ExactEndsConsumer(drivers.Consumer):
        def _new_consumer_thread(self) -> Any:
            return ExactEndsConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class ExactEndsTransport(drivers.Transport):
        Consumer = ExactEndsConsumer

    return ExactEndsTransport(app.conf.broker_consumer, app)


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
        # Changelog ends from fetch responses: exact on Kafka and on brokers whose ListOffsets
        # is not (the embedded one), at the price of one small fetch per partition recovered.
        self.app.transport = _exact_ends_transport(self.app, settings, bootstrap_servers)
        self._dlq = Producer(settings.kafka, bootstrap_servers,
                             **{"message.max.bytes": settings.kafka.dlq_max_record_bytes + 65536})
        self._router = DeadLetterRouter(self._dlq)
        self._serdes: dict[str, JsonSerde[Any]] = {}
        self.stats = {"in": 0, "updates": 0, "dead_lettered": 0}
        self._m_in: dict[str, Any] = {}
        for view in self.views:
            self._wire(view)

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
        # Flushed now, so the offset Faust commits later never covers a lost dead letter.
        self._dlq.flush()
        self.stats["dead_lettered"] += 1

    def _topic(self, name: str, partitions: int | None = None, internal: bool = False) -> Any:
        return self.app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                              value_serializer="raw", partitions=partitions, internal=internal)

    def _publish(self, out: Any, outcome: Outcome) -> None:
        for update in outcome.updates:
            out.send_soon(key=update.entity_id.encode(), value=update.model_dump_json().encode())
            metrics.FEATURE_UPDATES.labels(update.view).inc()
        self.stats["updates"] += len(outcome.updates)

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

        def apply_one(src: Source, key: bytes | None, value: bytes | None,
                      keyed: tuple[str, dict[str, Any], int]) -> None:
            started = time.perf_counter()
            entity, row, ts_ms = keyed
            try:
                outcome = runtime.process(_load_state(table.get(entity)), entity, row, ts_ms,
                                          src)
            except RecordRejected as exc:
                engine._reject(src, key, value, exc.step, exc)
                return
            for state_key, new_state in outcome.states.items():
                table[state_key] = orjson.dumps(new_state)
            engine._publish(out, outcome)
            seconds.observe(time.perf_counter() - started)

        for source_topic in view.sources:
            # A record keyed by its entity, on a topic partitioned like the view's table, is
            # applied where it is: murmur2 puts the key on the same partition number in both.
            # Anything else is forwarded to the by-entity topic first.
            local = self._partitions.get(source_topic, partitions) == partitions

            async def route(stream: Any, _topic: str = source_topic, _local: bool = local
                            ) -> None:
                async for event in stream.events():
                    msg = event.message
                    src = Source(msg.topic, msg.partition, msg.offset)
                    engine._count_in(msg.topic)
                    try:
                        keyed = runtime.key(engine._serde(_topic).decode(event.value))
                    except (DecodeError, RecordRejected) as exc:
                        engine._reject(src, event.key, event.value, getattr(
                            exc, "step", "decode"), exc)
                        continue
                    if keyed is None:
                        continue
                    entity = keyed[0].encode()
                    if _local and event.key == entity:
                        apply_one(src, event.key, event.value, keyed)
                        continue
                    await by_entity.send(
                        key=entity, value=event.value,
                        headers={H_TOPIC: src.topic.encode(),
                                 H_PARTITION: str(src.partition).encode(),
                                 H_OFFSET: str(src.offset).encode()})

            self.app.agent(self._topic(source_topic), name=f"{view.name}-from-{source_topic}")(
                route)

        async def apply(stream: Any) -> None:
            async for event in stream.events():
                headers = dict(event.headers or {})
                src = Source(headers[H_TOPIC].decode(), int(headers[H_PARTITION]),
                             int(headers[H_OFFSET]))
                try:
                    keyed = runtime.key(engine._serde(src.topic).decode(event.value))
                except (DecodeError, RecordRejected) as exc:
                    engine._reject(src, event.key, event.value, getattr(exc, "step", "decode"),
                                   exc)
                    continue
                if keyed is not None:
                    apply_one(src, event.key, event.value, keyed)

        self.app.agent(by_entity, name=f"{view.name}-apply")(apply)

    def _wire_entity_state(self, runtime: EntityStateRuntime, table: Any, out: Any) -> None:
        view: EntityStateView = runtime.view
        engine = self

        def lookup(key: str) -> dict[str, Any]:
            return _load_state(table.get(key))

        async def apply(stream: Any) -> None:
            async for event in stream.events():
                msg = event.message
                src = Source(msg.topic, msg.partition, msg.offset)
                engine._count_in(msg.topic)
                try:
                    decoded = engine._serde(view.source).decode(event.value)
                    if decoded is None:
                        continue  # a tombstone after a delete
                    assert isinstance(decoded, CdcEnvelope)  # noqa: S101 - cdc.* contract
                    if decoded.op == "t":
                        states = {k: _load_state(v) for k, v in table.items()}
                        outcome = runtime.truncate(decoded, src, states)
                    else:
                        outcome = runtime.process(decoded, src, lookup)
                except (DecodeError, RecordRejected) as exc:
                    engine._reject(src, event.key, event.value, getattr(exc, "step", "decode"),
                                   exc)
                    continue
                for key, new_state in outcome.states.items():
                    table[key] = orjson.dumps(new_state)
                engine._publish(out, outcome)

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
