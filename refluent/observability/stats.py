"""Latency summaries: one definition of a percentile for every report and benchmark."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def quantile(values: Iterable[float], q: float) -> float:
    """The ``q`` quantile by nearest rank: the smallest value with at least ``q`` of the
    values at or below it; NaN when there are none.

    Examples:
        >>> quantile([5, 1, 4, 2, 3], 0.5), quantile(range(1, 101), 0.99), quantile([], 0.5)
        (3, 99, nan)
    """
    if not 0 <= q <= 1:
        raise ValueError(f"quantile {q} is not between 0 and 1")
    xs = sorted(values)
    if not xs:
        return math.nan
    return xs[max(0, math.ceil(q * len(xs)) - 1)]


def summary(values: Sequence[float], *, scale: float = 1000.0, digits: int = 3,
            quantiles: Sequence[float] = (0.5, 0.99)) -> dict[str, float]:
    """``p50_ms``, ``p99_ms`` (one key per quantile), ``mean_ms``, ``max_ms`` and ``n`` of
    ``values`` multiplied by ``scale`` (seconds to milliseconds by default).

    Examples:
        >>> summary([0.001, 0.002, 0.004], quantiles=(0.5, 0.999))
        {'p50_ms': 2.0, 'p999_ms': 4.0, 'mean_ms': 2.333, 'max_ms': 4.0, 'n': 3}
    """
    out: dict[str, float] = {}
    for q in quantiles:
        name = f"p{q * 100:g}".replace(".", "")
        out[f"{name}_ms"] = round(quantile(values, q) * scale, digits)
    n = len(values)
    out["mean_ms"] = round(sum(values) / n * scale, digits) if n else math.nan
    out["max_ms"] = round(max(values) * scale, digits) if n else math.nan
    out["n"] = n
    return out
