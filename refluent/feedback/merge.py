"""The event-time merge: the ``predictions`` and ``feedback`` partitions as one stream ordered by
event time (``Prediction.ts``, ``Feedback.event_time``), the order the join
(:mod:`refluent.feedback.join`) needs.

**Order and the tie rule.** Each partition is read in offset order, and the merger releases the
partition head with the smallest key ``(event time, rank, partition, offset)``, where labels
rank before predictions. A head is released only when no partition can still deliver a smaller
key: every partition with nothing buffered bounds the next key it can deliver by the last one it
delivered (its times are taken to grow), except a partition read up to its high watermark that
has stayed quiet for ``idle_s`` seconds, which is left out. On equal event times a label goes
first: this is :func:`river.stream.simulate_qa`'s rule (an answer whose reveal time has come is
yielded before the question asked at that time), so a stream merged here gives the same
questions and answers, in the same order, as River's progressive validation with a delay.

**Back-pressure.** While one partition lags (holds the others back) the others' events wait in
the buffer. With ``max_buffered`` set, :meth:`EventTimeMerger.ahead` names, once the buffer
holds that many events, the partitions that have events buffered: the consumer pauses them
(and resumes them once the buffer is below the cap again) so that only the lagging partitions
are read until they catch up. Nothing is dropped or reordered: a paused partition is read again
from its position when it resumes. The cap is soft: the pause follows a poll, and partitions
with nothing buffered (the lagging ones) are still read, so the buffer can pass the cap by a
poll's worth of records per such partition.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from refluent.feedback.state.base import to_us
from refluent.streams.contracts import Feedback, Prediction
from refluent.streams.origin import Origin

Kind = Literal["feedback", "prediction"]
RANKS: dict[str, int] = {"feedback": 0, "prediction": 1}
"""Order of the kinds at equal event time: labels first (River's ``simulate_qa`` rule)."""
_NEVER = -(1 << 62)


@dataclass(slots=True)
class TimedEvent:
    """A decoded event waiting in the merger.

    Attributes:
        key: ``(event time in µs, rank of the kind, partition, offset)``: the merge order.
        kind: ``prediction`` or ``feedback``.
        event: The decoded event (None for a record that did not decode).
        source: Where it was read.
        raw: Its bytes as consumed.
        record_key: Its record key.
        error: Why the record did not decode (it is dead-lettered when released, so its
            offset is passed in order).
    """

    key: tuple[int, int, int, int]
    kind: Kind
    event: Prediction | Feedback | None
    source: Origin
    raw: bytes | None = None
    record_key: bytes | None = None
    error: Exception | None = None

    @classmethod
    def of(cls, kind: Kind, event: Prediction | Feedback, source: Origin,
           raw: bytes | None = None, record_key: bytes | None = None) -> TimedEvent:
        """Build the event with its merge key."""
        ts = event.ts if isinstance(event, Prediction) else event.event_time
        return cls((to_us(ts), RANKS[kind], source.partition, source.offset), kind, event,
                   source, raw, record_key)


@dataclass(slots=True)
class _Lane:
    rank: int
    partition: int
    queue: deque[TimedEvent] = field(default_factory=deque)
    last_key: tuple[int, int, int, int] | None = None
    last_arrival: float = 0.0

    def bound(self) -> tuple[int, int, int, int]:
        """The smallest key this partition can still deliver when nothing is buffered."""
        if self.last_key is None:
            return (_NEVER, self.rank, self.partition, -1)
        t, rank, partition, offset = self.last_key
        return (t, rank, partition, offset + 1)


class EventTimeMerger:
    """Merges partitions of the two input topics by event time (see the module docstring).

    Args:
        kinds: Topic -> the kind of event it carries.
        idle_s: How long a partition read up to its high watermark stays quiet before it no
            longer holds the others back.
        clock: Monotonic clock (seconds), for the idle time.
        max_buffered: Buffered events from which :meth:`ahead` names the partitions to pause
            (None: no cap).

    Examples:
        >>> from datetime import UTC, datetime
        >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
        >>> merger = EventTimeMerger({"predictions": "prediction", "feedback": "feedback"})
        >>> merger.assign([("predictions", 0), ("feedback", 0)])
        >>> p = Prediction(request_id="r", model_name="m", model_version="1", entity_id="u",
        ...                ts=t0)
        >>> merger.push(TimedEvent.of("prediction", p, Origin("predictions", 0, 0)))
        >>> merger.release()  # the feedback partition may still deliver an earlier label
        []
        >>> f = Feedback(prediction_id=p.prediction_id, label=1, event_time=t0)
        >>> merger.push(TimedEvent.of("feedback", f, Origin("feedback", 0, 0)))
        >>> [e.kind for e in merger.release(drained=[("feedback", 0), ("predictions", 0)])]
        ['feedback']
        >>> [e.kind for e in merger.release_all()]
        ['prediction']
    """

    def __init__(self, kinds: Mapping[str, Kind], *, idle_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 max_buffered: int | None = None) -> None:
        self.kinds = dict(kinds)
        self.idle_s = idle_s
        self.max_buffered = max_buffered
        self._clock = clock
        self._lanes: dict[tuple[str, int], _Lane] = {}

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Start tracking ``partitions`` (kept if already tracked)."""
        now = self._clock()
        for topic, partition in partitions:
            if (topic, partition) not in self._lanes:
                self._lanes[(topic, partition)] = _Lane(RANKS[self.kinds[topic]], partition,
                                                        last_arrival=now)

    def revoke(self, partitions: Iterable[tuple[str, int]]) -> int:
        """Stop tracking ``partitions``, dropping what they buffered (the next owner reads it
        again); returns how many events were dropped."""
        dropped = 0
        for tp in partitions:
            lane = self._lanes.pop(tp, None)
            if lane is not None:
                dropped += len(lane.queue)
        return dropped

    def push(self, event: TimedEvent) -> None:
        """Buffer ``event`` (events of one partition must come in offset order)."""
        tp = (event.source.topic, event.source.partition)
        lane = self._lanes.get(tp)
        if lane is None:
            self.assign([tp])
            lane = self._lanes[tp]
        lane.queue.append(event)
        lane.last_key = event.key
        lane.last_arrival = self._clock()

    def push_undecodable(self, kind: Kind, source: Origin, raw: bytes | None,
                         record_key: bytes | None, error: Exception) -> None:
        """Buffer a record that did not decode, right behind its partition's previous record
        (it has no event time of its own)."""
        tp = (source.topic, source.partition)
        lane = self._lanes.get(tp)
        last = lane.last_key[0] if lane is not None and lane.last_key is not None else _NEVER
        self.push(TimedEvent((last, RANKS[kind], source.partition, source.offset), kind, None,
                             source, raw, record_key, error))

    def __len__(self) -> int:
        return sum(len(lane.queue) for lane in self._lanes.values())

    def _limit(self, drained: Collection[tuple[str, int]], now: float
               ) -> tuple[int, int, int, int] | None:
        limit = None
        for tp, lane in self._lanes.items():
            if lane.queue:
                continue
            if tp in drained and now - lane.last_arrival >= self.idle_s:
                continue
            bound = lane.bound()
            if limit is None or bound < limit:
                limit = bound
        return limit

    def release(self, drained: Collection[tuple[str, int]] = ()) -> list[TimedEvent]:
        """The buffered events no partition can precede any more, in merge order.

        Args:
            drained: Partitions read up to their high watermark now.
        """
        now = self._clock()
        heads = [(lane.queue[0].key, tp) for tp, lane in self._lanes.items() if lane.queue]
        heapq.heapify(heads)
        limit = self._limit(drained, now)
        out = []
        while heads:
            key, tp = heads[0]
            if limit is not None and key >= limit:
                break
            lane = self._lanes[tp]
            out.append(lane.queue.popleft())
            if lane.queue:
                heapq.heapreplace(heads, (lane.queue[0].key, tp))
            else:
                heapq.heappop(heads)
                if not (tp in drained and now - lane.last_arrival >= self.idle_s):
                    bound = lane.bound()
                    limit = bound if limit is None else min(limit, bound)
        return out

    def ahead(self) -> set[tuple[str, int]]:
        """The partitions to pause now (see the module docstring): while the buffer holds
        ``max_buffered`` events or more, every partition with events buffered; else none.

        Called after :meth:`release`, every buffered event is at or past the bound of a
        partition with nothing buffered (the lagging one, which is never named), so the
        partitions named are the ones ahead of it. Once it delivers, the buffer is released
        and drops below the cap, and they are no longer named.

        Examples:
            >>> from datetime import UTC, datetime
            >>> merger = EventTimeMerger({"predictions": "prediction", "feedback": "feedback"},
            ...                          max_buffered=1)
            >>> merger.assign([("predictions", 0), ("feedback", 0)])
            >>> p = Prediction(request_id="r", model_name="m", model_version="1",
            ...                entity_id="u", ts=datetime(2026, 1, 1, tzinfo=UTC))
            >>> merger.push(TimedEvent.of("prediction", p, Origin("predictions", 0, 0)))
            >>> merger.release(), merger.ahead()
            ([], {('predictions', 0)})
        """
        if self.max_buffered is None or len(self) < self.max_buffered:
            return set()
        return {tp for tp, lane in self._lanes.items() if lane.queue}

    def release_all(self) -> list[TimedEvent]:
        """Every buffered event, in merge order (at the end of a run)."""
        events = [e for lane in self._lanes.values() for e in lane.queue]
        for lane in self._lanes.values():
            lane.queue.clear()
        return sorted(events, key=lambda e: e.key)

