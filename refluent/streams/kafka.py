"""Kafka clients on confluent-kafka: an idempotent producer, a consumer loop that commits only
after processing, and topic administration from the catalog.

Delivery guarantee: at-least-once. :class:`ConsumerLoop` commits a batch's offsets only after the
handler has returned for the whole batch, and the handler returns only after every sink it wrote
to (including the dead-letter producer) has flushed. A crash therefore replays at most the
uncommitted batch; idempotent sinks make that replay harmless.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from refluent.config import KafkaSettings
from refluent.errors import require
from refluent.observability import metrics
from refluent.streams.errors import (
    BrokerUnavailableError,
    DeliveryError,
    NotCaughtUpError,
    StreamError,
    TopicAdminError,
)
from refluent.streams.topics import TopicSpec

if TYPE_CHECKING:
    from collections.abc import Iterator

    from confluent_kafka import Message, TopicPartition


def _ck() -> Any:
    return require("confluent_kafka", "kafka")


class Producer:
    """An idempotent producer (``acks=all``; ``kafka.idempotence``) whose :meth:`flush` raises
    if any record failed.

    Delivery reports are requested for failures only, so the happy path costs no Python callback
    per record. A full local queue is backpressure: :meth:`produce` serves delivery reports and
    retries instead of failing.

    Args:
        settings: Kafka settings.
        bootstrap_servers: Broker list.
        **overrides: librdkafka properties that win over the defaults.
    """

    def __init__(
        self, settings: KafkaSettings, bootstrap_servers: str, **overrides: Any
    ) -> None:
        conf = settings.client_config(bootstrap_servers)
        conf.update(
            {
                "enable.idempotence": settings.idempotence,
                "acks": "all",
                "linger.ms": settings.linger_ms,
                "compression.type": settings.compression_type,
                "delivery.report.only.error": True,
                "on_delivery": self._on_delivery,
                # Kafka's murmur2 (the Java clients' and Faust's partitioner), so a key lands on
                # the same partition whichever client produced it.
                "partitioner": "murmur2_random",
            }
        )
        conf.update(overrides)
        self.bootstrap_servers = bootstrap_servers
        self._producer = _ck().Producer(conf)
        self._produce = self._producer.produce
        self._failures: list[tuple[str, int | None, str]] = []
        self._produced: dict[str, int] = {}

    def _on_delivery(self, err: Any, msg: Message) -> None:
        if err is not None:
            self._failures.append((msg.topic() or "?", msg.partition(), str(err)))
            metrics.DELIVERY_FAILURES.labels(msg.topic() or "?").inc()

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: str | bytes | None = None,
        headers: Sequence[tuple[str, bytes | str]] | None = None,
        partition: int | None = None,
    ) -> None:
        """Queue one record; blocks (serving delivery reports) while the local queue is full."""
        if key.__class__ is str:
            key = key.encode()  # type: ignore[union-attr,unused-ignore]
        produced = self._produced
        produced[topic] = produced.get(topic, 0) + 1
        if headers is None and partition is None:
            try:
                self._produce(topic, value, key)
                return
            except BufferError:
                pass
        kwargs: dict[str, Any] = {}
        if headers:
            kwargs["headers"] = list(headers)
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._produce(topic, value, key, **kwargs)
                return
            except BufferError:
                # Backpressure: the local queue is full until the broker acknowledges more.
                self._producer.poll(0.05)

    def poll(self, timeout: float = 0) -> int:
        """Serve delivery reports."""
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued record is acknowledged.

        Raises:
            DeliveryError: a record was refused or the timeout passed with records in flight.
        """
        left = self._producer.flush(timeout)
        for topic, n in self._produced.items():
            metrics.RECORDS_PRODUCED.labels(topic).inc(n)
        self._produced.clear()
        failures, self._failures = self._failures, []
        if left:
            failures.append(("*", None, f"{left} record(s) still in flight after {timeout}s"))
        if failures:
            raise DeliveryError(failures)

    def __len__(self) -> int:
        return len(self._producer)

    def close(self, timeout: float = 30.0) -> None:
        """Flush, then release the client and its connections."""
        try:
            self.flush(timeout)
        finally:
            self._producer.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class PartitionLag:
    """How far a consumer is behind on one partition."""

    topic: str
    partition: int
    position: int | None
    high_watermark: int

    @property
    def lag(self) -> int:
        """Records between the position and the high watermark."""
        return max(self.high_watermark - (self.position or 0), 0)


