"""Test helpers on top of the Kafka layer: unique topics, reading a topic to the end, ends of
topics, waiting for a consumer group to catch up."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from refluent.config import Settings
from refluent.errors import RefluentError
from refluent.streams.io import TailRecord, tail
from refluent.streams.kafka import TopicAdmin, group_lag, partition_offsets
from refluent.streams.topics import TopicCatalog, TopicSpec


class NotCaughtUpError(RefluentError):
    """A consumer group did not commit the end of its topics in time."""


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


def wait_until_committed(settings: Settings, bootstrap: str, topics: Iterable[str],
                         group: str, *,
                         timeout_s: float, what: str,
                         check: Callable[[], None] | None = None,
                         poll_s: float = 0.5) -> None:
    """Return once ``group`` has committed the end of every partition of ``topics`` (a
    service that commits only what it finished has then finished everything produced so far).

    Args:
        settings: Settings (the Kafka client's).
        bootstrap: The brokers.
        topics: The group's input topics.
        group: The consumer group.
        timeout_s: Longest wait.
        what: Who is waited for, for the error (``"the engine"``).
        check: Called before each poll; raises when the service died (see
            :meth:`~refluent.testing.commands.RefluentCommand.check_alive`).
        poll_s: Time between polls.

    Raises:
        NotCaughtUpError: records were still uncommitted after ``timeout_s``.
    """
    wanted = sorted(set(topics))
    deadline = time.monotonic() + timeout_s
    lag = -1
    while time.monotonic() < deadline:
        if check is not None:
            check()
        lag = group_lag(settings.kafka, bootstrap, wanted, group)
        if lag == 0:
            return
        time.sleep(poll_s)
    raise NotCaughtUpError(f"{what} did not catch up within {timeout_s:.0f}s: group {group} "
                           f"has {lag} record(s) of {', '.join(wanted)} uncommitted")
