"""The event-time merge: its order against River's ``simulate_qa``, the partitions it waits for,
and the back-pressure it signals when its buffer is full."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from refluent.feedback.merge import EventTimeMerger, TimedEvent
from refluent.streams.contracts import Feedback, Prediction
from refluent.streams.errors import DecodeError
from refluent.streams.origin import Origin

from .events import F, P, label, prediction


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
        ref = Origin(topic, part, offsets[(topic, part)])
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
    merger.push(TimedEvent.of("prediction", prediction("a", 5), Origin(P, 0, 0)))
    assert merger.release() == []
    merger.push(TimedEvent.of("feedback", label(3, pid="a"), Origin(F, 0, 0)))
    assert [e.kind for e in merger.release()] == ["feedback"]
    # the feedback partition's next label may be at 3 s..5 s: the prediction still waits
    assert merger.release() == []
    merger.push(TimedEvent.of("feedback", label(9, pid="a"), Origin(F, 0, 1)))
    assert [e.kind for e in merger.release()] == ["prediction"]


@pytest.mark.unit
def test_merger__drained_partition_stops_holding_back_after_idle_time() -> None:
    now = [100.0]
    merger = EventTimeMerger({P: "prediction", F: "feedback"}, idle_s=2.0,
                             clock=lambda: now[0])
    merger.assign([(P, 0), (F, 0)])
    merger.push(TimedEvent.of("prediction", prediction("a", 5), Origin(P, 0, 0)))
    assert merger.release(drained={(F, 0)}) == []  # drained but not quiet long enough
    now[0] += 2.5
    assert len(merger.release(drained={(F, 0)})) == 1
    assert len(merger) == 0


@pytest.mark.unit
def test_merger__undecodable_record_keeps_its_place_in_its_partition() -> None:
    merger = EventTimeMerger({P: "prediction", F: "feedback"})
    merger.assign([(P, 0)])
    merger.push(TimedEvent.of("prediction", prediction("a", 5), Origin(P, 0, 0)))
    merger.push_undecodable("prediction", Origin(P, 0, 1), b"{", None,
                            DecodeError("Prediction", "json", "bad"))
    merger.push(TimedEvent.of("prediction", prediction("b", 6), Origin(P, 0, 2)))
    out = merger.release_all()
    assert [e.source.offset for e in out] == [0, 1, 2]
    assert out[1].event is None and isinstance(out[1].error, DecodeError)


@pytest.mark.unit
def test_merger__revoke_drops_buffered_events_of_those_partitions() -> None:
    merger = EventTimeMerger({P: "prediction", F: "feedback"})
    merger.push(TimedEvent.of("prediction", prediction("a", 5), Origin(P, 0, 0)))
    merger.push(TimedEvent.of("prediction", prediction("b", 6), Origin(P, 1, 0)))
    assert merger.revoke([(P, 0)]) == 1
    assert [e.source for e in merger.release_all()] == [Origin(P, 1, 0)]


# ---------------------------------------------------------------------------------------------
# back-pressure
# ---------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_merger__full_buffer_names_the_partitions_ahead_until_the_lagging_one_catches_up(
        ) -> None:
    merger = EventTimeMerger({P: "prediction", F: "feedback"}, max_buffered=3)
    merger.assign([(P, 0), (P, 1), (F, 0)])
    merger.push(TimedEvent.of("prediction", prediction("a", 10), Origin(P, 0, 0)))
    merger.push(TimedEvent.of("prediction", prediction("b", 11), Origin(P, 1, 0)))
    assert merger.release() == [] and merger.ahead() == set()  # 2 buffered: below the cap
    merger.push(TimedEvent.of("prediction", prediction("c", 12), Origin(P, 0, 1)))
    assert merger.release() == []  # (F, 0) has delivered nothing: it may still go first
    assert merger.ahead() == {(P, 0), (P, 1)}
    # the lagging partition delivers a label before them: released, the others still wait
    merger.push(TimedEvent.of("feedback", label(5, pid="x"), Origin(F, 0, 0)))
    assert [e.source for e in merger.release()] == [Origin(F, 0, 0)]
    assert merger.ahead() == {(P, 0), (P, 1)}
    # it catches up: what no partition can precede goes, in order (c at 12 s waits for
    # (P, 1), which may still deliver an event at 11..12 s), and the buffer is below the cap
    merger.push(TimedEvent.of("feedback", label(20, pid="y"), Origin(F, 0, 1)))
    assert [e.source for e in merger.release()] == [Origin(P, 0, 0), Origin(P, 1, 0)]
    assert len(merger) == 2 and merger.ahead() == set()


@pytest.mark.unit
def test_merger__without_a_cap_names_no_partition() -> None:
    merger = EventTimeMerger({P: "prediction", F: "feedback"})
    merger.assign([(P, 0), (F, 0)])
    for i in range(50):
        merger.push(TimedEvent.of("prediction", prediction(f"p{i}", i), Origin(P, 0, i)))
    assert merger.release() == [] and len(merger) == 50
    assert merger.ahead() == set()

