"""Where the monitor keeps its state between runs.

A :class:`MonitorCheckpoint` is the monitors' state (detector windows, references,
calibrations, operational windows) and, per (topic, partition), the next offset it has seen up
to. A restarted monitor restores the state and starts each partition at the checkpoint's offset,
so its windows go on as if it had not stopped: the records after the checkpoint are watched
again and raise the same alerts with the same ids (which the webhook outbox takes once).

The monitor commits its group offsets only right after a checkpoint, so the group never runs
ahead of what a checkpoint holds. One checkpoint per consumer group: run one monitor per group.

:class:`MemoryMonitorCheckpoints` keeps them in this process (tests, a monitor that need not
survive a restart); :mod:`refluent.monitoring.checkpoint_redis` keeps them in Redis.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class MonitorCheckpoint:
    """The monitors' state and the offsets it covers."""

    state: bytes
    offsets: dict[tuple[str, int], int]
    """(topic, partition) -> the next offset not yet in ``state``."""
    saved_at: datetime


class MonitorCheckpoints(ABC):
    """A store of one checkpoint per consumer group (the newest replaces the one before)."""

    @abstractmethod
    def load(self, group: str) -> MonitorCheckpoint | None:
        """The group's checkpoint, or None."""

    @abstractmethod
    def save(self, group: str, checkpoint: MonitorCheckpoint) -> None:
        """Replace the group's checkpoint, atomically."""

    def close(self) -> None:  # noqa: B027 - nothing to close by default
        """Release the store's connections."""


@dataclass
class MemoryMonitorCheckpoints(MonitorCheckpoints):
    """Checkpoints in this process."""

    saved: dict[str, MonitorCheckpoint] = field(default_factory=dict)

    def load(self, group: str) -> MonitorCheckpoint | None:
        return self.saved.get(group)

    def save(self, group: str, checkpoint: MonitorCheckpoint) -> None:
        self.saved[group] = checkpoint


@dataclass
class Checkpointing:
    """The service's side of the checkpoints: the offsets seen so far, when the next checkpoint
    is due, and the answer to "may the group commit now?" (only right after a checkpoint).

    Args:
        store: Where checkpoints go (None: no checkpoints; the group commits after each batch).
        group: Consumer group the checkpoint belongs to.
        interval_s: Least time between two checkpoints.
        state: Gives the monitors' state to save.
    """

    store: MonitorCheckpoints | None
    group: str
    interval_s: float
    state: Callable[[], bytes]
    clock: Callable[[], float] = time.monotonic
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    saved: int = 0
    _next: float = 0.0

    def load(self) -> bytes | None:
        """The state of the group's checkpoint (its offsets become the start), or None."""
        if self.store is None:
            return None
        got = self.store.load(self.group)
        if got is None:
            return None
        self.offsets = dict(got.offsets)
        self._next = self.clock() + self.interval_s
        return got.state

    def seen(self, topic: str, partition: int, offset: int) -> None:
        """A record was watched."""
        self.offsets[(topic, partition)] = offset + 1

    def start_offsets(self, partitions: list[Any]) -> dict[tuple[str, int], int]:
        """Where assigned partitions start: the checkpoint's offsets (the group's for
        partitions it does not hold, which the group never committed past)."""
        if self.store is None:
            return {}
        return {(tp.topic, tp.partition): self.offsets[(tp.topic, tp.partition)]
                for tp in partitions if (tp.topic, tp.partition) in self.offsets}

    def save(self) -> None:
        """Checkpoint now."""
        if self.store is None:
            return
        self.store.save(self.group, MonitorCheckpoint(self.state(), dict(self.offsets),
                                                      datetime.now(UTC)))
        self.saved += 1
        self._next = self.clock() + self.interval_s

    def commit_ready(self) -> bool:
        """Checkpoint when one is due; whether the group may commit what it processed."""
        if self.store is None:
            return True
        if self.clock() < self._next:
            return False
        self.save()
        return True


__all__ = ["Checkpointing", "MemoryMonitorCheckpoints", "MonitorCheckpoint",
           "MonitorCheckpoints"]
