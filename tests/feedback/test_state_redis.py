"""The join's Redis state: the same outcomes as the memory state, deferred writes, a dropped
connection, and scripts loaded once and called by their SHA."""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib

from refluent.feedback.join import FeedbackJoin
from refluent.feedback.merge import TimedEvent
from refluent.feedback.state.memory import MemoryJoinState
from refluent.feedback.state.redis import RedisJoinStore, decode_answers, encode_answers
from refluent.models.base import Scored
from refluent.streams.contracts import Feedback, Prediction
from refluent.streams.origin import Origin

from .events import F, P, Spec, build_events, label, prediction, run_join


@pytest.mark.unit
def test_answers__round_trip_keeps_label_types() -> None:
    answers = {"1": Scored(0.75, True, {"False": 0.25, "True": 0.75}),
               "2": Scored(None, None, {}), "3": Scored(4.5, None, None),
               "4": Scored(0.5, 3, {"3": 0.5, "4": 0.5})}
    assert decode_answers(encode_answers(answers)) == answers
    assert decode_answers(encode_answers(answers))["4"].label == 3




@pytest.mark.integration
@pytest.mark.parametrize("cache_size", [0, 1000])
@pytest.mark.parametrize("defer", [False, True])
def test_redis_store__gives_the_same_outcomes_as_the_memory_state(services: Any,
                                                                  cache_size: int,
                                                                  defer: bool) -> None:
    store = RedisJoinStore(services.redis_url, ttl_s=3600, key_prefix=f"t{uuid.uuid4().hex[:8]}",
                           page=2, cache_size=cache_size)
    store.setup()
    try:
        rng = random.Random(7)
        for round_ in range(12):
            items = [Spec(rng.choice(["p", "p", "f_id", "f_id", "f_entity"]),
                          rng.randint(0, 200), rng.randint(0, 12), rng.randint(0, 3),
                          rng.choice([True, False, 1, 2, "x"])) for _ in range(50)]
            events = build_events(items)
            # each round in its own key space: re-prefix the ids
            events = [_reprefix(e, f"r{round_}-") for e in events]
            memory = run_join(events, MemoryJoinState(), 5)
            redis = run_join(events, store, 5, defer=defer)
            assert redis == memory
            assert not store.pending_writes()
    finally:
        store.close()


def _reprefix(e: TimedEvent, prefix: str) -> TimedEvent:
    ev = e.event
    if isinstance(ev, Prediction):
        ev = ev.model_copy(update={"prediction_id": prefix + ev.prediction_id,
                                   "entity_id": prefix + ev.entity_id})
    else:
        assert isinstance(ev, Feedback)
        ev = ev.model_copy(update={
            "prediction_id": prefix + ev.prediction_id if ev.prediction_id else None,
            "entity_id": prefix + ev.entity_id if ev.entity_id else None})
    source = Origin(prefix + e.source.topic, e.source.partition, e.source.offset)
    return TimedEvent(e.key, e.kind, ev, source, ev.model_dump_json().encode())



def _event(ev: Prediction | Feedback, offset: int) -> TimedEvent:
    topic, kind = (P, "prediction") if isinstance(ev, Prediction) else (F, "feedback")
    return TimedEvent.of(kind, ev, Origin(topic, 0, offset),  # type: ignore[arg-type]
                         ev.model_dump_json().encode())


@contextlib.contextmanager
def _waiting_label(services: Any, ttl_s: float, pid: str, *, defer: bool
                   ) -> Iterator[tuple[RedisJoinStore, FeedbackJoin, TimedEvent]]:
    """A store whose first batch is one label waiting for ``pid`` (its write deferred or
    not)."""
    store = RedisJoinStore(services.redis_url, ttl_s=ttl_s,
                           key_prefix=f"t{uuid.uuid4().hex[:8]}")
    store.setup()
    try:
        join = FeedbackJoin(early_label_wait_s=60, max_label_delay_s=3600)
        early = _event(label(5, True, pid=pid), 0)
        view = store.begin([early], clock_us=join.clock_us)
        assert join.on_feedback(view, early.event, early.source, early.raw,  # type: ignore[arg-type]
                                None).waiting is not None
        view.commit(defer=defer)
        yield store, join, early
    finally:
        store.close()


@pytest.mark.integration
def test_redis_store__deferred_write__next_batch_sees_the_label_waiting_for_its_prediction(
        services: Any) -> None:
    # The second batch's read runs before the first batch's write: the label that started
    # waiting in the first batch must still meet its prediction.
    with _waiting_label(services, 3600, "p1", defer=True) as (store, join, _):
        late = _event(prediction("p1", 4), 0)
        view = store.begin([late], clock_us=join.clock_us)
        out = join.on_prediction(view, late.event, late.source, late.raw or b"")  # type: ignore[arg-type]
        store.confirm()
        assert [j.example.prediction_id for j in out.joined] == ["p1"]
        view.commit()


