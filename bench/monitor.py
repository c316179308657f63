"""Monitor throughput beside the feedback service's, in the same run.

Prints one JSON object.

    python bench/monitor.py [--records 20000] [--features 10] [--batch 500]

The monitor's work per record without the broker: :meth:`MonitorService.handle
<refluent.monitoring.service.MonitorService.handle>` over batches of ``--batch`` raw JSON
values, half ``Prediction`` s of a binary classifier with ``--features`` numeric and categorical
features, a score and feature ages (data drift windows of 1,000 against a reference of 1,000,
estimated accuracy, stale and failure shares), half ``LabeledExample`` s (ADWIN on the error,
realised accuracy, calibration), one model version; decoding with the contracts included. Rate:
examples plus predictions per second, best of three, on one core (this process). The feedback
service's rate comes from ``bench/learning.py`` (its ``service_path``: the learning path plus
decoding and the event-time merge, per labelled example) run as a child process right after. The
goal: the monitor at least twice the feedback service's rate, so it never becomes the loop's
bottleneck (each labelled example costs the feedback service one prediction and one label; the
monitor sees one prediction and one example for it).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refluent.config import Settings  # noqa: E402
from refluent.monitoring.service import MonitorService  # noqa: E402
from refluent.streams.contracts import LabeledExample, Prediction  # noqa: E402
from refluent.streams.origin import Origin  # noqa: E402


def records(n: int, features: int, seed: int = 1) -> list[tuple[Origin, bytes]]:
    rnd = random.Random(seed)
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    out = []
    for i in range(n // 2):
        t = t0 + timedelta(seconds=i)
        feats: dict[str, object] = {f"f{k}": rnd.gauss(0, 1) for k in range(features - 2)}
        feats.update(tier=rnd.choice("abc"), visits=rnd.randint(0, 9))
        score = rnd.random()
        label = rnd.random() < score
        out.append((Origin("predictions", 0, i), Prediction(
            prediction_id=f"p{i}", request_id=f"r{i}", model_name="m", model_version="1",
            entity_id=str(i % 100), score=score, label=score >= 0.5,
            probabilities={"False": 1 - score, "True": score},
            features=feats, feature_ages_ms={"v": 100.0},  # type: ignore[arg-type]
            ts=t).model_dump_json().encode()))
        out.append((Origin("examples", 0, i), LabeledExample(
            prediction_id=f"p{i}", entity_id=str(i % 100), model_name="m", model_version="1",
            features=feats, label=label, score=score,  # type: ignore[arg-type]
            predicted_label=score >= 0.5, prediction_time=t,
            label_time=t).model_dump_json().encode()))
    return out


def monitor_rate(data: list[tuple[Origin, bytes]], batch: int) -> float:
    service = MonitorService(Settings(), "unused:9092")
    started = time.perf_counter()
    for i in range(0, len(data), batch):
        service.handle(data[i:i + batch])  # type: ignore[arg-type]
    return len(data) / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--features", type=int, default=10)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    data = records(args.records, args.features)
    rates = [monitor_rate(data, args.batch) for _ in range(3)]
    learning = subprocess.run(  # noqa: S603 - our own benchmark
        [sys.executable, str(Path(__file__).with_name("learning.py")), "--rows", "10000"],
        capture_output=True, text=True, check=True)
    feedback = json.loads(learning.stdout)["service_path"]["examples_per_s"]
    best = max(rates)
    print(json.dumps({
        "monitor_records_per_s": round(best, 1),
        "monitor_runs": [round(r, 1) for r in rates],
        "records": args.records, "features": args.features,
        "feedback_service_examples_per_s": feedback,
        "ratio": round(best / feedback, 2), "goal_ratio": 2.0,
        "goal_met": best >= 2 * feedback}, indent=2))


if __name__ == "__main__":
    main()
