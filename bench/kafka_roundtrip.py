"""Kafka round trip through Refluent's helpers beside raw confluent-kafka, and CDC decode speed.

Prints one JSON object. Starts its own broker (the embedded one, or testcontainers where a Docker
engine answers) unless ``--bootstrap-servers`` names one.

    python bench/kafka_roundtrip.py [--events 200000] [--size 200] [--rounds 2]

Both paths use the same client settings (idempotent producer, acks=all, linger 5 ms, lz4; a
consumer group with manual commits after each batch), the same topic layout and the same keys.
``ratio`` is the Refluent throughput divided by the raw one (goal >= 0.8). ``steady`` figures
time from the first consumed record, so the group join does not count; ``end_to_end`` figures
include it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from rich.console import Console

from refluent.config import KafkaSettings
from refluent.streams import kafka as rk
from refluent.streams.contracts import CdcEnvelope
from refluent.streams.serde import JsonSerde
from refluent.streams.topics import TopicSpec

err = Console(stderr=True)


def payloads(n: int, size: int) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: 1000 entity keys, JSON values padded to ``size`` bytes."""
    out = []
    for i in range(n):
        head = b'{"entity":"e%d","seq":%d,"pad":"' % (i % 1000, i)
        value = head + b"x" * max(size - len(head) - 2, 0) + b'"}'
        out.append((b"e%d" % (i % 1000), value))
    return out


def _consume_timed(poll_batch: Callable[[], int], n: int, timeout: float) -> tuple[float, float]:
    """Returns (seconds from start, seconds from the first record) to consume ``n``."""
    start = time.perf_counter()
    first = None
    got = 0
    while got < n:
        k = poll_batch()
        if k and first is None:
            first = time.perf_counter()
        got += k
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"consumed {got} of {n} in {timeout}s")
    end = time.perf_counter()
    return end - start, end - (first or start)


def run_raw(conf: dict[str, Any], settings: KafkaSettings, topic: str,
            data: list[tuple[bytes, bytes]]) -> dict[str, float]:
    producer = Producer({**conf, "enable.idempotence": True, "acks": "all",
                         "partitioner": "murmur2_random",
                         "linger.ms": settings.linger_ms,
                         "compression.type": settings.compression_type})
    t0 = time.perf_counter()
    for key, value in data:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)
    produce_s = time.perf_counter() - t0
    producer.close()

    consumer = Consumer({**conf, "group.id": f"bench-raw-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "session.timeout.ms": settings.session_timeout_ms,
                         # Same fetch sizes as Refluent's consumer: compare the helpers, not
                         # librdkafka settings.
                         **settings.large_fetch_config()})
    consumer.subscribe([topic])

    def batch() -> int:
        msgs = consumer.consume(500, 0.5)
        good = [m for m in msgs if m.error() is None]
        if good:
            last: dict[int, int] = {}
            for m in good:
                last[m.partition()] = m.offset() + 1
            consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in last.items()],
                            asynchronous=True)
        return len(good)

    total, steady = _consume_timed(batch, len(data), 120)
    consumer.close()
    return {"produce_s": produce_s, "consume_s": total, "consume_steady_s": steady}


def run_refluent(bootstrap: str, settings: KafkaSettings, topic: str,
                 data: list[tuple[bytes, bytes]]) -> dict[str, float]:
    t0 = time.perf_counter()
    with rk.Producer(settings, bootstrap) as producer:
        for key, value in data:
            producer.produce(topic, value, key)
        producer.flush(60)
        produce_s = time.perf_counter() - t0

    loop = rk.ConsumerLoop(settings, bootstrap, f"bench-rf-{uuid.uuid4().hex[:6]}", [topic])
    times: dict[str, float] = {}
    count = 0

    def handler(batch: list[Any]) -> None:
        nonlocal count
        if "first" not in times:
            times["first"] = time.perf_counter()
        count += len(batch)

    start = time.perf_counter()
    loop.run(handler, max_records=len(data), idle_timeout=60)
    end = time.perf_counter()
    if count != len(data):
        raise RuntimeError(f"consumed {count} of {len(data)}")
    return {"produce_s": produce_s, "consume_s": end - start,
            "consume_steady_s": end - times["first"]}


