"""Dead-letter routing: a rejected record goes whole to ``<topic>.dlq`` with headers saying
which step rejected it, why, and where it came from.

Headers (all UTF-8 strings), after the record's own headers:

===============================  ===========================================
``refluent.dlq.step``            step that rejected the record (``decode``)
``refluent.dlq.error.class``     exception class (``DecodeError``)
``refluent.dlq.error.reason``    short class of problem (``validation``)
``refluent.dlq.error.message``   the error message (at most 2000 characters)
``refluent.dlq.topic``           original topic
``refluent.dlq.partition``       original partition
``refluent.dlq.offset``          original offset
``refluent.dlq.timestamp``       original record timestamp (ms), if any
``refluent.dlq.origin``          where a record from outside Kafka came from
===============================  ===========================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from refluent.observability import metrics
from refluent.streams.topics import DLQ_SUFFIX

if TYPE_CHECKING:
    from confluent_kafka import Message

    from refluent.streams.kafka import Producer

H = "refluent.dlq."
MAX_MESSAGE_CHARS = 2000


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of ``topic``."""
    return topic + DLQ_SUFFIX


def error_reason(error: BaseException) -> str:
    """The short reason of an error: its ``reason`` attribute, else its class name."""
    return str(getattr(error, "reason", type(error).__name__))


class DeadLetterRouter:
    """Sends rejected records to their topic's dead-letter sibling through ``producer``.

    The caller flushes the producer before committing the rejected record's offset (the
    consumer loop's handler contract), so a dead letter is never lost.
    """

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.count = 0

    def route(self, msg: Message, step: str, error: BaseException) -> None:
        """Send ``msg`` to ``<topic>.dlq`` with headers naming ``step`` and ``error``."""
        ts_type, ts = msg.timestamp()
        self.route_raw(
            msg.topic() or "?", msg.key(), msg.value(), step, error,
            partition=msg.partition(), offset=msg.offset(),
            timestamp_ms=ts if ts_type and ts >= 0 else None,
            headers=msg.headers(),  # type: ignore[arg-type]  # a list on consumed records
        )

    def route_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        step: str,
        error: BaseException,
        *,
        partition: int | None = None,
        offset: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        origin: str | None = None,
    ) -> None:
        """Dead-letter a record that never reached ``topic`` (or did, at ``partition/offset``).

        ``origin`` names where a record from outside Kafka came from (``events.jsonl:12``).
        """
        reason = error_reason(error)
        out: list[tuple[str, bytes | str]] = list(headers or [])
        out += [
            (H + "step", step),
            (H + "error.class", type(error).__name__),
            (H + "error.reason", reason),
            (H + "error.message", str(error)[:MAX_MESSAGE_CHARS]),
            (H + "topic", topic),
            (H + "partition", str(-1 if partition is None else partition)),
            (H + "offset", str(-1 if offset is None else offset)),
        ]
        if timestamp_ms is not None:
            out.append((H + "timestamp", str(timestamp_ms)))
        if origin is not None:
            out.append((H + "origin", origin))
        self.producer.produce(dlq_topic(topic), value, key, headers=out)
        metrics.RECORDS_DEAD_LETTERED.labels(topic, step, reason).inc()
        self.count += 1


@dataclass(frozen=True)
class DeadLetter:
    """A record read back from a dead-letter topic."""

    step: str
    error_class: str
    reason: str
    message: str
    topic: str
    partition: int
    offset: int
    origin: str | None
    key: bytes | None
    value: bytes | None

    @classmethod
    def from_message(cls, msg: Any) -> DeadLetter:
        """Parse a consumed dead-letter record (a confluent-kafka message)."""
        return cls.parse(msg.headers() or [], msg.key(), msg.value())

    @classmethod
    def parse(
        cls, headers: list[tuple[str, bytes]], key: bytes | None, value: bytes | None
    ) -> DeadLetter:
        """Parse the headers :class:`DeadLetterRouter` wrote.

        Raises:
            KeyError: a header is missing (the record was not written by the router).
        """
        h = {k: v.decode("utf-8") for k, v in headers if k.startswith(H)}
        return cls(
            step=h[H + "step"],
            error_class=h[H + "error.class"],
            reason=h[H + "error.reason"],
            message=h[H + "error.message"],
            topic=h[H + "topic"],
            partition=int(h[H + "partition"]),
            offset=int(h[H + "offset"]),
            origin=h.get(H + "origin"),
            key=key,
            value=value,
        )
