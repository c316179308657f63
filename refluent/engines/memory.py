"""The in-memory engine: feature views over lists of events, no broker, no Redis.

It does what an engine does (entity states stored as JSON between events, through the same
:class:`~refluent.processors.runtime.ViewRuntime` calls, updates published, bad records set
aside with the reason), so users can test their views in a unit test and the engines can be
checked against it. :mod:`refluent.testing` re-exports it.

Examples:
    >>> from datetime import UTC, datetime, timedelta
    >>> from refluent.processors.aggregations import Aggregation
    >>> from refluent.processors.features import FeatureView
    >>> from refluent.processors.windows import Tumbling
    >>> from refluent.streams.contracts import LogEvent
    >>> view = FeatureView("clicks", "entity_id", ("logs.web",),
    ...     (Aggregation("clicks_1m", "count", None, Tumbling(timedelta(minutes=1))),))
    >>> runner = InMemoryRunner([view])
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> _ = runner.feed("logs.web", [LogEvent(source="web", ts=t0 + timedelta(seconds=s),
    ...                                       message="click", entity_id="u1") for s in (1, 2)])
    >>> runner.online["clicks"]["u1"].values
    {'clicks_1m': 2}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel

from refluent.engines.base import JsonStates
from refluent.online_store.base import is_newer, to_epoch_ms
from refluent.processors.features import View
from refluent.processors.runtime import Outcome, ViewRuntime, runtime_for
from refluent.streams.contracts import FeatureUpdate
from refluent.streams.origin import Origin
from refluent.streams.processing import RecordRejected


@dataclass
class RejectedRecord:
    """A record a view would dead-letter."""

    view: str
    origin: Origin
    reason: str
    detail: str


@dataclass
class InMemoryRunner:
    """Runs ``views`` over events fed per topic; offsets are counted per (topic, partition)."""

    views: Sequence[View]
    states: dict[str, dict[str, bytes]] = field(default_factory=dict)
    updates: list[FeatureUpdate] = field(default_factory=list)
    online: dict[str, dict[str, FeatureUpdate]] = field(default_factory=dict)
    rejected: list[RejectedRecord] = field(default_factory=list)
    _offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._runtimes = [runtime_for(v) for v in self.views]

    def feed(self, topic: str, events: Sequence[BaseModel | None], partition: int = 0,
             offsets: Sequence[int] | None = None) -> list[FeatureUpdate]:
        """Process ``events`` as records of ``topic``; returns the updates published.

        ``offsets`` replays records at given offsets (to test duplicates); by default offsets
        continue from the last one fed for that partition.
        """
        published: list[FeatureUpdate] = []
        for i, event in enumerate(events):
            if offsets is not None:
                offset = offsets[i]
            else:
                offset = self._offsets.get((topic, partition), -1) + 1
            self._offsets[(topic, partition)] = max(offset, self._offsets.get(
                (topic, partition), -1))
            origin = Origin(topic, partition, offset)
            for runtime in self._runtimes:
                if topic in runtime.view.sources:
                    published += self._run(runtime, event, origin)
        return published

    def _run(self, runtime: ViewRuntime, event: BaseModel | None, origin: Origin
             ) -> list[FeatureUpdate]:
        name = runtime.view.name
        store = self.states.setdefault(name, {})
        try:
            outcome = runtime.process(event, origin, JsonStates(store))
        except RecordRejected as exc:
            self.rejected.append(RejectedRecord(name, origin, exc.reason, exc.detail))
            return []
        return self._store(runtime, store, outcome)

    def _store(self, runtime: ViewRuntime, store: dict[str, bytes], outcome: Outcome
               ) -> list[FeatureUpdate]:
        # What a changelog would hold; each update validated against its contract.
        JsonStates(store).put({k: runtime.dump(v) for k, v in outcome.states.items()})
        updates = outcome.feature_updates()
        online = self.online.setdefault(runtime.view.name, {})
        for update in updates:
            current = online.get(update.entity_id)
            # The online store's own rule: event times to the millisecond, strictly newer wins.
            if is_newer(_version(update), None if current is None else _version(current)):
                online[update.entity_id] = update
        self.updates += updates
        return updates


def _version(update: FeatureUpdate) -> tuple[int, int]:
    return to_epoch_ms(update.event_time), update.sequence
