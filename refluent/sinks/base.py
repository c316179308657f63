"""The sink interface: ``write(batch)`` and ``flush()``, with batching done once, here.

Delivery guarantee: the consumer loop commits a batch's offsets only after every sink it wrote to
has flushed, so a crash replays at most the uncommitted records. Sinks are idempotent under that
replay: the lake sink skips offsets its tables already hold, the online store never lets an older
event overwrite a newer one.

Lifecycle: ``setup()`` opens clients (never ``__init__``), ``write()`` may buffer, ``flush()``
makes everything written durable, ``close()`` flushes and releases.

Backends are found by URL scheme (:data:`SINK_BACKENDS`, :func:`sink_class`): ``iceberg`` for the
lake, ``redis`` for the online store, or the dotted path of your own :class:`Sink` subclass. A
backend's module (and its SDK) is imported only when a pipeline asks for it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from refluent.plugins import ClassPathError, load_class
from refluent.sinks.errors import UnknownSinkError

if TYPE_CHECKING:
    from confluent_kafka import TopicPartition

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
    """Something records are written to. Subclasses implement :meth:`write`.

    The offset hooks (:meth:`start_offsets`, :meth:`committed_offsets`, :meth:`commit_ready`)
    are what a consumer loop asks before it starts a partition and before it commits; their
    defaults suit a sink that keeps no offsets of its own and writes through on every call.
    """

    name: str = "sink"
    keeps_offsets: ClassVar[bool] = False
    """True for a sink that stores the offsets it has written (the lake keeps them in each
    table's snapshots). A pipeline then starts its partitions from :meth:`start_offsets`, checks
    :meth:`committed_offsets` against the topics' ends, and hands it the records it dead-lettered
    (``skip``) so that its offsets move past them."""
    on_bad_record: Callable[[SinkRecord[Any], Exception], None] | None = None
    """Called with a record the sink cannot turn into its own form, and the error, by a sink that
    can reject one record without failing the batch; the record then counts as written. A
    pipeline sets it to dead-letter the record. None: such a record fails the write."""

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

    def start_offsets(self, partitions: Sequence[TopicPartition]) -> dict[tuple[str, int], int]:
        """Where to start each of the assigned ``partitions`` (``ConsumerLoop(start_offsets=
        ...)``): the next offset per (topic, partition). A partition left out starts at the
        group's committed offset, which is all the default leaves."""
        return {}

    def commit_ready(self) -> bool:
        """True when everything written so far is durable, so the group's offsets may be
        committed (``ConsumerLoop(commit_ready=...)``). The default suits a sink whose
        :meth:`write` is durable when it returns."""
        return True

    def flush_if_due(self) -> None:  # noqa: B027 - optional hook
        """Flush what has waited long enough (called while the topics are idle)."""


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

    def commit_ready(self) -> bool:
        """True when nothing is buffered."""
        return not self._buffer


def describe(sink: Any) -> str:
    """A sink's name for messages and metrics."""
    return str(getattr(sink, "name", type(sink).__name__))


# ---------------------------------------------------------------------------------------------
# backends by URL scheme
# ---------------------------------------------------------------------------------------------


SINK_BACKENDS: dict[str, str] = {
    "iceberg": "refluent.sinks.iceberg.IcebergSink",
    "redis": "refluent.sinks.redis.RedisOnlineStore",
    "rediss": "refluent.sinks.redis.RedisOnlineStore",
}
"""URL scheme -> dotted path of the sink class that writes there (imported on first use). A
scheme ``<backend>+<transport>`` (``iceberg+sql``, ``iceberg+rest``) falls back to ``<backend>``.
Add your own with :func:`register_sink`."""


def register_sink(scheme: str, sink: str | type[Sink[Any]]) -> None:
    """Make ``scheme`` (``myqueue``, matched case-insensitively) resolve to ``sink``: a
    :class:`Sink` subclass or its dotted path (imported on first use)."""
    path = sink if isinstance(sink, str) else f"{sink.__module__}.{sink.__qualname__}"
    SINK_BACKENDS[scheme.lower()] = path


def sink_class(destination: str) -> type[Sink[Any]]:
    """The sink class that writes to ``destination``.

    ``destination`` is a URL (``redis://localhost:6379``, ``iceberg+sql://...``) or a bare scheme
    (``iceberg``) registered in :data:`SINK_BACKENDS`, or the dotted path of your own
    :class:`Sink` subclass (``mypkg.sinks.MySink`` or ``mypkg.sinks:MySink``).

    Raises:
        UnknownSinkError: the scheme is not registered (the message lists the known ones), or the
            dotted path does not import or does not name a :class:`Sink` subclass.
        MissingExtraError: the backend needs an extra that is not installed.

    Examples:
        >>> sink_class("redis://localhost:6379/0").__name__
        'RedisOnlineStore'
        >>> sink_class("iceberg+sql://catalog").__name__
        'IcebergSink'
        >>> sink_class("refluent.sinks.redis:RedisOnlineStore").__name__
        'RedisOnlineStore'
        >>> sink_class("ftp://files")
        Traceback (most recent call last):
        ...
        refluent.sinks.errors.UnknownSinkError: sink ftp://files: unknown scheme 'ftp' ...
    """
    scheme, sep, _ = destination.partition("://")
    if sep or not ("." in destination or ":" in destination):
        key = scheme.strip().lower()
        path = SINK_BACKENDS.get(key) or SINK_BACKENDS.get(key.split("+", 1)[0])
        if path is None:
            raise UnknownSinkError(destination, scheme=key, known=sorted(SINK_BACKENDS))
    else:
        path = destination
    return _import_sink(destination, path)


def _import_sink(destination: str, path: str) -> type[Sink[Any]]:
    try:
        return load_class(path, Sink)
    except ClassPathError as exc:
        raise UnknownSinkError(destination, detail=exc.detail) from exc
