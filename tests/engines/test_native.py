"""The native engine's batch step against the in-memory engine, on generated streams: windows of
every kind with late events within and beyond grace, CDC changes with deletes and tombstones,
entities over several partitions, records repartitioned by entity, batches replayed
after a crash, and states restored from the changelog the engine wrote.

The engine runs in-process here: its records are objects with a Kafka message's methods, and
its producer a recorder (the Kafka side is the integration tests' part). The oracle is the
in-memory engine fed the same records in the order the native engine applied them: a record
read where it was produced, or, for a repartitioned one, in the order it was forwarded."""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.kafka import FakeMessage as Msg

from refluent.config import Settings
from refluent.engines.memory import InMemoryRunner
from refluent.engines.native import H_OFFSET, H_PARTITION, H_TOPIC, MemoryStates, NativeEngine
from refluent.processors.aggregations import Aggregation
from refluent.processors.features import EntityStateView, FeatureView, only_ops
from refluent.processors.windows import Hopping, Sliding, Tumbling
from refluent.streams.contracts import CdcEnvelope, FeatureUpdate, LogEvent
from refluent.streams.deadletter import DeadLetter, DeadLetterRouter
from refluent.testing.parity import assert_same_final, assert_same_updates, by_event_time

pytestmark = pytest.mark.property

P = 3
LOGS, CUSTOMERS, ORDERS = "logs.np", "cdc.customers_np", "cdc.orders_np"
T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
VIEWS = [
    FeatureView("activity_np", "entity_id", (LOGS,), (
        Aggregation("n_1m", "count", None, Tumbling(timedelta(minutes=1),
                                                   grace=timedelta(seconds=20))),
        Aggregation("spend_2m", "sum", "amount", Hopping(timedelta(minutes=2),
                                                         timedelta(minutes=1))),
        Aggregation("max_30s", "max", "amount", Sliding(timedelta(seconds=30))),
        Aggregation("mean_1m", "mean", "amount", Tumbling(timedelta(minutes=1))),
        Aggregation("pages", "approx_distinct", "page", Tumbling(timedelta(minutes=5))),
    )),
    FeatureView("orders_np", "customer_id", (ORDERS,), (
        Aggregation("orders_5m", "count", None, Tumbling(timedelta(minutes=5))),
        Aggregation("last_amount", "last", "amount", Tumbling(timedelta(minutes=5))),
    ), transforms=(only_ops("c", "r"),)),
    EntityStateView("customers_np", CUSTOMERS, columns=("tier",)),
]


def part(key: bytes) -> int:
    """Where a keyed record goes (any fixed function of the key, as murmur2 is for Kafka)."""
    return zlib.crc32(key) % P


@dataclass
class Recorder:
    """The engine's producer: what it produced, per topic, in order."""

    records: dict[str, list[Msg]] = field(default_factory=lambda: defaultdict(list))

    def produce(self, topic: str, value: bytes | None, key: Any = None,
                headers: Any = None, partition: int | None = None) -> None:
        key = key.encode() if isinstance(key, str) else key
        headers = [(k, v.encode() if isinstance(v, str) else v) for k, v in headers or []]
        where = partition if partition is not None else part(key or b"")
        log = self.records[topic]
        log.append(Msg(topic, where, len(log), value, key, headers))

    def flush(self, timeout: float = 30.0) -> None:
        pass


def engine(recorder: Recorder) -> NativeEngine:
    s = Settings(processing={"app_id": "np"}, topics={"default_partitions": P})
    eng = NativeEngine(VIEWS, s, "127.0.0.1:1", partitions={LOGS: P, CUSTOMERS: P, ORDERS: P})
    eng._out = recorder  # type: ignore[assignment]
    eng._dlq = recorder  # type: ignore[assignment]
    eng._router = DeadLetterRouter(recorder)  # type: ignore[arg-type]
    for plan in eng.plans:
        plan.states = {p: MemoryStates() for p in range(P)}
    return eng


def restore(eng: NativeEngine, recorder: Recorder) -> None:
    """Forget every state and read it back from the changelog the engine wrote."""
    for plan in eng.plans:
        plan.states = {p: MemoryStates() for p in range(P)}
        for rec in recorder.records.get(plan.changelog, []):
            plan.states[rec.partition()].data[orjson.loads(rec.key() or b"")] = orjson.loads(
                rec.value() or b"{}")


