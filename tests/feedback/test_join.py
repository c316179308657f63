"""The feedback join: label rules, replay after a restart, and every label's outcome under random
streams against a brute-force reference."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from refluent.feedback.errors import JOIN_STEP
from refluent.feedback.join import FeedbackJoin, JoinOutcome, RejectedLabel
from refluent.feedback.merge import TimedEvent
from refluent.feedback.state.base import JoinState
from refluent.feedback.state.memory import MemoryJoinState
from refluent.streams.contracts import Feedback, LabeledExample, Prediction
from refluent.streams.origin import Origin

from .events import F, P, Spec, at, build_events, label, prediction, run_join, specs


class Harness:
    """Drives a join over a memory state, numbering offsets per topic and partition 0."""

    def __init__(self, wait_s: float = 60.0, max_delay_s: float = 3600.0,
                 state: JoinState | None = None) -> None:
        self.join = FeedbackJoin(early_label_wait_s=wait_s, max_label_delay_s=max_delay_s)
        self.state = state or MemoryJoinState()
        self.offsets = {P: 0, F: 0}

    def _ref(self, topic: str) -> Origin:
        ref = Origin(topic, 0, self.offsets[topic])
        self.offsets[topic] += 1
        return ref

    def predict(self, p: Prediction) -> JoinOutcome:
        return self.join.on_prediction(self.state, p, self._ref(P), p.model_dump_json().encode())

    def feed(self, fb: Feedback) -> JoinOutcome:
        return self.join.on_feedback(self.state, fb, self._ref(F),
                                     fb.model_dump_json().encode(), None)

    def expire(self) -> list[RejectedLabel]:
        return self.join.expire(self.state)


def reasons(rejected: Sequence[RejectedLabel]) -> list[str]:
    return [r.error.reason for r in rejected]



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
    assert joined.trigger == joined.label_source == Origin(F, 0, 0)


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
    assert arrived.joined[0].trigger == Origin(P, 0, 0)
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
    assert h.state.prediction("p1").source == Origin(P, 0, 0)  # type: ignore[union-attr]


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

    def run(start: dict[tuple[str, int], int]) -> list[tuple[str, str, Origin | None]]:
        positions = dict(start)
        join = FeedbackJoin(early_label_wait_s=60, max_label_delay_s=3600,
                            visible=lambda r: r.offset < positions.get((r.topic, r.partition),
                                                                        1 << 60))
        offsets = {P: 0, F: 0}
        seen = []
        for kind, ev in events:
            topic = P if kind == "p" else F
            ref = Origin(topic, 0, offsets[topic])
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
    assert ("joined", "early", Origin(P, 0, 2)) in replay


# ---------------------------------------------------------------------------------------------
# every label's outcome under random streams, against a brute-force reference
# ---------------------------------------------------------------------------------------------

MAX_DELAY_S = 120  # the max_label_delay_s of run_join


@dataclass
class _Asked:
    """A prediction as the reference keeps it."""

    pid: str
    entity: str
    t: int
    joined: bool = False


def _fits(value: Any) -> bool:
    """Whether a label fits the binary ``False``/``True`` classifier of the stream's
    predictions: a boolean, or 0 or 1."""
    return isinstance(value, bool) or (isinstance(value, int) and value in (0, 1))


def expected_outcomes(events: Sequence[TimedEvent], wait_s: int) -> dict[Origin, str]:
    """Each label's outcome as the join's documented semantics give it, worked out from the
    stream alone by scanning everything seen so far (no index, no state interface).

    The stream is taken in its merge order (event time, labels before predictions on ties). A
    prediction whose id was seen before is ignored. A label by id goes to the prediction with
    that id, a label by entity to the entity's latest prediction at or before its time (equal
    times: the greater id); found, it is a ``duplicate_label`` when that prediction already
    has a label, ``too_late`` when it came more than ``MAX_DELAY_S`` after it, ``label_type``
    when its value does not fit, else joined (the only outcome that takes the prediction). Not
    found, it waits: the first prediction (in stream order) that it could have gone to and
    that comes no later than ``wait_s`` after the label takes it, by the same rules, labels in
    (time, source) order (an entity's label only to a prediction not joined yet); otherwise it
    ends ``unknown_prediction``.
    """
    asked: list[_Asked] = []
    waiting: list[tuple[int, Origin, Feedback]] = []
    out: dict[Origin, str] = {}

    def decide(p: _Asked, t: int, value: Any) -> str:
        if p.joined:
            return "duplicate_label"
        if t - p.t > MAX_DELAY_S:
            return "too_late"
        if not _fits(value):
            return "label_type"
        p.joined = True
        return "joined:" + p.pid

    for e in events:
        t = e.key[0] // 1_000_000
        if isinstance(e.event, Prediction):
            pid, entity = e.event.prediction_id, e.event.entity_id
            if any(p.pid == pid for p in asked):
                continue
            p = _Asked(pid, entity, t)
            asked.append(p)
            for lt, src, fb in sorted(waiting, key=lambda w: (w[0], w[1])):
                if src in out or t > lt + wait_s:
                    continue
                if fb.prediction_id is not None and fb.prediction_id != pid:
                    continue
                if fb.prediction_id is None and (fb.entity_id != entity or p.t > lt
                                                 or p.joined):
                    continue
                out[src] = decide(p, lt, fb.label)
        else:
            fb = e.event
            assert isinstance(fb, Feedback)
            if fb.prediction_id is not None:
                found = [p for p in asked if p.pid == fb.prediction_id]
            else:
                found = sorted((p for p in asked if p.entity == fb.entity_id and p.t <= t),
                               key=lambda p: (p.t, p.pid))[-1:]
            if found:
                out[e.source] = decide(found[0], t, fb.label)
            else:
                waiting.append((t, e.source, fb))
    for _, src, _ in waiting:
        out.setdefault(src, "unknown_prediction")
    return out


@pytest.mark.unit
def test_expected_outcomes__reference_on_a_stream_worked_by_hand() -> None:
    # wait 5 s, max delay 120 s; predictions p0 (e0 at 10 s), p1 (e0 at 20 s)
    items = [Spec("f_id", 8, 1, 0, True),     # waits for p1 (20 s > 8 + 5): expires
             Spec("f_id", 9, 0, 0, 1),        # waits for p0, which comes at 10 s: joined
             Spec("p", 10, 0, 0, None), Spec("p", 20, 1, 0, None),
             Spec("f_entity", 20, 3, 0, 0),   # before p1 (labels first): p0, joined: duplicate
             Spec("f_entity", 25, 3, 0, True),  # e0's latest at or before 25 s is p1: joined
             Spec("f_id", 131, 0, 2, "x"),    # p0 is joined: duplicate before too late
             Spec("p", 30, 2, 1, None), Spec("f_id", 151, 2, 0, True),  # 121 s late
             Spec("p", 40, 4, 1, None), Spec("f_id", 41, 4, 0, 2)]      # not 0/1
    events = build_events(items)
    expected = expected_outcomes(events, 5)
    by_time = {(e.key[0] - events[0].key[0]) // 1_000_000 + 8: e.source
               for e in events if e.kind == "feedback"}
    assert {t: expected[ref] for t, ref in by_time.items()} == {
        8: "unknown_prediction", 9: "joined:p0", 20: "duplicate_label", 25: "joined:p1",
        131: "duplicate_label", 151: "too_late", 41: "label_type"}


@pytest.mark.property
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=specs, wait_s=st.sampled_from([0, 5, 30]), batch=st.sampled_from([1, 7, 60]))
# the edges: a label exactly MAX_DELAY_S after its prediction and one a second later; a
# prediction exactly wait_s after its label and one a second later
@example(items=[Spec("p", 0, 0, 0, None), Spec("p", 0, 2, 1, None), Spec("f_id", 120, 0, 0, 1),
                Spec("f_id", 121, 2, 0, 1)], wait_s=0, batch=7)
@example(items=[Spec("f_id", 1, 0, 0, 1), Spec("f_id", 2, 2, 0, 1), Spec("p", 6, 0, 0, None),
                Spec("p", 8, 2, 0, None)], wait_s=5, batch=1)
def test_join__every_label_ends_as_the_reference_says_and_no_prediction_joins_twice(
        items: list[Spec], wait_s: int, batch: int) -> None:
    events = build_events(items)
    joins, outcomes = run_join(events, MemoryJoinState(), wait_s, batch=batch)
    expected = expected_outcomes(events, wait_s)
    assert set(outcomes) == set(expected)  # every label is accounted for
    for source, got in outcomes.items():
        assert got == [expected[source]], (source, got, expected[source])
    per_prediction = Counter(pid for pid, _ in joins)
    assert all(n == 1 for n in per_prediction.values()), per_prediction
    assert sorted(joins) == sorted(
        (o.removeprefix("joined:"), s) for s, o in expected.items() if o.startswith("joined:"))

