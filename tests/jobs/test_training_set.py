"""Training sets from real lake tables written by the lake sink's mappings: the rows are exactly
the produced predictions of the model that have a label (the oracle is the produced input),
with the features as served, at the pinned snapshots whatever is written after, split by time,
streamed in bounded batches."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from refluent.jobs.training_set import TrainingSetBuilder, TrainingSetError
from refluent.lake.mappings import PredictionsTable, RawEventsTable
from refluent.streams.contracts import LabeledExample, Prediction

from . import lake
from .lake import write

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _stream(n: int, start: int, rnd: random.Random, model: str = "churn"
            ) -> tuple[list[Prediction], list[LabeledExample]]:
    preds, examples = [], []
    for i in range(start, start + n):
        t = T0 + timedelta(seconds=i)
        features = {"spend": round(rnd.gauss(100, 20), 3), "visits": rnd.randint(0, 9),
                    "tier": rnd.choice("ab")}
        preds.append(Prediction(prediction_id=f"{model}-{i}", request_id=f"r{i}",
                                model_name=model, model_version="1", entity_id="e",
                                score=0.5, label=True, features=features, ts=t))
        if i % 3:  # two thirds get a label
            examples.append(LabeledExample(
                prediction_id=f"{model}-{i}", entity_id="e", model_name=model,
                model_version="1", features={"spend": -1.0}, label=i % 2 == 0,
                prediction_time=t, label_time=t + timedelta(minutes=5)))
    return preds, examples


def test_training_set__the_labelled_predictions_at_the_pinned_snapshots(tmp_path: Path) -> None:
    rnd = random.Random(3)
    catalog = lake.catalog(tmp_path)
    preds, examples = _stream(900, 0, rnd)
    other_preds, other_examples = _stream(100, 0, rnd, model="fraud")
    write(catalog, "predictions", PredictionsTable(), preds + other_preds, 0)
    write(catalog, "examples", RawEventsTable(), examples + other_examples, 0)
    builder = TrainingSetBuilder(catalog, "lab", "churn", batch_rows=128)
    ts = builder.pin()
    later_preds, later_examples = _stream(300, 900, rnd)  # written after the pin
    write(catalog, "predictions", PredictionsTable(), later_preds, 2000)
    write(catalog, "examples", RawEventsTable(), later_examples, 2000)

    labelled = {e.prediction_id: e.label for e in examples}
    expected = sorted((p.prediction_id, p.features["spend"], float(p.features["visits"]),
                       labelled[p.prediction_id], p.ts) for p in preds
                      if p.prediction_id in labelled)
    assert ts.features == ("spend", "visits")  # numeric ones; "tier" is text
    assert ts.train_rows + ts.validation_rows == len(expected) == 600
    assert ts.validation_rows == 120
    # The stream positions at the pinned snapshots, not after the later writes.
    assert ts.offsets == {"predictions": {"predictions:0": 1000},
                          "examples": {"examples:0": len(examples) + len(other_examples)}}
    assert ts.lineage()["offsets"] == ts.offsets

    def rows(split: Any = None) -> list[tuple[Any, ...]]:
        out = []
        for batch in builder.batches(ts, split):
            assert batch.num_rows <= 128
            assert batch.schema.names == ["prediction_id", "event_time", "spend", "visits",
                                          "label"]
            out += [(r["prediction_id"], r["spend"], r["visits"], r["label"], r["event_time"])
                    for r in batch.to_pylist()]
        return sorted(out)

    assert rows() == expected  # served features (not the examples' -1.0), pinned rows only
    train, validation = rows("train"), rows("validation")
    assert sorted(train + validation) == expected
    assert len(validation) == 120 and max(r[4] for r in train) < min(r[4] for r in validation)
    assert min(r[4] for r in validation) == ts.cutoff

    again = TrainingSetBuilder(catalog, "lab", "churn", batch_rows=128)
    same = again.pin(ts.predictions_snapshot, ts.examples_snapshot)
    assert same == ts and rows() == expected
    assert len(list(again.batches(again.pin()))) > 0  # the current snapshots hold more
    assert again.pin().train_rows + again.pin().validation_rows == 800
    assert ts.lineage()["snapshot_id"] == ts.predictions_snapshot

    with pytest.raises(TrainingSetError, match="no numeric served feature"):
        TrainingSetBuilder(catalog, "lab", "churn", features=["height"]).pin()
    with pytest.raises(TrainingSetError, match="no prediction of it has a label"):
        TrainingSetBuilder(catalog, "lab", "nobody").pin()


def test_training_set__features_named_with_dots_are_read_from_their_columns(
        tmp_path: Path) -> None:
    catalog = lake.catalog(tmp_path)
    preds, examples = [], []
    for i in range(20):
        t = T0 + timedelta(seconds=i)
        x = {"customer_orders.spend_1h": float(i), "basket_value": 2.0 * i}
        preds.append(Prediction(prediction_id=f"p{i}", request_id=f"r{i}", model_name="m",
                                model_version="1", entity_id="e", score=0.5, label=True,
                                features=x, ts=t))
        examples.append(LabeledExample(prediction_id=f"p{i}", entity_id="e", model_name="m",
                                       model_version="1", features=x, label=i % 2 == 0,
                                       prediction_time=t, label_time=t))
    write(catalog, "predictions", PredictionsTable(), preds, 0)
    write(catalog, "examples", RawEventsTable(), examples, 0)
    builder = TrainingSetBuilder(catalog, "lab", "m",
                                 features=["customer_orders.spend_1h", "basket_value"])
    ts = builder.pin()
    rows = [r for b in builder.batches(ts) for r in b.to_pylist()]
    assert ts.features == ("customer_orders.spend_1h", "basket_value")
    assert sorted((r["customer_orders.spend_1h"], r["basket_value"], r["label"])
                  for r in rows) == [(float(i), 2.0 * i, i % 2 == 0) for i in range(20)]
    with pytest.raises(TrainingSetError, match="customer_orders.orders_1h"):
        TrainingSetBuilder(catalog, "lab", "m", features=["customer_orders.orders_1h"]).pin()
