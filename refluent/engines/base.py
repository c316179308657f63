"""What runs feature views: the engine interface, the core every engine shares, the registry.

An engine consumes the views' source topics, applies each record through the view's pure
:class:`~refluent.processors.runtime.ViewRuntime`, keeps the entity states, and publishes
:class:`~refluent.streams.contracts.FeatureUpdate` records to ``features.<view>``. What every
engine does the same way lives here, in :class:`Engine`: decoding by the topic's contract, bad
records to ``<source>.dlq`` (flushed before the record counts as processed), metrics, the
topics to create. A new engine is a subclass in its own module, named in :data:`ENGINES` (or
given by dotted path in ``processing.engine``).

Guarantee every engine keeps: a source offset is committed only after the updates and dead
letters of the records below it are acknowledged and the states they produced are durable, so
a crash at any moment loses no update; a record replayed after a crash changes nothing (each
state remembers the last offset applied per source partition).

Examples:
    >>> sorted(ENGINES)
    ['faust', 'native']
    >>> engine_class("spark")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    refluent.engines.errors.UnknownEngineError: unknown engine 'spark': known engines are faust, ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
from pydantic import BaseModel

from refluent.config import Settings
from refluent.engines.errors import UnknownEngineError
from refluent.observability import metrics
from refluent.plugins import ClassPathError, load_class
from refluent.processors.features import View
from refluent.processors.runtime import State, UpdateJson, ViewRuntime, runtime_for
from refluent.streams.deadletter import DeadLetterRouter
from refluent.streams.errors import DecodeError
from refluent.streams.origin import Origin
from refluent.streams.serde import JsonSerde
from refluent.streams.topics import TopicCatalog

if TYPE_CHECKING:
    from refluent.streams.kafka import Producer

ENGINES: dict[str, str] = {"faust": "refluent.engines.faust:FaustEngine",
                           "native": "refluent.engines.native:NativeEngine"}
"""Engine name (``processing.engine``) -> ``module:Class``."""


def load_state(raw: Any) -> State:
    """An entity state as stored: JSON bytes as written, or what a store already decoded."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, (bytes, bytearray, memoryview, str)):
        return dict(orjson.loads(raw))
    raise TypeError(f"unexpected state value of type {type(raw).__name__}: {raw!r:.80}")


class JsonStates:
    """A view's states over a mapping of entity -> JSON bytes (what a changelog holds).

    Examples:
        >>> states = JsonStates({"u1": b'{"version": 3}'})
        >>> states.get("u1"), states.get("u2"), list(states.items())
        ({'version': 3}, {}, [('u1', {'version': 3})])
    """

    def __init__(self, data: MutableMapping[str, Any]) -> None:
        self.data = data

    def get(self, key: str) -> State:
        return load_state(self.data.get(key))

    def items(self) -> Iterator[tuple[str, State]]:
        for key, raw in list(self.data.items()):
            yield key, load_state(raw)

    def put(self, states: Mapping[str, State]) -> None:
        """Store ``states`` as JSON bytes."""
        for key, state in states.items():
            self.data[key] = orjson.dumps(state)


