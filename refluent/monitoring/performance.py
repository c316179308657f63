"""Performance while labels are late (estimated) and once they arrive (realised).

**Estimated: confidence-based performance estimation (CBPE).** A calibrated binary classifier
that says "yes, with probability 0.8" is right 80% of the time on such requests, so the mean of
its confidence (the probability of the class it predicted) over a window of requests estimates
its accuracy on them, before a single label has arrived. NannyML's CBPE does this in batch; here
it runs per model version over tumbling windows of predictions:

- the confidence is calibrated by an isotonic fit (``scipy.optimize.isotonic_regression``) of
  right/wrong on confidence over the version's first ``calibration_size`` labelled examples;
  until those have arrived the raw confidence is used, for the reference and windows alike;
- the reference is the estimated accuracy of the version's first ``reference_size`` requests,
  and its spread the standard deviation of their confidence;
- a window's estimate below ``reference - max(min_drop, sigmas * std / sqrt(window))`` (its
  standard error under no change) is a ``performance.degraded`` alert; one per departure.

CBPE sees what changes the model's confidence (the inputs moving towards the decision boundary,
a class mix the model is unsure about); it cannot see a concept drift that leaves the model
confidently wrong: that is what the realised metric and the error-stream detectors are for.

**Realised.** Once labels arrive each example's error (1/0 for a class, absolute error for a
score) goes through the same windows: the reference is the mean error of the version's first
``reference_size`` examples, and a window whose mean error is above
``reference + max(min_drop, sigmas * std / sqrt(window))`` is an alert, reported as accuracy
(``1 - error``) for classifiers and mean absolute error otherwise.

Examples:
    >>> import random
    >>> rnd = random.Random(3)
    >>> cbpe = PerformanceEstimator(reference_size=500, window_size=500)
    >>> confident = [rnd.choice([rnd.uniform(0.9, 1.0), rnd.uniform(0.0, 0.1)])
    ...              for _ in range(2000)]
    >>> unsure = [rnd.uniform(0.35, 0.65) for _ in range(1000)]
    >>> found = [d for d in map(cbpe.on_score, confident + unsure) if d is not None]
    >>> [(d.window_end, round(d.value, 2), round(d.reference, 2)) for d in found]
    [(2499, 0.58, 0.95)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from refluent.errors import require

SIGMAS = 4.0
"""Standard errors of a window's mean a change must exceed (4: about 3 false alarms per
100,000 windows of a stationary stream)."""
MIN_DROP = 0.02
"""Smallest change of accuracy (or error) worth an alert, however narrow the spread."""


@dataclass(frozen=True)
class Degradation:
    """A window whose metric left its reference for the worse."""

    metric: str
    """``accuracy`` (estimated or realised) or ``mae``."""
    value: float
    """The window's metric."""
    reference: float
    """The reference's metric."""
    threshold: float
    """Bound the window crossed."""
    window_start: int
    """Index (values seen, 0-based) of the window's first value."""
    window_end: int


@dataclass
class WindowedMean:
    """A reference mean and tumbling windows compared with it (one alert per departure).

    ``worse`` says which way is bad: ``down`` for an accuracy, ``up`` for an error.
    """

    reference_size: int = 1000
    window_size: int = 1000
    worse: Literal["up", "down"] = "down"
    sigmas: float = SIGMAS
    min_change: float = MIN_DROP
    seen: int = 0
    reference: list[float] = field(default_factory=list)
    last: float | None = None
    """Mean of the last window closed."""
    _window: list[float] = field(default_factory=list)
    _departed: bool = False

    @property
    def ready(self) -> bool:
        return len(self.reference) >= self.reference_size

    def bound(self, values: list[float] | None = None) -> tuple[float, float]:
        """The reference mean and the bound a window's mean must not cross."""
        ref = np.asarray(values if values is not None else self.reference, dtype=float)
        mean, std = float(ref.mean()), float(ref.std())
        margin = max(self.min_change, self.sigmas * std / math.sqrt(self.window_size))
        return mean, mean - margin if self.worse == "down" else mean + margin

    def update(self, value: float, reference_of: list[float] | None = None
               ) -> tuple[float, float, float, int] | None:
        """Take one value; ``(window mean, reference mean, bound, first index)`` when it closed
        a window that departed. ``reference_of`` replaces the reference values (recalibrated)."""
        index = self.seen
        self.seen += 1
        if not self.ready:
            self.reference.append(value)
            return None
        self._window.append(value)
        if len(self._window) < self.window_size:
            return None
        current = self.last = float(np.mean(self._window))
        self._window = []
        ref, limit = self.bound(reference_of)
        was = self._departed
        self._departed = current < limit if self.worse == "down" else current > limit
        if not self._departed or was:
            return None
        return current, ref, limit, index - self.window_size + 1


