"""The feedback join: label rules, the event-time merge against River's ``simulate_qa``, replay
after a restart, the join invariants under random streams, and the Redis store against the
in-memory one."""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis as redis_lib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refluent.feedback.base import (
    JoinOutcome,
    JoinState,
    MemoryJoinState,
    Rejected,
    SourceRef,
    to_us,
)
from refluent.feedback.errors import JOIN_STEP, LabelTypeError
from refluent.feedback.join import (
    EventTimeMerger,
    FeedbackJoin,
    RedisJoinStore,
    TimedEvent,
    coerce_label,
    decode_answers,
    encode_answers,
)
from refluent.models.base import Scored
from refluent.streams.contracts import Feedback, LabeledExample, Prediction
from refluent.streams.errors import DecodeError

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
P, F = "predictions", "feedback"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def prediction(pid: str, t: float, entity: str = "u1", *, label: Any = True,
               probabilities: dict[str, float] | None = None, score: float | None = 0.8,
               model: str = "churn") -> Prediction:
    if probabilities is None and isinstance(label, bool):
        probabilities = {"False": 0.2, "True": 0.8}
    return Prediction(prediction_id=pid, request_id="r" + pid, model_name=model,
                      model_version="1", entity_id=entity, score=score, label=label,
                      probabilities=probabilities, features={"x": 1.0}, ts=at(t))


def label(t: float, value: Any = True, *, pid: str | None = None,
          entity: str | None = None) -> Feedback:
    return Feedback(prediction_id=pid, entity_id=entity, label=value, event_time=at(t))


class Harness:
    """Drives a join over a memory state, numbering offsets per topic and partition 0."""

    def __init__(self, wait_s: float = 60.0, max_delay_s: float = 3600.0,
                 state: JoinState | None = None) -> None:
        self.join = FeedbackJoin(early_label_wait_s=wait_s, max_label_delay_s=max_delay_s)
        self.state = state or MemoryJoinState()
        self.offsets = {P: 0, F: 0}

    def _ref(self, topic: str) -> SourceRef:
        ref = SourceRef(topic, 0, self.offsets[topic])
        self.offsets[topic] += 1
        return ref

    def predict(self, p: Prediction) -> JoinOutcome:
        return self.join.on_prediction(self.state, p, self._ref(P), p.model_dump_json().encode())

    def feed(self, fb: Feedback) -> JoinOutcome:
        return self.join.on_feedback(self.state, fb, self._ref(F),
                                     fb.model_dump_json().encode(), None)

    def expire(self) -> list[Rejected]:
        return self.join.expire(self.state)


def reasons(rejected: Sequence[Rejected]) -> list[str]:
    return [r.error.reason for r in rejected]


# ---------------------------------------------------------------------------------------------
# label rules
# ---------------------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (False, False), (1, True), (0, False), (1.0, True), ("true", True),
    ("FALSE", False)])
def test_coerce_label__binary_boolean_classifier_takes_booleans_and_0_1(value: Any,
                                                                        expected: bool) -> None:
    result = coerce_label(value, "classification", prediction("p", 0))
    assert result is expected


@pytest.mark.unit
@pytest.mark.parametrize("value", [2, -1, 0.5, "maybe", 7.0])
def test_coerce_label__binary_classifier_rejects_other_values(value: Any) -> None:
    with pytest.raises(LabelTypeError) as err:
        coerce_label(value, "classification", prediction("p", 0))
    assert err.value.reason == "label_type"
    assert "churn" in str(err.value) and repr(value) in str(err.value)


@pytest.mark.unit
def test_coerce_label__regressor_takes_numbers_only() -> None:
    p = prediction("p", 0, label=None, probabilities=None, score=3.5)
    assert coerce_label(2, "regression", p) == 2
    assert coerce_label(2.5, "regression", p) == 2.5
    for bad in ("2.5", True):
        with pytest.raises(LabelTypeError, match="regressor"):
            coerce_label(bad, "regression", p)


