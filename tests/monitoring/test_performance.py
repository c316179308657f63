"""Estimated (CBPE) and realised performance against labels drawn from known probabilities.

The oracle is the drawn labels themselves: a window's realised accuracy is counted by brute
force from them, and the estimator, which never sees a window's labels, must come within a
few standard errors of it.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from refluent.monitoring.performance import PerformanceEstimator, RealisedPerformance

pytestmark = pytest.mark.unit

WINDOW = 1000


def _confident(rnd: random.Random) -> float:
    """A score of a model that is mostly sure (accuracy about 0.9)."""
    p = rnd.betavariate(0.5, 0.5) * 0.4 + (0.6 if rnd.random() < 0.5 else 0.0)
    return min(max(p, 0.0), 1.0)


def _unsure(rnd: random.Random) -> float:
    """A score near the decision boundary (accuracy about 0.6)."""
    return rnd.uniform(0.3, 0.7)


def _labels(rnd: random.Random, true_p: list[float]) -> list[bool]:
    return [rnd.random() < p for p in true_p]


def _realised(scores: list[float], labels: list[bool]) -> float:
    return float(np.mean([(s >= 0.5) == y for s, y in zip(scores, labels, strict=True)]))


def test_cbpe__each_window_estimates_the_accuracy_its_labels_show() -> None:
    rnd = random.Random(5)
    scores = [_confident(rnd) if i < 5 * WINDOW else _unsure(rnd) for i in range(8 * WINDOW)]
    labels = _labels(rnd, scores)  # the scores are calibrated: P(y) is the score
    cbpe = PerformanceEstimator(reference_size=WINDOW, window_size=WINDOW, calibration_size=10**9)
    found = []
    for i, s in enumerate(scores):
        d = cbpe.on_score(s)
        if d is not None:
            found.append(d)
        if i % WINDOW == WINDOW - 1 and i >= 2 * WINDOW - 1:
            lo = i - WINDOW + 1
            truth = _realised(scores[lo:i + 1], labels[lo:i + 1])
            se = math.sqrt(truth * (1 - truth) / WINDOW)
            assert cbpe.last_accuracy == pytest.approx(truth, abs=4 * se + 0.01), i
    assert [(d.window_start, d.window_end) for d in found] == [(5 * WINDOW, 6 * WINDOW - 1)]
    assert found[0].value < found[0].threshold < found[0].reference
    assert found[0].reference == pytest.approx(_realised(scores[:WINDOW], labels[:WINDOW]),
                                               abs=0.03)


def test_cbpe__calibration_on_labelled_examples_corrects_an_overconfident_model() -> None:
    rnd = random.Random(8)
    scores = [_confident(rnd) for _ in range(4 * WINDOW)]
    true_p = [0.5 + (s - 0.5) * 0.5 for s in scores]  # right far less often than it says
    labels = _labels(rnd, true_p)
    cbpe = PerformanceEstimator(reference_size=WINDOW, window_size=WINDOW,
                                calibration_size=WINDOW)
    for s, y in zip(scores[:WINDOW], labels[:WINDOW], strict=True):
        cbpe.on_label(s, (s >= 0.5) == y)
    assert cbpe.calibrated
    for s in scores:
        cbpe.on_score(s)
    truth = _realised(scores[-WINDOW:], labels[-WINDOW:])
    raw = float(np.mean([max(s, 1 - s) for s in scores[-WINDOW:]]))
    assert raw - truth > 0.15  # uncalibrated, the estimate would be far off
    assert cbpe.last_accuracy == pytest.approx(truth, abs=0.05)
    assert cbpe.reference_accuracy == pytest.approx(
        _realised(scores[:WINDOW], labels[:WINDOW]), abs=0.05)


def test_cbpe__a_stationary_stream_of_100k_requests_raises_nothing() -> None:
    rnd = random.Random(13)
    cbpe = PerformanceEstimator(reference_size=WINDOW, window_size=WINDOW)
    assert all(cbpe.on_score(_confident(rnd)) is None for _ in range(100_000))
    assert cbpe.last_accuracy is not None


def test_realised__reports_the_first_window_after_the_rise_with_its_brute_force_accuracy() -> None:
    rnd = random.Random(2)
    change = 6 * WINDOW
    errors = [float(rnd.random() < (0.1 if i < change else 0.2)) for i in range(10 * WINDOW)]
    realised = RealisedPerformance(reference_size=WINDOW, window_size=WINDOW)
    found = [(i, d) for i, e in enumerate(errors)
             if (d := realised.on_error(e, binary=True)) is not None]
    assert [i for i, _ in found] == [change + WINDOW - 1]
    d = found[0][1]
    assert (d.metric, d.window_start, d.window_end) == ("accuracy", change, change + WINDOW - 1)
    assert d.value == pytest.approx(1 - np.mean(errors[change:change + WINDOW]))
    assert d.reference == pytest.approx(1 - np.mean(errors[:WINDOW]))
    assert d.value < d.threshold < d.reference


def test_realised__a_regression_reports_mean_absolute_error_rising() -> None:
    rnd = random.Random(4)
    errors = [abs(rnd.gauss(0, 1.0 if i < 3 * WINDOW else 1.5)) for i in range(5 * WINDOW)]
    realised = RealisedPerformance(reference_size=WINDOW, window_size=WINDOW)
    found = [d for e in errors if (d := realised.on_error(e, binary=False)) is not None]
    assert [(d.metric, d.window_start) for d in found] == [("mae", 3 * WINDOW)]
    assert found[0].value == pytest.approx(np.mean(errors[3 * WINDOW:4 * WINDOW]))
    assert found[0].value > found[0].threshold > found[0].reference


def test_realised__an_improving_model_raises_nothing() -> None:
    rnd = random.Random(6)
    realised = RealisedPerformance(reference_size=WINDOW, window_size=WINDOW)
    errors = (float(rnd.random() < (0.3 if i < 2 * WINDOW else 0.1)) for i in range(8 * WINDOW))
    assert all(realised.on_error(e, binary=True) is None for e in errors)
