"""Where the embedded broker (Tansu) differs from Apache Kafka, probed with confluent-kafka.

Prints one JSON object. For each probe: ``kafka``, what Apache Kafka does (stated here from its
documentation and defaults), ``broker``, what the broker under test did, and ``quirk``, whether
they differ. Starts its own embedded broker on a free loopback port unless
``--bootstrap-servers`` names one; against a real Kafka every ``quirk`` should be false.

Every probe writes fresh one-partition topics, is bounded in time and catches its own errors
(reported as ``{"error": ...}``, which counts as a quirk). The run takes about a minute, most of
it the group-join probe (``--join-budget`` seconds at most).

    python bench/broker_quirks.py [--bootstrap-servers HOST:PORT] [--join-budget 40]

Probes, in order:

- ListOffsets: ``get_watermark_offsets(cached=False)`` after 3 producer batches of 500 records
  and after 20 batches of one record; the earliest offset; ``offsets_for_times``; where a
  consumer assigned at ``OFFSET_END`` starts.
- The high watermark a fetch response carries (``get_watermark_offsets(cached=True)`` after
  consuming), and Refluent's ``exact_ends``, which relies on it.
- A keyed changelog (repeated keys, tombstones, lz4, 250 records per batch) read back from the
  beginning and from offsets inside a batch; what aiokafka (under Faust) reads and takes as the
  end (``end_offsets``, where Faust's table recovery stops).
- A ``cleanup.policy=compact`` topic and what DescribeConfigs returns; CreatePartitions; the
  partition count of an auto-created topic.
- Whether a read_committed consumer sees an aborted transaction's records; aiokafka's
  idempotent and transactional producers.
- Delivery latency at 5,000 records/s, with and without the idempotent producer.
- The time from ``subscribe`` to the first assignment, at ``session.timeout.ms`` 6000 and 45000;
  whether a group whose members all left takes a member with another assignor.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.metadata
import json
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
    libversion,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic
from rich.console import Console

from refluent.config import KafkaSettings
from refluent.streams.kafka import exact_ends

err = Console(stderr=True)

Record = tuple[int, bytes | None, bytes | None]
"""(offset, key, value) of one record."""

# Kafka waits group.initial.rebalance.delay.ms (3000 ms by default) before it completes the
# first join of an empty group; a second more covers the round trips.
KAFKA_FIRST_JOIN_S = 4.0


class Context:
    """The broker under test, and fresh topic names for one run."""

    def __init__(self, bootstrap: str, settings: KafkaSettings, admin: AdminClient) -> None:
        self.bootstrap = bootstrap
        self.settings = settings
        self.admin = admin
        self.prefix = f"quirks.{uuid.uuid4().hex[:8]}"

    def conf(self, **extra: Any) -> dict[str, Any]:
        return {**self.settings.client_config(self.bootstrap), **extra}

    def topic(self, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> str:
        """Create ``<prefix>.<name>``; returns its name."""
        topic = f"{self.prefix}.{name}"
        fut = self.admin.create_topics([NewTopic(topic, partitions, 1, config=config or {})],
                                       operation_timeout=15)[topic]
        fut.result(20)
        return topic

    def consumer(self, **extra: Any) -> Consumer:
        """A consumer that joins no group unless it subscribes (assign, no commits)."""
        return Consumer(self.conf(**{"group.id": f"{self.prefix}.reader",
                                     "enable.auto.commit": False,
                                     "enable.partition.eof": True, **extra}))


def probe(expected: Any, measure: Callable[[], tuple[Any, bool]]) -> dict[str, Any]:
    """Run one probe: ``measure`` returns (what the broker did, whether that is a quirk)."""
    t0 = time.monotonic()
    try:
        measured, quirk = measure()
    except Exception as exc:  # noqa: BLE001 - a failure is the measurement
        measured, quirk = {"error": f"{type(exc).__name__}: {exc}"}, True
    return {"kafka": expected, "broker": measured, "quirk": quirk,
            "seconds": round(time.monotonic() - t0, 2)}


def produce_batches(ctx: Context, topic: str, records: Sequence[tuple[bytes, bytes | None]],
                    per_batch: int, compression: str = "none",
                    timestamps: list[int] | None = None) -> list[Record]:
    """Produce ``records`` as batches of ``per_batch``: each group is queued under a long
    linger.ms and then flushed, so it leaves as one producer batch. Returns what was written,
    with the offsets from the delivery reports."""
    producer = Producer(ctx.conf(**{"linger.ms": 1000, "batch.num.messages": max(per_batch, 1),
                                    "compression.type": compression, "acks": "all"}))
    written: list[Record] = []
    failed: list[str] = []

    def on_delivery(error: KafkaError | None, msg: Any) -> None:
        if error is not None:
            failed.append(error.str())
        else:
            written.append((msg.offset(), msg.key(), msg.value()))

    try:
        for start in range(0, len(records), per_batch):
            for i in range(start, min(start + per_batch, len(records))):
                key, value = records[i]
                ts = timestamps[i] if timestamps else 0
                producer.produce(topic, value, key, timestamp=ts, on_delivery=on_delivery)
            if producer.flush(20) > 0:
                raise TimeoutError(f"{topic}: records still queued after 20 s")
    finally:
        producer.close()
    if failed:
        raise RuntimeError(f"{topic}: {len(failed)} deliveries failed, first: {failed[0]}")
    return sorted(written, key=lambda r: r[0])


def read_from(ctx: Context, topic: str, start: int, timeout_s: float = 20.0,
              **conf: Any) -> tuple[list[Record], int | None]:
    """Read partition 0 of ``topic`` from ``start`` until end of partition, with
    ``consume(num_messages=...)``. Returns the records and the offset the end was reported at
    (None: no end within ``timeout_s``)."""
    consumer = ctx.consumer(**conf)
    out: list[Record] = []
    eof: int | None = None
    try:
        consumer.assign([TopicPartition(topic, 0, start)])
        deadline = time.monotonic() + timeout_s
        while eof is None and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=200, timeout=0.5):
                error = msg.error()
                if error is None:
                    out.append((msg.offset() or 0, msg.key(), msg.value()))
                elif error.code() == KafkaError._PARTITION_EOF:
                    eof = msg.offset()
                elif not error.retriable():
                    raise KafkaException(error)
    finally:
        consumer.close()
    return out, eof


def compare(written: list[Record], read: list[Record], start: int = 0) -> dict[str, Any]:
    """How ``read`` (from offset ``start``) differs from what was written."""
    want = {o: (k, v) for o, k, v in written if o >= start}
    offsets = [o for o, _, _ in read]
    return {
        "expected_records": len(want),
        "read": len(read),
        "first_offset": offsets[0] if offsets else None,
        "missing": len(set(want) - set(offsets)),
        "duplicates": len(offsets) - len(set(offsets)),
        "unexpected": len(set(offsets) - set(want)),
        "in_order": offsets == sorted(offsets),
        "wrong_key_or_value": sum(1 for o, k, v in read if o in want and want[o] != (k, v)),
    }


def exact(diff: dict[str, Any]) -> bool:
    return (diff["read"] == diff["expected_records"] and diff["missing"] == 0
            and diff["duplicates"] == 0 and diff["unexpected"] == 0 and diff["in_order"]
            and diff["wrong_key_or_value"] == 0)


def watermarks(ctx: Context, topic: str) -> tuple[int, int]:
    """(earliest, latest) by ListOffsets."""
    consumer = ctx.consumer()
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10,
                                                   cached=False)
        return int(low), int(high)
    finally:
        consumer.close()


# ---------------------------------------------------------------------------------------------
# ListOffsets and the fetch high watermark
# ---------------------------------------------------------------------------------------------


def offsets_probes(ctx: Context) -> dict[str, Any]:
    n, per_batch = 1500, 500
    base_ts = int(time.time() * 1000) - 600_000

    @functools.cache
    def batched() -> str:
        topic = ctx.topic("batched")
        records = [(b"k%d" % (i % 50), b"v%d" % i) for i in range(n)]
        produce_batches(ctx, topic, records, per_batch,
                        timestamps=[base_ts + i for i in range(n)])
        return topic

    def latest_batched() -> tuple[Any, bool]:
        _, high = watermarks(ctx, batched())
        return {"latest": high, "batch_starts": list(range(0, n, per_batch))}, high != n

    def latest_single() -> tuple[Any, bool]:
        topic = ctx.topic("single")
        produce_batches(ctx, topic, [(b"k", b"v%d" % i) for i in range(20)], 1)
        _, high = watermarks(ctx, topic)
        return {"latest": high}, high != 20

    def earliest() -> tuple[Any, bool]:
        low, _ = watermarks(ctx, batched())
        return {"earliest": low}, low != 0

    at = {"in_second_batch": 750, "second_batch_start": 500, "last_record": n - 1}

    def for_times() -> tuple[Any, bool]:
        consumer = ctx.consumer()
        try:
            asks = [TopicPartition(batched(), 0, base_ts + o) for o in at.values()]
            asks.append(TopicPartition(batched(), 0, base_ts + n + 60_000))
            got = [tp.offset for tp in consumer.offsets_for_times(asks, timeout=10)]
            # The answer means something only if the broker kept the producer's timestamps.
            consumer.assign([TopicPartition(batched(), 0, at["in_second_batch"])])
            msgs = [m for m in consumer.consume(num_messages=1, timeout=5) if m.error() is None]
            kept = bool(msgs) and msgs[0].timestamp()[1] == base_ts + at["in_second_batch"]
        finally:
            consumer.close()
        measured = {**dict(zip(at, got, strict=False)), "after_last": got[-1],
                    "timestamps_kept": kept}
        return measured, got != [*at.values(), -1] or not kept

    def fetched(start: int) -> Callable[[], tuple[Any, bool]]:
        def measure() -> tuple[Any, bool]:
            consumer = ctx.consumer()
            tp = TopicPartition(batched(), 0, start)
            try:
                consumer.assign([tp])
                deadline, seen, eof = time.monotonic() + 15, 0, False
                while not eof and time.monotonic() < deadline:
                    for msg in consumer.consume(num_messages=500, timeout=0.5):
                        error = msg.error()
                        eof = eof or (error is not None
                                      and error.code() == KafkaError._PARTITION_EOF)
                        seen += error is None
                _, high = consumer.get_watermark_offsets(tp, cached=True)
            finally:
                consumer.close()
            return {"high_watermark": high, "records_read": seen, "end_reached": eof}, high != n
        return measure

    def start_at_end() -> tuple[Any, bool]:
        topic = ctx.topic("tail")
        produce_batches(ctx, topic, [(b"k", b"old-%d" % i) for i in range(200)], 100)
        consumer = ctx.consumer()
        read: list[int] = []
        try:
            consumer.assign([TopicPartition(topic, 0, OFFSET_END)])
            # Until the first end of partition the start is not resolved yet: a record
            # produced before it would be skipped on any broker.
            for produce_after_eof in (True, False):
                deadline, eof = time.monotonic() + 10, False
                while not eof and time.monotonic() < deadline:
                    for msg in consumer.consume(num_messages=200, timeout=0.5):
                        error = msg.error()
                        if error is None:
                            read.append(msg.offset() or 0)
                        eof = eof or (error is not None
                                      and error.code() == KafkaError._PARTITION_EOF)
                if produce_after_eof:
                    produce_batches(ctx, topic, [(b"k", b"new")], 1)
        finally:
            consumer.close()
        measured = {"first_offset": read[0] if read else None, "records_read": len(read)}
        return measured, measured != {"first_offset": 200, "records_read": 1}

    def refluent_ends() -> tuple[Any, bool]:
        end = exact_ends(ctx.settings, ctx.bootstrap, [(batched(), 0)])[(batched(), 0)]
        return {"end": end}, end != n

    return {
        "list_offsets_latest_batched": probe(
            {"latest": n, "note": f"{n} records in {n // per_batch} batches of {per_batch}"},
            latest_batched),
        "list_offsets_latest_one_record_per_batch": probe({"latest": 20}, latest_single),
        "list_offsets_earliest": probe({"earliest": 0}, earliest),
        "offsets_for_times": probe(
            {**at, "after_last": -1, "timestamps_kept": True,
             "note": "the earliest offset whose timestamp is >= the one asked; -1 past the end"},
            for_times),
        "assign_at_offset_end": probe(
            {"first_offset": 200, "records_read": 1,
             "note": "200 records in 2 batches of 100, a consumer assigned at OFFSET_END, then "
                     "one more record; librdkafka resolves OFFSET_END (and "
                     "auto.offset.reset=latest) with ListOffsets(latest)"},
            start_at_end),
        "fetch_high_watermark_from_start": probe({"high_watermark": n}, fetched(0)),
        "fetch_high_watermark_from_last_batch": probe({"high_watermark": n},
                                                      fetched(n - per_batch + 1)),
        "refluent_exact_ends": probe({"end": n}, refluent_ends),
    }


# ---------------------------------------------------------------------------------------------
# a batched changelog, read back
# ---------------------------------------------------------------------------------------------


def changelog_probes(ctx: Context) -> dict[str, Any]:
    n, per_batch, keys = 1000, 250, 40
    seeks = (per_batch + 123, 3 * per_batch + 121)

    @functools.cache
    def changelog() -> tuple[str, list[Record]]:
        topic = ctx.topic("changelog", config={"cleanup.policy": "compact"})
        records = [(b"key-%d" % (i % keys), None if i % 7 == 6 else b'{"n":%d}' % i)
                   for i in range(n)]
        return topic, produce_batches(ctx, topic, records, per_batch, compression="lz4")

    def read_all() -> tuple[Any, bool]:
        topic, written = changelog()
        read, eof = read_from(ctx, topic, OFFSET_BEGINNING)
        diff = {**compare(written, read), "end_of_partition_at": eof,
                "tombstones_written": sum(1 for _, _, v in written if v is None),
                "tombstones_read": sum(1 for _, _, v in read if v is None)}
        return diff, not exact(diff) or eof != n

    def read_seek() -> tuple[Any, bool]:
        topic, written = changelog()
        out = {}
        for start in seeks:
            read, eof = read_from(ctx, topic, start)
            out[str(start)] = {**compare(written, read, start), "end_of_partition_at": eof}
        return out, not all(exact(d) and d["first_offset"] == int(s) for s, d in out.items())

    def aiokafka_view() -> tuple[Any, bool]:
        topic, written = changelog()
        end, read = asyncio.run(asyncio.wait_for(_aiokafka_read(ctx.bootstrap, topic, n), 30))
        diff = compare(written, read)
        return {"end_offsets": end, **diff}, end != n or not exact(diff)

    return {
        "changelog_read_from_beginning": probe(
            {"read": n, "missing": 0, "duplicates": 0, "in_order": True,
             "wrong_key_or_value": 0, "end_of_partition_at": n,
             "note": f"{n} keyed records ({keys} keys, every 7th a tombstone), lz4, "
                     f"{per_batch} per batch"},
            read_all),
        "changelog_seek_inside_batch": probe(
            {str(s): {"first_offset": s, "read": n - s} for s in seeks}
            | {"note": "the broker returns the whole batch; the client drops the records "
                       "before the offset asked"},
            read_seek),
        "aiokafka_changelog": probe(
            {"end_offsets": n, "read": n, "missing": 0,
             "note": "end_offsets is where Faust's table recovery stops reading a changelog"},
            aiokafka_view),
    }


async def _aiokafka_read(bootstrap: str, topic: str, n: int) -> tuple[int, list[Record]]:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition as AioTP

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = AioTP(topic, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.seek_to_beginning(tp)
        read: list[Record] = []
        deadline = time.monotonic() + 15
        while await consumer.position(tp) < n and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(tp, timeout_ms=500)).values():
                read.extend((m.offset, m.key, m.value) for m in msgs)
        return int(end), read
    finally:
        await consumer.stop()


# ---------------------------------------------------------------------------------------------
# topic configs and partitions
# ---------------------------------------------------------------------------------------------


def config_probes(ctx: Context) -> dict[str, Any]:
    def compact() -> tuple[Any, bool]:
        topic = ctx.topic("compact", config={"cleanup.policy": "compact"})
        got = _described(ctx, topic, "cleanup.policy", "retention.ms")
        return {"created": True, **got}, \
            got["cleanup.policy"] != "compact" or got["retention.ms"] is None

    def retention() -> tuple[Any, bool]:
        topic = ctx.topic("retention", config={"cleanup.policy": "delete",
                                               "retention.ms": "3600000"})
        got = _described(ctx, topic, "cleanup.policy", "retention.ms")
        return {"created": True, **got}, got != {"cleanup.policy": "delete",
                                                 "retention.ms": "3600000"}

    def default_retention() -> tuple[Any, bool]:
        topic = ctx.topic("plain")
        res = ConfigResource("topic", topic)
        entries = ctx.admin.describe_configs([res])[res].result(20)
        got = {"retention.ms": entries["retention.ms"].value if "retention.ms" in entries
               else None, "configs_returned": sorted(entries)}
        return got, got["retention.ms"] is None

    def create_partitions() -> tuple[Any, bool]:
        topic = ctx.topic("grow")
        try:
            ctx.admin.create_partitions([NewPartitions(topic, 3)],
                                        operation_timeout=15)[topic].result(20)
            answer = "accepted"
        except KafkaException as exc:
            answer = f"refused: {exc.args[0].str()}"
        count = _partitions(ctx, topic)
        return {"answer": answer, "partitions_after": count}, count != 3

    def auto_created() -> tuple[Any, bool]:
        topic = f"{ctx.prefix}.auto"
        producer = Producer(ctx.conf())
        try:
            producer.produce(topic, b"v")
            left = producer.flush(20)
        finally:
            producer.close()
        count = _partitions(ctx, topic)
        return {"partitions": count, "undelivered": left}, count != 1

    return {
        "compact_topic": probe(
            {"created": True, "cleanup.policy": "compact", "retention.ms": "604800000",
             "note": "DescribeConfigs returns every topic config, defaults included; whether "
                     "records are compacted is not probed (Kafka compacts closed segments on "
                     "its own schedule)"},
            compact),
        "describe_configs_retention": probe(
            {"created": True, "cleanup.policy": "delete", "retention.ms": "3600000"}, retention),
        "describe_configs_default_retention": probe(
            {"retention.ms": "604800000",
             "note": "a topic created with no configs: DescribeConfigs returns every topic "
                     "config with its default (retention.ms from log.retention.hours=168)"},
            default_retention),
        "create_partitions": probe({"answer": "accepted", "partitions_after": 3},
                                   create_partitions),
        "auto_created_topic_partitions": probe(
            {"partitions": 1, "note": "the broker's num.partitions, 1 by default"}, auto_created),
    }


def _described(ctx: Context, topic: str, *names: str) -> dict[str, str | None]:
    res = ConfigResource("topic", topic)
    entries = ctx.admin.describe_configs([res])[res].result(20)
    return {name: entries[name].value if name in entries else None for name in names}


def _partitions(ctx: Context, topic: str) -> int:
    meta = ctx.admin.list_topics(topic, timeout=10).topics.get(topic)
    return len(meta.partitions) if meta is not None and meta.error is None else 0


# ---------------------------------------------------------------------------------------------
# group join
# ---------------------------------------------------------------------------------------------


def join_probes(ctx: Context, budget_s: float) -> dict[str, Any]:
    started = time.monotonic()
    expected = {"seconds_at_most": KAFKA_FIRST_JOIN_S,
                "note": "an empty group's first join waits group.initial.rebalance.delay.ms "
                        "(3000 ms by default), whatever session.timeout.ms is"}

    @functools.cache
    def topic() -> str:
        return ctx.topic("join")

    def joined(session_ms: int, limit_s: float) -> tuple[Any, bool]:
        seconds = _join_seconds(ctx, topic(), session_ms, limit_s)
        if seconds is None:
            return {"seconds": None, "note": f"no assignment within {limit_s:.0f} s"}, True
        return {"seconds": round(seconds, 2)}, seconds > KAFKA_FIRST_JOIN_S

    out = {"group_join_session_6000": probe(expected, lambda: joined(6000, budget_s))}
    short = out["group_join_session_6000"]["broker"].get("seconds")
    left = budget_s - (time.monotonic() - started)
    # On this broker the join grows with the session timeout: skip what cannot fit.
    guess = short * 45000 / 6000 if short else 0.0
    if guess + 2 > left or left < 5:
        out["group_join_session_45000"] = {
            "kafka": expected, "broker": {"skipped": f"would take ~{guess:.0f} s, "
                                                     f"{left:.0f} s of the budget left"},
            "quirk": None, "seconds": 0.0}
    else:
        out["group_join_session_45000"] = probe(expected, lambda: joined(45000, left))
    return out


def assignor_probes(ctx: Context) -> dict[str, Any]:
    """A member with the range assignor joins a group whose only member (roundrobin) left."""

    def new_assignor() -> tuple[Any, bool]:
        topic, group = ctx.topic("assignor"), f"{ctx.prefix}.assignor"

        def member(strategy: str) -> Consumer:
            return Consumer(ctx.conf(**{"group.id": group, "session.timeout.ms": 6000,
                                        "partition.assignment.strategy": strategy,
                                        "enable.auto.commit": False}))

        first = member("roundrobin")
        try:
            first.subscribe([topic])
            deadline = time.monotonic() + 20
            while not first.assignment() and time.monotonic() < deadline:
                first.poll(0.2)
        finally:
            first.close()  # LeaveGroup: the group is empty now
        second = member("range")
        error = None
        try:
            second.subscribe([topic])
            deadline = time.monotonic() + 20
            while not second.assignment() and time.monotonic() < deadline:
                msg = second.poll(0.2)
                failure = msg.error() if msg is not None else None
                if failure is not None:
                    error = failure.str()
                    break
            joined = bool(second.assignment())
        finally:
            second.close()
        return {"joined": joined, "error": error}, not joined

    return {"empty_group_takes_a_new_assignor": probe(
        {"joined": True, "error": None,
         "note": "an empty group accepts any protocol (how an app moves from Faust's assignor "
                 "to librdkafka's)"}, new_assignor)}


def _join_seconds(ctx: Context, topic: str, session_ms: int, limit_s: float) -> float | None:
    assigned: list[float] = []
    consumer = Consumer(ctx.conf(**{
        "group.id": f"{ctx.prefix}.join.{session_ms}", "enable.auto.commit": False,
        "session.timeout.ms": session_ms, "heartbeat.interval.ms": min(3000, session_ms // 3),
        "auto.offset.reset": "earliest"}))
    try:
        t0 = time.monotonic()
        consumer.subscribe([topic], on_assign=lambda c, ps: assigned.append(time.monotonic()))
        while not assigned and time.monotonic() - t0 < limit_s:
            consumer.poll(0.1)
        return assigned[0] - t0 if assigned else None
    finally:
        consumer.close()


# ---------------------------------------------------------------------------------------------
# transactions and producer ids
# ---------------------------------------------------------------------------------------------


def transaction_probes(ctx: Context) -> dict[str, Any]:
    def aborted_hidden() -> tuple[Any, bool]:
        topic = ctx.topic("txn")
        producer = Producer(ctx.conf(**{"transactional.id": f"{ctx.prefix}.tx"}))
        try:
            producer.init_transactions(15)
            for name, commit in (("committed-a", True), ("aborted", False),
                                 ("committed-b", True)):
                producer.begin_transaction()
                for i in range(3):
                    producer.produce(topic, b"%s-%d" % (name.encode(), i), b"k")
                producer.flush(10)
                if commit:
                    producer.commit_transaction(15)
                else:
                    producer.abort_transaction(15)
        finally:
            producer.close()
        committed, _ = read_from(ctx, topic, OFFSET_BEGINNING, 15,
                                 **{"isolation.level": "read_committed"})
        uncommitted, _ = read_from(ctx, topic, OFFSET_BEGINNING, 15,
                                   **{"isolation.level": "read_uncommitted"})
        aborted_seen = sum(1 for _, _, v in committed if v and v.startswith(b"aborted"))
        return {"read_committed_records": len(committed), "aborted_records_seen": aborted_seen,
                "read_uncommitted_records": len(uncommitted)}, aborted_seen > 0

    def aiokafka_producer_id() -> tuple[Any, bool]:
        topic = ctx.topic("idempotent")
        out: dict[str, Any] = {}
        for kind, extra in (("idempotent", {}),
                            ("transactional", {"transactional_id": f"{ctx.prefix}.aio"})):
            try:
                asyncio.run(asyncio.wait_for(_aiokafka_send(ctx.bootstrap, topic, extra), 20))
                out[kind] = "sent"
            except Exception as exc:  # noqa: BLE001 - a failure is the measurement
                out[kind] = f"{type(exc).__name__}: {exc}"
        return out, any(v != "sent" for v in out.values())

    return {
        "read_committed_hides_aborted": probe(
            {"read_committed_records": 6, "aborted_records_seen": 0,
             "read_uncommitted_records": 9,
             "note": "3 committed, 3 aborted and 3 committed records in three transactions"},
            aborted_hidden),
        "aiokafka_producer_id": probe(
            {"idempotent": "sent", "transactional": "sent",
             "note": "both start with InitProducerId; Faust's exactly_once uses a "
                     "transactional aiokafka producer"},
            aiokafka_producer_id),
    }


def producer_probes(ctx: Context) -> dict[str, Any]:
    """Delivery latency at a steady 5,000 records/s (3 partitions, acks=all, linger 5 ms, lz4),
    with and without the idempotent producer Refluent uses."""

    def latency(idempotent: bool) -> tuple[Any, bool]:
        topic = ctx.topic(f"latency-{int(idempotent)}", partitions=3)
        producer = Producer(ctx.conf(**{"enable.idempotence": idempotent, "acks": "all",
                                        "linger.ms": 5, "compression.type": "lz4"}))
        delays: list[float] = []

        def on_delivery(error: KafkaError | None, msg: Any) -> None:
            if error is None:
                delays.append(time.time() * 1000 - msg.timestamp()[1])

        started = time.perf_counter()
        try:
            for i in range(LATENCY_RECORDS):
                wait = started + i / LATENCY_RATE - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                producer.produce(topic, b"x" * 200, b"%d" % (i % 500), on_delivery=on_delivery)
                producer.poll(0)
            producer.flush(30)
        finally:
            producer.close()
        delays.sort()
        n = len(delays)
        got = {"delivered": n, "p50_ms": round(delays[n // 2], 1),
               "p99_ms": round(delays[int(n * 0.99)], 1), "max_ms": round(delays[-1], 1)}
        return got, got["p99_ms"] > LATENCY_P99_MS

    expected = {"p99_ms_at_most": LATENCY_P99_MS,
                "note": f"{LATENCY_RECORDS} records at {LATENCY_RATE}/s on loopback; the "
                        "idempotent producer only adds sequence numbers"}
    return {
        "producer_delivery_latency": probe(expected, lambda: latency(False)),
        "idempotent_producer_delivery_latency": probe(expected, lambda: latency(True)),
    }


LATENCY_RECORDS, LATENCY_RATE, LATENCY_P99_MS = 25_000, 5_000, 100.0
"""The delivery-latency probes: records, their rate, and the p99 that still counts as Kafka's."""


