"""What an engine may commit: the delivery ledger every engine keeps between its input and its
commits.

An engine reads records, applies them to entity states and sends feature updates. A crash at
any point must lose nothing, so three invariants hold in every engine:

1. An input offset is committed only after every output of the records before it has been
   acknowledged by the broker.
2. A restarted or newly assigned member starts at the committed offset, and processes every
   record from there in offset order: a record is never skipped because the consumer jumped.
3. Recovered state is never ahead of the outputs: a state reaches the changelog only after the
   outputs of the records applied to it were acknowledged, so a replay that finds a record
   already applied has nothing to republish that was lost.

The ledger is the bookkeeping behind them, kept apart from any client so it holds whatever the
consumer does (Faust's consumer, for one, can deliver records out of order around a seek and
infer "gaps" it then treats as processed):

- per input partition the *frontier*, the next offset this member must process. A record below
  it was processed already; a record above it leaves a hole the engine must fill by reading the
  partition itself (or prove empty) before the record may be applied;
- the entity states written since the last checkpoint, one value per key (the last), which the
  engine writes to its changelog at the checkpoint, after the outputs;
- :meth:`checkpoint`, which takes the offsets and the states together at one instant, so the
  offsets committed never cover a record whose state or output is not in that checkpoint.

The commit sequence, the same in every engine::

    cp = ledger.checkpoint()          # synchronously, between two records
    wait for every output sent before this instant
    write cp.states to the changelog and wait for them
    commit cp.offsets, then ledger.committed(cp.offsets)

Examples:
    >>> ledger = DeliveryLedger()
    >>> tp = ("cdc.t", 0)
    >>> ledger.start(tp, 10)
    >>> ledger.admit(tp, 9), ledger.admit(tp, 10), ledger.admit(tp, 12)
    (-1, 0, 2)
    >>> ledger.processed(tp, 10)
    >>> ledger.stage("state-v", "k1", 0, b"{}")
    >>> cp = ledger.checkpoint()
    >>> cp.offsets, cp.states
    ({('cdc.t', 0): 11}, {('state-v', 'k1'): (0, b'{}')})
    >>> ledger.committed(cp.offsets)
    >>> ledger.checkpoint().offsets
    {}
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

Partition = tuple[str, int]
"""(topic, partition)."""
StateKey = tuple[str, str]
"""(store name, entity key)."""


@dataclass(frozen=True)
class Checkpoint:
    """What one commit covers."""

    offsets: dict[Partition, int]
    """Next offset per input partition, to commit once the rest is durable."""
    states: dict[StateKey, tuple[int, bytes | None]] = field(default_factory=dict)
    """(store, key) -> (changelog partition, value; None deletes), to write before the commit."""


class DeliveryLedger:
    """Per-partition frontiers and staged states of one engine process (see the module)."""

    def __init__(self) -> None:
        self._next: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}
        self._seen: dict[Partition, float] = {}
        self._staged: dict[StateKey, tuple[int, bytes | None]] = {}

    # -- frontiers -------------------------------------------------------------------------

    def start(self, tp: Partition, next_offset: int) -> None:
        """``tp`` was assigned: its records below ``next_offset`` are done (committed)."""
        self._next[tp] = next_offset
        self._committed[tp] = next_offset
        self._seen[tp] = time.monotonic()

    def known(self, tp: Partition) -> bool:
        """True once :meth:`start` was called for ``tp`` (and it was not forgotten)."""
        return tp in self._next

    def next_offset(self, tp: Partition) -> int | None:
        """The next offset this member must process on ``tp``."""
        return self._next.get(tp)

    def admit(self, tp: Partition, offset: int) -> int:
        """How a record at ``offset`` fits: 0 when it is next, the number of offsets missing
        before it when it leaves a hole, negative when it was processed already."""
        self._seen[tp] = time.monotonic()
        return offset - self._next[tp]

    def processed(self, tp: Partition, offset: int) -> None:
        """The record at ``offset`` (the next one) was applied and its outputs sent."""
        expected = self._next[tp]
        if offset != expected:
            raise ValueError(f"{tp[0]}[{tp[1]}]: processed offset {offset}, but the next "
                             f"one to process is {expected}")
        self._next[tp] = offset + 1

    def skip(self, tp: Partition, to_offset: int) -> None:
        """The broker holds no record of ``tp`` between the frontier and ``to_offset``
        (compaction, transaction markers): move past them."""
        self._next[tp] = max(self._next[tp], to_offset)

    def stalled(self, highs: Mapping[Partition, int | None], after_s: float,
                now: float | None = None) -> dict[Partition, int]:
        """Partitions of ``highs`` (their high watermarks; None: not known yet) whose frontier
        is below the high watermark and that admitted no record for ``after_s`` seconds (or
        none since they started): their frontiers, to read again from there.

            >>> ledger = DeliveryLedger()
            >>> ledger.start(("t", 0), 5)
            >>> ledger.start(("t", 1), 7)
            >>> ledger.stalled({("t", 0): 9, ("t", 1): 7}, 10.0, now=time.monotonic() + 11)
            {('t', 0): 5}
            >>> ledger.stalled({("t", 0): 9}, 10.0)
            {}
        """
        now = time.monotonic() if now is None else now
        return {tp: self._next[tp] for tp, high in highs.items()
                if tp in self._next and high is not None and self._next[tp] < high
                and now - self._seen.get(tp, 0.0) > after_s}

    def partitions(self) -> list[Partition]:
        """Partitions with a frontier."""
        return list(self._next)

    def forget(self, tps: Iterable[Partition]) -> None:
        """``tps`` were revoked: a later assignment starts again from the committed offset."""
        for tp in tps:
            self._next.pop(tp, None)
            self._committed.pop(tp, None)
            self._seen.pop(tp, None)

    # -- states and checkpoints -------------------------------------------------------------

    def stage(self, store: str, key: str, partition: int, value: bytes | None) -> None:
        """``key``'s new state in ``store`` (changelog ``partition``), for the next checkpoint."""
        self._staged[(store, key)] = (partition, value)

    def checkpoint(self, only: Iterable[Partition] | None = None) -> Checkpoint:
        """The offsets due (past the last commit) and the states staged since the last
        checkpoint, taken together. ``only`` limits the offsets (the states are all taken:
        they may belong to records of any partition)."""
        wanted = None if only is None else set(only)
        offsets = {tp: nxt for tp, nxt in self._next.items()
                   if nxt > self._committed.get(tp, -1) and (wanted is None or tp in wanted)}
        staged, self._staged = self._staged, {}
        return Checkpoint(offsets, staged)

    def committed(self, offsets: Mapping[Partition, int]) -> None:
        """The broker took ``offsets`` (partitions revoked since are ignored)."""
        for tp, offset in offsets.items():
            if tp in self._committed:
                self._committed[tp] = max(self._committed[tp], offset)


__all__ = ["Checkpoint", "DeliveryLedger", "Partition", "StateKey"]
