"""Concept drift on outcomes: sequential detectors over a model's per-example error stream.

Each joined example gives the model's error (1/0 for a wrong/right class, the absolute error of
a regression). A River detector watches that stream; :class:`ErrorDriftMonitor` adds what a
monitoring team needs around it:

- **warm-up**: the first ``warmup`` examples are not watched (a model that is still learning
  gets better, which is a change too, but not one to page anybody about);
- **minimum samples**: an alert needs ``min_samples`` examples since the detector started
  watching, so its reference is worth comparing with (a change found earlier is judged then);
- **direction**: only a rise of the error is an alert. ADWIN and KSWIN find changes either way;
  a change they report is raised only when the mean error of the last ``recent`` examples is
  above the mean of what the detector watched before them;
- **cooldown**: after an alert the detector starts afresh on the new regime and stays quiet for
  ``cooldown`` examples.

Examples:
    >>> import random
    >>> rnd = random.Random(1)
    >>> monitor = ErrorDriftMonitor("adwin", warmup=100, min_samples=100, cooldown=500)
    >>> errors = [rnd.random() < (0.1 if i < 3000 else 0.5) for i in range(6000)]
    >>> found = [d for d in (monitor.update(e) for e in errors) if d is not None]
    >>> len(found), 3000 <= found[0].index < 3300
    (1, True)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from refluent.errors import require
from refluent.monitoring.errors import UnknownDetectorError


def _drift() -> Any:
    return require("river.drift", "river")


DETECTORS: dict[str, Callable[[int | None], Any]] = {
    "adwin": lambda seed: _drift().ADWIN(delta=0.002),
    "page_hinkley": lambda seed: _drift().PageHinkley(mode="up", threshold=50.0, delta=0.005),
    "kswin": lambda seed: _drift().KSWIN(alpha=0.0001, window_size=300, stat_size=100,
                                         seed=seed),
    "ddm": lambda seed: _drift().binary.DDM(),
    "eddm": lambda seed: _drift().binary.EDDM(),
    "hddm_a": lambda seed: _drift().binary.HDDMA(),
    "hddm_w": lambda seed: _drift().binary.HDDMW(),
    "fhddm": lambda seed: _drift().binary.FHDDM(),
}
"""River's detectors by name; the binary ones take right/wrong only."""
BINARY = frozenset({"ddm", "eddm", "hddm_a", "hddm_w", "fhddm"})
FED_CORRECTNESS = frozenset({"fhddm"})
"""Detectors that fire when the mean of their input falls (River's FHDDM, whatever its docstring
says: fed errors it reports falls of the error), so they are fed 1 for a right answer."""
DEFAULT_DETECTOR = "adwin"


@dataclass(frozen=True)
class Detection:
    """A rise of the error the monitor reports."""

    detector: str
    index: int
    """Examples seen when it fired (0-based index of the last one)."""
    error_before: float
    """Mean error the detector watched before the recent examples (the threshold crossed)."""
    error_recent: float
    """Mean error of the recent examples (the statistic)."""
    since: int
    """Index of the first example of the watched window."""


@dataclass
class ErrorDriftMonitor:
    """One model's error stream under one detector (see the module).

    Raises:
        UnknownDetectorError: ``detector`` is not one of :data:`DETECTORS`.
    """

    detector: str = DEFAULT_DETECTOR
    warmup: int = 1000
    min_samples: int = 300
    cooldown: int = 1000
    recent: int = 200
    seed: int | None = None
    seen: int = 0
    _watch: Any = field(default=None, repr=False)
    _since: int = 0
    _quiet_until: int = 0
    _sum: float = 0.0
    _n: int = 0
    _pending: bool = False
    _recent: deque[float] = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise UnknownDetectorError(self.detector, tuple(DETECTORS))
        self._recent = deque(maxlen=self.recent)

    def _restart(self, at: int) -> None:
        self._watch = DETECTORS[self.detector](self.seed)
        self._since, self._sum, self._n = at, 0.0, 0
        self._pending = False
        self._recent.clear()

    def update(self, error: float | bool) -> Detection | None:
        """Watch one example's error; a :class:`Detection` when the error has risen."""
        index = self.seen
        self.seen += 1
        if index < self.warmup:
            return None
        if self._watch is None:
            self._restart(index)
        value = float(error)
        if self.detector in FED_CORRECTNESS:
            self._watch.update(not error)
        else:
            self._watch.update(bool(error) if self.detector in BINARY else value)
        if len(self._recent) == self._recent.maxlen:
            self._sum += self._recent[0]
            self._n += 1
        self._recent.append(value)
        if self._watch.drift_detected and index >= self._quiet_until:
            self._pending = True
        if not self._pending or index - self._since < self.min_samples or self._n == 0:
            return None  # a change found too early is judged once enough was watched
        self._pending = False
        before = self._sum / self._n
        recent = sum(self._recent) / len(self._recent)
        if recent <= before:
            # The error fell (the model got better): measure rises from the new level on.
            self._sum, self._n = sum(self._recent), len(self._recent)
            return None
        found = Detection(self.detector, index, before, recent, self._since)
        self._quiet_until = index + self.cooldown
        self._restart(index + 1)
        return found


__all__ = ["BINARY", "DEFAULT_DETECTOR", "DETECTORS", "Detection", "ErrorDriftMonitor"]
