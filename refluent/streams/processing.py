"""Decoding records into contracts, with bad records dead-lettered instead of crashing.

:class:`DecodingHandler` turns a consumer loop's raw batches into typed events for an event
handler. A record that fails to decode, or that the event handler rejects by raising
:class:`RecordRejected`, goes to the dead-letter topic and the batch carries on; any other
exception is a fault (a sink down, a bug) and stops the loop without committing, so nothing is
lost. Before the batch counts as processed, the dead-letter producer is flushed.

Invariant: records in = ``processed`` + ``dead_lettered`` (tombstones count as processed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from refluent.config import KafkaSettings
from refluent.errors import RefluentError
from refluent.observability import metrics
from refluent.streams.deadletter import DeadLetterRouter
from refluent.streams.errors import DecodeError
from refluent.streams.serde import JsonSerde
from refluent.streams.topics import TopicCatalog

if TYPE_CHECKING:
    from confluent_kafka import Message

    from refluent.streams.kafka import Producer


class RecordRejected(RefluentError):
    """Raised by an event handler for a record that is bad data, not a fault.

    Args:
        step: The step that rejected it (``feature_view:orders``).
        reason: Short class of problem (``unknown_entity``).
        detail: What was wrong.
    """

    def __init__(self, step: str, reason: str, detail: str) -> None:
        self.step = step
        self.reason = reason
        self.detail = detail
        super().__init__(f"{step}: {reason}: {detail}")


EventHandler = Callable[[list[tuple[Any, "Message"]]], None]


@dataclass
class HandlerStats:
    """Counts of one :class:`DecodingHandler`."""

    records: int = 0
    processed: int = 0
    dead_lettered: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class DecodingHandler:
    """A batch handler for :class:`~refluent.streams.kafka.ConsumerLoop` that decodes records
    by their topic's contract and passes ``(event, message)`` pairs to ``on_events``.

    ``on_events`` may raise :class:`RecordRejected` from a per-record step by calling
    :meth:`reject` instead; it returns only after its own writes are flushed.
    ``on_rejected`` is told of the records that failed to decode, once their dead letters are
    durable (sinks that keep their own offsets count them as consumed).
    """

    def __init__(
        self,
        catalog: TopicCatalog,
        settings: KafkaSettings,
        dlq_producer: Producer,
        on_events: EventHandler,
        group_id: str = "refluent",
        on_rejected: Callable[[list[Message]], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.settings = settings
        self.router = DeadLetterRouter(dlq_producer)
        self.on_events = on_events
        self.on_rejected = on_rejected
        self.group_id = group_id
        self.stats = HandlerStats()
        self._serdes: dict[str, JsonSerde[BaseModel]] = {}
        self._m_processed = metrics.RECORDS_PROCESSED.labels(group_id)

    def serde(self, topic: str) -> JsonSerde[BaseModel]:
        """The serde of ``topic``'s contract (cached)."""
        serde = self._serdes.get(topic)
        if serde is None:
            spec = self.catalog.get(topic)
            if spec.contract is None:
                raise DecodeError(topic, "no_contract", f"topic {topic} has no event contract")
            serde = JsonSerde(spec.contract, max_record_bytes=self.settings.max_record_bytes,
                              allow_tombstones=spec.allow_tombstones)
            self._serdes[topic] = serde
        return serde

    def reject(self, msg: Message, error: RecordRejected | DecodeError) -> None:
        """Dead-letter ``msg`` (from ``on_events`` or decoding) and count it."""
        self.router.route(msg, getattr(error, "step", "decode"), error)
        self.stats.dead_lettered += 1
        reason = getattr(error, "reason", type(error).__name__)
        self.stats.by_reason[reason] = self.stats.by_reason.get(reason, 0) + 1

    def __call__(self, batch: list[Message]) -> None:
        events: list[tuple[Any, Message]] = []
        rejected: list[Message] = []
        for msg in batch:
            try:
                event = self.serde(msg.topic() or "").decode(msg.value())
            except DecodeError as exc:
                self.reject(msg, exc)
                rejected.append(msg)
                continue
            events.append((event, msg))
        if rejected:
            # Durable before anything downstream may count these offsets as consumed.
            self.router.producer.flush()
            if self.on_rejected is not None:
                self.on_rejected(rejected)
        rejected_before = self.stats.dead_lettered
        if events:
            self.on_events(events)
        self.router.producer.flush()
        self.stats.records += len(batch)
        handled_ok = len(events) - (self.stats.dead_lettered - rejected_before)
        self.stats.processed += handled_ok
        self._m_processed.inc(handled_ok)
