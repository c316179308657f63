"""Moving records between files and topics: validated JSONL produce, and tailing a topic.

Produce guarantee: every line of the file ends up either on the topic (valid) or on the topic's
dead-letter sibling with the file name and line number in ``refluent.dlq.origin`` (invalid);
:func:`produce_jsonl` returns only after the broker acknowledged both.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from refluent.config import KafkaSettings
from refluent.errors import require
from refluent.streams.deadletter import DeadLetterRouter
from refluent.streams.errors import DecodeError
from refluent.streams.kafka import Producer
from refluent.streams.serde import JsonSerde
from refluent.streams.topics import TopicSpec


@dataclass
class ProduceReport:
    """Outcome of :func:`produce_jsonl`."""

    produced: int = 0
    dead_lettered: int = 0
    skipped_blank: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    """(origin, message) of the first rejected lines."""

    @property
    def lines(self) -> int:
        """Non-blank lines read."""
        return self.produced + self.dead_lettered


def _dotted(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj[part]
    return obj


def record_key(
    event: Any, line: bytes, key_field: str | None, primary_key: list[str]
) -> str | None:
    """The key of a produced record: ``key_field`` (a dotted path into the JSON), else the
    contract's entity key (the primary key for CDC)."""
    if key_field:
        value = _dotted(orjson.loads(line), key_field)
        return value if isinstance(value, str) else orjson.dumps(value).decode()
    if hasattr(event, "key") and hasattr(event, "op"):  # a CDC envelope
        return str(event.key(primary_key)) if event.op != "t" else None
    return event.entity_key() if event is not None else None


def produce_jsonl(
    lines: Iterable[bytes],
    spec: TopicSpec,
    producer: Producer,
    *,
    settings: KafkaSettings,
    source_name: str,
    key_field: str | None = None,
    primary_key: list[str] | None = None,
    on_line: Callable[[int], None] | None = None,
    max_errors_kept: int = 20,
) -> ProduceReport:
    """Validate each JSON line against ``spec``'s contract and produce it as written.

    Valid lines go to ``spec.name`` keyed by entity; invalid ones to ``<topic>.dlq`` with
    step ``produce``. ``on_line(nbytes)`` is called per line (for progress bars).
    """
    if spec.contract is None:
        raise DecodeError(spec.name, "no_contract", "cannot validate lines for a raw topic")
    serde = JsonSerde(spec.contract, max_record_bytes=settings.max_record_bytes)
    router = DeadLetterRouter(producer)
    report = ProduceReport()
    pk = primary_key or ["id"]
    for lineno, raw in enumerate(lines, start=1):
        if on_line:
            on_line(len(raw))
        line = raw.strip()
        if not line:
            report.skipped_blank += 1
            continue
        origin = f"{source_name}:{lineno}"
        try:
            event = serde.decode(line)
            key = record_key(event, line, key_field, pk)
        except (DecodeError, KeyError, TypeError) as exc:
            error = exc if isinstance(exc, DecodeError) else DecodeError(
                serde.name, "key", f"no key field {exc} in record")
            router.route_raw(spec.name, None, line, "produce", error, origin=origin)
            report.dead_lettered += 1
            if len(report.errors) < max_errors_kept:
                report.errors.append((origin, str(error)))
            continue
        producer.produce(spec.name, line, key)
        report.produced += 1
    producer.flush()
    return report


@dataclass(frozen=True)
class TailRecord:
    """One record read by :func:`tail`."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def as_json(self) -> dict[str, Any]:
        """The record as plain JSON data: the value parsed when it is JSON."""
        value: Any = None
        if self.value is not None:
            try:
                value = orjson.loads(self.value)
            except orjson.JSONDecodeError:
                value = self.value.decode("utf-8", errors="replace")
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
            "key": self.key.decode("utf-8", errors="replace") if self.key is not None else None,
            "value": value,
            "headers": {k: v.decode("utf-8", errors="replace") for k, v in self.headers},
        }


def tail(
    settings: KafkaSettings,
    bootstrap_servers: str,
    topic: str,
    *,
    from_beginning: bool = False,
    max_records: int | None = None,
    idle_timeout: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[TailRecord]:
    """Yield records of every partition of ``topic`` as they arrive.

    Reads without a consumer group's commits (it assigns partitions itself), so tailing never
    moves any service's offsets.
    """
    ck: Any = require("confluent_kafka", "kafka")
    conf = settings.client_config(bootstrap_servers)
    conf.update({
        "group.id": f"refluent-tail-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        **settings.large_fetch_config(),
    })
    consumer = ck.Consumer(conf)
    try:
        md = consumer.list_topics(topic, timeout=10)
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            from refluent.streams.errors import TopicAdminError

            raise TopicAdminError(topic, "does not exist (create it with `refluent topics create`)")
        start = ck.OFFSET_BEGINNING if from_beginning else ck.OFFSET_END
        consumer.assign([ck.TopicPartition(topic, p, start) for p in sorted(meta.partitions)])
        seen = 0
        last = time.monotonic()
        while not should_stop():
            if max_records is not None and seen >= max_records:
                return
            msgs = consumer.consume(500 if max_records is None else min(500, max_records - seen),
                                    0.25)
            if not msgs:
                if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                    return
                continue
            last = time.monotonic()
            for msg in msgs:
                if msg.error() is not None:
                    continue
                ts_type, ts = msg.timestamp()
                seen += 1
                yield TailRecord(msg.topic(), msg.partition(), msg.offset(),
                                 ts if ts_type else None, msg.key(), msg.value(),
                                 list(msg.headers() or []))
    finally:
        consumer.close()