def cdc_decode_rate(n: int) -> dict[str, float]:
    """Envelopes/s through JsonSerde(CdcEnvelope).decode on one core (parse + validate)."""
    records = []
    for i in range(1000):
        row = {"id": i, "email": f"user{i}@example.com", "name": f"User {i}", "balance": i * 1.5,
               "country": "DE", "active": i % 2 == 0}
        op = "cur"[i % 3]
        records.append(orjson.dumps({
            "before": row if op == "u" else None, "after": row, "op": op,
            "ts_ms": 1_700_000_000_000 + i, "transaction": None,
            "source": {"version": "2.7.3.Final", "connector": "postgresql", "name": "shop",
                       "ts_ms": 1_700_000_000_000 + i, "snapshot": "false", "db": "shop",
                       "sequence": f'[null,"{i}"]', "schema": "public", "table": "customers",
                       "txId": 700 + i, "lsn": 10_000 + i, "xmin": None},
        }))
    serde = JsonSerde(CdcEnvelope, allow_tombstones=True)
    decode = serde.decode
    size = sum(len(r) for r in records) / len(records)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(n):
            decode(records[i % 1000])
        best = max(best, n / (time.perf_counter() - t0))
    return {"events_per_s": round(best), "mean_record_bytes": round(size), "events": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--decode-events", type=int, default=200_000)
    parser.add_argument("--bootstrap-servers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.bootstrap_servers:
            result = bench(args, args.bootstrap_servers, "external")
        else:
            from refluent.testing.services import running_services

            with running_services(Path(tmp)) as svc:
                result = bench(args, svc.bootstrap_servers, svc.kind)
    print(json.dumps(result, indent=2))


def bench(args: argparse.Namespace, bootstrap: str, broker: str) -> dict[str, Any]:
    settings = KafkaSettings(session_timeout_ms=6000)
    conf = settings.client_config(bootstrap)
    data = payloads(args.events, args.size)
    admin = rk.TopicAdmin(settings, bootstrap)
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        # Alternate which path goes first, so warm-up favours neither.
        order = ["raw", "refluent"] if r % 2 == 0 else ["refluent", "raw"]
        row: dict[str, Any] = {}
        for path in order:
            topic = f"bench.{path}.{uuid.uuid4().hex[:8]}"
            admin.ensure([TopicSpec(topic, None, "entity", partitions=args.partitions)])
            err.print(f"round {r + 1}/{args.rounds}: {path} ({args.events} events)")
            row[path] = (run_raw(conf, settings, topic, data) if path == "raw"
                         else run_refluent(bootstrap, settings, topic, data))
        rounds.append(row)

    def best(path: str, key: str) -> float:
        return min(x[path][key] for x in rounds)

    def rate(path: str, *keys: str) -> float:
        return args.events / sum(best(path, k) for k in keys)

    summary = {}
    for name, keys in (("produce", ("produce_s",)), ("consume_steady", ("consume_steady_s",)),
                       ("end_to_end", ("produce_s", "consume_s")),
                       ("steady", ("produce_s", "consume_steady_s"))):
        raw, rf = rate("raw", *keys), rate("refluent", *keys)
        summary[name] = {"raw_events_per_s": round(raw), "refluent_events_per_s": round(rf),
                         "ratio": round(rf / raw, 3)}
    err.print("CDC decode")
    return {
        "benchmark": "kafka_roundtrip",
        "broker": broker,
        "events": args.events,
        "event_bytes": args.size,
        "partitions": args.partitions,
        "rounds": args.rounds,
        "roundtrip": summary,
        "goal_ratio": 0.8,
        "goal_met": summary["steady"]["ratio"] >= 0.8 and summary["end_to_end"]["ratio"] >= 0.8,
        "cdc_decode": {**cdc_decode_rate(args.decode_events), "goal_events_per_s": 100_000},
        "raw_rounds": rounds,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
    }


if __name__ == "__main__":
    main()
