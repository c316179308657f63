"""The feedback service's back-pressure without a broker: it pauses the partitions the merge
names as ahead of a lagging one and resumes them once it has caught up, losing nothing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from support.kafka import FakeMessage as Message

from refluent.config import Settings
from refluent.feedback.join import FeedbackJoin
from refluent.feedback.merge import EventTimeMerger
from refluent.feedback.service import FeedbackProcessor, FeedbackService
from refluent.streams.contracts import Feedback, Prediction

from .events import F, P, label, prediction

pytestmark = pytest.mark.unit


@dataclass
class Loop:
    """A consumer loop that has fetched nothing to the end of any partition and records
    what it was asked to pause and resume."""

    calls: list[tuple[str, list[tuple[str, int]]]] = field(default_factory=list)

    def pause(self, partitions: Iterable[tuple[str, int]]) -> None:
        self.calls.append(("pause", sorted(partitions)))

    def resume(self, partitions: Iterable[tuple[str, int]]) -> None:
        self.calls.append(("resume", sorted(partitions)))

    def lag(self) -> list[Any]:
        return []


class Sink:
    """Producer and dead-letter router that keep nothing."""

    def produce(self, *args: Any, **kwargs: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def route_raw(self, *args: Any, **kwargs: Any) -> None:
        pass


def msg(topic: str, partition: int, offset: int, event: Prediction | Feedback) -> Message:
    return Message(topic, partition, offset, event.model_dump_json().encode())


def test_service__pauses_the_partitions_ahead_at_the_cap_and_resumes_them_after_catching_up(
        ) -> None:
    settings = Settings(feedback={"merge_max_buffered": 3})
    service = FeedbackService(settings, "unused:9092", "redis://unused", predictions_topic=P,
                              feedback_topic=F)
    service.processor = FeedbackProcessor(FeedbackJoin.from_settings(settings.feedback))
    service.merger = EventTimeMerger(service.kinds, max_buffered=3)
    loop = Loop()
    service._loop = loop  # type: ignore[assignment]
    service._producer = service._router = Sink()  # type: ignore[assignment]
    service._on_assign([_tp(P, 0), _tp(P, 1), _tp(F, 0)])
    stats = service.processor.stats

    service._handle([msg(P, 0, 0, prediction("a", 10)), msg(P, 1, 0, prediction("b", 11))])
    assert loop.calls == []  # 2 buffered: below the cap
    service._handle([msg(P, 0, 1, prediction("c", 12))])
    assert loop.calls == [("pause", [(P, 0), (P, 1)])]
    service._handle([msg(F, 0, 0, label(5, pid="x"))])  # released; the others still wait
    assert loop.calls == [("pause", [(P, 0), (P, 1)])]
    assert (stats.labels, stats.predictions) == (1, 0)
    service._handle([msg(F, 0, 1, label(20, pid="a"))])  # caught up
    assert loop.calls == [("pause", [(P, 0), (P, 1)]), ("resume", [(P, 0), (P, 1)])]
    # a and b released; c (12 s) waits for (P, 1), which may still deliver an event before it
    assert (stats.labels, stats.predictions, stats.pauses, stats.peak_buffered) == (1, 2, 1, 4)
    assert len(service.merger) == 2


def _tp(topic: str, partition: int) -> Any:
    from confluent_kafka import TopicPartition

    return TopicPartition(topic, partition)
