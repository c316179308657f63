"""River's delayed question-and-answer streams as Refluent events, and the model the online
learning tests train: what tests compare against ``river.evaluate.progressive_val_score``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from refluent.errors import require
from refluent.streams.contracts import Feedback, Prediction


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