@pytest.mark.unit
def test_coerce_label__zero_one_and_text_classes() -> None:
    ints = prediction("p", 0, label=1, probabilities={"0": 0.4, "1": 0.6})
    assert coerce_label(True, "classification", ints) == 1
    assert coerce_label("0", "classification", ints) == 0
    with pytest.raises(LabelTypeError):
        coerce_label(3, "classification", ints)
    text = prediction("p", 0, label="spam", probabilities={"ham": 0.3, "spam": 0.7})
    assert coerce_label("ham", "classification", text) == "ham"
    with pytest.raises(LabelTypeError, match="text classes"):
        coerce_label(1, "classification", text)
    many = prediction("p", 0, label="b", probabilities={"a": 0.2, "b": 0.5, "c": 0.3})
    assert coerce_label("d", "classification", many) == "d"
    with pytest.raises(LabelTypeError):
        coerce_label(0.25, "classification", many)


@pytest.mark.unit
def test_answers__round_trip_keeps_label_types() -> None:
    answers = {"1": Scored(0.75, True, {"False": 0.25, "True": 0.75}),
               "2": Scored(None, None, {}), "3": Scored(4.5, None, None),
               "4": Scored(0.5, 3, {"3": 0.5, "4": 0.5})}
    assert decode_answers(encode_answers(answers)) == answers
    assert decode_answers(encode_answers(answers))["4"].label == 3


# ---------------------------------------------------------------------------------------------
# the join
# ---------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_join__label_by_id_yields_the_example_with_features_as_served() -> None:
    h = Harness()
    q = h.predict(prediction("p1", 0)).question
    assert q is not None and q.prediction_id == "p1"
    out = h.feed(label(30, 1, pid="p1"))
    (joined,) = out.joined
    ex = joined.example
    assert (ex.prediction_id, ex.label, ex.features, ex.model_name) == ("p1", True, {"x": 1.0},
                                                                        "churn")
    assert ex.prediction_time == at(0) and ex.label_time == at(30)
    assert joined.trigger == joined.label_source == SourceRef(F, 0, 0)


@pytest.mark.unit
@pytest.mark.parametrize(("pred", "value"), [
    (prediction("p1", 0), 1),
    (prediction("p1", 0, label=1, probabilities={"0": 0.3, "1": 0.7}), 1.0),
    (prediction("p1", 0, label="spam", probabilities={"ham": 0.4, "spam": 0.6}), "ham"),
    (prediction("p1", 0, label=None, score=3.5), 2.25),
])
def test_join__example_equals_the_validated_contract(pred: Prediction, value: Any) -> None:
    h = Harness()
    h.predict(pred)
    (joined,) = h.feed(label(30, value, pid="p1")).joined
    ex = joined.example
    validated = LabeledExample(
        prediction_id=pred.prediction_id, entity_id=pred.entity_id,
        model_name=pred.model_name, model_version=pred.model_version, features=pred.features,
        label=ex.label, score=pred.score, predicted_label=pred.label,
        prediction_time=pred.ts, label_time=at(30))
    assert ex == validated
    assert ex.model_fields_set == validated.model_fields_set
    assert ex.model_dump_json() == validated.model_dump_json()
    assert type(ex.label) is type(validated.label)


@pytest.mark.unit
def test_join__max_label_delay_is_exact_to_the_microsecond() -> None:
    h = Harness(max_delay_s=100)
    h.predict(prediction("p1", 0))
    h.predict(prediction("p2", 0))
    assert h.feed(label(100, True, pid="p1")).joined
    out = h.feed(label(100.000001, True, pid="p2"))
    assert reasons(out.rejected) == ["too_late"]