async def _aiokafka_send(bootstrap: str, topic: str, extra: dict[str, Any]) -> None:
    """Send one record with an aiokafka producer that needs a producer id."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                request_timeout_ms=10_000, **extra)
    try:
        await producer.start()
        if "transactional_id" in extra:
            async with producer.transaction():
                await producer.send_and_wait(topic, b"v", key=b"k")
        else:
            await producer.send_and_wait(topic, b"v", key=b"k")
    finally:
        await producer.stop()


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def embedded_broker() -> Iterator[tuple[str, str]]:
    """Start Tansu on a free loopback port; yields (bootstrap, description)."""
    from refluent.embedded import services as emb

    with tempfile.TemporaryDirectory() as tmp:
        rec, proc = emb.start_broker(Path(tmp))
        try:
            version = subprocess.run(  # noqa: S603 - the resolved broker binary
                [str(rec.program), "--version"], capture_output=True, text=True, timeout=10,
                check=False).stdout.strip()
            yield rec.address, f"embedded ({version or 'tansu'})"
        finally:
            emb.stop_pid(proc.pid, None)
            proc.wait()


def run(bootstrap: str, broker: str, join_budget_s: float) -> dict[str, Any]:
    settings = KafkaSettings(session_timeout_ms=6000)
    t0 = time.monotonic()
    probes: dict[str, Any] = {}
    with AdminClient(settings.client_config(bootstrap)) as admin:
        ctx = Context(bootstrap, settings, admin)
        for title, group in (("ListOffsets and fetch watermarks", lambda: offsets_probes(ctx)),
                             ("batched changelog", lambda: changelog_probes(ctx)),
                             ("topic configs and partitions", lambda: config_probes(ctx)),
                             ("transactions", lambda: transaction_probes(ctx)),
                             ("producer latency", lambda: producer_probes(ctx)),
                             ("group join", lambda: join_probes(ctx, join_budget_s)),
                             ("group assignor", lambda: assignor_probes(ctx))):
            err.print(title)
            probes.update(group())
    return {
        "benchmark": "broker_quirks",
        "broker": broker,
        "quirks": sorted(name for name, p in probes.items() if p["quirk"]),
        "as_kafka": sorted(name for name, p in probes.items() if p["quirk"] is False),
        "probes": probes,
        "seconds": round(time.monotonic() - t0, 1),
        "confluent_kafka": importlib.metadata.version("confluent-kafka"),
        "librdkafka": libversion()[0],
        "python": sys.version.split()[0],
        "machine": platform.machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", help="probe this broker instead of starting one")
    parser.add_argument("--join-budget", type=float, default=40.0,
                        help="seconds the group-join probe may take in all")
    args = parser.parse_args()
    if args.bootstrap_servers:
        result = run(args.bootstrap_servers, "external", args.join_budget)
    else:
        with embedded_broker() as (bootstrap, broker):
            result = run(bootstrap, broker, args.join_budget)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
