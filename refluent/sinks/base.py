"""The sink interface: ``write(batch)`` and ``flush()``, with batching done once, here.

Delivery guarantee: the consumer loop commits a batch's offsets only after every sink it wrote to
has flushed, so a crash replays at most the uncommitted records. Sinks are idempotent under that
replay: the lake sink skips offsets its tables already hold, the online store never lets an older
event overwrite a newer one.

Lifecycle: ``setup()`` opens clients (never ``__init__``), ``write()`` may buffer, ``flush()``
makes everything written durable, ``close()`` flushes and releases.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class SinkRecord(Generic[T]):
    """A consumed record handed to sinks: the decoded value and where it came from.

    ``value`` is None for a tombstone. ``raw`` holds the value's bytes as consumed (what a
    dead letter keeps). ``skip`` marks a record that was consumed but has no value for sinks
    (it was dead-lettered upstream): sinks that keep their own offsets count it as consumed
    and write nothing for it.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: T | None
    timestamp_ms: int | None = None
    raw: bytes | None = None
    skip: bool = False


class Sink(ABC, Generic[T]):
    """Something records are written to. Subclasses implement :meth:`write`."""

    name: str = "sink"

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Open clients and create what is missing (tables, scripts)."""

    @abstractmethod
    def write(self, batch: list[SinkRecord[T]]) -> None:
        """Write ``batch`` (may buffer until :meth:`flush`)."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Make every record written so far durable."""

    def close(self) -> None:
        """Flush and release clients."""
        self.flush()

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        """Next offset to consume per (topic, partition), for sinks that store their own
        offsets (resume from the sink, not the group). Empty for sinks that do not."""
        return {}


class BatchingSink(Sink[T]):
    """Buffers records and calls :meth:`write_batch` every ``max_records`` records or
    ``max_seconds`` seconds (checked on each write), and on :meth:`flush`.

    Args:
        max_records: Records per micro-batch.
        max_seconds: Longest a record waits in the buffer before a write.
    """

    def __init__(self, max_records: int = 10_000, max_seconds: float = 5.0) -> None:
        self.max_records = max_records
        self.max_seconds = max_seconds
        self._buffer: list[SinkRecord[T]] = []
        self._oldest: float | None = None

    @abstractmethod
    def write_batch(self, batch: list[SinkRecord[T]]) -> None:
        """Durably write one micro-batch."""

    def write(self, batch: list[SinkRecord[T]]) -> None:
        """Buffer ``batch``; write a micro-batch when the buffer is full or old enough."""
        if not batch:
            return
        if self._oldest is None:
            self._oldest = time.monotonic()
        self._buffer.extend(batch)
        if len(self._buffer) >= self.max_records or (
            time.monotonic() - self._oldest >= self.max_seconds
        ):
            self.flush()

    def flush_if_due(self) -> None:
        """Write the buffer if its oldest record has waited ``max_seconds`` (call when idle)."""
        if self._oldest is not None and time.monotonic() - self._oldest >= self.max_seconds:
            self.flush()

    def flush(self) -> None:
        """Write whatever is buffered."""
        if self._buffer:
            batch, self._buffer, self._oldest = self._buffer, [], None
            self.write_batch(batch)

    @property
    def pending(self) -> int:
        """Records buffered and not yet written."""
        return len(self._buffer)


def describe(sink: Any) -> str:
    """A sink's name for messages and metrics."""
    return str(getattr(sink, "name", type(sink).__name__))
