"""Sink pipelines: a consumer group that decodes records and hands them to sinks.

Delivery guarantee: offsets are committed only when every sink has flushed (``commit_ready``),
and a pipeline whose sinks keep their own offsets (the lake) starts each partition from the
sinks' offsets rather than the group's. Records that do not decode, and rows a lake table
rejects, go to ``<topic>.dlq`` before their offset can be committed. So after ``kill -9`` at any
point, a restarted pipeline ends with the same rows and the same online values.

Two standard pipelines, each writing through the sink class its destination names (a URL
scheme of :data:`refluent.sinks.base.SINK_BACKENDS`, or the dotted path of your own class):

- :func:`lake_routes` (``iceberg``; the mapping follows each topic's contract in the catalog):
  ``logs.*`` to ``raw_logs_<source>``, ``cdc.<table>`` to ``cdc_<table>_changelog``,
  ``features.<view>`` to ``features_<view>_history``, the loop's topics (``predictions``,
  ``examples``) to tables of their own name.
- :func:`online_routes` (``redis``): ``features.<view>`` to the online store with each view's TTL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from refluent.config import Settings
from refluent.sinks.base import Sink, SinkRecord, sink_class
from refluent.sinks.errors import SinkOffsetsAheadError
from refluent.streams.kafka import ConsumerLoop, LoopStats, Producer, StopSignal, exact_ends
from refluent.streams.processing import DecodingHandler
from refluent.streams.topics import TopicCatalog

if TYPE_CHECKING:
    from confluent_kafka import Message, TopicPartition

    from refluent.lake.mappings import TableMapping
    from refluent.processors.features import View


@dataclass
class PipelineStats:
    """Counts of one pipeline run."""

    loop: LoopStats
    records: int
    written: int
    dead_lettered: int


class SinkPipeline:
    """Consumes ``routes``' topics and writes each record to the sinks of its topic.

    Args:
        settings: Refluent settings.
        bootstrap_servers: Kafka brokers.
        group_id: Consumer group.
        routes: Topic -> the sinks its records go to.
        batch_size: Most records per poll.
        consumer_overrides: librdkafka properties of the consumer (e.g.
            ``settings.kafka.short_fetch_wait(20)`` for a sink whose latency matters).
    """

    def __init__(self, settings: Settings, bootstrap_servers: str, group_id: str,
                 routes: Mapping[str, Sequence[Sink[Any]]], *, batch_size: int = 2000,
                 consumer_overrides: Mapping[str, Any] | None = None) -> None:
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.group_id = group_id
        self.routes = {topic: list(sinks) for topic, sinks in routes.items()}
        self.sinks = list(dict.fromkeys(s for sinks in self.routes.values() for s in sinks))
        self.batch_size = batch_size
        self.consumer_overrides = dict(consumer_overrides or {})
        self.catalog = TopicCatalog.from_settings(settings.topics)
        self.written = 0
        self.rejected_by_sinks = 0

    # -- sink coordination -----------------------------------------------------------------

    def start_offsets(self, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
        """Per partition, the lowest next offset any of its sinks keeps (sinks that keep none
        leave the partition to the group's committed offset)."""
        out: dict[tuple[str, int], int] = {}
        for sink in self.sinks:
            if not sink.keeps_offsets:
                continue
            mine = [tp for tp in partitions if sink in self.routes.get(tp.topic, ())]
            for key, offset in sink.start_offsets(mine).items():
                out[key] = min(out.get(key, offset), offset)
        return out

    def check_offsets(self) -> None:
        """Fail when a sink's stored offsets are past the end of their partition.

        That happens when a topic was deleted and created again (the embedded broker keeps
        topics in memory, so a restart does it): resuming would skip every new record below
        the old offsets, silently.

        Raises:
            SinkOffsetsAheadError: names the sink, partitions, stored offsets and ends.
        """
        stored: dict[str, dict[tuple[str, int], int]] = {}
        for sink in self.sinks:
            if not sink.keeps_offsets:
                continue
            mine = {tp: o for tp, o in sink.committed_offsets().items()
                    if sink in self.routes.get(tp[0], ())}
            if mine:
                stored[sink.name] = mine
        if not stored:
            return
        ends = exact_ends(self.settings.kafka, self.bootstrap_servers,
                          {tp for offsets in stored.values() for tp in offsets})
        for name, offsets in stored.items():
            ahead = [(t, p, o, ends[(t, p)]) for (t, p), o in sorted(offsets.items())
                     if o > ends.get((t, p), o)]
            if ahead:
                raise SinkOffsetsAheadError(name, ahead)

    def commit_ready(self) -> bool:
        """True when no sink holds unflushed records."""
        return all(sink.commit_ready() for sink in self.sinks)

    def flush_due(self) -> None:
        """Flush the batching sinks whose oldest buffered record has waited long enough."""
        for sink in self.sinks:
            sink.flush_if_due()

    def flush_all(self, *_: Any) -> None:
        """Flush every sink (on rebalance and at the end)."""
        for sink in self.sinks:
            sink.flush()

    # -- running ---------------------------------------------------------------------------

    def _on_events(self, events: list[tuple[Any, Message]]) -> None:
        by_topic: dict[str, list[SinkRecord[Any]]] = {}
        for value, msg in events:
            record = _record(msg, value)
            by_topic.setdefault(record.topic, []).append(record)
        for topic, records in by_topic.items():
            for sink in self.routes.get(topic, ()):
                sink.write(records)
            self.written += len(records)

    def _on_rejected(self, messages: list[Message]) -> None:
        # Dead-lettered records still move the sinks' own offsets past them, so a restart does
        # not dead-letter them again.
        by_topic: dict[str, list[SinkRecord[Any]]] = {}
        for msg in messages:
            record = _record(msg, None, skip=True)
            by_topic.setdefault(record.topic, []).append(record)
        for topic, records in by_topic.items():
            for sink in self.routes.get(topic, ()):
                if sink.keeps_offsets:
                    sink.write(records)

    def run(self, *, stop: StopSignal | None = None, max_records: int | None = None,
            idle_timeout: float | None = None, until_caught_up: bool = False,
            drain: bool = False) -> PipelineStats:
        """Set up the sinks, consume until stopped (or ``max_records``, ``idle_timeout``,
        ``until_caught_up``), flush, commit and close.

        ``drain`` hands each record on as soon as it arrives, with whatever else has been
        fetched, instead of waiting to fill a batch (see
        :meth:`~refluent.streams.kafka.ConsumerLoop.run`): for sinks that write each batch
        through at once, such as the online store.
        """
        for sink in self.sinks:
            sink.setup()
        self.check_offsets()
        dlq = Producer(self.settings.kafka, self.bootstrap_servers,
                       **{"message.max.bytes": self.settings.kafka.dlq_max_record_bytes + 65536})
        handler = DecodingHandler(self.catalog, self.settings.kafka, dlq, self._on_events,
                                  group_id=self.group_id, on_rejected=self._on_rejected)
        self._wire_bad_records(handler)
        loop = ConsumerLoop(
            self.settings.kafka, self.bootstrap_servers, self.group_id, list(self.routes),
            batch_size=self.batch_size, start_offsets=self.start_offsets,
            done_offsets=self.start_offsets, commit_ready=self.commit_ready,
            on_revoke=self.flush_all, **self.consumer_overrides)
        try:
            stats = loop.run(handler, stop=stop, max_records=max_records,
                             idle_timeout=idle_timeout, on_idle=self.flush_due,
                             before_close=self.flush_all, until_caught_up=until_caught_up,
                             drain=drain)
        finally:
            for sink in self.sinks:
                sink.close()
            dlq.close()
        # Rows a sink rejected were handed to it (counted in written) and then dead-lettered.
        return PipelineStats(stats, handler.stats.records,
                             self.written - self.rejected_by_sinks,
                             handler.stats.dead_lettered + self.rejected_by_sinks)

    def _wire_bad_records(self, handler: DecodingHandler) -> None:
        def on_bad_record(record: SinkRecord[Any], error: Exception) -> None:
            handler.router.route_raw(record.topic, record.key, record.raw, "lake", error,
                                     partition=record.partition, offset=record.offset,
                                     timestamp_ms=record.timestamp_ms)
            handler.router.producer.flush()
            self.rejected_by_sinks += 1

        for sink in self.sinks:
            if sink.on_bad_record is None:
                sink.on_bad_record = on_bad_record


def _record(msg: Message, value: Any, skip: bool = False) -> SinkRecord[Any]:
    ts_type, ts = msg.timestamp()
    return SinkRecord(msg.topic() or "", msg.partition() or 0, msg.offset() or 0, msg.key(),
                      value, ts if ts_type else None, raw=msg.value(), skip=skip)


# ---------------------------------------------------------------------------------------------
# standard routes
# ---------------------------------------------------------------------------------------------


def lake_table_for(topic: str) -> str:
    """The lake table a topic lands in.

    Examples:
        >>> [lake_table_for(t) for t in ("cdc.orders", "features.activity", "logs.app")]
        ['cdc_orders_changelog', 'features_activity_history', 'raw_logs_app']
        >>> [lake_table_for(t) for t in ("predictions", "inference.requests")]
        ['predictions', 'inference_requests']
    """
    kind, _, name = topic.partition(".")
    name = name.replace(".", "_").replace("-", "_")
    if not name or kind not in {"cdc", "features", "logs"}:
        # The loop's own topics (predictions, examples, ...) land in a table of that name.
        return topic.replace(".", "_").replace("-", "_")
    if kind == "cdc":
        return f"cdc_{name}_changelog"
    if kind == "features":
        return f"features_{name}_history"
    return f"raw_{kind}_{name}"


LAKE_DESTINATION = "iceberg"
"""The sink backend :func:`lake_routes` writes through unless told otherwise."""
ONLINE_DESTINATION = "redis"
"""The sink backend :func:`online_routes` writes through unless told otherwise."""
ONLINE_FETCH_WAIT_MS = 20
"""The online sink's fetch wait (see :meth:`refluent.config.KafkaSettings.short_fetch_wait`):
on a broker that holds fetches for the whole wait, it would be feature latency."""


def lake_routes(settings: Settings, topics: Sequence[str],
                make_catalog: Callable[[], Any] | None = None, *,
                destination: str = LAKE_DESTINATION) -> dict[str, list[Sink[Any]]]:
    """A lake sink per topic, with the mapping its contract in the topic catalog needs:
    CDC envelopes become a changelog table, feature updates a history table, predictions a
    table with the features as served; other events (and topics the catalog does not know)
    land as raw events.

    Args:
        settings: Refluent settings (``lake`` names the catalog and namespace).
        topics: Topics to land.
        make_catalog: Opens the catalog (default: the one of ``settings.lake``).
        destination: Which sink class writes the tables (see
            :func:`refluent.sinks.base.sink_class`); it is built as
            ``cls(make_catalog, mapping, table, namespace)``, as
            :class:`~refluent.sinks.iceberg.IcebergSink` is.
    """
    from refluent.lake import mappings as m
    from refluent.lake.catalog import open_catalog
    from refluent.streams import contracts as c
    from refluent.streams.errors import UnknownTopicError

    sink_cls: Any = sink_class(destination)
    catalog = make_catalog or (lambda: open_catalog(settings))
    topic_catalog = TopicCatalog.from_settings(settings.topics)
    routes: dict[str, list[Sink[Any]]] = {}
    for topic in topics:
        try:
            contract = topic_catalog.get(topic).contract
        except UnknownTopicError:
            contract = None
        mapping: TableMapping
        if contract is c.CdcEnvelope:
            pk = settings.topics.cdc_primary_keys.get(topic.removeprefix("cdc."), ["id"])
            mapping = m.CdcChangelogTable(primary_key=tuple(pk))
        elif contract is c.FeatureUpdate:
            mapping = m.FeatureHistoryTable()
        elif contract is c.Prediction:
            mapping = m.PredictionsTable()
        else:
            mapping = m.RawEventsTable()
        routes[topic] = [sink_cls(catalog, mapping, lake_table_for(topic),
                                  settings.lake.namespace)]
    return routes


def online_routes(settings: Settings, views: Sequence[View], *,
                  destination: str = ONLINE_DESTINATION) -> dict[str, list[Sink[Any]]]:
    """One online store for every view's ``features.<view>`` topic.

    Args:
        settings: Refluent settings (``redis`` names the store).
        views: The views whose updates to write.
        destination: Which sink class writes them (see :func:`refluent.sinks.base.sink_class`);
            it is built as ``cls.from_settings(settings, ttls)``, as
            :class:`~refluent.sinks.redis.RedisOnlineStore` is, with each view's TTL by name.
    """
    sink_cls: Any = sink_class(destination)
    ttls: dict[str, timedelta] = {v.name: v.ttl for v in views}
    store = sink_cls.from_settings(settings, ttls)
    return {v.topic: [store] for v in views}
