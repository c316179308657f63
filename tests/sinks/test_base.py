"""The offset hooks every sink has, and how a pipeline uses them (no services)."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from refluent.config import Settings
from refluent.sinks.base import BatchingSink, Sink, SinkRecord
from refluent.sinks.pipeline import SinkPipeline

pytestmark = pytest.mark.unit

TP = namedtuple("TP", "topic partition")


class WriteThrough(Sink[Any]):
    """Durable on write; keeps no offsets."""

    def write(self, batch: list[SinkRecord[Any]]) -> None:
        pass


class Buffered(BatchingSink[Any]):
    """Keeps its own offsets (the next offset after what it wrote), like the lake sink."""

    keeps_offsets: ClassVar[bool] = True

    def __init__(self, stored: dict[tuple[str, int], int]) -> None:
        super().__init__(max_records=100, max_seconds=3600)
        self.stored = stored
        self.asked: list[list[Any]] = []

    def write_batch(self, batch: list[SinkRecord[Any]]) -> None:
        for r in batch:
            self.stored[(r.topic, r.partition)] = r.offset + 1

    def start_offsets(self, partitions: Sequence[Any]) -> dict[tuple[str, int], int]:
        self.asked.append(list(partitions))
        return {(tp.topic, tp.partition): self.stored[(tp.topic, tp.partition)]
                for tp in partitions if (tp.topic, tp.partition) in self.stored}


def _record(offset: int) -> SinkRecord[Any]:
    return SinkRecord("logs.app", 0, offset, None, {"n": offset})


def test_sink__defaults_leave_offsets_to_the_group_and_commit_at_once() -> None:
    sink = WriteThrough()
    assert (sink.keeps_offsets, sink.on_bad_record) == (False, None)
    assert sink.start_offsets([TP("logs.app", 0)]) == {}
    assert sink.committed_offsets() == {}
    sink.write([_record(0)])
    assert sink.commit_ready() is True


def test_batching_sink__commit_ready_only_once_the_buffer_is_written() -> None:
    sink = Buffered({})
    sink.write([_record(0)])
    assert sink.commit_ready() is False
    sink.flush()
    assert sink.commit_ready() is True


def test_pipeline__starts_from_the_lowest_offset_its_offset_keeping_sinks_hold() -> None:
    ahead = Buffered({("logs.app", 0): 9})
    behind = Buffered({("logs.app", 0): 4})
    plain = WriteThrough()
    pipeline = SinkPipeline(Settings(), "unused:9092", "g",
                            {"logs.app": [ahead, behind, plain], "logs.web": [ahead]})
    starts = pipeline.start_offsets([TP("logs.app", 0), TP("logs.web", 1)])
    assert starts == {("logs.app", 0): 4}
    assert behind.asked == [[TP("logs.app", 0)]]  # only the partitions routed to it

    behind.write([_record(4)])
    assert pipeline.commit_ready() is False
    pipeline.flush_due()  # not due yet
    assert pipeline.commit_ready() is False
    pipeline.flush_all()
    assert pipeline.commit_ready() is True
