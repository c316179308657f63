"""The join's state in Redis: :class:`RedisJoinStore` (the connection, the in-process cache, the
ordered reads and writes, the progress record) and :class:`RedisJoinBatch` (one batch's view, a
:class:`~refluent.feedback.state.base.JoinState`), with the Lua scripts that read and write a
batch in one call each.

The scripts are loaded once (``SCRIPT LOAD`` at setup) and called by their SHA1 (``EVALSHA``);
a Redis that lost them (a restart, a failover, ``SCRIPT FLUSH``) answers ``NOSCRIPT``, and the
call is sent again behind a ``SCRIPT LOAD`` on the same connection, so the order of the reads
and writes is kept.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import SecretStr

from refluent.errors import require
from refluent.feedback.errors import FeedbackStoreError
from refluent.feedback.state.base import JoinState, PendingPrediction, WaitingLabel, label_target
from refluent.models.base import Scored
from refluent.streams.contracts import Feedback, Prediction
from refluent.streams.origin import Origin
from refluent.streams.serde import JsonSerde

if TYPE_CHECKING:
    from redis import Redis
    from redis.commands.core import Script

    from refluent.config import Settings
    from refluent.feedback.merge import TimedEvent

log = logging.getLogger(__name__)

_US_PER_S = 1_000_000
_NEVER = -(1 << 62)
_NO_REFS: frozenset[Origin] = frozenset()
_NEW, _FULL, _MARK = 1, 2, 4


def encode_answers(answers: Mapping[str, Scored]) -> bytes:
    """The learners' answers as JSON: ``{version: [score, label, probabilities]}``.

    Examples:
        >>> decode_answers(encode_answers({"3": Scored(0.75, True, {"False": 0.25, "True": 0.75})}))
        {'3': Scored(score=0.75, label=True, probabilities={'False': 0.25, 'True': 0.75})}
    """
    return orjson.dumps({v: [s.score, s.label, s.probabilities] for v, s in answers.items()})


def decode_answers(data: bytes | None) -> dict[str, Scored]:
    """Inverse of :func:`encode_answers` (empty for None)."""
    if not data:
        return {}
    return {v: Scored(s[0], s[1], s[2]) for v, s in orjson.loads(data).items()}


# KEYS are not declared: the store's keys live under one prefix on one Redis (standalone, or
# one shard), and a batch touches many of them in one atomic script.
PREFETCH_SCRIPT = """
local base = ARGV[1]
local page = tonumber(ARGV[2])
local i = 3
local out = {{}, {}, {}, {}}
local n = tonumber(ARGV[i]); i = i + 1
for j = 1, n do
  out[1][j] = redis.call('HGETALL', base .. 'p:' .. ARGV[i]); i = i + 1
end
n = tonumber(ARGV[i]); i = i + 1
for j = 1, n do
  out[2][j] = redis.call('SMEMBERS', base .. 'w:' .. ARGV[i]); i = i + 1
end
n = tonumber(ARGV[i]); i = i + 1
for j = 1, n do
  out[3][j] = redis.call('ZREVRANGEBYSCORE', base .. 'e:' .. ARGV[i], ARGV[i + 1], '-inf',
                         'WITHSCORES', 'LIMIT', 0, page)
  i = i + 2
end
n = tonumber(ARGV[i]); i = i + 1
for j = 1, n do
  out[4][j] = redis.call('ZRANGEBYSCORE', base .. 'dl:' .. ARGV[i], '-inf', '(' .. ARGV[i + 1])
  i = i + 2
end
return out
"""
"""ARGV: prefix, page size; then counted lists: prediction ids; waiting targets; entity pages
(entity, time µs); deadline indexes (``topic:partition``, clock µs). Returns the predictions'
hashes, the targets' members, the pages (member, score, ...) and the due labels."""