class StopSignal:
    """A stop flag set by SIGTERM/SIGINT (while :meth:`installed`) or by :meth:`set`."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """Ask the loop to stop after the batch in hand."""
        self._event.set()

    def is_set(self) -> bool:
        """True once a stop was asked for."""
        return self._event.is_set()

    @contextmanager
    def installed(self) -> Iterator[StopSignal]:
        """Route SIGTERM and SIGINT to :meth:`set` (main thread only), restoring them after."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            self.set()

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


BatchHandler = Callable[[list["Message"]], None]
LAG_INTERVAL_S = 5.0
"""How often a consumer loop refreshes its lag gauges."""
GROUP_CHECK_S = 1.0
"""How often an idle ``until_caught_up`` loop asks whether its whole group is done."""
PartitionsCallback = Callable[[list["TopicPartition"]], None]


@dataclass
class LoopStats:
    """What one :meth:`ConsumerLoop.run` saw."""

    records: int = 0
    batches: int = 0
    commits: int = 0


class ConsumerLoop:
    """A consumer-group member that hands batches to a handler and commits after each one.

    Auto-commit is off: after ``handler(batch)`` returns, the next offset of every partition in
    the batch is committed. On a rebalance the processed offsets are committed synchronously
    before the partitions are given up; on SIGTERM/SIGINT the loop finishes the batch in hand,
    commits and closes.

    Args:
        settings: Kafka settings.
        bootstrap_servers: Broker list.
        group_id: Consumer group.
        topics: Topics to subscribe to.
        from_beginning: Where a group with no committed offset starts.
        batch_size: Most records per handler call.
        on_assign: Called with the partitions the group gave this member.
        on_revoke: Called with the partitions taken away, before their offsets are committed.
        on_lost: Called with partitions lost without a revoke (the session timed out: another
            member may already own them, so nothing of them may be committed).
        start_offsets: Called on assignment; returns the next offset per (topic, partition) to
            start from instead of the group's committed one (for sinks that keep their own
            offsets, such as the lake). Partitions it leaves out start from the group offset.
        commit_ready: Called after each batch; offsets are committed only when it returns True
            (sinks that buffer across batches return False until they have flushed).
        commit_interval_s: Least time between two asynchronous commits (0: after every
            batch). Commits on a rebalance and at the end are not held back. A crash replays
            at most this much more; a service answering many small batches saves the broker
            one OffsetCommit per batch.
        done_offsets: Called by ``run(until_caught_up=True)`` with every partition of the
            topics; returns the next offset per (topic, partition) that the caller's own
            offsets (a lake sink's) show done, whoever did it. Partitions it leaves out count
            as done up to the group's committed offset.
        **overrides: librdkafka properties that win over the defaults.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        bootstrap_servers: str,
        group_id: str,
        topics: Sequence[str],
        *,
        from_beginning: bool = True,
        batch_size: int = 500,
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
        on_lost: PartitionsCallback | None = None,
        start_offsets: Callable[[list[TopicPartition]], dict[tuple[str, int], int]] | None = None,
        commit_ready: Callable[[], bool] | None = None,
        commit_interval_s: float = 0.0,
        done_offsets: Callable[[list[TopicPartition]], dict[tuple[str, int], int]] | None = None,
        **overrides: Any,
    ) -> None:
        conf = settings.client_config(bootstrap_servers)
        conf.update(
            {
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest" if from_beginning else "latest",
                "session.timeout.ms": settings.session_timeout_ms,
                "enable.partition.eof": False,
                **settings.large_fetch_config(),
            }
        )
        conf.update(overrides)
        self.group_id = group_id
        self.topics = list(topics)
        self.batch_size = batch_size
        self._settings = settings
        self._bootstrap = bootstrap_servers
        self._next_group_check = 0.0
        self._user_on_assign = on_assign
        self._user_on_revoke = on_revoke
        self._user_on_lost = on_lost
        self._start_offsets = start_offsets
        self._done_offsets = done_offsets
        self._commit_ready = commit_ready or (lambda: True)
        self.commit_interval_s = commit_interval_s
        self._next_commit = 0.0
        self._consumer = _ck().Consumer(conf)
        self._processed: dict[tuple[str, int], int] = {}
        self._assigned: list[TopicPartition] = []
        self._starts: dict[tuple[str, int], int] = {}
        """Where each assigned partition started (set by ``start_offsets`` or, once asked, the
        group's committed offset): its position until a record of it is consumed."""
        self.stats = LoopStats()
        self._m_in = {t: metrics.RECORDS_IN.labels(t, group_id) for t in self.topics}

    # -- rebalance -------------------------------------------------------------------------
    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._starts = {}
        if self._start_offsets is not None:
            starts = self._start_offsets(partitions)
            for tp in partitions:
                start = starts.get((tp.topic, tp.partition))
                if start is not None:
                    tp.offset = start
                    self._starts[(tp.topic, tp.partition)] = start
            consumer.assign(partitions)
        self._assigned = list(partitions)
        if self._user_on_assign:
            self._user_on_assign(partitions)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # The user's callback flushes its sinks, so what was processed may now be committed.
        if self._user_on_revoke:
            self._user_on_revoke(partitions)
        if self._commit_ready():
            self._commit(asynchronous=False)
        else:
            self._processed = {}  # not durable: the next owner replays it
        self._assigned = []

    # -- flow control ----------------------------------------------------------------------
    def pause(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Stop fetching ``partitions`` until :meth:`resume` (back-pressure). Records already
        fetched for them are dropped by the client and fetched again from the position on
        resume, so nothing is lost or reordered. A rebalance resumes every partition."""
        tps = [_ck().TopicPartition(t, p) for t, p in sorted(partitions)]
        if tps:
            self._consumer.pause(tps)

    def resume(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Fetch ``partitions`` again after :meth:`pause`."""
        tps = [_ck().TopicPartition(t, p) for t, p in sorted(partitions)]
        if tps:
            self._consumer.resume(tps)

    # -- offsets ---------------------------------------------------------------------------
    def _maybe_commit(self) -> None:
        """Commit asynchronously when ``commit_interval_s`` has passed and the handler's
        outputs are durable."""
        if self.commit_interval_s:
            now = time.monotonic()
            if now < self._next_commit:
                return
            if not self._commit_ready():
                return
            self._next_commit = now + self.commit_interval_s
        elif not self._commit_ready():
            return
        self._commit(asynchronous=True)

    def _commit(self, asynchronous: bool) -> None:
        if not self._processed:
            return
        tp = _ck().TopicPartition
        offsets = [tp(t, p, o) for (t, p), o in self._processed.items()]
        self._processed = {}
        try:
            self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
            self.stats.commits += 1
        except _ck().KafkaException as exc:
            # A commit refused after a rebalance is harmless: the new owner replays from the
            # last committed offset and idempotent sinks absorb the repeat.
            if asynchronous:
                raise StreamError(f"commit of group {self.group_id} failed: {exc}") from exc

    def lag(self) -> list[PartitionLag]:
        """Lag of each assigned partition, from the high watermark of the last fetch.

        Uses the watermark cached from fetch responses rather than a ListOffsets request, which
        is exact on every Kafka-protocol broker and costs no round trip.
        """
        out = []
        positions = self._consumer.position(self._assigned) if self._assigned else []
        for tp in positions:
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            pos = tp.offset if tp.offset >= 0 else None
            lag = PartitionLag(tp.topic, tp.partition, pos, high)
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition), self.group_id).set(lag.lag)
            out.append(lag)
        return out

    # -- loop ------------------------------------------------------------------------------
    def run(
        self,
        handler: BatchHandler,
        *,
        stop: StopSignal | None = None,
        max_records: int | None = None,
        idle_timeout: float | None = None,
        poll_timeout: float = 0.5,
        on_idle: Callable[[], None] | None = None,
        before_close: Callable[[], None] | None = None,
        until_caught_up: bool = False,
        drain: bool = False,
    ) -> LoopStats:
        """Consume until stopped, ``max_records`` were handled, or nothing came for
        ``idle_timeout`` seconds; then commit and close.

        The handler receives records in offset order per partition. An exception from the
        handler stops the loop without committing that batch (it is consumed again).
        ``on_idle`` runs after a poll that returned nothing (to flush buffers that waited long
        enough); ``before_close`` runs before the last commit (to flush everything).
        ``until_caught_up`` stops once every assigned partition is read up to its high
        watermark (a batch job over what the topics hold now).

        A batch is what arrives within ``poll_timeout`` (up to ``batch_size`` records): the
        client waits the whole timeout unless the batch fills. With ``drain`` the wait ends at
        the first record and the batch is that record and whatever the client has already
        fetched, so a record waits for no other (request/response services); batches then
        grow with the load by themselves.
        """
        stop = stop or StopSignal()
        self._consumer.subscribe(self.topics, on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_lost)
        consume = self._consumer.consume
        last_data = time.monotonic()
        next_lag = last_data + LAG_INTERVAL_S
        batch_hist = metrics.BATCH_SECONDS.labels(self.group_id)
        try:
            with stop.installed():
                while not stop.is_set():
                    want = self.batch_size
                    if max_records is not None:
                        want = min(want, max_records - self.stats.records)
                        if want <= 0:
                            break
                    if drain:
                        batch = consume(1, poll_timeout)
                        if batch and want > 1:
                            batch += consume(want - 1, 0)
                    else:
                        batch = consume(want, poll_timeout)
                    if not batch:
                        if on_idle is not None:
                            on_idle()
                            if self._processed:
                                self._maybe_commit()
                        if until_caught_up and self._caught_up():
                            break
                        if idle_timeout is not None and (
                            time.monotonic() - last_data > idle_timeout
                        ):
                            break
                        continue
                    last_data = time.monotonic()
                    if last_data >= next_lag:
                        self.lag()  # refreshes the lag gauges
                        next_lag = last_data + LAG_INTERVAL_S
                    records = self._check_errors(batch)
                    if not records:
                        continue
                    started = time.perf_counter()
                    handler(records)
                    batch_hist.observe(time.perf_counter() - started)
                    self._mark_processed(records)
                    self._maybe_commit()
            if before_close is not None:
                before_close()
            if self._commit_ready():
                self._commit(asynchronous=False)
        finally:
            self._consumer.close()
        return self.stats

    def _caught_up(self) -> bool:
        """True when this member read each of its partitions up to its high watermark, and
        the group is done with every partition of its topics.

        A partition nothing was consumed from since its assignment has no position yet
        (``OFFSET_INVALID``): it started where its sink's offsets or the group's committed
        offset put it, so that start counts as its position. Without this a member that
        finds its group already at the end (an earlier run finished the work) never stops.

        The group check matters after a crash: the crashed member stays in the group until
        its session times out and keeps some partitions meanwhile, so a new member can be at
        the end of all it holds with the crashed member's share still to do.
        """
        if not self._assigned:
            return False
        for tp in self._consumer.position(self._assigned):
            low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                return False  # not fetched yet
            position = tp.offset if tp.offset >= 0 else self._start_of(tp, low, high)
            if position < high:
                return False
        return self._group_done()

    def _group_done(self) -> bool:
        """True when every partition of the topics this member does not hold is done up to
        its exact end: committed by the group, or held by the offsets the caller keeps
        (``done_offsets``). Asks the broker at most every :data:`GROUP_CHECK_S`, and only once
        this member committed everything it processed."""
        now = time.monotonic()
        if self._processed or now < self._next_group_check:
            return False
        self._next_group_check = now + GROUP_CHECK_S
        ck = _ck()
        mine = {(tp.topic, tp.partition) for tp in self._assigned}
        meta = self._consumer.list_topics(timeout=10).topics
        tps = [ck.TopicPartition(t, p) for t in self.topics if t in meta
               for p in sorted(meta[t].partitions) if (t, p) not in mine]
        if not tps:
            return True
        done = {(tp.topic, tp.partition): tp.offset
                for tp in self._consumer.committed(tps, timeout=10)}
        if self._done_offsets is not None:
            for key, offset in self._done_offsets(tps).items():
                done[key] = max(done.get(key, -1), offset)
        ends = exact_ends(self._settings, self._bootstrap, list(done))
        return all(done[key] >= end for key, end in ends.items() if end > 0)

    def _start_of(self, tp: TopicPartition, low: int, high: int) -> int:
        """Where ``tp`` started: the offset ``start_offsets`` gave (the end or the beginning
        when it gave those), else the group's committed one, else the low watermark (a group
        without offsets reads from the beginning)."""
        ck = _ck()
        key = (tp.topic, tp.partition)
        if key not in self._starts:
            committed = self._consumer.committed([ck.TopicPartition(*key)], timeout=10)[0]
            if committed.offset < 0:
                return low
            self._starts[key] = committed.offset
        start = self._starts[key]
        if start == ck.OFFSET_END:
            return high
        return low if start < 0 else start

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Partitions lost (session timed out): their offsets may no longer be committed.
        self._processed = {}
        self._assigned = []
        if self._user_on_lost:
            self._user_on_lost(partitions)

    def _check_errors(self, batch: list[Message]) -> list[Message]:
        ck = _ck()
        records = []
        for msg in batch:
            err = msg.error()
            if err is None:
                records.append(msg)
            elif err.code() == ck.KafkaError._PARTITION_EOF:
                continue
            elif err.fatal() or not err.retriable():
                hint = ""
                if err.code() == ck.KafkaError.INCONSISTENT_GROUP_PROTOCOL:
                    hint = (" (the group's members use another assignor: members of another "
                            "client, such as the Faust engine under the same app id, are still "
                            "in it; stop them and wait for their session timeout)")
                raise StreamError(
                    f"consumer of group {self.group_id} on {msg.topic()}[{msg.partition()}]: "
                    f"{err.str()}{hint}"
                )
        return records

    def _mark_processed(self, records: list[Message]) -> None:
        processed = self._processed
        counts: dict[str, int] = {}
        for msg in records:
            topic: str = msg.topic()  # type: ignore[assignment]  # set on consumed records
            processed[(topic, msg.partition())] = msg.offset() + 1  # type: ignore[index,operator]
            counts[topic] = counts.get(topic, 0) + 1
        for topic, n in counts.items():
            m = self._m_in.get(topic) or metrics.RECORDS_IN.labels(topic, self.group_id)
            m.inc(n)
        self.stats.records += len(records)
        self.stats.batches += 1


