"""The topic catalog: every topic's name, partitions, retention, cleanup policy, key and contract.

Topics are created from the catalog (never auto-created by the broker, whose defaults differ
between brokers). Keys are entity ids, so one entity's events stay in order on one partition.
Each event topic has a dead-letter sibling ``<topic>.dlq`` that keeps rejected records whole.

Examples:
    >>> from refluent.config import TopicSettings
    >>> catalog = TopicCatalog.from_settings(TopicSettings(cdc_tables=["users"]))
    >>> spec = catalog.get("cdc.users")
    >>> spec.contract.__name__, spec.dlq().name
    ('CdcEnvelope', 'cdc.users.dlq')
    >>> catalog.get("cdc.payments").key  # matches the cdc.* pattern
    'primary key of the changed row'
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

from pydantic import BaseModel

from refluent.config import TopicSettings
from refluent.streams import contracts as c
from refluent.streams.errors import UnknownTopicError

DLQ_SUFFIX = ".dlq"
DLQ_RETENTION_MS = 30 * 24 * 3600 * 1000
DLQ_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

CleanupPolicy = Literal["delete", "compact", "compact,delete"]

# The loop's own topics: code names them through these, never as string literals.
INFERENCE_REQUESTS = "inference.requests"
PREDICTIONS = "predictions"
FEEDBACK = "feedback"
EXAMPLES = "examples"
ALERTS = "alerts"
RETRAIN_REQUESTS = "retrain.requests"
FEATURES_PREFIX = "features."


def features_topic(view: str) -> str:
    """The topic a feature view publishes its updates to.

    Examples:
        >>> features_topic("customer_orders")
        'features.customer_orders'
    """
    return FEATURES_PREFIX + view


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the catalog.

    Attributes:
        name: Topic name.
        contract: Event contract of its values; None for raw records (dead-letter topics).
        key: What the record key is, in words.
        partitions: Partition count.
        replication_factor: Replicas per partition.
        retention_ms: retention.ms (-1: forever).
        cleanup_policy: cleanup.policy.
        allow_tombstones: Null values are tombstones (CDC), not errors.
        doc: What the topic is for.
        config: Further topic configs.
    """

    name: str
    contract: type[BaseModel] | None
    key: str
    partitions: int = 3
    replication_factor: int = 1
    retention_ms: int = 7 * 24 * 3600 * 1000
    cleanup_policy: CleanupPolicy = "delete"
    allow_tombstones: bool = False
    doc: str = ""
    config: dict[str, str] = field(default_factory=dict)

    @property
    def is_dlq(self) -> bool:
        """True for a dead-letter topic."""
        return self.name.endswith(DLQ_SUFFIX)

    def topic_config(self) -> dict[str, str]:
        """The configs given to CreateTopics."""
        return {
            "retention.ms": str(self.retention_ms),
            "cleanup.policy": self.cleanup_policy,
            **self.config,
        }

    def dlq(self) -> TopicSpec:
        """The dead-letter sibling: raw records, kept 30 days, large enough for any input."""
        return TopicSpec(
            name=self.name + DLQ_SUFFIX,
            contract=None,
            key=f"the original record's key ({self.key})",
            partitions=1,
            replication_factor=self.replication_factor,
            retention_ms=max(self.retention_ms, DLQ_RETENTION_MS)
            if self.retention_ms >= 0
            else -1,
            cleanup_policy="delete",
            allow_tombstones=True,
            doc=f"records rejected from {self.name}, with headers saying where and why",
            config={"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)},
        )


class TopicCatalog:
    """All topics Refluent knows, by exact name or by pattern (``cdc.*``, ``logs.*``)."""

    def __init__(self, specs: list[TopicSpec], patterns: list[TopicSpec]) -> None:
        self._specs = {s.name: s for s in specs}
        self._patterns = patterns

    @classmethod
    def from_settings(cls, settings: TopicSettings) -> TopicCatalog:
        """The standard catalog: the loop's topics plus the user's CDC tables and log sources."""
        base = TopicSpec(
            name="",
            contract=None,
            key="",
            partitions=settings.default_partitions,
            replication_factor=settings.replication_factor,
            retention_ms=settings.retention_ms,
        )
        cdc = replace(
            base,
            name="cdc.*",
            contract=c.CdcEnvelope,
            key="primary key of the changed row",
            allow_tombstones=True,
            doc="Debezium change events of one table",
        )
        logs = replace(
            base,
            name="logs.*",
            contract=c.LogEvent,
            key="entity id",
            doc="log events of one application",
        )
        features = replace(
            base,
            name=FEATURES_PREFIX + "*",
            contract=c.FeatureUpdate,
            key="entity id",
            doc="updates of one feature view (a changelog: the latest per entity matters)",
        )
        fixed = [
            replace(base, name=INFERENCE_REQUESTS, contract=c.PredictionRequest,
                    key="entity id", doc="prediction requests"),
            replace(base, name=PREDICTIONS, contract=c.Prediction, key="entity id",
                    doc="predictions with the features as served"),
            replace(base, name=FEEDBACK, contract=c.Feedback,
                    key="prediction id (else entity id)", doc="labels that arrive later"),
            replace(base, name=EXAMPLES, contract=c.LabeledExample, key="entity id",
                    doc="predictions joined to their labels"),
            replace(base, name=ALERTS, contract=c.DriftAlert, key="model name",
                    doc="drift and quality alerts"),
            replace(base, name=RETRAIN_REQUESTS, contract=c.RetrainRequest,
                    key="model name", partitions=1, doc="retraining requests"),
        ]
        specs = fixed
        specs += [replace(cdc, name=f"cdc.{t}") for t in settings.cdc_tables]
        specs += [replace(logs, name=f"logs.{s}") for s in settings.log_sources]
        # More streams of the loop's own kinds (a region's predictions, a source's labels):
        # <topic>.<suffix> carries <topic>'s contract.
        more = [replace(spec, name=spec.name + ".*") for spec in fixed
                if spec.name in (PREDICTIONS, FEEDBACK, EXAMPLES, ALERTS)]
        return cls(specs, [cdc, logs, features, *more])

    def __iter__(self) -> Iterator[TopicSpec]:
        """Every named topic followed by its dead-letter sibling."""
        for spec in self._specs.values():
            yield spec
            yield spec.dlq()

    def names(self) -> list[str]:
        """Names of every topic :meth:`__iter__` yields."""
        return [s.name for s in self]

    def get(self, name: str) -> TopicSpec:
        """The spec of ``name``: an exact entry, a dead-letter sibling or a pattern match.

        Raises:
            UnknownTopicError: no entry or pattern matches.
        """
        if name in self._specs:
            return self._specs[name]
        if name.endswith(DLQ_SUFFIX):
            return self.get(name[: -len(DLQ_SUFFIX)]).dlq()
        for pattern in self._patterns:
            if fnmatch.fnmatchcase(name, pattern.name):
                return replace(pattern, name=name)
        known = list(self._specs) + [p.name for p in self._patterns]
        raise UnknownTopicError(name, known)