def binary_confidence(score: float) -> float:
    """The probability of the class a binary classifier predicted, from its positive score.

        >>> binary_confidence(0.2), binary_confidence(0.9)
        (0.8, 0.9)
    """
    return max(score, 1.0 - score)


@dataclass
class PerformanceEstimator:
    """CBPE of a binary classifier's accuracy over tumbling windows (see the module).

    ``on_score`` takes a request's positive-class score; ``on_label`` a labelled example's score
    and whether the prediction was right, which calibrate the confidence.
    """

    reference_size: int = 1000
    window_size: int = 1000
    calibration_size: int = 1000
    sigmas: float = SIGMAS
    min_drop: float = MIN_DROP
    _windows: WindowedMean = field(init=False)
    _pairs: list[tuple[float, float]] = field(default_factory=list)
    _knots: tuple[np.ndarray, np.ndarray] | None = None
    _calibrated_reference: list[float] | None = None

    def __post_init__(self) -> None:
        self._windows = WindowedMean(self.reference_size, self.window_size, "down",
                                     self.sigmas, self.min_drop)

    @property
    def calibrated(self) -> bool:
        return self._knots is not None

    def calibrate(self, confidence: float) -> float:
        """The probability that a prediction made with ``confidence`` is right."""
        if self._knots is None:
            return confidence
        xs, ys = self._knots
        return float(np.interp(confidence, xs, ys))

    def on_label(self, score: float, right: bool) -> None:
        """Take a labelled example of the version (until the calibration is fitted)."""
        if self._knots is not None:
            return
        self._pairs.append((binary_confidence(score), float(right)))
        if len(self._pairs) >= self.calibration_size:
            self._fit()

    def _fit(self) -> None:
        optimize: Any = require("scipy.optimize", "monitor")
        pairs = sorted(self._pairs)
        xs = np.asarray([p[0] for p in pairs])
        fitted = optimize.isotonic_regression(np.asarray([p[1] for p in pairs])).x
        self._knots = (xs, np.asarray(fitted))
        self._pairs = []
        self._calibrated_reference = None

    def on_score(self, score: float) -> Degradation | None:
        """Take one request's positive-class score; the degradation when it closed a window
        whose estimated accuracy departed."""
        confidence = binary_confidence(score)
        windows = self._windows
        value = self.calibrate(confidence) if windows.ready else confidence
        reference = None
        if self._knots is not None and windows.ready:
            if self._calibrated_reference is None:
                self._calibrated_reference = [self.calibrate(c) for c in windows.reference]
            reference = self._calibrated_reference
        found = windows.update(value, reference)
        if found is None:
            return None
        current, ref, limit, start = found
        return Degradation("accuracy", current, ref, limit, start, windows.seen - 1)

    @property
    def last_accuracy(self) -> float | None:
        """Estimated accuracy of the last window closed."""
        return self._windows.last

    @property
    def reference_accuracy(self) -> float | None:
        """Estimated accuracy of the reference (calibrated when the calibration is fitted)."""
        if not self._windows.ready:
            return None
        ref = self._calibrated_reference or [self.calibrate(c) for c in self._windows.reference]
        return float(np.mean(ref))


@dataclass
class RealisedPerformance:
    """The realised metric of labelled examples over tumbling windows (see the module)."""

    reference_size: int = 1000
    window_size: int = 1000
    sigmas: float = SIGMAS
    min_change: float = MIN_DROP
    binary: bool | None = None
    """Whether errors are right/wrong (accuracy) or magnitudes (MAE); told by the first."""
    _windows: WindowedMean = field(init=False)

    def __post_init__(self) -> None:
        self._windows = WindowedMean(self.reference_size, self.window_size, "up",
                                     self.sigmas, self.min_change)

    def on_error(self, error: float, binary: bool) -> Degradation | None:
        """Take one example's error; the degradation when it closed a window that departed."""
        if self.binary is None:
            self.binary = binary
        found = self._windows.update(error)
        if found is None:
            return None
        current, ref, limit, start = found
        end = self._windows.seen - 1
        if self.binary:
            return Degradation("accuracy", 1 - current, 1 - ref, 1 - limit, start, end)
        return Degradation("mae", current, ref, limit, start, end)


__all__ = ["MIN_DROP", "SIGMAS", "Degradation", "PerformanceEstimator", "RealisedPerformance",
           "WindowedMean", "binary_confidence"]