@pytest.mark.integration
def test_redis_store__deferred_write__an_expired_label_record_is_dead_lettered_once(
        services: Any) -> None:
    # A waiting label's record expires (TTL) before its deadline: the batch that finds it due
    # reports it as an orphan once, also when the next batch reads before that batch's write.
    with _waiting_label(services, 0.2, "gone", defer=False) as (store, join, early):
        time.sleep(0.5)  # the label's record expires; its deadline entry stays
        orphans = []
        for t in (100, 200):
            ev = _event(prediction(f"x{t}", t), t)
            view = store.begin([ev], clock_us=join.clock_us, feedback_partitions=[(F, 0)])
            join.on_prediction(view, ev.event, ev.source, ev.raw or b"")  # type: ignore[arg-type]
            join.expire(view, [(F, 0)])
            orphans += view.orphans
            store.confirm()
            view.commit(defer=True)
        store.sync()
        assert orphans == [early.source]


@pytest.mark.integration
def test_redis_store__deferred_write__survives_a_dropped_connection(services: Any) -> None:
    # The connection drops between handing the write over and confirming it: the write is sent
    # again on a new connection (it is idempotent), and a new process finds the label waiting.
    with _waiting_label(services, 3600, "p1", defer=True) as (store, join, _):
        other = _event(prediction("p0", 4), 0)
        view = store.begin([other], clock_us=join.clock_us)  # hands the label's write over
        redis_lib.Redis.from_url(services.redis_url).client_kill_filter(_type="normal",
                                                                        skipme=True)
        join.on_prediction(view, other.event, other.source, other.raw or b"")  # type: ignore[arg-type]
        store.confirm()
        view.commit()
        assert not store.pending_writes()

        fresh = RedisJoinStore(services.redis_url, ttl_s=3600,
                               key_prefix=store.base.removesuffix(":fb:"))
        fresh.setup()
        try:
            late = _event(prediction("p1", 4), 1)
            view = fresh.begin([late], clock_us=join.clock_us)
            out = join.on_prediction(view, late.event, late.source, late.raw or b"")  # type: ignore[arg-type]
            assert [j.example.prediction_id for j in out.joined] == ["p1"]
        finally:
            fresh.close()


def _calls(client: redis_lib.Redis, command: str) -> int:
    stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def _store(services: Any, **kwargs: Any) -> RedisJoinStore:
    store = RedisJoinStore(services.redis_url, ttl_s=3600, key_prefix=f"t{uuid.uuid4().hex[:8]}",
                           page=2, **kwargs)
    store.setup()
    return store


def _stream(seed: int, n: int = 60) -> list[TimedEvent]:
    rng = random.Random(seed)
    items = [Spec(rng.choice(["p", "p", "f_id", "f_id", "f_entity"]), rng.randint(0, 200),
                  rng.randint(0, 12), rng.randint(0, 3), rng.choice([True, False, 1, 2, "x"]))
             for _ in range(n)]
    return build_events(items)


@pytest.mark.integration
@pytest.mark.parametrize("defer", [False, True])
def test_redis_store__scripts_are_called_by_sha_after_setup(services: Any, defer: bool) -> None:
    # Redis counts the calls per command: once set up, a batch's read and write are EVALSHA
    # calls (the script source is not sent again), and there is not one EVAL.
    probe = redis_lib.Redis.from_url(services.redis_url)
    store = _store(services, cache_size=0)
    try:
        events = _stream(3)
        evals, shas = _calls(probe, "eval"), _calls(probe, "evalsha")
        batches = -(-len(events) // 7) + 1  # run_join's batches and its final expiry
        assert run_join(events, store, 5, defer=defer) == run_join(events, MemoryJoinState(), 5)
        assert _calls(probe, "eval") == evals
        assert _calls(probe, "evalsha") - shas >= 2 * batches  # a read and a write each
    finally:
        store.close()
        probe.close()


@pytest.mark.integration
@pytest.mark.parametrize("defer", [False, True])
def test_redis_store__script_flush_between_batches_loads_the_scripts_again(services: Any,
                                                                         defer: bool) -> None:
    # SCRIPT FLUSH after each batch is processed and before its write is sent: the write (and
    # the next batch's read) meet NOSCRIPT, load the script on the ordered connection and run;
    # the outcomes stay those of the memory state.
    probe = redis_lib.Redis.from_url(services.redis_url)
    store = _store(services, cache_size=0)
    try:
        events = _stream(5)
        flushes = [0]

        def flush() -> None:
            probe.script_flush()
            flushes[0] += 1

        loads = _calls(probe, "script|load")
        got = run_join(events, store, 5, defer=defer, between=flush)
        assert got == run_join(events, MemoryJoinState(), 5)
        assert not store.pending_writes()
        assert flushes[0] >= 5
        # each flush is followed by a load of the write script and one of the read script
        assert _calls(probe, "script|load") - loads >= 2 * flushes[0]
    finally:
        store.close()
        probe.close()

