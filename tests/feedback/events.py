"""Events for the feedback tests: predictions and labels at seconds after ``T0``, and random
streams of them (hypothesis specs) in merge order."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from refluent.feedback.join import FeedbackJoin, JoinOutcome
from refluent.feedback.merge import TimedEvent
from refluent.feedback.state.base import JoinState, to_us
from refluent.feedback.state.redis import RedisJoinStore
from refluent.streams.contracts import Feedback, Prediction
from refluent.streams.origin import Origin

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



@dataclass(frozen=True)
class Spec:
    """One random event: a prediction, or a label by id or by entity."""

    kind: str
    t: int
    pid: int
    entity: int
    value: Any


def spec_lists(max_t: int, pids: int, min_size: int = 0, max_size: int = 60
               ) -> st.SearchStrategy[list[Spec]]:
    """Random streams of ``min_size`` to ``max_size`` events at 0..``max_t`` s over ``pids``
    prediction ids (fewer ids and a shorter span: more labels meet the same prediction)."""
    return st.lists(st.builds(
        Spec,
        kind=st.sampled_from(["p", "p", "f_id", "f_id", "f_entity"]),
        t=st.integers(0, max_t),
        pid=st.integers(0, pids - 1),
        entity=st.integers(0, 3),
        value=st.sampled_from([True, False, 1, 0, 2, "x", 0.5])), min_size=min_size,
        max_size=max_size)


specs = st.one_of(spec_lists(200, 13), spec_lists(12, 4, min_size=8, max_size=30))


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
        ref = Origin(topic, part, offsets[(topic, part)])
        offsets[(topic, part)] += 1
        events.append(TimedEvent.of(kind, ev, ref, ev.model_dump_json().encode()))  # type: ignore[arg-type]
    return sorted(events, key=lambda e: e.key)


def run_join(events: list[TimedEvent], state: JoinState | RedisJoinStore, wait_s: float,
             batch: int = 7, defer: bool = False,
             between: Callable[[], None] | None = None
             ) -> tuple[list[Any], dict[Origin, list[str]]]:
    """Process ``events`` in batches of ``batch`` and finally expire everything; returns the
    joins ``(prediction id, label source)`` and, per label, its outcomes (``joined:<prediction
    id>`` or the dead-letter reason). With ``defer``, each batch's Redis write is sent with the
    next batch's read (as the service does); ``between`` runs after each batch is processed,
    before its commit."""
    join = FeedbackJoin(early_label_wait_s=wait_s, max_label_delay_s=120)
    joins: list[Any] = []
    outcomes: dict[Origin, list[str]] = {e.source: [] for e in events if e.kind == "feedback"}

    def record(out: JoinOutcome) -> None:
        for j in out.joined:
            joins.append((j.example.prediction_id, j.label_source))
            outcomes[j.label_source].append("joined:" + j.example.prediction_id)
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
            if between is not None:
                between()
            view.commit(defer=defer)  # type: ignore[union-attr]
    join.clock_us = to_us(at(10_000))  # the end of time: every wait is over
    view = view_of([])
    for r in join.expire(view):
        outcomes[r.source].append(r.error.reason)
    if isinstance(state, RedisJoinStore):
        view.commit()  # type: ignore[union-attr]
    return joins, outcomes
