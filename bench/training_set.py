"""Training-set build rate from the lake.

Prints one JSON object.

    python bench/training_set.py [--rows 100000] [--features 10] [--batch-rows 10000]

Writes ``--rows`` predictions of one model with ``--features`` numeric served features (and two
thirds of them labelled in ``examples``) through the lake sink's own mappings into a local
Iceberg catalog (SQLite + files), then times
:class:`~refluent.jobs.training_set.TrainingSetBuilder`: ``pin`` (labels and the time split)
and reading every batch of both splits. Rate: labelled rows per second, best of three.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refluent.embedded.services import lake_catalog  # noqa: E402
from refluent.jobs.training_set import TrainingSetBuilder  # noqa: E402
from refluent.lake.mappings import PredictionsTable, RawEventsTable  # noqa: E402
from refluent.sinks.base import SinkRecord  # noqa: E402
from refluent.sinks.iceberg import IcebergSink  # noqa: E402
from refluent.streams.contracts import LabeledExample, Prediction  # noqa: E402


def write(catalog: Any, rows: int, features: int) -> float:
    rnd = random.Random(1)
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    preds = IcebergSink(catalog, PredictionsTable(), "predictions", namespace="bench",
                        max_records=50_000, max_seconds=3600)
    examples = IcebergSink(catalog, RawEventsTable(), "examples", namespace="bench",
                           max_records=50_000, max_seconds=3600)
    preds.setup()
    examples.setup()
    started = time.perf_counter()
    for i in range(rows):
        t = t0 + timedelta(seconds=i)
        feats: dict[str, Any] = {f"f{k}": rnd.gauss(0, 1) for k in range(features)}
        p = Prediction(prediction_id=f"p{i}", request_id=f"r{i}", model_name="m",
                       model_version="1", entity_id="e", score=0.5, features=feats, ts=t)
        preds.write([SinkRecord("predictions", 0, i, b"e", p, timestamp_ms=None)])
        if i % 3:
            e = LabeledExample(prediction_id=f"p{i}", entity_id="e", model_name="m",
                               model_version="1", features={}, label=rnd.random() < 0.5,
                               prediction_time=t, label_time=t)
            examples.write([SinkRecord("examples", 0, i, b"e", e, timestamp_ms=None)])
    preds.flush()
    examples.flush()
    return time.perf_counter() - started


def build(catalog: Any, batch_rows: int) -> tuple[float, int]:
    builder = TrainingSetBuilder(catalog, "bench", "m", batch_rows=batch_rows)
    started = time.perf_counter()
    ts = builder.pin()
    n = sum(b.num_rows for split in ("train", "validation")
            for b in builder.batches(ts, split))
    return time.perf_counter() - started, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=10)
    ap.add_argument("--batch-rows", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "wh").mkdir()
        catalog = lake_catalog(f"sqlite:///{tmp}/c.db", (Path(tmp) / "wh").as_uri())
        write_s = write(catalog, args.rows, args.features)
        runs = [build(catalog, args.batch_rows) for _ in range(3)]
    best_s, labelled = min(runs)
    print(json.dumps({
        "predictions": args.rows, "labelled_rows": labelled, "features": args.features,
        "batch_rows": args.batch_rows, "write_s": round(write_s, 2),
        "build_s": [round(s, 3) for s, _ in runs],
        "rows_per_s": round(labelled / best_s, 1)}, indent=2))


if __name__ == "__main__":
    main()
