"""Test helpers on top of the Kafka layer: unique topics, reading a topic to the end, ends of
topics."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from refluent.config import Settings
from refluent.streams.io import TailRecord, tail
from refluent.streams.kafka import TopicAdmin, partition_offsets
from refluent.streams.topics import TopicCatalog, TopicSpec


def unique_topic(settings: Settings, base: str, partitions: int = 3) -> TopicSpec:
    """Create ``<base>-<random>`` (matched in the catalog by ``base``'s pattern) and its DLQ.

    ``base`` is a catalog name or pattern prefix such as ``cdc.orders`` or ``logs.app``; the
    created topic keeps the prefix so it gets the same contract.
    """
    catalog = TopicCatalog.from_settings(settings.topics)
    name = f"{base}-{uuid.uuid4().hex[:8]}"
    spec = catalog.get(name)
    spec = replace(spec, partitions=partitions)
    bootstrap = settings.kafka.bootstrap_servers or ""
    TopicAdmin(settings.kafka, bootstrap).ensure([spec, spec.dlq()])
    return spec


def read_all(settings: Settings, topic: str, expected: int, timeout: float = 20.0,
             **kwargs: Any) -> list[TailRecord]:
    """Read ``topic`` from the beginning until ``expected`` records or ``timeout`` idle seconds.
    """
    return list(tail(settings.kafka, settings.kafka.bootstrap_servers or "", topic,
                     from_beginning=True, max_records=expected, idle_timeout=timeout, **kwargs))


def topic_ends(settings: Settings, topic: str) -> dict[int, int]:
    """Per partition, the end of ``topic`` (the high watermark of a fetch response: exact on
    every broker, but a fetch per partition: for checks, not for tight polling)."""
    rows = partition_offsets(settings.kafka, settings.kafka.bootstrap_servers or "", topic)
    return {int(r["partition"] or 0): int(r["high"] or 0) for r in rows}
