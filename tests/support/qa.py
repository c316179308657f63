"""River's delayed question-and-answer streams as Refluent events, and the model the online
learning tests train: what tests compare against ``river.evaluate.progressive_val_score``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from refluent.errors import require
from refluent.feedback.merge import EventTimeMerger, TimedEvent
from refluent.streams.contracts import Feedback, Prediction
from refluent.streams.origin import Origin

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
P, F = "predictions", "feedback"


def logreg() -> Any:
    """A fresh ``StandardScaler | LogisticRegression`` pipeline."""
    require("river", "river")  # a clear error when the extra is missing
    from river import compose, linear_model, preprocessing

    return compose.Pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression())


def qa_events(data: Sequence[tuple[dict[str, Any], Any]], delay: int, *, model: str,
              t0: datetime, entities: int = 23) -> Iterator[tuple[int, Prediction | Feedback]]:
    """The predictions and labels of ``river.stream.simulate_qa(data, None, delay)``, in the
    order it reveals them, each with its question's index.

    Question ``i`` is prediction ``p<i>`` of ``model`` (request ``r<i>``, entity
    ``e<i % entities>``, its features as served) at ``t0 + i`` seconds; its answer is a label
    for ``p<i>`` at ``t0 + i + delay`` seconds.
    """
    stream = require("river.stream", "river")
    for i, x, y in stream.simulate_qa(data, None, delay):  # type: ignore[attr-defined]
        if y is None:
            yield i, Prediction(prediction_id=f"p{i}", request_id=f"r{i}", model_name=model,
                                model_version="1", entity_id=f"e{i % entities}", features=x,
                                ts=t0 + timedelta(seconds=i))
        else:
            yield i, Feedback(prediction_id=f"p{i}", label=y,
                              event_time=t0 + timedelta(seconds=i + delay))


def qa_records(data: Sequence[tuple[dict[str, Any], Any]], delay: int, *, model: str,
               t0: datetime, predictions: str, feedback: str, entities: int = 23
               ) -> list[tuple[str, bytes, str]]:
    """:func:`qa_events` as ``(topic, value, key)`` records: predictions keyed by entity,
    labels by prediction id."""
    out = []
    for _, event in qa_events(data, delay, model=model, t0=t0, entities=entities):
        if isinstance(event, Prediction):
            out.append((predictions, event.model_dump_json().encode(), event.entity_id))
        else:
            out.append((feedback, event.model_dump_json().encode(), event.prediction_id or ""))
    return out


def qa_stream(data: list[tuple[dict[str, Any], Any]], delay: int, model: str = "m",
              partitions: int = 3) -> list[TimedEvent]:
    events = []
    offsets: Counter[tuple[str, int]] = Counter()
    for i, ev in qa_events(data, delay, model=model, t0=T0, entities=17):
        if isinstance(ev, Prediction):
            topic, kind, part = P, "prediction", i % partitions
        else:
            topic, kind, part = F, "feedback", (i * 5 + 1) % partitions
        ref = Origin(topic, part, offsets[(topic, part)])
        offsets[(topic, part)] += 1
        events.append(TimedEvent.of(kind, ev, ref, ev.model_dump_json().encode()))  # type: ignore[arg-type]
    return events


def in_merge_order(events: list[TimedEvent]) -> list[TimedEvent]:
    merger = EventTimeMerger({P: "prediction", F: "feedback"})
    for e in events:
        merger.push(e)
    return merger.release_all()