class TopicAdmin:
    """Creates and describes topics from the catalog."""

    def __init__(self, settings: KafkaSettings, bootstrap_servers: str) -> None:
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self._admin = require("confluent_kafka.admin", "kafka").AdminClient(  # type: ignore[attr-defined]
            settings.client_config(bootstrap_servers)
        )

    def wait_ready(self, timeout: float = 10.0) -> dict[str, int]:
        """Wait until the brokers answer; returns topic name -> partition count.

        Raises:
            BrokerUnavailableError: no answer within ``timeout``.
        """
        try:
            md = self._admin.list_topics(timeout=timeout)
        except _ck().KafkaException as exc:
            raise BrokerUnavailableError(self.bootstrap_servers, str(exc)) from exc
        return {name: len(t.partitions) for name, t in md.topics.items() if not t.error}

    def ensure(self, specs: Iterable[TopicSpec], timeout: float = 30.0) -> dict[str, str]:
        """Create the topics that do not exist; returns name -> ``created`` | ``exists``.

        Raises:
            TopicAdminError: the broker refused a topic for another reason.
        """
        ck = _ck()
        admin_mod = require("confluent_kafka.admin", "kafka")
        existing = self.wait_ready(timeout)
        result: dict[str, str] = {}
        new = []
        for spec in specs:
            if spec.name in existing:
                result[spec.name] = "exists"
            else:
                new.append(
                    admin_mod.NewTopic(  # type: ignore[attr-defined]
                        spec.name,
                        num_partitions=spec.partitions,
                        replication_factor=spec.replication_factor,
                        config=spec.topic_config(),
                    )
                )
        if new:
            futures = self._admin.create_topics(new, operation_timeout=timeout)
            for name, fut in futures.items():
                try:
                    fut.result()
                    result[name] = "created"
                except ck.KafkaException as exc:
                    if exc.args[0].code() == ck.KafkaError.TOPIC_ALREADY_EXISTS:
                        result[name] = "exists"
                    else:
                        raise TopicAdminError(name, exc.args[0].str()) from exc
        return result

    def describe_config(self, topic: str) -> dict[str, str]:
        """The topic's configs as the broker reports them."""
        admin_mod = require("confluent_kafka.admin", "kafka")
        res = admin_mod.ConfigResource("topic", topic)  # type: ignore[attr-defined]
        try:
            entries = self._admin.describe_configs([res])[res].result()
        except _ck().KafkaException as exc:
            raise TopicAdminError(topic, exc.args[0].str()) from exc
        return {k: v.value for k, v in entries.items() if v.value is not None}


