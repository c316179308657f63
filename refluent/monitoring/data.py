"""Data drift on inputs and scores: a window of recent values against a reference sample.

The reference is the first ``reference_size`` values after a model version became champion (or
a training sample given up front); after it, values are gathered in tumbling windows of
``window_size``, and each full window is compared with the reference by two-sample statistics
from scipy:

- numbers: the population stability index over ten bins cut at the reference's deciles (PSI:
  the sum of ``(p_cur - p_ref) * ln(p_cur / p_ref)``; binning and the sum are written here, the
  rest comes from numpy), the Kolmogorov-Smirnov statistic and its p-value
  (``scipy.stats.ks_2samp``), and the Wasserstein distance (``scipy.stats.wasserstein_distance``)
  divided by the reference's standard deviation;
- categories: the chi-square test of the two count tables (``scipy.stats.chi2_contingency``)
  and the Jensen-Shannon distance in bits (``scipy.spatial.distance.jensenshannon``).

One statistic decides (``psi`` > 0.2 for numbers, ``jensen_shannon`` > 0.1 for categories,
the thresholds practitioners use); the others are reported beside it in the alert's window.
A feature is reported when a window leaves the reference, and again only after a window came
back.
With equal reference and window sizes of 1,000, a stationary feature's PSI is about 0.02.

Examples:
    >>> import random
    >>> rnd = random.Random(3)
    >>> monitor = DataDriftMonitor(reference_size=1000, window_size=1000)
    >>> found = []
    >>> for i in range(6000):
    ...     shift = 1.0 if i >= 4000 else 0.0
    ...     found += monitor.update({"amount": rnd.gauss(shift, 1.0), "tier": rnd.choice("ab")})
    >>> [(d.feature, d.test, d.window_end) for d in found]
    [('amount', 'psi', 4999)]
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from refluent.errors import require

PSI_THRESHOLD = 0.2
JS_THRESHOLD = 0.1
BINS = 10
_EPS = 1e-4


def psi(reference: np.ndarray, current: np.ndarray, bins: int = BINS) -> float:
    """Population stability index of ``current`` against ``reference`` (decile bins).

        >>> rng = np.random.default_rng(0)
        >>> psi(rng.normal(0, 1, 5000), rng.normal(0, 1, 5000)) < 0.02
        True
        >>> psi(rng.normal(0, 1, 5000), rng.normal(1, 1, 5000)) > 0.2
        True
    """
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(edges, reference, side="right"),
                      minlength=len(edges) + 1) / len(reference)
    cur = np.bincount(np.searchsorted(edges, current, side="right"),
                      minlength=len(edges) + 1) / len(current)
    ref, cur = np.clip(ref, _EPS, None), np.clip(cur, _EPS, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def numeric_statistics(reference: np.ndarray, current: np.ndarray) -> dict[str, float]:
    """PSI, KS statistic and p-value, and the Wasserstein distance in reference deviations."""
    stats: Any = require("scipy.stats", "monitor")
    ks = stats.ks_2samp(reference, current)
    scale = float(np.std(reference)) or 1.0
    return {"psi": psi(reference, current), "ks": float(ks.statistic),
            "ks_p_value": float(ks.pvalue),
            "wasserstein": float(stats.wasserstein_distance(reference, current)) / scale}


def categorical_statistics(reference: Counter[str], current: Counter[str]) -> dict[str, float]:
    """Chi-square statistic and p-value of the two count tables, Jensen-Shannon distance."""
    stats: Any = require("scipy.stats", "monitor")
    distance: Any = require("scipy.spatial.distance", "monitor")
    cats = sorted(set(reference) | set(current))
    table = np.array([[reference[c] for c in cats], [current[c] for c in cats]], dtype=float)
    if len(cats) < 2:
        return {"chi2": 0.0, "chi2_p_value": 1.0, "jensen_shannon": 0.0}
    chi = stats.chi2_contingency(table + 0.5)  # +0.5: a category absent on one side
    js = distance.jensenshannon(table[0] / table[0].sum(), table[1] / table[1].sum(), base=2)
    return {"chi2": float(chi.statistic), "chi2_p_value": float(chi.pvalue),
            "jensen_shannon": 0.0 if math.isnan(js) else float(js)}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class DataDrift:
    """A feature (or the score) whose window left the reference."""

    feature: str
    test: str
    statistic: float
    threshold: float
    statistics: dict[str, float]
    window_start: int
    """Index (values seen, 0-based) of the window's first value."""
    window_end: int


@dataclass
class _Column:
    reference: list[Any] = field(default_factory=list)
    window: list[Any] = field(default_factory=list)
    frozen: Any = None
    drifting: bool = False


@dataclass
class DataDriftMonitor:
    """Per-feature reference and tumbling windows (see the module).

    ``update`` takes one request's values by name; a column whose reference values are all
    numbers is numeric, any other is categorical (values as text); None is skipped.
    """

    reference_size: int = 1000
    window_size: int = 1000
    psi_threshold: float = PSI_THRESHOLD
    js_threshold: float = JS_THRESHOLD
    seen: int = 0
    _columns: dict[str, _Column] = field(default_factory=dict)

    def set_reference(self, rows: list[dict[str, Any]]) -> None:
        """Use ``rows`` (a training sample) as the reference instead of the first values."""
        for row in rows:
            for name, value in row.items():
                if value is not None:
                    self._columns.setdefault(name, _Column()).reference.append(value)
        for col in self._columns.values():
            col.frozen = self._freeze(col.reference)

    def update(self, row: dict[str, Any]) -> list[DataDrift]:
        """Take one request's values; the drifts found when this row closed a window."""
        index = self.seen
        self.seen += 1
        found: list[DataDrift] = []
        for name, value in row.items():
            if value is None:
                continue
            col = self._columns.setdefault(name, _Column())
            if col.frozen is None:
                col.reference.append(value)
                if len(col.reference) >= self.reference_size:
                    col.frozen = self._freeze(col.reference)
                continue
            col.window.append(value)
            if len(col.window) >= self.window_size:
                drift = self._test(name, col, index)
                col.window = []
                if drift is not None:
                    found.append(drift)
        return found

    @staticmethod
    def _freeze(values: list[Any]) -> Any:
        if values and all(_is_number(v) for v in values):
            return np.asarray(values, dtype=float)
        return Counter(str(v) for v in values)

    def _test(self, name: str, col: _Column, index: int) -> DataDrift | None:
        start = index - len(col.window) + 1
        if isinstance(col.frozen, Counter):
            stats = categorical_statistics(col.frozen, Counter(str(v) for v in col.window))
            test, threshold = "jensen_shannon", self.js_threshold
        else:
            current = np.asarray([v for v in col.window if _is_number(v)], dtype=float)
            if len(current) == 0:
                return None
            stats = numeric_statistics(col.frozen, current)
            test, threshold = "psi", self.psi_threshold
        was, col.drifting = col.drifting, stats[test] > threshold
        if not col.drifting or was:
            return None  # one alert when a feature leaves the reference, not one per window
        return DataDrift(name, test, stats[test], threshold, stats, start, index)


__all__ = ["DataDrift", "DataDriftMonitor", "categorical_statistics", "numeric_statistics",
           "psi"]
