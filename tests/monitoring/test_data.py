"""Data drift: a feature shifted at a known request is reported in the first window after the
shift, with statistics equal to scipy's on the same samples; a stationary stream raises
nothing."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from refluent.monitoring.data import DataDriftMonitor

pytestmark = pytest.mark.unit

SHIFT_AT = 5_000


def rows(n: int, seed: int, shift_at: int | None) -> list[dict[str, object]]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        shifted = shift_at is not None and i >= shift_at
        out.append({"amount": rnd.lognormvariate(3.0 + (0.5 if shifted else 0.0), 0.4),
                    "visits": rnd.randint(0, 20),
                    "tier": rnd.choices("abc", weights=(1, 1, 4) if shifted else (4, 2, 1))[0],
                    "missing": None})
    return out


def test_shift__each_shifted_feature_reported_once_in_the_first_window_after_it() -> None:
    data = rows(10_000, 1, SHIFT_AT)
    monitor = DataDriftMonitor(reference_size=1000, window_size=1000)
    found = [d for r in data for d in monitor.update(r)]
    assert sorted((d.feature, d.test) for d in found) == [("amount", "psi"),
                                                          ("tier", "jensen_shannon")]
    for d in found:  # windows are [1000, 2000), [2000, 3000), ...: the shift starts one
        assert (d.window_start, d.window_end) == (SHIFT_AT, SHIFT_AT + 999)
        assert d.statistic > d.threshold
    # The statistics are scipy's on the same samples.
    amount = next(d for d in found if d.feature == "amount")
    ref = np.array([r["amount"] for r in data[:1000]], dtype=float)
    cur = np.array([r["amount"] for r in data[SHIFT_AT:SHIFT_AT + 1000]], dtype=float)
    ks = stats.ks_2samp(ref, cur)
    assert amount.statistics["ks"] == pytest.approx(ks.statistic)
    assert amount.statistics["ks_p_value"] == pytest.approx(ks.pvalue)
    assert amount.statistics["wasserstein"] == pytest.approx(
        stats.wasserstein_distance(ref, cur) / ref.std())
    # PSI by its definition, over the reference's deciles, computed here.
    edges = np.quantile(ref, np.linspace(0.1, 0.9, 9))
    p = np.histogram(ref, np.concatenate([[-np.inf], edges, [np.inf]]))[0] / 1000
    q = np.histogram(cur, np.concatenate([[-np.inf], edges, [np.inf]]))[0] / 1000
    p, q = np.clip(p, 1e-4, None), np.clip(q, 1e-4, None)
    assert amount.statistic == pytest.approx(float(np.sum((q - p) * np.log(q / p))), rel=1e-3)
    tier = next(d for d in found if d.feature == "tier")
    ref_c = Counter(str(r["tier"]) for r in data[:1000])
    cur_c = Counter(str(r["tier"]) for r in data[SHIFT_AT:SHIFT_AT + 1000])
    a = np.array([ref_c[c] for c in "abc"], float)
    b = np.array([cur_c[c] for c in "abc"], float)
    assert tier.statistic == pytest.approx(distance.jensenshannon(a / a.sum(), b / b.sum(),
                                                                  base=2))


@pytest.mark.parametrize("seed", range(5))
def test_stationary__no_alert(seed: int) -> None:
    monitor = DataDriftMonitor(reference_size=1000, window_size=1000)
    assert [d for r in rows(20_000, seed, None) for d in monitor.update(r)] == []


def test_given_reference__windows_start_at_once() -> None:
    data = rows(3_000, 2, 1_000)
    monitor = DataDriftMonitor(reference_size=1000, window_size=1000)
    monitor.set_reference(rows(1_000, 3, None))
    found = [d for r in data for d in monitor.update(r)]
    assert {(d.feature, d.window_start) for d in found} == {("amount", 1000), ("tier", 1000)}


def test_back_to_normal__a_later_shift_is_reported_again() -> None:
    data = rows(4_000, 4, None)
    shifted = rows(1_000, 5, 0)
    monitor = DataDriftMonitor(reference_size=1000, window_size=1000)
    stream = data[:2000] + shifted + data[2000:3000] + shifted
    found = [(d.feature, d.window_start) for r in stream for d in monitor.update(r)]
    assert found == [("amount", 2000), ("tier", 2000), ("amount", 4000), ("tier", 4000)]