def fetched_high_watermarks(
    settings: KafkaSettings, bootstrap_servers: str,
    starts: Mapping[tuple[str, int], int | None], timeout_s: float = 5.0,
) -> dict[tuple[str, int], tuple[int, int]]:
    """Low and high watermark per partition, the high one taken from a fetch response.

    ListOffsets answers wrongly on some Kafka-compatible brokers (the embedded one reports the
    start of the last batch plus one); the high watermark a fetch response carries is exact on
    every broker. One fetch per partition, from ``starts[tp]`` (None: the beginning), fills it.
    Fetch near the end (the ListOffsets answer minus one) to keep the fetch small.
    """
    ck = _ck()
    conf = settings.client_config(bootstrap_servers)
    conf.update({"group.id": "refluent-watermarks", "enable.auto.commit": False,
                 "enable.partition.eof": True})
    consumer = ck.Consumer(conf)
    try:
        tps = sorted(starts)
        consumer.assign([ck.TopicPartition(t, p, ck.OFFSET_BEGINNING if starts[(t, p)] is None
                                           else max(int(starts[(t, p)] or 0), 0))
                         for t, p in tps])
        deadline = time.monotonic() + timeout_s
        answered: set[tuple[str, int]] = set()
        while len(answered) < len(tps) and time.monotonic() < deadline:
            for msg in consumer.consume(100, 0.2):
                if msg.error() is None or msg.error().code() == ck.KafkaError._PARTITION_EOF:
                    answered.add((msg.topic(), msg.partition()))
        out: dict[tuple[str, int], tuple[int, int]] = {}
        for topic, partition in tps:
            tp = ck.TopicPartition(topic, partition)
            low, high = consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            out[(topic, partition)] = (low, high)
        return out
    finally:
        consumer.close()


