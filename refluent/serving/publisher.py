"""Publishing predictions made outside the Kafka loop (HTTP) to the predictions topic, so every
prediction is logged with the features it was served with, as the Kafka front end's are."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from refluent.observability import metrics as core_metrics
from refluent.observability import serving as m
from refluent.streams.contracts import Prediction
from refluent.streams.kafka import Producer
from refluent.streams.serde import JsonSerde
from refluent.streams.topics import PREDICTIONS

if TYPE_CHECKING:
    from refluent.config import Settings

log = logging.getLogger(__name__)

"""The topic predictions go to (the catalog's name)."""


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
                 topic: str = PREDICTIONS) -> None:
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