@pytest.mark.unit
def test_join__entity_label_joins_latest_prediction_at_or_before_its_time() -> None:
    h = Harness()
    for pid, t in (("a", 0), ("b", 10), ("c", 20)):
        h.predict(prediction(pid, t, entity="u7"))
    h.predict(prediction("other", 12, entity="u8"))
    out = h.feed(label(15, False, entity="u7"))
    assert [j.example.prediction_id for j in out.joined] == ["b"]
    again = h.feed(label(16, True, entity="u7"))
    assert reasons(again.rejected) == ["duplicate_label"]


@pytest.mark.unit
def test_join__second_label_is_a_duplicate_and_not_joined() -> None:
    h = Harness()
    h.predict(prediction("p1", 0))
    assert h.feed(label(5, True, pid="p1")).joined
    out = h.feed(label(6, False, pid="p1"))
    assert not out.joined
    (rejected,) = out.rejected
    assert rejected.error.reason == "duplicate_label" and rejected.error.step == JOIN_STEP
    assert "feedback:0:0" in str(rejected.error)


@pytest.mark.unit
def test_join__label_after_max_delay_is_too_late_and_leaves_prediction_open() -> None:
    h = Harness(max_delay_s=100)
    h.predict(prediction("p1", 0))
    out = h.feed(label(101, True, pid="p1"))
    assert reasons(out.rejected) == ["too_late"]
    assert "101s" in str(out.rejected[0].error)
    assert h.state.prediction("p1").joined_by is None  # type: ignore[union-attr]


@pytest.mark.unit
def test_join__label_of_wrong_type_is_rejected() -> None:
    h = Harness()
    h.predict(prediction("p1", 0, label=None, probabilities=None, score=2.0))
    out = h.feed(label(1, "high", pid="p1"))
    assert reasons(out.rejected) == ["label_type"]


@pytest.mark.unit
def test_join__early_label_waits_and_joins_when_its_prediction_arrives() -> None:
    h = Harness(wait_s=60)
    out = h.feed(label(5, True, pid="p1"))
    assert out.waiting is not None and not out.joined
    arrived = h.predict(prediction("p1", 30))
    assert arrived.question is not None
    assert [j.example.prediction_id for j in arrived.joined] == ["p1"]
    assert arrived.joined[0].trigger == SourceRef(P, 0, 0)
    assert h.expire() == []


@pytest.mark.unit
def test_join__early_label_expires_as_unknown_prediction_after_the_wait() -> None:
    h = Harness(wait_s=60)
    h.feed(label(5, True, pid="ghost"))
    h.predict(prediction("p1", 64))
    assert h.expire() == []  # the clock (64 s) has not passed 5 + 60 s
    h.predict(prediction("p2", 66))
    expired = h.expire()
    assert reasons(expired) == ["unknown_prediction"] and expired[0].trigger is None
    assert "ghost" in str(expired[0].error)
    late = h.predict(prediction("ghost", 67))
    assert late.joined == ()
    assert h.expire() == []


@pytest.mark.unit
def test_join__repeated_prediction_id_is_skipped() -> None:
    h = Harness()
    h.predict(prediction("p1", 0))
    out = h.predict(prediction("p1", 1))
    assert out.repeated and out.question is None
    assert h.state.prediction("p1").source == SourceRef(P, 0, 0)  # type: ignore[union-attr]


