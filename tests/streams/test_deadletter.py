"""Bad input lands in the dead-letter topic with the right headers; the consumer keeps going."""

from __future__ import annotations

import orjson
import pytest

from refluent.config import Settings
from refluent.streams.contracts import CdcEnvelope
from refluent.streams.deadletter import DeadLetter
from refluent.streams.kafka import ConsumerLoop, Producer
from refluent.streams.processing import DecodingHandler, RecordRejected
from refluent.streams.topics import TopicCatalog
from refluent.testing.kafka import read_all, unique_topic

pytestmark = pytest.mark.integration


def _good(i: int, op: str = "c") -> bytes:
    row = {"id": i, "email": f"u{i}@example.com", "score": i * 0.5}
    return orjson.dumps({
        "before": row if op in ("u", "d") else None,
        "after": row if op != "d" else None,
        "op": op,
        "ts_ms": 1_700_000_000_000 + i,
        "source": {"connector": "postgresql", "db": "shop", "table": "orders",
                   "ts_ms": 1_700_000_000_000 + i, "lsn": 1000 + i},
    })


BAD = {
    "malformed_json": (b'{"op": "c", "after": {"id": 1}', "json"),
    "wrong_types": (orjson.dumps({"op": "c", "after": ["not", "a", "row"],
                                  "source": {"ts_ms": "yesterday"}}), "validation"),
    "missing_fields": (orjson.dumps({"after": {"id": 2}}), "validation"),
    "unknown_op": (orjson.dumps({"op": "z", "after": {"id": 3}, "source": {}}), "validation"),
    "five_mb": (b'{"op": "c", "after": {"id": 4, "blob": "' + b"x" * (5 * 1024 * 1024)
                + b'"}, "source": {}}', "too_large"),
    "not_utf8": (b'{"op": "c", "after": {"id": "\xff\xfe\xfd"}, "source": {}}', "utf8"),
}


def test_bad_records__land_in_dlq_with_headers_and_totals_balance(settings: Settings) -> None:
    spec = unique_topic(settings, "cdc.orders")
    bootstrap = settings.kafka.bootstrap_servers or ""
    sent: list[tuple[str, bytes]] = []
    big = {"message.max.bytes": 8 * 1024 * 1024}
    with Producer(settings.kafka, bootstrap, **big) as producer:
        i = 0
        for name, (value, _) in BAD.items():
            for _ in range(3):
                producer.produce(spec.name, _good(i), key=str(i))
                sent.append(("good", _good(i)))
                i += 1
            producer.produce(spec.name, value, key=f"bad-{name}")
            sent.append((name, value))
        # A tombstone after a delete is data, not an error.
        producer.produce(spec.name, _good(i, "d"), key=str(i))
        producer.produce(spec.name, None, key=str(i))
        sent += [("good", b""), ("tombstone", b"")]

    seen: list[CdcEnvelope | None] = []
    with Producer(settings.kafka, bootstrap, **big) as dlq_producer:
        handler = DecodingHandler(
            TopicCatalog.from_settings(settings.topics), settings.kafka, dlq_producer,
            on_events=lambda events: seen.extend(e for e, _ in events), group_id="dlq-test")
        loop = ConsumerLoop(settings.kafka, bootstrap, "dlq-test", [spec.name])
        stats = loop.run(handler, max_records=len(sent), idle_timeout=30)

    assert stats.records == len(sent)
    assert handler.stats.records == len(sent)
    assert handler.stats.processed + handler.stats.dead_lettered == len(sent)
    assert handler.stats.dead_lettered == len(BAD)
    assert sum(e is None for e in seen) == 1  # the tombstone
    assert len(seen) == len(sent) - len(BAD)

    letters = {}
    for rec in read_all(settings, spec.name + ".dlq", len(BAD)):
        letter = DeadLetter.parse(rec.headers, rec.key, rec.value)
        letters[(rec.key or b"").decode().removeprefix("bad-")] = (letter, rec)
    assert set(letters) == set(BAD)
    for name, (value, reason) in BAD.items():
        letter, rec = letters[name]
        assert letter.step == "decode"
        assert letter.error_class in ("DecodeError", "RecordTooLargeError")
        assert letter.reason == reason, name
        assert letter.topic == spec.name
        assert letter.offset >= 0 and 0 <= letter.partition < spec.partitions
        assert "CdcEnvelope" in letter.message
        assert rec.value == value, f"{name}: the dead letter keeps the original bytes"


def test_handler_rejection__is_dead_lettered_and_the_batch_goes_on(settings: Settings) -> None:
    spec = unique_topic(settings, "cdc.orders", partitions=1)
    bootstrap = settings.kafka.bootstrap_servers or ""
    with Producer(settings.kafka, bootstrap) as producer:
        for i in range(10):
            producer.produce(spec.name, _good(i), key=str(i))

    handler: DecodingHandler
    kept: list[int] = []

    def on_events(events: list) -> None:  # type: ignore[type-arg]
        for env, msg in events:
            if env.row["id"] % 3 == 0:
                handler.reject(msg, RecordRejected("view:orders", "unknown_entity",
                                                   f"no customer {env.row['id']}"))
            else:
                kept.append(env.row["id"])

    with Producer(settings.kafka, bootstrap) as dlq:
        handler = DecodingHandler(TopicCatalog.from_settings(settings.topics), settings.kafka,
                                  dlq, on_events, group_id="reject-test")
        ConsumerLoop(settings.kafka, bootstrap, "reject-test", [spec.name]).run(
            handler, max_records=10, idle_timeout=30)
    assert kept == [1, 2, 4, 5, 7, 8]
    assert handler.stats.processed == 6 and handler.stats.dead_lettered == 4
    letters = [DeadLetter.parse(r.headers, r.key, r.value) for r in read_all(settings,
                                                                       spec.name + ".dlq", 4)]
    assert {(x.step, x.reason) for x in letters} == {("view:orders", "unknown_entity")}
    assert sorted(x.offset for x in letters) == [0, 3, 6, 9]