COMMIT_SCRIPT = """
local base = ARGV[1]
local ttl = ARGV[2]
local now = ARGV[3]
local batch = cmsgpack.unpack(ARGV[4])
local function int(n) return string.format('%d', n) end
for _, p in ipairs(batch[1]) do
  local pid = p[1]
  local mode = p[2]
  local k = base .. 'p:' .. pid
  if mode == 'm' then
    if redis.call('EXISTS', k) == 1 then
      redis.call('HSET', k, 'j', p[9])
    end
  else
    redis.call('HSET', k, 'd', p[6], 's', p[7], 'a', p[8], 'j', p[9])
    redis.call('PEXPIRE', k, ttl)
    if mode == 'n' then
      local ek = base .. 'e:' .. p[3]
      redis.call('ZADD', ek, int(p[4]), pid)
      if p[5] then
        redis.call('ZREMRANGEBYSCORE', ek, '-inf', '(' .. int(p[5]))
        redis.call('PEXPIRE', ek, ttl)
      end
    end
  end
end
for _, w in ipairs(batch[2]) do
  local ref = w[1]
  local lk = base .. 'l:' .. ref
  redis.call('HSET', lk, 'd', w[2], 's', ref, 'k', w[3], 'hk', w[4], 'dl', int(w[5]),
             'st', w[6], 'c', w[7])
  redis.call('PEXPIRE', lk, ttl)
  if w[8] then
    local tk = base .. 'w:' .. w[9]
    redis.call('SADD', tk, ref)
    redis.call('PEXPIRE', tk, ttl)
    redis.call('ZADD', base .. 'wi', now, w[9])
  end
  local dk = base .. 'dl:' .. w[10]
  if w[6] == 'waiting' then
    redis.call('ZADD', dk, int(w[5]), ref)
  else
    redis.call('ZREM', dk, ref)
  end
end
for _, o in ipairs(batch[3]) do
  redis.call('ZREM', base .. 'dl:' .. o[1], o[2])
end
local n = 0
for _, pair in ipairs(batch[5]) do
  redis.call('HSET', base .. 'progress:' .. batch[4], pair[1], int(pair[2]))
  n = n + 1
end
return n
"""
"""ARGV: prefix, TTL ms, now ms, then the batch as one MessagePack array (one argument: the
client packs it in C instead of one protocol argument per field) of: predictions (id, mode:
``n`` new, ``f`` whole, ``m`` only the joined mark; entity, time µs, prune-below µs or false
(the entity's index was pruned by an earlier record of the batch), value, source, answers,
joined by); labels (source, value, key, has key ``1``/``0``, deadline µs, status, changed by,
new, target, ``topic:partition``); orphans (``topic:partition``, member); the progress group;
progress (field, offset) pairs. Integers are formatted in the script: Lua numbers are doubles
and would otherwise reach Redis in ``%.14g``."""


