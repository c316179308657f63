"""``refluent monitor``: the drift monitors as a Kafka service.

Reads the joined ``examples``, the ``predictions`` and every dead-letter topic the broker has
when it starts (``*.dlq``) in the consumer group ``monitor.group``, feeds
:class:`~refluent.monitoring.monitor.ModelMonitors` and produces the alerts it raises to
``alerts`` (keyed by model, so one model's alerts stay in order), where the webhook dispatcher
picks them up. Every ``monitor.lag_interval_s`` it also looks at the lag of the watched consumer
groups, and every ``monitor.registry_interval_s`` at the registry's alias events (a promotion or
rollback becomes ``model.promoted``). A batch's alerts and dead letters are flushed before its
offsets are committed, so no alert is lost; an undecodable record goes to ``<topic>.dlq``.

The monitors' state (detector windows, references, calibrations) is checkpointed every
``monitor.checkpoint_interval_s`` (and when partitions are revoked or the service stops) with
the offsets it covers, and the group commits only right after a checkpoint: a restarted monitor
restores the last checkpoint and goes on from its offsets, so its windows are those of a
monitor that never stopped, and the records it watches again raise the same alerts with the
same ids (see :mod:`refluent.monitoring.checkpoint`). One monitor per group.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from refluent.errors import RefluentError
from refluent.monitoring.checkpoint import Checkpointing, MonitorCheckpoints
from refluent.monitoring.monitor import ModelMonitors
from refluent.monitoring.operations import PromotionWatch
from refluent.monitoring.reference import References
from refluent.observability import metrics
from refluent.streams.contracts import DriftAlert, LabeledExample, Prediction
from refluent.streams.deadletter import DeadLetter, dlq_topic
from refluent.streams.errors import DecodeError, StreamError
from refluent.streams.origin import Origin
from refluent.streams.serde import JsonSerde
from refluent.streams.topics import (
    ALERTS,
    DLQ_SUFFIX,
    EXAMPLES,
    FEEDBACK,
    INFERENCE_REQUESTS,
    PREDICTIONS,
)

if TYPE_CHECKING:
    from confluent_kafka import Message

    from refluent.config import Settings
    from refluent.registry.base import ModelRegistry
    from refluent.streams.kafka import StopSignal

log = logging.getLogger(__name__)


@dataclass
class MonitorStats:
    examples: int = 0
    predictions: int = 0
    dead_letters: int = 0
    """Records read from dead-letter topics."""
    alerts: int = 0
    dead_lettered: int = 0
    """Records this service sent to a dead-letter topic (undecodable)."""


class MonitorService:
    """The monitor service (see the module).

    Args:
        settings: Refluent settings (``monitor`` above all).
        bootstrap_servers: Kafka brokers.
        examples_topic, predictions_topic, alerts_topic: Topics read and written.
        dead_letter_topics: Dead-letter topics watched (default: all the broker has at start).
        registry: Registry whose alias events are announced (default: the one of
            ``settings``, opened on first use).
        checkpoints: Where the monitors' state is checkpointed (default: Redis, unless
            ``monitor.checkpoint_interval_s`` is 0).
    """

    def __init__(self, settings: Settings, bootstrap_servers: str, *,
                 examples_topic: str = EXAMPLES, predictions_topic: str = PREDICTIONS,
                 alerts_topic: str = ALERTS, dead_letter_topics: list[str] | None = None,
                 registry: ModelRegistry | None = None,
                 checkpoints: MonitorCheckpoints | None = None) -> None:
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.examples_topic, self.predictions_topic = examples_topic, predictions_topic
        self.alerts_topic = alerts_topic
        self._dead_letter_topics = dead_letter_topics
        self._registry = registry
        self._checkpoints = checkpoints
        self._promotions = PromotionWatch(
            datetime.now(UTC) - timedelta(seconds=settings.monitor.promotion_lookback_s))
        self.monitors = ModelMonitors(settings.monitor, references=self._references())
        self.stats = MonitorStats()
        max_bytes = settings.kafka.max_record_bytes
        self._serdes: dict[str, JsonSerde[Any]] = {
            examples_topic: JsonSerde(LabeledExample, max_record_bytes=max_bytes),
            predictions_topic: JsonSerde(Prediction, max_record_bytes=max_bytes)}

    def handle(self, records: list[tuple[Origin, bytes | None]],
               reject: Any = None) -> list[DriftAlert]:
        """The alerts ``records`` raise; ``reject(i, error)`` hears of each undecodable one."""
        alerts: list[DriftAlert] = []
        for i, (origin, value) in enumerate(records):
            try:
                event = self._serdes[origin.topic].decode(value)
            except DecodeError as exc:
                if reject is None:
                    raise
                reject(i, exc)
                self.stats.dead_lettered += 1
                continue
            if event is None:
                continue
            if isinstance(event, LabeledExample):
                self.stats.examples += 1
                alerts += self.monitors.on_example(event, origin)
            else:
                self.stats.predictions += 1
                alerts += self.monitors.on_prediction(event, origin)
        self.stats.alerts += len(alerts)
        return alerts

    def handle_dead_letters(self, records: list[tuple[Origin, DeadLetter, int]]
                            ) -> list[DriftAlert]:
        """The alerts dead letters (with their timestamps, in ms) raise."""
        alerts: list[DriftAlert] = []
        for origin, letter, timestamp_ms in records:
            self.stats.dead_letters += 1
            alerts += self.monitors.on_dead_letter(letter, origin, timestamp_ms)
        self.stats.alerts += len(alerts)
        return alerts

    def lag_groups(self) -> dict[str, list[str]]:
        """Consumer group -> topics whose lag is watched."""
        s = self.settings
        return s.monitor.lag_groups or {s.serving.group: [INFERENCE_REQUESTS],
                                        s.feedback.group: [self.predictions_topic, FEEDBACK]}

    def check_lag(self) -> list[DriftAlert]:
        """Look at the watched groups' lag; the alerts of those that went above the
        threshold."""
        from confluent_kafka import KafkaException

        from refluent.streams.kafka import group_lag

        alerts: list[DriftAlert] = []
        for group, topics in self.lag_groups().items():
            try:
                lag = group_lag(self.settings.kafka, self.bootstrap_servers, topics, group)
            except (StreamError, KafkaException) as exc:
                # A topic not created yet has nothing to lag behind; a broker that does not
                # answer now is asked again next time.
                log.info("lag of group %s not known now: %s", group, exc)
                continue
            alerts += self.monitors.on_lag(group, lag, topics)
        self.stats.alerts += len(alerts)
        return alerts

    def check_promotions(self) -> list[DriftAlert]:
        """The ``model.promoted`` alerts of alias events not seen before."""
        if not self.settings.monitor.promotions:
            return []
        try:
            events = self.registry().alias_events()
        except RefluentError as exc:  # no registry yet, or the catalog does not answer now
            log.info("registry not read now: %s", exc)
            return []
        alerts = [self.monitors.on_alias_event(e) for e in self._promotions.update(events)]
        self.stats.alerts += len(alerts)
        return alerts

    def _references(self) -> References | None:
        """The training windows' reader, when ``monitor.reference`` asks for them."""
        if self.settings.monitor.reference != "training":
            return None
        from refluent.lake.catalog import open_catalog
        from refluent.monitoring.reference import training_references

        return training_references(self.registry, lambda: open_catalog(self.settings),
                                   self.settings.lake.namespace,
                                   self.settings.monitor.reference_size)

    def registry(self) -> ModelRegistry:
        """The registry (the one given, else the one of the settings, opened once)."""
        if self._registry is None:
            from refluent.registry.base import ModelRegistry

            self._registry = ModelRegistry.from_settings(self.settings)
        return self._registry

    def _checkpointing(self) -> Checkpointing:
        s = self.settings.monitor
        store = self._checkpoints
        if store is None and s.checkpoint_interval_s > 0:
            from refluent.monitoring.checkpoint_redis import RedisMonitorCheckpoints

            store = self._checkpoints = RedisMonitorCheckpoints.from_settings(self.settings)
        return Checkpointing(store, s.group, s.checkpoint_interval_s, self.monitors.state)

    def dead_letter_topics(self) -> list[str]:
        """The dead-letter topics watched: those given, else those the broker has now (but
        ``alerts``' own)."""
        from refluent.streams.kafka import TopicAdmin

        if self._dead_letter_topics is not None:
            return list(self._dead_letter_topics)
        names = TopicAdmin(self.settings.kafka, self.bootstrap_servers).wait_ready()
        own = dlq_topic(self.alerts_topic)
        return sorted(n for n in names if n.endswith(DLQ_SUFFIX) and n != own)

    def run(self, stop: StopSignal | None = None, idle_timeout: float | None = None,
            until_caught_up: bool = False) -> MonitorStats:
        """Consume and alert until stopped (SIGTERM/SIGINT), idle or caught up."""
        from refluent.streams.deadletter import DeadLetterRouter
        from refluent.streams.kafka import ConsumerLoop, Producer

        kafka = self.settings.kafka
        producer = Producer(kafka, self.bootstrap_servers,
                            **{"message.max.bytes": kafka.dlq_max_record_bytes + 65536})
        router = DeadLetterRouter(producer)
        checkpoints = self._checkpointing()
        state = checkpoints.load()
        if state is not None:
            self.monitors.restore(state)
            log.info("monitors restored from the checkpoint of group %s (%d partitions)",
                     checkpoints.group, len(checkpoints.offsets))
        loop = ConsumerLoop(kafka, self.bootstrap_servers, checkpoints.group,
                            [self.examples_topic, self.predictions_topic,
                             *self.dead_letter_topics()],
                            start_offsets=checkpoints.start_offsets,
                            commit_ready=checkpoints.commit_ready,
                            on_revoke=lambda _: checkpoints.save())
        lag_every = self.settings.monitor.lag_interval_s
        registry_every = self.settings.monitor.registry_interval_s
        next_lag, next_registry = time.monotonic() + lag_every, time.monotonic()

        def publish(alerts: list[DriftAlert]) -> None:
            for alert in alerts:
                producer.produce(self.alerts_topic, alert.model_dump_json().encode(),
                                 (alert.entity_key() or "").encode())
                metrics.ALERTS_RAISED.labels(alert.entity_key() or "", alert.kind).inc()
                log.warning("%s: %s %s %s %s=%.4g (threshold %.4g)", alert.event,
                            alert.entity_key(), alert.model_version or "", alert.feature or "",
                            alert.detector, alert.statistic, alert.threshold)

        def look_around() -> None:
            nonlocal next_lag, next_registry
            if time.monotonic() >= next_lag:
                next_lag = time.monotonic() + lag_every
                publish(self.check_lag())
            if time.monotonic() >= next_registry:
                next_registry = time.monotonic() + registry_every
                publish(self.check_promotions())
            producer.flush()

        def handle(batch: list[Message]) -> None:
            def reject(i: int, error: Exception) -> None:
                router.route(events[i], "decode", error)

            events = [m for m in batch if not (m.topic() or "").endswith(DLQ_SUFFIX)]
            records = [(_origin(m), m.value()) for m in events]
            publish(self.handle(records, reject))
            letters = [(_origin(m), _dead_letter(m), m.timestamp()[1])
                       for m in batch if (m.topic() or "").endswith(DLQ_SUFFIX)]
            publish(self.handle_dead_letters(letters))
            producer.flush()  # alerts and dead letters are durable before the commit
            for m in batch:
                checkpoints.seen(m.topic() or "", m.partition() or 0, m.offset() or 0)
            look_around()

        try:
            loop.run(handle, stop=stop, idle_timeout=idle_timeout, on_idle=look_around,
                     before_close=checkpoints.save, until_caught_up=until_caught_up)
        finally:
            producer.close()
        return self.stats


def _origin(msg: Message) -> Origin:
    return Origin(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)


def _dead_letter(msg: Message) -> DeadLetter:
    """A consumed dead letter; one not written by Refluent's router counts as ``unknown``."""
    try:
        return DeadLetter.from_message(msg)
    except (KeyError, ValueError):
        topic = (msg.topic() or "").removesuffix(DLQ_SUFFIX)
        return DeadLetter("unknown", "", "unknown", "", topic, -1, -1, None, msg.key(),
                          msg.value())


__all__ = ["MonitorService", "MonitorStats"]