@pytest.mark.unit
def test_join__replay_from_a_checkpoint_rejoins_the_same_labels_once() -> None:
    """The store keeps what a first run wrote; replaying from an earlier position sees only
    what this run processed, so the same labels join the same predictions again."""
    events: list[tuple[str, Any]] = [
        ("p", prediction("p1", 0)), ("f", label(1, True, pid="early")),
        ("p", prediction("p2", 2)), ("f", label(3, True, pid="p1")),
        ("p", prediction("early", 4)), ("f", label(5, False, pid="p2")),
        ("f", label(6, True, pid="p1"))]
    state = MemoryJoinState()

    def run(start: dict[tuple[str, int], int]) -> list[tuple[str, str, SourceRef | None]]:
        positions = dict(start)
        join = FeedbackJoin(early_label_wait_s=60, max_label_delay_s=3600,
                            visible=lambda r: r.offset < positions.get((r.topic, r.partition),
                                                                        1 << 60))
        offsets = {P: 0, F: 0}
        seen = []
        for kind, ev in events:
            topic = P if kind == "p" else F
            ref = SourceRef(topic, 0, offsets[topic])
            offsets[topic] += 1
            if ref.offset < start.get((topic, 0), 0):
                continue
            if kind == "p":
                out = join.on_prediction(state, ev, ref, b"")
            else:
                out = join.on_feedback(state, ev, ref, b"", None)
            positions[(topic, 0)] = ref.offset + 1
            seen += [("joined", j.example.prediction_id, j.trigger) for j in out.joined]
            seen += [(r.error.reason, "", r.trigger) for r in out.rejected]
        return seen

    first = run({})
    assert [s[:2] for s in first] == [("joined", "p1"), ("joined", "early"), ("joined", "p2"),
                                     ("duplicate_label", "")]
    # Restart from a checkpoint taken after p1 and the early label were read: every outcome
    # an event after the checkpoint caused comes again (the early label's join included, as
    # its prediction is replayed), and nothing else.
    start = {(P, 0): 1, (F, 0): 1}
    replay = run(start)
    assert replay == [s for s in first
                      if s[2] is not None and s[2].offset >= start[(s[2].topic, 0)]]
    assert ("joined", "early", SourceRef(P, 0, 2)) in replay


# ---------------------------------------------------------------------------------------------
# event-time merge
# ---------------------------------------------------------------------------------------------


def qa_events(n: int, delay: int, partitions: int = 3) -> tuple[list[TimedEvent], list[Any]]:
    """Questions at i seconds and answers at i + delay seconds, as simulate_qa orders them,
    spread over partitions; returns the events and simulate_qa's (i, is_answer) order."""
    from river import stream

    data = [({"i": i}, i % 2 == 0) for i in range(n)]
    expected = []
    events = []
    offsets: Counter[tuple[str, int]] = Counter()
    for i, _x, y in stream.simulate_qa(data, None, delay):
        expected.append((i, y is not None))
        if y is None:
            ev: Prediction | Feedback = prediction(f"p{i}", i)
            topic, part = P, (i * 7) % partitions
        else:
            ev = label(i + delay, y, pid=f"p{i}")
            topic, part = F, (i * 5) % partitions
        ref = SourceRef(topic, part, offsets[(topic, part)])
        offsets[(topic, part)] += 1
        events.append(TimedEvent.of("prediction" if topic == P else "feedback", ev, ref))
    return events, expected


def merged(events: list[TimedEvent], seed: int) -> list[TimedEvent]:
    """Feed ``events`` partition by partition in a random interleaving, releasing as we go."""
    lanes: dict[tuple[str, int], list[TimedEvent]] = {}
    for e in events:
        lanes.setdefault((e.source.topic, e.source.partition), []).append(e)
    merger = EventTimeMerger({P: "prediction", F: "feedback"})
    merger.assign(lanes)
    rng = random.Random(seed)
    out: list[TimedEvent] = []
    while any(lanes.values()):
        tp = rng.choice(sorted(k for k, v in lanes.items() if v))
        for _ in range(rng.randint(1, 4)):
            if lanes[tp]:
                merger.push(lanes[tp].pop(0))
        out += merger.release()
    return out + merger.release_all()


@pytest.mark.unit
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merger__order_equals_simulate_qa_with_labels_first_on_ties(seed: int) -> None:
    events, expected = qa_events(60, delay=4)
    order = merged(events, seed)
    got = [(int(e.event.prediction_id[1:]) if isinstance(e.event, Prediction)  # type: ignore[union-attr]
            else int(e.event.prediction_id[1:]), e.kind == "feedback")  # type: ignore[union-attr]
           for e in order]
    assert got == expected