def committed_or_start(settings: KafkaSettings, bootstrap_servers: str, group_id: str,
                       partitions: Sequence[tuple[str, int]], timeout_s: float = 10.0
                       ) -> dict[tuple[str, int], int]:
    """Where ``group_id`` resumes each partition: its committed offset, else the partition's
    low watermark (a group without offsets reads from the beginning). Asks the broker, not a
    member's own bookkeeping; joins no group."""
    ck = _ck()
    conf = settings.client_config(bootstrap_servers)
    conf.update({"group.id": group_id, "enable.auto.commit": False})
    consumer = ck.Consumer(conf)
    try:
        tps = [ck.TopicPartition(t, p) for t, p in partitions]
        out: dict[tuple[str, int], int] = {}
        for tp in consumer.committed(tps, timeout=timeout_s):
            if tp.offset >= 0:
                out[(tp.topic, tp.partition)] = tp.offset
            else:
                low, _ = consumer.get_watermark_offsets(tp, timeout=timeout_s)
                out[(tp.topic, tp.partition)] = max(low, 0)
        return out
    finally:
        consumer.close()


def read_range(settings: KafkaSettings, bootstrap_servers: str, topic: str, partition: int,
               start: int, end: int, timeout_s: float = 10.0) -> list[Message]:
    """The records of one partition with ``start <= offset < end``, read directly (no group).

    Offsets in the range that hold no record (compaction, transaction markers) are simply
    absent from the answer. For an engine that must prove what lies in a hole its own consumer
    left, not for bulk reading.

    Raises:
        StreamError: the range could not be read within ``timeout_s``.
    """
    ck = _ck()
    if end <= start:
        return []
    conf = settings.client_config(bootstrap_servers)
    conf.update({"group.id": "refluent-range-reader", "enable.auto.commit": False,
                 "enable.partition.eof": True, **settings.large_fetch_config()})
    consumer = ck.Consumer(conf)
    out: list[Message] = []
    try:
        consumer.assign([ck.TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == ck.KafkaError._PARTITION_EOF:
                        return out
                    if err.fatal() or not err.retriable():
                        raise StreamError(f"reading {topic}[{partition}] {start}..{end}: "
                                          f"{err.str()}")
                    continue
                offset = msg.offset() or 0
                if offset >= end:
                    return out
                if offset >= start:
                    out.append(msg)
            if out and (out[-1].offset() or 0) >= end - 1:
                return out
        raise StreamError(f"reading {topic}[{partition}] {start}..{end}: no end within "
                          f"{timeout_s}s ({len(out)} record(s) read)")
    finally:
        consumer.close()


def exact_ends(settings: KafkaSettings, bootstrap_servers: str,
               partitions: Iterable[tuple[str, int]], timeout_s: float = 5.0
               ) -> dict[tuple[str, int], int]:
    """The end (next offset to be written) of each partition, exact on every broker.

    ListOffsets first; then one fetch of the last batch, whose response carries the true high
    watermark (the embedded broker's ListOffsets stops at the first record of that batch).
    A partition that does not exist counts as empty.
    """
    ck = _ck()
    wanted = sorted(set(partitions))
    conf = settings.client_config(bootstrap_servers)
    conf.update({"group.id": "refluent-watermarks", "enable.auto.commit": False})
    consumer = ck.Consumer(conf)
    listed: dict[tuple[str, int], int] = {}
    try:
        for tp in wanted:
            try:
                listed[tp] = consumer.get_watermark_offsets(ck.TopicPartition(*tp),
                                                            timeout=timeout_s)[1]
            except ck.KafkaException as exc:
                if exc.args[0].code() != ck.KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
                listed[tp] = 0
    finally:
        consumer.close()
    starts: dict[tuple[str, int], int | None] = {tp: end - 1 for tp, end in listed.items()
                                                 if end > 0}
    marks = fetched_high_watermarks(settings, bootstrap_servers, starts, timeout_s) \
        if starts else {}
    return {tp: max(end, marks.get(tp, (0, 0))[1]) for tp, end in listed.items()}


def partition_offsets(
    settings: KafkaSettings, bootstrap_servers: str, topic: str, group_id: str | None = None
) -> list[dict[str, int | None]]:
    """Per partition: low and high watermark, and the group's committed offset and lag.

    The high watermark comes from a fetch response (exact on every broker), not ListOffsets.
    """
    ck = _ck()
    conf = settings.client_config(bootstrap_servers)
    conf.update({"group.id": group_id or "refluent-describe", "enable.auto.commit": False})
    consumer = ck.Consumer(conf)
    try:
        md = consumer.list_topics(topic, timeout=10)
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None:
            raise TopicAdminError(topic, "does not exist")
        tps = [ck.TopicPartition(topic, p) for p in sorted(meta.partitions)]
        committed = consumer.committed(tps, timeout=10) if group_id else []
    finally:
        consumer.close()
    marks = fetched_high_watermarks(settings, bootstrap_servers,
                                    {(topic, tp.partition): None for tp in tps})
    rows = []
    for i, tp in enumerate(tps):
        low, high = marks[(topic, tp.partition)]
        row: dict[str, int | None] = {"partition": tp.partition, "low": low, "high": high}
        if group_id:
            off = committed[i].offset
            row["committed"] = off if off >= 0 else None
            row["lag"] = high - (off if off >= 0 else low)
        rows.append(row)
    return rows


def group_lag(settings: KafkaSettings, bootstrap_servers: str, topics: Iterable[str],
              group_id: str) -> int:
    """Records of ``topics`` the group has not committed yet (a partition without a committed
    offset counts from its low watermark); 0 once the group committed every partition's end.
    """
    return sum(int(row["lag"] or 0) for topic in sorted(set(topics))
               for row in partition_offsets(settings, bootstrap_servers, topic, group_id))


def wait_until_committed(settings: KafkaSettings, bootstrap: str, topics: Iterable[str],
                         group: str, *,
                         timeout_s: float, what: str,
                         check: Callable[[], None] | None = None,
                         poll_s: float = 0.5) -> None:
    """Return once ``group`` has committed the end of every partition of ``topics`` (a
    service that commits only what it finished has then finished everything produced so far).

    Args:
        settings: Kafka client settings.
        bootstrap: The brokers.
        topics: The group's input topics.
        group: The consumer group.
        timeout_s: Longest wait.
        what: Who is waited for, for the error (``"the engine"``).
        check: Called before each poll; raises when the service died (see
            :meth:`~refluent.embedded.commands.RefluentCommand.check_alive`).
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
        lag = group_lag(settings, bootstrap, wanted, group)
        if lag == 0:
            return
        time.sleep(poll_s)
    raise NotCaughtUpError(what, group, wanted, lag, timeout_s)
