"""Epsilon at the same noise, sampling and steps under the PRV and RDP accountants.

Prints one JSON object.

    python bench/accountants.py [--delta 1e-5]

For a grid of DP-SGD runs (noise multiplier x sample rate x steps), the epsilon each accountant
composes (:func:`refluent.privacy.accountant.epsilon`, Opacus underneath) and how long it took
(the first PRV call includes Opacus' imports); PRV is the tighter bound, RDP the cheaper and
the one most papers quote.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refluent.privacy.accountant import Run, epsilon  # noqa: E402

GRID = [Run(noise, rate, steps) for noise in (0.8, 1.1, 2.0) for rate in (0.001, 0.01)
        for steps in (1_000, 10_000)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--delta", type=float, default=1e-5)
    args = ap.parse_args()
    rows = []
    for run in GRID:
        row: dict[str, object] = run._asdict()
        eps: dict[str, float] = {}
        for name in ("prv", "rdp"):
            started = time.perf_counter()
            eps[name] = epsilon([run], args.delta, name)
            row[f"ms_{name}"] = round((time.perf_counter() - started) * 1000, 1)
            row[f"epsilon_{name}"] = round(eps[name], 4)
        row["rdp_over_prv"] = round(eps["rdp"] / eps["prv"], 3)
        rows.append(row)
    print(json.dumps({"delta": args.delta, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