@pytest.mark.unit
def test_merger__waits_for_a_partition_that_may_still_deliver_an_earlier_event() -> None:
    merger = EventTimeMerger({P: "prediction", F: "feedback"})
    merger.assign([(P, 0), (F, 0)])
    merger.push(TimedEvent.of("prediction", prediction("a", 5), SourceRef(P, 0, 0)))
    assert merger.release() == []
    merger.push(TimedEvent.of("feedback", label(3, pid="a"), SourceRef(F, 0, 0)))
    assert [e.kind for e in merger.release()] == ["feedback"]
    # the feedback partition's next label may be at 3 s..5 s: the prediction still waits
    assert merger.release() == []
    merger.push(TimedEvent.of("feedback", label(9, pid="a"), SourceRef(F, 0, 1)))
    assert [e.kind for e in merger.release()] == ["prediction"]


@pytest.mark.unit
def test_merger__drained_partition_stops_holding_back_after_idle_time() -> None:
    now = [100.0]
    merger = EventTimeMerger({P: "prediction", F: "feedback"}, idle_s=2.0,
                             clock=lambda: now[0])
    merger.assign([(P, 0), (F, 0)])
    merger.push(TimedEvent.of("prediction", prediction("a", 5), SourceRef(P, 0, 0)))
    assert merger.release(drained={(F, 0)}) == []  # drained but not quiet long enough
    now[0] += 2.5
    assert len(merger.release(drained={(F, 0)})) == 1
    assert len(merger) == 0


@pytest.mark.unit
def test_merger__undecodable_record_keeps_its_place_in_its_partition() -> None:
    merger = EventTimeMerger({P: "prediction", F: "feedback"})
    merger.assign([(P, 0)])
    merger.push(TimedEvent.of("prediction", prediction("a", 5), SourceRef(P, 0, 0)))
    merger.push_undecodable("prediction", SourceRef(P, 0, 1), b"{", None,
                            DecodeError("Prediction", "json", "bad"))
    merger.push(TimedEvent.of("prediction", prediction("b", 6), SourceRef(P, 0, 2)))
    out = merger.release_all()
    assert [e.source.offset for e in out] == [0, 1, 2]
    assert out[1].event is None and isinstance(out[1].error, DecodeError)


@pytest.mark.unit
def test_merger__revoke_drops_buffered_events_of_those_partitions() -> None:
    merger = EventTimeMerger({P: "prediction", F: "feedback"})
    merger.push(TimedEvent.of("prediction", prediction("a", 5), SourceRef(P, 0, 0)))
    merger.push(TimedEvent.of("prediction", prediction("b", 6), SourceRef(P, 1, 0)))
    assert merger.revoke([(P, 0)]) == 1
    assert [e.source for e in merger.release_all()] == [SourceRef(P, 1, 0)]


