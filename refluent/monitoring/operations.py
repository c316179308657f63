"""Operational watches: stale features, failing requests, dead letters, consumer lag.

Pure, like the drift monitors: each takes what the service read and returns what crossed its
threshold, once per departure (a watch that fired stays quiet until it comes back under its
threshold, so a lasting problem is one alert, not one per window).

- :class:`FractionWindow`: the share of a tumbling window's events that went wrong; the
  monitor uses one per model version for predictions served with stale features
  (``features.stale``) and one per model for requests it rejected instead of answering
  (``model.failing``);
- :class:`DeadLetterRate`: dead letters per minute of each dead-letter topic, by the record's
  timestamp (``deadletters.rising``);
- :class:`LagWatch`: a consumer group's uncommitted records (``consumer.lagging``);
- :class:`PromotionWatch`: alias changes in the registry's event log (``model.promoted``).

Examples:
    >>> window = FractionWindow(size=4, threshold=0.25)
    >>> [window.update(bad) for bad in (False, True, True, False, True, True, True, True)]
    [None, None, None, 0.5, None, None, None, None]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from refluent.registry.base import AliasEvent

MINUTE_MS = 60_000


@dataclass
class FractionWindow:
    """Share of bad events per tumbling window of ``size``; the share when it first crosses
    ``threshold`` (and not again before a window under it)."""

    size: int = 1000
    threshold: float = 0.05
    seen: int = 0
    bad: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    _departed: bool = False

    def update(self, bad: bool, reason: str | None = None) -> float | None:
        self.seen += 1
        if bad:
            self.bad += 1
            if reason is not None:
                self.reasons[reason] += 1
        if self.seen < self.size:
            return None
        share = self.bad / self.seen
        self.seen = self.bad = 0
        was, self._departed = self._departed, share > self.threshold
        if not self._departed or was:
            self.reasons = Counter()
            return None
        return share

    def take_reasons(self) -> Counter[str]:
        """The reasons counted in the window that just fired (then forgotten)."""
        out, self.reasons = self.reasons, Counter()
        return out


@dataclass(frozen=True)
class RateAlarm:
    """A minute whose dead letters reached the threshold."""

    topic: str
    minute_start_ms: int
    count: int
    reasons: dict[str, int]


@dataclass
class DeadLetterRate:
    """Dead letters per minute per topic; a minute alarms when its count reaches
    ``per_minute``, unless the minute before it alarmed too (the same burst)."""

    per_minute: int = 100
    _minute: dict[str, int] = field(default_factory=dict)
    _counts: dict[str, Counter[str]] = field(default_factory=dict)
    _alarmed: dict[str, int] = field(default_factory=dict)

    def update(self, topic: str, timestamp_ms: int, reason: str) -> RateAlarm | None:
        minute = timestamp_ms // MINUTE_MS
        if self._minute.get(topic) != minute:
            if minute < self._minute.get(topic, minute):
                return None  # a late record of a minute already judged
            self._minute[topic] = minute
            self._counts[topic] = Counter()
        counts = self._counts[topic]
        counts[reason] += 1
        total = sum(counts.values())
        if total != self.per_minute:
            return None
        last = self._alarmed.get(topic)
        self._alarmed[topic] = minute
        if last is not None and last >= minute - 1:
            return None
        return RateAlarm(topic, minute * MINUTE_MS, total, dict(counts))


@dataclass
class LagWatch:
    """Groups whose lag went above ``threshold`` (once, until it comes back under)."""

    threshold: int = 10_000
    _above: set[str] = field(default_factory=set)

    def update(self, group: str, lag: int) -> bool:
        """Whether ``lag`` just went above the threshold."""
        if lag <= self.threshold:
            self._above.discard(group)
            return False
        if group in self._above:
            return False
        self._above.add(group)
        return True


@dataclass
class PromotionWatch:
    """Alias events not seen before: each (model, alias) is followed by its event sequence, so
    every promotion and rollback is reported once, in order. Events older than ``since`` are
    taken as known (they happened before the watch began)."""

    since: datetime
    _seen: dict[tuple[str, str], int] = field(default_factory=dict)

    def update(self, events: Iterable[AliasEvent]) -> list[AliasEvent]:
        """The events of ``events`` that are new."""
        out = []
        for e in sorted(events, key=lambda e: (e.name, e.alias, e.seq)):
            key = (e.name, e.alias)
            if e.seq <= self._seen.get(key, 0):
                continue
            self._seen[key] = e.seq
            if e.at >= self.since:
                out.append(e)
        return out


__all__ = ["DeadLetterRate", "FractionWindow", "LagWatch", "PromotionWatch", "RateAlarm"]