class Engine(ABC):
    """Runs ``views`` over Kafka until stopped.

    Args:
        views: The views to run.
        settings: Refluent settings (Kafka, topics, processing).
        bootstrap_servers: Kafka brokers.
        partitions: Partition count of each existing source topic (a view keyed by its
            source's own key must keep as many state partitions as the topic has).
    """

    name: ClassVar[str]

    def __init__(self, views: Sequence[View], settings: Settings, bootstrap_servers: str,
                 *, partitions: dict[str, int] | None = None) -> None:
        self.views = list(views)
        self.runtimes: list[ViewRuntime] = [runtime_for(v) for v in self.views]
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.partitions = partitions or {}
        self.catalog = TopicCatalog.from_settings(settings.topics)
        self.stats: dict[str, int] = {"in": 0, "updates": 0, "dead_lettered": 0}
        self._serdes: dict[str, JsonSerde[Any]] = {}
        self._m_in: dict[str, Any] = {}
        self._m_updates: dict[str, Any] = {}
        self._dlq: Producer | None = None
        self._router: DeadLetterRouter | None = None

    @abstractmethod
    def run(self, loglevel: str = "warn") -> None:
        """Run until SIGTERM/SIGINT (blocks)."""

    # -- lifecycle -------------------------------------------------------------------------

    def setup(self) -> None:
        """Open the dead-letter producer (before the first record)."""
        if self._dlq is None:
            from refluent.streams.kafka import Producer

            kafka = self.settings.kafka
            self._dlq = Producer(kafka, self.bootstrap_servers,
                                 **{"message.max.bytes": kafka.dlq_max_record_bytes + 65536})
            self._router = DeadLetterRouter(self._dlq)

    def close(self) -> None:
        """Flush and close the dead-letter producer."""
        if self._dlq is not None:
            self._dlq.close()
            self._dlq = self._router = None

    # -- the shared core -------------------------------------------------------------------

    def topics_to_create(self) -> list[str]:
        """Source, output and dead-letter topics the engine expects to exist."""
        names: list[str] = []
        for view in self.views:
            for source in view.sources:
                names += [source, source + ".dlq"]
            names.append(view.topic)
        return list(dict.fromkeys(names))

    def state_partitions(self, runtime: ViewRuntime) -> int:
        """How many partitions the view's state is spread over."""
        default = self.settings.topics.default_partitions
        if runtime.keyed_by_source:
            return self.partitions.get(runtime.view.sources[0], default)
        return default

    def decode(self, topic: str, value: bytes | None) -> BaseModel | None:
        """``value`` decoded by ``topic``'s contract (None: a tombstone).

        Raises:
            DecodeError: the topic has no contract, or the value does not fit it.
        """
        serde = self._serdes.get(topic)
        if serde is None:
            spec = self.catalog.get(topic)
            if spec.contract is None:
                raise DecodeError(topic, "no_contract", f"topic {topic} has no event contract")
            serde = JsonSerde(spec.contract, max_record_bytes=self.settings.kafka.max_record_bytes,
                              allow_tombstones=spec.allow_tombstones)
            self._serdes[topic] = serde
        return serde.decode(value)

    def count_in(self, topic: str) -> None:
        """Count one record read from ``topic``."""
        self.stats["in"] += 1
        counter = self._m_in.get(topic)
        if counter is None:
            counter = self._m_in[topic] = metrics.RECORDS_IN.labels(
                topic, self.settings.processing.app_id)
        counter.inc()

    def reject(self, origin: Origin, key: bytes | None, value: bytes | None,
               error: BaseException) -> None:
        """Dead-letter a record, flushed now so a commit never covers a lost dead letter."""
        self.setup()
        assert self._router is not None and self._dlq is not None  # noqa: S101 - setup()
        self._router.route_raw(origin.topic, key, value, getattr(error, "step", "decode"), error,
                               partition=origin.partition, offset=origin.offset)
        self._dlq.flush()
        self.stats["dead_lettered"] += 1

    def published(self, updates: Iterable[UpdateJson]) -> None:
        """Count updates the engine sent (their JSON form, as outcomes hold them)."""
        per_view: dict[str, int] = {}
        for update in updates:
            per_view[update["view"]] = per_view.get(update["view"], 0) + 1
        for view, n in per_view.items():
            counter = self._m_updates.get(view)
            if counter is None:
                counter = self._m_updates[view] = metrics.FEATURE_UPDATES.labels(view)
            counter.inc(n)
            self.stats["updates"] += n


def engine_class(name: str) -> type[Engine]:
    """The engine named ``name`` in :data:`ENGINES`, or a class given by dotted path.

    Raises:
        UnknownEngineError: neither a known name nor an importable Engine subclass.
    """
    target = ENGINES.get(name, name)
    if "." not in target and ":" not in target:
        raise UnknownEngineError(name, sorted(ENGINES))
    try:
        return load_class(target, Engine)
    except ClassPathError as exc:
        raise UnknownEngineError(name, sorted(ENGINES), exc.detail) from exc


def views_in(views: Sequence[View], names: Sequence[str] | None) -> list[View]:
    """The views named in ``names`` (all when None).

    Raises:
        KeyError: a name is not a declared view.
    """
    if not names:
        return list(views)
    by_name = {v.name: v for v in views}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise KeyError(f"unknown view(s) {missing}; declared: {sorted(by_name)}")
    return [by_name[n] for n in names]
