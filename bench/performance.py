"""How early the estimated accuracy (CBPE) sees a fall, beside the realised accuracy, and how
quiet both are on a stationary stream.

Prints one JSON object.

    python bench/performance.py [--seeds 20] [--stationary 100000] [--label-delay 5000]

A binary classifier's calibrated scores (a label is drawn with the score's probability) are
sure of most requests before the change and unsure after it (accuracy about 0.89, then about
0.64), windows of 1,000 against a reference of the first 1,000, the monitor's defaults.

- ``cbpe``: requests after the change until the estimate raises ``performance.degraded``;
- ``realised``: the same for the realised accuracy, counted in requests: its labelled examples
  after the change plus ``--label-delay`` (labels arrive that many requests after their
  prediction), which is the head start the estimate has;
- false alarms of each per ``--stationary`` events of the stream without the change.

Median and worst over ``--seeds`` seeds.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refluent.monitoring.performance import (  # noqa: E402
    PerformanceEstimator,
    RealisedPerformance,
)

CHANGE = 5_000
AFTER = 5_000


def score(rnd: random.Random, changed: bool) -> float:
    if changed:
        return rnd.uniform(0.25, 0.75)
    return rnd.uniform(0.0, 0.2) if rnd.random() < 0.5 else rnd.uniform(0.8, 1.0)


def delays(seed: int, label_delay: int) -> tuple[int | None, int | None]:
    rnd = random.Random(seed)
    cbpe, realised = PerformanceEstimator(), RealisedPerformance()
    found_cbpe = found_real = None
    for i in range(CHANGE + AFTER):
        s = score(rnd, i >= CHANGE)
        right = (s >= 0.5) == (rnd.random() < s)
        if cbpe.on_score(s) is not None and found_cbpe is None and i >= CHANGE:
            found_cbpe = i - CHANGE + 1
        if realised.on_error(float(not right), binary=True) is not None \
                and found_real is None and i >= CHANGE:
            found_real = i - CHANGE + 1 + label_delay
        cbpe.on_label(s, right)
    return found_cbpe, found_real


def false_alarms(seed: int, n: int) -> tuple[int, int]:
    rnd = random.Random(10_000 + seed)
    cbpe, realised = PerformanceEstimator(), RealisedPerformance()
    fa_cbpe = fa_real = 0
    for _ in range(n):
        s = score(rnd, False)
        right = (s >= 0.5) == (rnd.random() < s)
        fa_cbpe += cbpe.on_score(s) is not None
        fa_real += realised.on_error(float(not right), binary=True) is not None
        cbpe.on_label(s, right)
    return fa_cbpe, fa_real


def summary(values: list[int | None]) -> dict[str, object]:
    found = [v for v in values if v is not None]
    return {"median": statistics.median(found) if found else None,
            "worst": max(found) if found else None, "missed": len(values) - len(found)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--stationary", type=int, default=100_000)
    ap.add_argument("--label-delay", type=int, default=5_000)
    args = ap.parse_args()
    found = [delays(seed, args.label_delay) for seed in range(args.seeds)]
    fas = [false_alarms(seed, args.stationary) for seed in range(3)]
    print(json.dumps({
        "window": 1000, "reference": 1000, "seeds": args.seeds,
        "label_delay_requests": args.label_delay,
        "delay_requests": {"cbpe": summary([c for c, _ in found]),
                           "realised": summary([r for _, r in found])},
        "false_alarms_per_stationary_run": {
            "events": args.stationary, "runs": len(fas),
            "cbpe": [c for c, _ in fas], "realised": [r for _, r in fas]},
    }, indent=2))


if __name__ == "__main__":
    main()
