"""Concept drift detection: delay after a known change and false alarms on a stationary stream,
per detector.

Prints one JSON object.

    python bench/drift.py [--seeds 20] [--position 10000] [--after 5000] [--stationary 100000]

The stream is River's ``Agrawal`` generator (perturbation 0.05): classification function 0 until
``--position``,
then function 4 (an abrupt change at that example); the model is River's
``HoeffdingTreeClassifier`` learning progressively (predict, then learn), and its error stream
(1 wrong, 0 right) is what every detector watches, through
:class:`~refluent.monitoring.concept.ErrorDriftMonitor` with its defaults (warm-up, minimum
samples, direction, cooldown). Per detector over ``--seeds`` seeds: the delay from the change to
the first alert after it (median and worst; a seed without an alert within ``--after`` examples
counts as missed), and alerts before the change. False alarms come from ``--stationary``
examples of function 0 alone (two seeds), reported per 100k examples. The goal, for the default
detector: delay <= 1,000 examples at <= 1 false alarm per 100k.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from river import datasets, tree  # noqa: E402

from refluent.monitoring.concept import DEFAULT_DETECTOR, DETECTORS, ErrorDriftMonitor  # noqa: E402

PERTURBATION = 0.05
"""Noise on Agrawal's numeric features, so the model errs now and then before the change."""


def error_stream(n: int, seed: int, position: int | None) -> list[int]:
    """The progressive errors of a Hoeffding tree over ``n`` Agrawal examples."""
    base = datasets.synth.Agrawal(classification_function=0, seed=seed, perturbation=PERTURBATION)
    if position is None:
        stream = base.take(n)
    else:  # an abrupt change at ``position`` exactly
        after = datasets.synth.Agrawal(classification_function=4, seed=seed + 10_000,
                                        perturbation=PERTURBATION)
        stream = itertools.chain(base.take(position), after.take(n - position))
    model = tree.HoeffdingTreeClassifier()
    errors = []
    for x, y in stream:
        errors.append(int(model.predict_one(x) != y))
        model.learn_one(x, y)
    return errors


def alerts(errors: list[int], detector: str, seed: int) -> list[int]:
    monitor = ErrorDriftMonitor(detector, seed=seed)
    return [d.index for d in (monitor.update(e) for e in errors) if d is not None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--position", type=int, default=10_000)
    ap.add_argument("--after", type=int, default=5_000)
    ap.add_argument("--stationary", type=int, default=100_000)
    args = ap.parse_args()
    started = time.perf_counter()
    drifting = [error_stream(args.position + args.after, seed, args.position)
                for seed in range(args.seeds)]
    print(f"drifting streams ready ({time.perf_counter() - started:.0f}s)", file=sys.stderr)
    stationary = [error_stream(args.stationary, 1000 + s, None) for s in range(2)]
    print(f"stationary streams ready ({time.perf_counter() - started:.0f}s)", file=sys.stderr)
    out: dict[str, object] = {
        "stream": "Agrawal f0 -> f4, abrupt, perturbation 0.05", "model": "HoeffdingTree",
        "seeds": args.seeds, "position": args.position, "after": args.after,
        "stationary_examples": args.stationary * len(stationary),
        "error_before": round(statistics.mean(
            statistics.mean(e[args.position - 2000:args.position]) for e in drifting), 4),
        "error_after": round(statistics.mean(
            statistics.mean(e[args.position:args.position + 2000]) for e in drifting), 4),
        "default_detector": DEFAULT_DETECTOR, "detectors": {}}
    for name in DETECTORS:
        delays, missed, early = [], 0, 0
        for seed, errors in enumerate(drifting):
            found = alerts(errors, name, seed)
            early += sum(1 for i in found if i < args.position)
            later = [i - args.position for i in found if i >= args.position]
            if later:
                delays.append(later[0])
            else:
                missed += 1
        false = sum(len(alerts(e, name, 1000 + s)) for s, e in enumerate(stationary))
        per_100k = false * 100_000 / (args.stationary * len(stationary))
        out["detectors"][name] = {  # type: ignore[index]
            "delay_median": statistics.median(delays) if delays else None,
            "delay_worst": max(delays) if delays else None,
            "missed": missed, "alerts_before_change": early,
            "false_alarms_per_100k": round(per_100k, 2)}
    d = out["detectors"][DEFAULT_DETECTOR]  # type: ignore[index]
    out["goal_met"] = (d["missed"] == 0 and d["delay_worst"] is not None
                       and d["delay_worst"] <= 1000 and d["false_alarms_per_100k"] <= 1.0)
    out["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
