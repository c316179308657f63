"""``refluent monitor``: the drift monitors as a Kafka service.

Reads the joined ``examples`` and the ``predictions`` in the consumer group ``monitor.group``,
feeds :class:`~refluent.monitoring.monitor.ModelMonitors` and produces the alerts it raises to
``alerts`` (keyed by model, so one model's alerts stay in order), where the webhook dispatcher
picks them up. A batch's alerts and dead letters are flushed before its offsets are committed,
so no alert is lost; an undecodable record goes to ``<topic>.dlq``.

The monitors' state (detector windows, references) lives in memory: a restarted monitor starts
again from the committed offsets and warms up anew, so it may stay silent about a change that
began before the restart until its new reference and windows have filled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from refluent.monitoring.monitor import ModelMonitors
from refluent.observability import metrics
from refluent.streams.contracts import DriftAlert, LabeledExample, Prediction
from refluent.streams.errors import DecodeError
from refluent.streams.origin import Origin
from refluent.streams.serde import JsonSerde
from refluent.streams.topics import ALERTS, EXAMPLES, PREDICTIONS

if TYPE_CHECKING:
    from confluent_kafka import Message

    from refluent.config import Settings
    from refluent.streams.kafka import StopSignal

log = logging.getLogger(__name__)


@dataclass
class MonitorStats:
    examples: int = 0
    predictions: int = 0
    alerts: int = 0
    dead_lettered: int = 0


class MonitorService:
    """The monitor service (see the module).

    Args:
        settings: Refluent settings (``monitor`` above all).
        bootstrap_servers: Kafka brokers.
        examples_topic, predictions_topic, alerts_topic: Topics read and written.
    """

    def __init__(self, settings: Settings, bootstrap_servers: str, *,
                 examples_topic: str = EXAMPLES, predictions_topic: str = PREDICTIONS,
                 alerts_topic: str = ALERTS) -> None:
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.examples_topic, self.predictions_topic = examples_topic, predictions_topic
        self.alerts_topic = alerts_topic
        self.monitors = ModelMonitors(settings.monitor)
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

    def run(self, stop: StopSignal | None = None, idle_timeout: float | None = None,
            until_caught_up: bool = False) -> MonitorStats:
        """Consume and alert until stopped (SIGTERM/SIGINT), idle or caught up."""
        from refluent.streams.deadletter import DeadLetterRouter
        from refluent.streams.kafka import ConsumerLoop, Producer

        kafka = self.settings.kafka
        producer = Producer(kafka, self.bootstrap_servers,
                            **{"message.max.bytes": kafka.dlq_max_record_bytes + 65536})
        router = DeadLetterRouter(producer)
        loop = ConsumerLoop(kafka, self.bootstrap_servers, self.settings.monitor.group,
                            [self.examples_topic, self.predictions_topic])
        counter = metrics.ALERTS_RAISED

        def handle(batch: list[Message]) -> None:
            def reject(i: int, error: Exception) -> None:
                router.route(batch[i], "decode", error)

            records = [(Origin(m.topic() or "", m.partition() or 0, m.offset() or 0), m.value())
                       for m in batch]
            for alert in self.handle(records, reject):
                producer.produce(self.alerts_topic, alert.model_dump_json().encode(),
                                 alert.model_name.encode())
                counter.labels(alert.model_name, alert.kind).inc()
                log.warning("drift: %s v%s %s %s %s=%.4g > %.4g", alert.model_name,
                            alert.model_version, alert.kind, alert.feature or "",
                            alert.detector, alert.statistic, alert.threshold)
            producer.flush()  # alerts and dead letters are durable before the commit

        try:
            loop.run(handle, stop=stop, idle_timeout=idle_timeout,
                     until_caught_up=until_caught_up)
        finally:
            producer.close()
        return self.stats


__all__ = ["MonitorService", "MonitorStats"]