class RedisJoinStore:
    """The join's state in Redis.

    Layout under ``{key_prefix}:fb:``: ``p:<prediction id>`` a hash (the prediction as consumed,
    its source, the label that joined it, the learners' answers); ``e:<entity>`` a sorted set
    of the entity's prediction ids by prediction time; ``l:<topic:partition:offset>`` a hash per
    waiting label; ``w:p:<id>`` / ``w:e:<entity>`` the sets of labels waiting for a prediction
    or an entity; ``dl:<topic>:<partition>`` waiting labels by deadline; ``progress:<group>``
    the next offset per input partition whose outputs were delivered. Every key but the
    deadline and progress indexes expires ``ttl_s`` after its last write.

    A batch costs one script call to read (:meth:`begin`; a second round trip only for waiting
    labels and entity predictions it has not seen) and one atomic script call to write
    (:meth:`RedisJoinBatch.commit`), whatever its size, each sent as ``EVALSHA``; both go over
    one connection, in order,
    and a deferred write runs while the next batch is processed (see :meth:`begin`). Pending
    predictions this process wrote are also kept in an in-process cache of ``cache_size``
    entries, so a label usually finds its prediction without a read; Redis stays the truth (a
    restarted process, or one whose write failed, starts with an empty cache). The keys of one
    store must live on one Redis server or shard (the scripts touch many keys atomically).

    Args:
        url: Redis URL (see :func:`refluent.online_store.redis.connect`).
        ttl_s: How long a pending prediction or waiting label is kept.
        password: Password when it is not in the URL; never logged.
        key_prefix: Prefix of every key.
        page: Entity predictions read per round trip.
        cache_size: Pending predictions kept in process (0: none).
    """

    def __init__(self, url: str, ttl_s: float, *, password: SecretStr | None = None,
                 key_prefix: str = "rf", page: int = 16, cache_size: int = 100_000) -> None:
        from refluent.config import safe_url

        self.url = url
        self.name = safe_url(url)
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self.ttl_us = round(ttl_s * _US_PER_S)
        self.password = password
        self.base = f"{key_prefix}:fb:" if key_prefix else "fb:"
        self.page = page
        self.cache_size = cache_size
        self.cache: OrderedDict[str, PendingPrediction] = OrderedDict()
        self.waiting_targets: set[str] = set()
        """Targets (``p:<id>``, ``e:<entity>``) that have had a waiting label within the TTL;
        loaded at setup from the ``wi`` index and kept up to date by this process."""
        self._client: Redis | None = None
        self._prefetch: Script | None = None
        self._commit: Script | None = None
        self._conn: Any = None
        self._queued: _Committed | None = None
        self._inflight: tuple[_Committed, bool] | None = None
        """The write handed to the ordered connection and not confirmed, and whether it was
        sent (a send that failed is retried by the confirmation)."""
        self.predictions = JsonSerde(Prediction)
        self.feedback = JsonSerde(Feedback)

    @classmethod
    def from_settings(cls, settings: Settings, url: str | None = None) -> RedisJoinStore:
        """A store on ``settings.redis`` (else the embedded Redis) with
        ``feedback.pending_ttl_s``."""
        if url is None:
            from refluent.embedded.services import resolve_redis_url

            url = resolve_redis_url(settings)
        return cls(url, settings.feedback.pending_ttl_s, password=settings.redis.password,
                   key_prefix=settings.redis.key_prefix)

    # -- lifecycle -----------------------------------------------------------------------------
    def setup(self) -> None:
        """Connect, check that Redis answers and load the scripts (called by SHA from then on).

        Raises:
            FeedbackStoreError: it does not.
        """
        from refluent.online_store.redis import connect

        self._client = client = connect(self.url, self.password)
        self._call("connecting", lambda: client.ping())
        scripts = [client.register_script(PREFETCH_SCRIPT), client.register_script(COMMIT_SCRIPT)]
        self._call("loading the scripts", lambda: [client.script_load(s.script) for s in scripts])
        self._prefetch, self._commit = scripts
        self.load_waiting_index()

    def load_waiting_index(self) -> None:
        """Read which predictions and entities have had labels waiting for them (within the
        TTL), so a batch asks Redis only about those."""
        key = f"{self.base}wi"
        horizon = int(time.time() * 1000) - self.ttl_ms

        def read() -> list[bytes]:
            pipe = self.client.pipeline(transaction=False)
            pipe.zremrangebyscore(key, "-inf", f"({horizon}")
            pipe.zrange(key, 0, -1)
            members: list[bytes] = pipe.execute()[1]
            return members

        self.waiting_targets = {m.decode() for m in self._call("reading the waiting index",
                                                               read)}

    @property
    def client(self) -> Redis:
        """The redis-py client (after :meth:`setup`)."""
        if self._client is None:
            raise FeedbackStoreError(self.name, "using the store", "not set up; call setup()")
        return self._client

    def close(self) -> None:
        """Write what is still queued (a failure is logged), close the connections and forget
        the cache."""
        if self._client is not None and self.pending_writes():
            try:
                self.sync()
            except FeedbackStoreError as exc:
                log.warning("the last batch's join state was not written: %s", exc)
        self.cache.clear()
        self._queued = self._inflight = None
        if self._conn is not None and self._client is not None:
            self._client.connection_pool.release(self._conn)
        self._conn = None
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- the ordered connection ----------------------------------------------------------------
    # Batches read (prefetch script) and write (commit script) on one connection, so Redis runs
    # them in the order they were sent; replies are read in that order.
    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self.client.connection_pool.get_connection()
        return self._conn

    def _send(self, commands: Sequence[tuple[Any, ...]]) -> None:
        conn = self._connection()
        conn.send_packed_command(conn.pack_commands(commands))

    def _read(self) -> Any:
        return self._connection().read_response()

    def _script(self, script: Script | None) -> Script:
        if script is None:
            raise FeedbackStoreError(self.name, "using the store", "not set up; call setup()")
        return script

    def _send_script(self, script: Script | None, args: Sequence[Any]) -> None:
        """Send a call of ``script`` by its SHA1 (``EVALSHA``): the source goes over the wire
        only when Redis asks for it (see :meth:`_read_script`)."""
        self._send([("EVALSHA", self._script(script).sha, 0, *args)])

    def _read_script(self, script: Script | None, args: Sequence[Any]) -> Any:
        """Read the reply of a call sent by :meth:`_send_script`. A Redis that lost the script
        (restart, failover, ``SCRIPT FLUSH``) answers ``NOSCRIPT`` without running anything:
        the script is loaded and the call sent again on the same connection, before anything
        else is sent on it, so the reads and writes keep their order."""
        from redis.exceptions import NoScriptError

        try:
            return self._read()
        except NoScriptError:
            found = self._script(script)
            self._send([("SCRIPT", "LOAD", found.script), ("EVALSHA", found.sha, 0, *args)])
            self._read()
            return self._read()

    def _send_write(self, committed: _Committed) -> None:
        self._send_script(self._commit, committed.args)

    def _ordered(self, doing: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` on the ordered connection under the client's retry policy (a connection
        error or timeout runs it again on a new connection, with backoff); ``fn`` must be safe
        to run again (the reads are, and so is a write: the script is idempotent).

        Raises:
            FeedbackStoreError: it still failed, or Redis answered with an error.
        """
        def attempt() -> Any:
            conn = self._connection()
            return conn.retry.call_with_retry(fn, lambda _exc: conn.disconnect())

        return self._call(doing, attempt)

    def _write(self, committed: _Committed, sent: bool) -> None:
        """Confirm ``committed`` (sending it first unless ``sent``); after a connection error it
        is sent again, since it may or may not have run."""
        def run() -> None:
            nonlocal sent
            if not sent:
                self._send_write(committed)
            sent = False  # a retry sends it again
            self._read_script(self._commit, committed.args)

        try:
            self._ordered("writing a batch", run)
        except FeedbackStoreError:
            self._forget()
            raise

    def _read_batch(self, args: Sequence[Any]) -> Any:
        """Run the read script for a batch, then hand the queued write over: sent once the
        read has answered (Redis answers a pipeline only once it ran all of it), confirmed by
        :meth:`confirm`."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        self.confirm()
        queued, self._queued = self._queued, None

        def read() -> Any:
            self._send_script(self._prefetch, args)
            return self._read_script(self._prefetch, args)

        try:
            replies = self._ordered("reading the batch's state", read)
        except FeedbackStoreError:
            self._forget()
            raise
        if queued is not None:
            try:
                self._send_write(queued)
                self._inflight = (queued, True)
            except (RedisConnectionError, RedisTimeoutError):
                self._connection().disconnect()
                self._inflight = (queued, False)  # confirm() sends it again
        return replies

    def _queue(self, committed: _Committed) -> None:
        """Keep ``committed`` for the next batch's read to hand over (at most one waits)."""
        if self._queued is not None:
            self.sync()
        self._queued = committed

    def _forget(self) -> None:
        """After a failed write: nothing cached can be trusted to be in Redis."""
        self.cache.clear()
        self._queued = self._inflight = None

    def confirm(self) -> None:
        """Wait until the write handed over by the last :meth:`begin` is done.

        Raises:
            FeedbackStoreError: a write failed; nothing of that batch was written.
        """
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            self._write(*inflight)

    def sync(self) -> None:
        """Send the queued commit, if any, and wait until everything committed is written.

        Raises:
            FeedbackStoreError: a write failed; nothing of that batch was written.
        """
        self.confirm()
        queued, self._queued = self._queued, None
        if queued is not None:
            self._write(queued, sent=False)

    def pending_writes(self) -> bool:
        """Whether a committed batch is not known to be written yet."""
        return self._queued is not None or self._inflight is not None

    def _call(self, doing: str, fn: Callable[[], Any]) -> Any:
        from redis.exceptions import RedisError

        try:
            return fn()
        except RedisError as exc:
            raise FeedbackStoreError(self.name, doing, f"{type(exc).__name__}: {exc}") from exc

    def remember(self, pending: PendingPrediction) -> None:
        """Keep ``pending`` in the cache (the most recent ``cache_size``)."""
        self.remember_all((pending,))

    def remember_all(self, pendings: Iterable[PendingPrediction]) -> None:
        """Keep ``pendings`` in the cache, in order (the most recent ``cache_size``)."""
        if not self.cache_size:
            return
        cache = self.cache
        for pending in pendings:
            pid = pending.prediction.prediction_id
            cache[pid] = pending
            cache.move_to_end(pid)
        while len(cache) > self.cache_size:
            cache.popitem(last=False)

    # -- progress ------------------------------------------------------------------------------
    def progress(self, group: str) -> dict[tuple[str, int], int]:
        """The next offset per input partition whose outputs were delivered, for ``group``."""
        raw = self._call("reading progress", lambda: self.client.hgetall(
            f"{self.base}progress:{group}"))
        out = {}
        for name, offset in raw.items():
            topic, _, partition = name.decode().rpartition(":")
            out[(topic, int(partition))] = int(offset)
        return out

    # -- batches -------------------------------------------------------------------------------
    def begin(self, events: Sequence[TimedEvent], *, clock_us: int | None,
              feedback_partitions: Collection[tuple[str, int]] = ()) -> RedisJoinBatch:
        """A state for ``events``: what they will look up is read now (see the class
        docstring).

        A commit queued with ``RedisJoinBatch.commit(defer=True)`` is sent as soon as this
        batch's read script has answered, on the same connection: Redis runs the write while
        the batch is processed. What the queued batch wrote is then missing from the read; the
        new batch takes it from the queued batch instead (its records, labels, targets, entity
        entries and orphans take precedence over anything read). :meth:`confirm` waits for the
        write.

        Args:
            events: The batch, in merge order.
            clock_us: The join's clock before the batch.
            feedback_partitions: Feedback partitions whose due labels the batch may expire.
        """
        batch = RedisJoinBatch(self, self._queued)
        bound = max([clock_us or _NEVER] + [e.key[0] for e in events])
        batch.prefetch(events, bound, feedback_partitions)
        return batch

    def decode_prediction(self, fields: Mapping[bytes, bytes]) -> PendingPrediction | None:
        """A pending prediction from its hash (None for an empty one)."""
        raw = fields.get(b"d")
        src = fields.get(b"s")
        if raw is None or src is None:
            return None
        prediction = self.predictions.decode(raw)
        assert prediction is not None  # noqa: S101 - predictions are never tombstones
        joined = fields.get(b"j")
        return PendingPrediction(prediction, Origin.parse(src), raw,
                                 Origin.parse(joined) if joined else None,
                                 decode_answers(fields.get(b"a")))

    def decode_label(self, fields: Mapping[bytes, bytes]) -> WaitingLabel | None:
        """A waiting label from its hash (None for an empty one)."""
        raw = fields.get(b"d")
        src = fields.get(b"s")
        if raw is None or src is None:
            return None
        feedback = self.feedback.decode(raw)
        assert feedback is not None  # noqa: S101 - labels are never tombstones
        changed = fields.get(b"c")
        key = fields.get(b"k") if fields.get(b"hk") == b"1" else None
        return WaitingLabel(feedback, Origin.parse(src), raw, key, int(fields[b"dl"]),
                            fields[b"st"].decode(),  # type: ignore[arg-type]
                            Origin.parse(changed) if changed else None)


def _pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


@dataclass(slots=True)
class _Committed:
    """A committed batch's writes: the commit script's arguments, and what the next batch
    takes from it while the write may not have run yet (see :meth:`RedisJoinStore.begin`)."""

    args: list[Any]
    preds: dict[str, PendingPrediction]
    labels: dict[Origin, WaitingLabel]
    new_refs: dict[str, set[Origin]]
    """Per target, the labels that started waiting for it in the batch."""
    new_by_entity: dict[str, dict[str, int]]
    orphans: frozenset[Origin]


class RedisJoinBatch(JoinState):
    """One batch's view of :class:`RedisJoinStore`: reads are served from what
    :meth:`prefetch` loaded (and, for anything it missed, fetched on demand); writes are kept
    until :meth:`commit` sends them in one atomic script call.

    ``orphans`` lists due labels whose record had already expired from Redis; the service
    dead-letters them by their coordinates.
    """

    def __init__(self, store: RedisJoinStore, previous: _Committed | None = None) -> None:
        self.store = store
        self.base = store.base
        self._previous = previous
        self._preds: dict[str, PendingPrediction | None] = {}
        self._labels: dict[Origin, WaitingLabel | None] = {}
        # A target known to have no waiting label maps to the shared empty _NO_REFS.
        self._targets: dict[str, AbstractSet[Origin]] = {}
        self._entity_pages: dict[tuple[str, int], list[tuple[int, str]]] = {}
        self._new_by_entity: dict[str, dict[str, int]] = {}
        self._due: list[Origin] = []
        self._carried: AbstractSet[Origin] = _NO_REFS
        self._dirty_preds: dict[str, int] = {}
        self._dirty_labels: dict[Origin, bool] = {}
        self.orphans: list[Origin] = []
        self._orphan_set: set[Origin] = set()
        if previous is not None:  # its writes may not have run when this batch reads
            self._preds.update(previous.preds)
            self._labels.update(previous.labels)
            self._new_by_entity = {e: dict(d) for e, d in previous.new_by_entity.items()}
            self._carried = previous.labels.keys()
            self._orphan_set = set(previous.orphans)

    def _with_previous(self, target: str, refs: set[Origin]) -> set[Origin]:
        """``refs`` read for ``target`` plus the labels the previous batch added to it."""
        if self._previous is not None:
            added = self._previous.new_refs.get(target)
            if added:
                refs |= added
        return refs

    # -- reading -------------------------------------------------------------------------------
    def prefetch(self, events: Sequence[TimedEvent], clock_bound_us: int,
                 feedback_partitions: Collection[tuple[str, int]]) -> None:
        """Load what ``events`` will look up (one script call, and a pipelined second round
        for waiting labels and entity predictions not in the cache)."""
        cache = self.store.cache
        known = self.store.waiting_targets
        pids: dict[str, None] = {}
        targets: dict[str, None] = {}
        pages: dict[tuple[str, int], None] = {}
        own = self._targets
        for e in events:
            event = e.event
            if event is None:
                continue
            if isinstance(event, Prediction):
                pid = event.prediction_id
                pids[pid] = None
                for target in ("p:" + pid, "e:" + event.entity_id):
                    if target in known:
                        targets[target] = None
                    elif target not in own:
                        own[target] = _NO_REFS
            elif event.prediction_id is not None:
                pids[event.prediction_id] = None
            else:
                pages[(event.entity_id or "", e.key[0])] = None
        fetch = []
        for pid in pids:
            if pid in self._preds:
                continue  # written by the previous batch
            hit = cache.get(pid)
            if hit is not None:
                self._preds[pid] = hit
            else:
                fetch.append(pid)
        due = [f"{t}:{p}" for t, p in sorted(feedback_partitions)]
        args: list[Any] = [self.base, self.store.page, len(fetch), *fetch, len(targets),
                           *targets, len(pages)]
        for entity, at in pages:
            args += [entity, at]
        args.append(len(due))
        for suffix in due:
            args += [suffix, clock_bound_us]
        replies = self.store._read_batch(args)
        decode = self.store.decode_prediction
        preds = self._preds
        for pid, flat in zip(fetch, replies[0], strict=True):
            preds[pid] = decode(_pairs(flat)) if flat else None
        label_refs: set[Origin] = set()
        for target, members in zip(targets, replies[1], strict=True):
            refs = self._with_previous(target, {Origin.parse(m) for m in members})
            self._targets[target] = refs
            label_refs |= refs
        more_pids: set[str] = set()
        for page, flat in zip(pages, replies[2], strict=True):
            found = [(round(float(score)), m.decode()) for m, score in zip(
                flat[::2], flat[1::2], strict=True)]
            self._entity_pages[page] = found
            more_pids |= {pid for _, pid in found if pid not in self._preds}
        for members in replies[3]:
            due_refs = [Origin.parse(m) for m in members]
            self._due += due_refs
            label_refs |= set(due_refs)
        self._load(sorted(more_pids), sorted(r for r in label_refs if r not in self._labels))

    def _load(self, pids: Sequence[str], refs: Sequence[Origin]) -> None:
        cache = self.store.cache
        missing = []
        for pid in pids:
            hit = cache.get(pid)
            if hit is not None:
                self._preds[pid] = hit
            else:
                missing.append(pid)
        if not missing and not refs:
            return
        client, base = self.store.client, self.base

        def read() -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for pid in missing:
                pipe.hgetall(f"{base}p:{pid}")
            for ref in refs:
                pipe.hgetall(f"{base}l:{ref.text()}")
            return pipe.execute()  # type: ignore[no-any-return,unused-ignore]

        replies = iter(self.store._call("reading pending records", read))
        for pid in missing:
            self._preds[pid] = self.store.decode_prediction(next(replies))
        for ref in refs:
            self._labels[ref] = self.store.decode_label(next(replies))

    def prediction(self, prediction_id: str) -> PendingPrediction | None:
        """See :meth:`JoinState.prediction`."""
        try:
            return self._preds[prediction_id]
        except KeyError:
            self._load([prediction_id], [])
            return self._preds[prediction_id]

    def entity_predictions(self, entity_id: str, at_or_before_us: int
                           ) -> Iterator[PendingPrediction]:
        """See :meth:`JoinState.entity_predictions`: the stored ones merged with the batch's
        new ones, latest first (equal times by id, as Redis orders them)."""
        new = sorted(((ts, pid) for pid, ts in self._new_by_entity.get(entity_id, {}).items()
                      if ts <= at_or_before_us), reverse=True)
        seen: set[str] = set()
        for _, pid in heapq.merge(new, self._stored_entity(entity_id, at_or_before_us),
                                  reverse=True):
            if pid in seen:
                continue
            seen.add(pid)
            found = self.prediction(pid)
            if found is not None:
                yield found

    def _stored_entity(self, entity_id: str, at_us: int) -> Iterator[tuple[int, str]]:
        page_size = self.store.page
        first = self._entity_pages.get((entity_id, at_us))
        if first is None:
            first = self._fetch_page(entity_id, at_us, 0)
            self._entity_pages[(entity_id, at_us)] = first
        yield from first
        start = len(first)
        while start and start % page_size == 0:
            page = self._fetch_page(entity_id, at_us, start)
            yield from page
            if len(page) < page_size:
                return
            start += len(page)

    def _fetch_page(self, entity_id: str, at_us: int, start: int) -> list[tuple[int, str]]:
        key = f"{self.base}e:{entity_id}"
        rows = self.store._call("reading an entity's predictions", lambda: self.store.client
                                .zrevrangebyscore(key, at_us, "-inf", start=start,
                                                  num=self.store.page, withscores=True))
        return [(round(score), m.decode()) for m, score in rows]

    def waiting_for(self, prediction_id: str, entity_id: str) -> list[WaitingLabel]:
        """See :meth:`JoinState.waiting_for`."""
        targets = self._targets
        by_id = targets.get("p:" + prediction_id)
        if by_id is None:
            by_id = targets["p:" + prediction_id] = self._fetch_target("p:" + prediction_id)
        by_entity = targets.get("e:" + entity_id)
        if by_entity is None:
            by_entity = targets["e:" + entity_id] = self._fetch_target("e:" + entity_id)
        if not by_id and not by_entity:
            return []
        refs = {*by_id, *by_entity}
        missing = sorted(r for r in refs if r not in self._labels)
        self._load([], missing)
        return [label for r in refs if (label := self._labels[r]) is not None]

    def _fetch_target(self, target: str) -> set[Origin]:
        key = f"{self.base}w:{target}"
        members = self.store._call("reading waiting labels",
                                   lambda: self.store.client.smembers(key))
        return self._with_previous(target, {Origin.parse(m) for m in members})

    def due_waiting(self, clock_us: int,
                    partitions: Collection[tuple[str, int]] | None = None) -> list[WaitingLabel]:
        """See :meth:`JoinState.due_waiting`: the due labels read by :meth:`prefetch` and the
        batch's own, still waiting."""
        refs = set(self._due) | {r for r, new in self._dirty_labels.items() if new}
        refs |= self._carried  # the previous batch's labels, possibly not in the index yet
        out = []
        for ref in refs:
            if partitions is not None and (ref.topic, ref.partition) not in partitions:
                continue
            label = self._labels.get(ref)
            if label is None:
                if ref in self._due and ref not in self._orphan_set:
                    self._orphan_set.add(ref)
                    self.orphans.append(ref)
                continue
            if label.status == "waiting" and label.deadline_us < clock_us:
                out.append(label)
        return sorted(out, key=lambda w: (w.deadline_us, w.source))

    # -- writing -------------------------------------------------------------------------------
    def save_prediction(self, pending: PendingPrediction, *, new: bool) -> None:
        """See :meth:`JoinState.save_prediction` (written by :meth:`commit`)."""
        pid = pending.prediction_id
        self._preds[pid] = pending
        self._dirty_preds[pid] = self._dirty_preds.get(pid, 0) | (_NEW if new else _FULL)
        if new:
            entity = pending.prediction.entity_id
            self._new_by_entity.setdefault(entity, {})[pid] = pending.ts_us

    def mark_joined(self, pending: PendingPrediction) -> None:
        """See :meth:`JoinState.mark_joined`: only the mark is written, unless the record is
        written whole anyway."""
        pid = pending.prediction_id
        self._preds[pid] = pending
        self._dirty_preds[pid] = self._dirty_preds.get(pid, 0) | _MARK

    def save_waiting(self, label: WaitingLabel, *, new: bool) -> None:
        """See :meth:`JoinState.save_waiting` (written by :meth:`commit`)."""
        self._labels[label.source] = label
        self._dirty_labels[label.source] = self._dirty_labels.get(label.source, False) or new
        if new:
            target = label_target(label.feedback)
            refs = self._targets.get(target)
            if isinstance(refs, set):
                refs.add(label.source)
            else:  # unknown, or the shared _NO_REFS
                self._targets[target] = {label.source}

    def commit(self, progress: Mapping[tuple[str, int], int] | None = None,
               group: str = "", *, defer: bool = False) -> None:
        """Write the batch's changes (and ``progress`` for ``group``) in one atomic script.

        Args:
            progress: Next offset per input partition whose outputs are delivered.
            group: The consumer group the progress belongs to.
            defer: Queue the write: the next :meth:`RedisJoinStore.begin` sends it behind its
                read (see there); :meth:`RedisJoinStore.confirm` or
                :meth:`RedisJoinStore.sync` waits for it.

        Raises:
            FeedbackStoreError: Redis failed; nothing was written, and the batch is replayed
                after a restart (with ``defer``, raised by the call that waits for it).
        """
        store = self.store
        ttl_us = store.ttl_us
        preds = self._preds
        saved: dict[str, PendingPrediction] = {}
        new_by_entity: dict[str, dict[str, int]] = {}
        rows: list[list[Any]] = []
        for pid, flags in self._dirty_preds.items():
            p = preds[pid]
            assert p is not None  # noqa: S101 - only saved records are dirty
            saved[pid] = p
            joined = p.joined_by.text() if p.joined_by is not None else ""
            if flags & (_NEW | _FULL):
                ts = p.ts_us
                entity = p.prediction.entity_id
                prune: int | bool = False
                if flags & _NEW:
                    mine = new_by_entity.get(entity)
                    if mine is None:  # the entity's first: its index is pruned once a batch
                        mine = new_by_entity[entity] = {}
                        prune = ts - ttl_us
                    mine[pid] = ts
                rows.append([pid, "n" if flags & _NEW else "f", entity, ts, prune, p.raw,
                             p.source.text(), encode_answers(p.answers), joined])
            else:
                rows.append([pid, "m", "", 0, False, "", "", "", joined])
        labels: list[list[Any]] = []
        written: dict[Origin, WaitingLabel] = {}
        new_refs: dict[str, set[Origin]] = {}
        for ref, new in self._dirty_labels.items():
            w = self._labels[ref]
            assert w is not None  # noqa: S101 - only saved records are dirty
            written[ref] = w
            target = label_target(w.feedback)
            if new:
                new_refs.setdefault(target, set()).add(ref)
            labels.append([ref.text(), w.raw or b"", w.key or b"",
                           "1" if w.key is not None else "0", w.deadline_us, w.status,
                           w.changed_by.text() if w.changed_by is not None else "", new,
                           target, f"{ref.topic}:{ref.partition}"])
        orphans = [[f"{ref.topic}:{ref.partition}", ref.text()] for ref in self.orphans]
        pairs = [[f"{t}:{p_}", o] for (t, p_), o in (progress or {}).items()]
        packb: Any = require("msgpack", "redis").packb  # type: ignore[attr-defined]
        packed = packb([rows, labels, orphans, group, pairs], use_bin_type=False)
        args = [self.base, store.ttl_ms, int(time.time() * 1000), packed]
        store._queue(_Committed(args, saved, written, new_refs, new_by_entity,
                                frozenset(self.orphans)))
        store.remember_all(saved.values())
        store.waiting_targets.update(new_refs)
        self._dirty_preds.clear()
        self._dirty_labels.clear()
        self.orphans.clear()
        if not defer:
            store.sync()