# ---------------------------------------------------------------------------------------------
# invariants under random streams
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One random event: a prediction, or a label by id or by entity."""

    kind: str
    t: int
    pid: int
    entity: int
    value: Any


specs = st.lists(st.builds(
    Spec,
    kind=st.sampled_from(["p", "p", "f_id", "f_id", "f_entity"]),
    t=st.integers(0, 200),
    pid=st.integers(0, 12),
    entity=st.integers(0, 3),
    value=st.sampled_from([True, False, 1, 0, 2, "x", 0.5])), max_size=60)


def build_events(items: list[Spec]) -> list[TimedEvent]:
    events = []
    offsets: Counter[tuple[str, int]] = Counter()
    for spec in sorted(items, key=lambda s: s.t):  # partitions deliver in time order
        if spec.kind == "p":
            ev: Prediction | Feedback = prediction(f"p{spec.pid}", spec.t, f"e{spec.entity}")
            topic, kind = P, "prediction"
        elif spec.kind == "f_id":
            ev = label(spec.t, spec.value, pid=f"p{spec.pid}")
            topic, kind = F, "feedback"
        else:
            ev = label(spec.t, spec.value, entity=f"e{spec.entity}")
            topic, kind = F, "feedback"
        part = spec.pid % 2
        ref = SourceRef(topic, part, offsets[(topic, part)])
        offsets[(topic, part)] += 1
        events.append(TimedEvent.of(kind, ev, ref, ev.model_dump_json().encode()))  # type: ignore[arg-type]
    return sorted(events, key=lambda e: e.key)


def run_join(events: list[TimedEvent], state: JoinState | RedisJoinStore, wait_s: float,
             batch: int = 7, defer: bool = False
             ) -> tuple[list[Any], dict[SourceRef, list[str]]]:
    """Process ``events`` and finally expire everything; returns the joins and, per label,
    its outcomes. With ``defer``, each batch's Redis write is sent with the next batch's read
    (as the service does)."""
    join = FeedbackJoin(early_label_wait_s=wait_s, max_label_delay_s=120)
    joins: list[Any] = []
    outcomes: dict[SourceRef, list[str]] = {e.source: [] for e in events if e.kind == "feedback"}

    def record(out: JoinOutcome) -> None:
        for j in out.joined:
            joins.append((j.example.prediction_id, j.label_source))
            outcomes[j.label_source].append("joined")
        for r in out.rejected:
            outcomes[r.source].append(r.error.reason)

    parts = {(e.source.topic, e.source.partition) for e in events if e.kind == "feedback"}

    def view_of(chunk: list[TimedEvent]) -> Any:
        if isinstance(state, RedisJoinStore):
            return state.begin(chunk, clock_us=join.clock_us, feedback_partitions=parts)
        return state

    for start in range(0, len(events), batch):
        chunk = events[start:start + batch]
        view = view_of(chunk)
        for e in chunk:
            if isinstance(e.event, Prediction):
                record(join.on_prediction(view, e.event, e.source, e.raw or b""))
            else:
                record(join.on_feedback(view, e.event, e.source, e.raw, None))  # type: ignore[arg-type]
        for r in join.expire(view):
            outcomes[r.source].append(r.error.reason)
        if isinstance(state, RedisJoinStore):
            state.confirm()
            view.commit(defer=defer)  # type: ignore[union-attr]
    join.clock_us = to_us(at(10_000))  # the end of time: every wait is over
    view = view_of([])
    for r in join.expire(view):
        outcomes[r.source].append(r.error.reason)
    if isinstance(state, RedisJoinStore):
        view.commit()  # type: ignore[union-attr]
    return joins, outcomes


@pytest.mark.property
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=specs, wait_s=st.sampled_from([0, 5, 30]))
def test_join_invariants__each_prediction_joined_at_most_once_and_no_label_lost(
        items: list[Spec], wait_s: float) -> None:
    events = build_events(items)
    joins, outcomes = run_join(events, MemoryJoinState(), wait_s)
    per_prediction = Counter(pid for pid, _ in joins)
    assert all(n == 1 for n in per_prediction.values()), per_prediction
    allowed = {"joined", "duplicate_label", "too_late", "label_type", "unknown_prediction"}
    for source, got in outcomes.items():
        assert len(got) == 1, (source, got)  # every label ends exactly once
        assert got[0] in allowed
    assert len(joins) == sum(got == ["joined"] for got in outcomes.values())


# ---------------------------------------------------------------------------------------------
# the Redis store
# ---------------------------------------------------------------------------------------------


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
    source = SourceRef(prefix + e.source.topic, e.source.partition, e.source.offset)
    return TimedEvent(e.key, e.kind, ev, source, ev.model_dump_json().encode())



def _event(ev: Prediction | Feedback, offset: int) -> TimedEvent:
    topic, kind = (P, "prediction") if isinstance(ev, Prediction) else (F, "feedback")
    return TimedEvent.of(kind, ev, SourceRef(topic, 0, offset),  # type: ignore[arg-type]
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