@st.composite
def workloads(draw: st.DrawFn) -> list[tuple[str, bytes | None, bytes | None]]:
    """(topic, key, value) in production order."""
    out: list[tuple[str, bytes | None, bytes | None]] = []
    seconds = 0
    for _ in range(draw(st.integers(5, 60))):
        seconds += draw(st.integers(-50, 25))  # out of order, some beyond grace
        ts = T0 + timedelta(seconds=max(seconds, -600))
        kind = draw(st.sampled_from(["log", "log", "order", "customer"]))
        if kind == "log":
            entity = draw(st.sampled_from(["u1", "u2", "u3", "u4"]))
            event = LogEvent(source="app", ts=ts, message="buy", entity_id=entity, attributes={
                "amount": draw(st.integers(0, 9)), "page": draw(st.sampled_from("abc"))})
            out.append((LOGS, entity.encode(), event.model_dump_json().encode()))
            continue
        ms = int(ts.timestamp() * 1000) + len(out)  # one change per millisecond and table
        if kind == "order":
            oid = draw(st.integers(1, 8))
            row = {"id": oid, "customer_id": draw(st.sampled_from(["c1", "c2", "c3"])),
                   "amount": float(draw(st.integers(1, 50)))}
            op = draw(st.sampled_from("cru"))
            env = {"op": op, "before": None if op in "cr" else row, "after": row,
                   "source": {"ts_ms": ms, "lsn": len(out)}}
            out.append((ORDERS, str(oid).encode(), orjson.dumps(env)))
            continue
        if draw(st.integers(0, 7)) == 0:  # a truncate: no key, so one partition of the topic
            env = {"op": "t", "before": None, "after": None,
                   "source": {"ts_ms": ms, "lsn": len(out)}}
            out.append((CUSTOMERS, None, orjson.dumps(env)))
            continue
        cid = draw(st.integers(1, 5))
        op = draw(st.sampled_from("cuud"))
        row = {"id": cid, "tier": draw(st.sampled_from(["basic", "gold"]))}
        env = {"op": op, "before": None if op == "c" else row,
               "after": None if op == "d" else row, "source": {"ts_ms": ms, "lsn": len(out)}}
        out.append((CUSTOMERS, str(cid).encode(), orjson.dumps(env)))
        if op == "d" and draw(st.booleans()):
            out.append((CUSTOMERS, str(cid).encode(), None))  # the delete's tombstone
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.data())
def test_native__every_update_and_the_final_state_are_the_in_memory_engine_s(
        produced: list[tuple[str, bytes | None, bytes | None]], data: st.DataObject) -> None:
    source = Recorder()
    for topic, key, value in produced:
        source.produce(topic, value, key)
    # What the engine reads: the partitions interleaved in some order, offsets in order.
    queues = {(t, p): [m for m in log if m.partition() == p]
              for t, log in source.records.items() for p in range(P)}
    recorder = Recorder()
    eng = engine(recorder)
    reference = InMemoryRunner(VIEWS)
    applied_forward = 0
    while any(queues.values()):
        batch: list[Msg] = []
        for _ in range(data.draw(st.integers(1, 12))):
            live = sorted(tp for tp, q in queues.items() if q)
            if not live:
                break
            batch.append(queues[data.draw(st.sampled_from(live))].pop(0))
        replay = data.draw(st.integers(0, 6)) == 0
        before = {plan.changelog: len(recorder.records[plan.changelog]) for plan in eng.plans}
        eng.handle(batch)  # type: ignore[arg-type]
        for m in batch:  # the reference: where they were read
            if m.topic() != ORDERS:
                reference.feed(m.topic(), [_event(m)], partition=m.partition(),
                               offsets=[m.offset()])
        if replay:  # a crash before the batch's commit; it is read again
            if data.draw(st.booleans()):  # the crash came before its changelog was written
                for name, n in before.items():
                    del recorder.records[name][n:]
                restore(eng, recorder)
            eng.handle(batch)  # type: ignore[arg-type]
        # The repartitioned records come back on the by-entity topic.
        forwarded = recorder.records.get("np-orders_np-by-entity", [])[applied_forward:]
        applied_forward += len(forwarded)
        if forwarded:
            eng.handle(forwarded)  # type: ignore[arg-type]
            for m in forwarded:
                headers = dict(m.headers() or [])
                reference.feed(headers[H_TOPIC].decode(), [_event(m, ORDERS)],
                               partition=int(headers[H_PARTITION]),
                               offsets=[int(headers[H_OFFSET])])
    published = [FeatureUpdate.model_validate_json(m.value() or b"")
                 for view in VIEWS for m in recorder.records.get(view.topic, [])]
    assert_same_final(reference, published)
    assert_same_updates(reference, published, "activity_np")
    assert_same_updates(reference, published, "orders_np")
    assert_same_updates(reference, published, "customers_np", order=by_event_time)
    # Every record a view refused (late beyond grace, ...) is dead-lettered, and no other.
    dead = {(d.topic, d.partition, d.offset) for t in (LOGS, ORDERS, CUSTOMERS)
            for d in (DeadLetter.parse(m.headers(), m.key(), m.value())
                      for m in recorder.records.get(f"{t}.dlq", []))}
    assert dead == {(r.origin.topic, r.origin.partition, r.origin.offset)
                    for r in reference.rejected}
    # The changelog holds each entity's last state, and restoring it loses nothing.
    restore(eng, recorder)
    for plan in eng.plans:
        for p, states in plan.states.items():
            for key, state in states.data.items():
                assert state == eng_state(reference, plan.runtime.view.name, key), (plan, p, key)


def eng_state(reference: InMemoryRunner, view: str, key: str) -> Any:
    return orjson.loads(reference.states[view][key])


def _event(m: Msg, topic: str | None = None) -> Any:
    value = m.value()
    if value is None:
        return None
    if (topic or m.topic()) == LOGS:
        return LogEvent.model_validate_json(value)
    return CdcEnvelope.model_validate_json(value)
