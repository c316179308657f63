"""Faust's Kafka transport with the engine's own commit discipline.

Two things in Faust's aiokafka transport are not safe for the engine, and this module replaces
them:

- **Which offsets get committed.** Faust derives them from the offsets its stream acknowledged,
  and it treats a jump in the offsets it reads as a *gap* (meant for compacted topics) that it
  acknowledges without processing; records below the last offset it read are dropped as
  already seen. When table recovery seeks a partition back to its committed offset while
  records fetched from the old position are still queued (on every start-up that joins a group
  with a member that has not left yet: a crashed one), the stale records arrive first: Faust
  acknowledges the "gap" between the committed offset and them, drops the re-read records as
  duplicates, and commits past records it never processed. The engine instead commits the
  frontier of its :class:`~refluent.engines.ledger.DeliveryLedger`, which advances only over
  records the engine applied itself (see :class:`LedgerCommits`).
- **What a commit waits for.** Faust flushes its producer buffer before a commit, but that
  flush returns after 0.1 s without progress whether or not the buffer is empty; the engine
  waits for the delivery of every record it sent before the checkpoint, then writes the
  checkpoint's states to the changelog and waits for them, then commits.

Changelog ends come from a fetch response (see :func:`ledger_transport`): table recovery reads
each changelog partition up to the end ListOffsets reports, which some brokers (the embedded one)
report as the start of the last batch plus one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from refluent.config import Settings
from refluent.engines.ledger import DeliveryLedger, Partition
from refluent.errors import require
from refluent.streams.kafka import fetched_high_watermarks


class LedgerCommits(Protocol):
    """What the transport asks of the engine at a commit."""

    ledger: DeliveryLedger
    assigned: set[Partition]
    """The partitions this member holds now (records of others are stale)."""

    async def prepare_commit(self, tps: Iterable[Partition]) -> dict[Partition, int]:
        """Take a checkpoint of ``tps``, wait for its outputs, write its states to the
        changelog and wait for them; the offsets that may now be committed."""
        ...


def ledger_transport(app: Any, settings: Settings, bootstrap_servers: str,
                         engine: LedgerCommits) -> Any:
    """Faust's Kafka transport for ``app``: changelog ends from fetch responses, and commits
    of ``engine``'s ledger frontiers after :meth:`LedgerCommits.prepare_commit`.

    Table recovery reads each changelog partition up to the end ListOffsets reports. The
    embedded broker reports the start of the last batch plus one, so recovery would stop short
    of the rest of that batch. This transport asks ListOffsets, then fetches the last batch and
    takes the high watermark the fetch response carries, which is exact on every broker. Only
    recovery and standby catch-up call it, so the extra fetch costs nothing per record.
    """
    drivers: Any = require("faust.transport.drivers.aiokafka", "faust")
    faust_types: Any = require("faust.types", "faust")
    TP = faust_types.TP  # noqa: N806 - Faust's class

    class ExactEndsConsumerThread(drivers.AIOKafkaConsumerThread):
        async def _highwaters(self, partitions: list[Any]) -> dict[Any, int | None]:
            listed = dict(await super()._highwaters(partitions))
            starts: dict[tuple[str, int], int | None] = {
                (tp.topic, tp.partition): end - 1 for tp, end in listed.items() if end}
            if not starts:
                return listed
            marks = await asyncio.to_thread(fetched_high_watermarks, settings.kafka,
                                            bootstrap_servers, starts)
            return {tp: max(end or 0, marks.get((tp.topic, tp.partition), (0, 0))[1])
                    if end is not None else end for tp, end in listed.items()}

    class LedgerConsumer(drivers.Consumer):
        def _new_consumer_thread(self) -> Any:
            return ExactEndsConsumerThread(self, loop=self.loop, beacon=self.beacon)

        def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[Any]:
            # Every partition the engine holds a frontier for, not the ones Faust acked.
            for topic, partition in engine.ledger.partitions():
                if topics is None or topic in topics or TP(topic, partition) in topics:
                    yield TP(topic, partition)

        async def _commit_tps(self, tps: Iterable[Any], start_new_transaction: bool) -> bool:
            offsets = await engine.prepare_commit([(tp.topic, tp.partition) for tp in tps])
            if not offsets:
                return False
            did_commit = bool(await self._commit_offsets(
                {TP(t, p): o for (t, p), o in offsets.items()},
                start_new_transaction=start_new_transaction))
            if did_commit:
                engine.ledger.committed(offsets)
            return did_commit

        async def on_partitions_assigned(self, assigned: set[Any],
                                         generation_id: int = 0) -> None:
            engine.assigned = {(tp.topic, tp.partition) for tp in assigned}
            await super().on_partitions_assigned(assigned, generation_id)

        async def on_partitions_revoked(self, revoked: set[Any]) -> None:
            # Faust stops the streams and flushes here; commit what they finished while the
            # partitions are still ours, so their states reach the changelog before the next
            # owner recovers it, then forget their frontiers.
            engine.assigned -= {(tp.topic, tp.partition) for tp in revoked}
            await super().on_partitions_revoked(revoked)
            try:
                await self.commit()
            finally:
                engine.ledger.forget((tp.topic, tp.partition) for tp in revoked)

    class LedgerTransport(drivers.Transport):
        Consumer = LedgerConsumer

    return LedgerTransport(app.conf.broker_consumer, app)


__all__ = ["LedgerCommits", "ledger_transport"]
