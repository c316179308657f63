"""``kill -9`` the feature engine and the lake sink at random moments while events flow: the lake
tables and the online store end up exactly as if nothing had crashed.

The test runs the real commands as subprocesses against the session's broker, Redis and lake
catalog: ``refluent process`` (the default engine), ``refluent sink lake`` and ``refluent sink
online``. Log events of ~500 entities and CDC changes of a customers table are produced in
chunks: two up front, then two around each kill. Before each of six kills (three of each victim,
in a seeded order) a chunk is produced and the victim is seen making progress (a hundred updates
published, or a lake commit, since it started); after a seeded random pause it is frozen
(SIGSTOP), another chunk is produced, which it cannot have processed, and it is killed with that
work pending, then started again at once. At the end:

- every lake table holds each record of its topic exactly once (the multiset of
  ``(topic, partition, offset)`` is every offset once) and, for the source tables, exactly the
  produced events (by their ids);
- the windowed view's feature history holds exactly the updates the in-memory runner makes (a
  replay may publish an update twice; each of its records still lands once);
- Redis holds, for every entity of every view, what the in-memory runner computes (values,
  event time, deletion), and no other entity.

Event count: 100k events by default, about 3.5 minutes on two cores; ``REFLUENT_CRASH_EVENTS``
changes the count (the budget scales with it).
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from refluent.config import Settings
from refluent.embedded.commands import RefluentCommand
from refluent.embedded.services import check_lake
from refluent.engines.memory import InMemoryRunner
from refluent.lake.catalog import load_table, open_catalog
from refluent.lake.errors import LakeTableNotFoundError
from refluent.lake.offsets import read_offsets
from refluent.online_store.redis import RedisOnlineReader
from refluent.processors.features import discover
from refluent.sinks.pipeline import lake_table_for
from refluent.streams.contracts import CdcEnvelope, LogEvent
from refluent.streams.kafka import Producer, TopicAdmin
from refluent.streams.topics import TopicCatalog
from refluent.testing.kafka import topic_ends
from refluent.testing.services import RunningServices

pytestmark = pytest.mark.e2e

# Read at import: the autouse fixture in conftest.py clears REFLUENT_* variables for each test.
EVENTS = int(os.environ.get("REFLUENT_CRASH_EVENTS", "100000"))
ENTITIES = 500
CUSTOMERS = 120
CDC_SHARE = 0.2
KILLS = 6
SEED = 20260501
BUDGET_S = 120.0 + EVENTS / 200
"""Wall-clock budget of the test: 10 minutes for the default count on two cores (it took about
3.5), scaled with the count."""
POLL_S = 1.0

T0 = datetime(2026, 5, 1, tzinfo=UTC)

VIEWS = """
from datetime import timedelta
from refluent.processors.aggregations import Aggregation
from refluent.processors.features import EntityStateView, FeatureView
from refluent.processors.windows import Hopping, Sliding, Tumbling

activity = FeatureView("activity_{sfx}", "entity_id", ("logs.crash_{sfx}",), (
    Aggregation("events_1h", "count", None, Tumbling(timedelta(hours=1))),
    Aggregation("spend_2h", "sum", "amount", Hopping(timedelta(hours=2), timedelta(hours=1))),
    Aggregation("max_10m", "max", "amount", Sliding(timedelta(minutes=10))),
    Aggregation("last_page", "last", "page", Tumbling(timedelta(hours=1))),
))
customers = EntityStateView("customers_{sfx}", "cdc.customers_{sfx}",
                            columns=("tier", "credit"))
"""


# ---------------------------------------------------------------------------------------------
# workload
# ---------------------------------------------------------------------------------------------


def log_events(n: int, rnd: random.Random) -> list[LogEvent]:
    """Log events of ``ENTITIES`` entities, 1.3 s apart; ``message`` is the event's id."""
    return [LogEvent(source="app", ts=T0 + timedelta(seconds=1.3 * i), message=f"e{i}",
                     entity_id=f"u{rnd.randrange(ENTITIES)}",
                     attributes={"amount": rnd.randrange(100), "page": f"/p{rnd.randrange(30)}"})
            for i in range(n)]


def cdc_changes(n: int, rnd: random.Random) -> list[CdcEnvelope]:
    """Creates of ``CUSTOMERS`` customers, then updates and some deletes (a deleted customer
    may come back); the row's ``version`` is the change's id."""
    out = []
    for i in range(n):
        cid = i if i < CUSTOMERS else rnd.randrange(CUSTOMERS)
        row = {"id": cid, "tier": rnd.choice(["basic", "gold", "vip"]),
               "credit": round(rnd.random() * 1000, 2), "version": i}
        op = "c" if i < CUSTOMERS else ("d" if rnd.random() < 0.05 else "u")
        out.append(CdcEnvelope.model_validate({
            "op": op, "before": None if op == "c" else row, "after": None if op == "d" else row,
            "source": {"ts_ms": int((T0 + timedelta(seconds=6.5 * i)).timestamp() * 1000),
                       "lsn": 1000 + i}}))
    return out


@dataclass
class Workload:
    sfx: str
    logs: list[LogEvent]
    changes: list[CdcEnvelope]

    @property
    def log_topic(self) -> str:
        return f"logs.crash_{self.sfx}"

    @property
    def cdc_topic(self) -> str:
        return f"cdc.customers_{self.sfx}"

    def chunks(self, n: int) -> list[list[tuple[str, str, bytes]]]:
        """The events as ``n`` chunks of (topic, key, value), each topic in its order."""
        out: list[list[tuple[str, str, bytes]]] = [[] for _ in range(n)]
        for i, event in enumerate(self.logs):
            out[i * n // len(self.logs)].append(
                (self.log_topic, str(event.entity_id), event.model_dump_json().encode()))
        for i, change in enumerate(self.changes):
            out[i * n // len(self.changes)].append(
                (self.cdc_topic, str(change.row["id"]), change.model_dump_json().encode()))
        return out


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------


@dataclass
class Crash:
    """The test's settings, workload, expected results and commands."""

    settings: Settings
    work: Workload
    runner: InMemoryRunner
    views: list[Any]
    commands: dict[str, RefluentCommand] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    timeline: list[str] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka.bootstrap_servers or ""

    @property
    def sources(self) -> list[str]:
        return [self.work.log_topic, self.work.cdc_topic]

    @property
    def features(self) -> list[str]:
        return [v.topic for v in self.views]

    def left(self) -> float:
        return BUDGET_S - (time.monotonic() - self.started)

    def check_alive(self) -> None:
        for command in self.commands.values():
            command.check_alive()

    def note(self, what: str) -> None:
        """Record a step with the time and the progress so far (shown when the test fails)."""
        self.timeline.append(f"{time.monotonic() - self.started:6.1f}s {what}: "
                             f"{self.published()} published, {self.landed()} landed")

    def tails(self) -> str:
        logs = "\n".join(f"--- {c.name} ---\n{c.output(6000)}" for c in self.commands.values())
        return "\n".join(self.timeline) + "\n" + logs

    # -- probes ------------------------------------------------------------------------------

    def ends(self, topic: str) -> dict[int, int]:
        """Per partition, the end of ``topic`` (the high watermark of a fetch: exact)."""
        return topic_ends(self.settings, topic)

    def published(self) -> int:
        return sum(sum(self.ends(t).values()) for t in self.features)

    def lake_offsets(self) -> dict[str, dict[tuple[str, int], int]]:
        catalog = open_catalog(self.settings)
        out: dict[str, dict[tuple[str, int], int]] = {}
        for topic in self.sources + self.features:
            try:
                table = load_table(catalog, lake_table_for(topic), self.settings.lake.namespace)
            except LakeTableNotFoundError:
                out[topic] = {}
                continue
            out[topic] = read_offsets(table)
        return out

    def landed(self) -> int:
        return sum(sum(o.values()) for o in self.lake_offsets().values())

    def rows(self, topic: str, *cols: str) -> list[dict[str, Any]]:
        table = load_table(open_catalog(self.settings), lake_table_for(topic),
                           self.settings.lake.namespace)
        return table.scan().to_arrow().select(list(cols)).to_pylist()

    def online_mismatches(self) -> list[str]:
        """Entities whose online values differ from the runner's."""
        bad: list[str] = []
        reader = RedisOnlineReader.from_settings(self.settings, socket_timeout=10)
        try:
            for view in self.views:
                expected = self.runner.online[view.name]
                ids = sorted(expected)
                for got in reader.get_online_features(view.name, ids):
                    want = expected[got.entity_id]
                    ok = (got.event_time == want.event_time and got.deleted == want.deleted
                          and got.found == (not want.deleted)
                          and (want.deleted or got.values == want.values))
                    if not ok:
                        bad.append(f"{view.name}/{got.entity_id}: got {got.values} @ "
                                   f"{got.event_time} deleted={got.deleted}, want "
                                   f"{want.values} @ {want.event_time} deleted={want.deleted}")
        finally:
            reader.close()
        return bad

    def wait_until(self, what: str, done: Callable[[], bool], timeout: float,
                   explain: Callable[[], object] = lambda: "") -> None:
        """Poll ``done`` until it holds (failing after ``timeout`` or the budget, or when a
        command dies; the failure shows ``explain()``, the timeline and the commands' logs)."""
        deadline = time.monotonic() + min(timeout, max(self.left(), 1.0))
        for _ in range(int(max(timeout, 1.0) / POLL_S) + 2):
            if done():
                return
            self.check_alive()
            if time.monotonic() > deadline:
                break
            time.sleep(POLL_S)
        self.note(f"gave up waiting for {what}")
        pytest.fail(f"timed out waiting for {what} ({time.monotonic() - self.started:.0f}s "
                    f"into the test): {explain()}\n{self.tails()}")


def produce(crash: Crash, chunk: Sequence[tuple[str, str, bytes]]) -> None:
    with Producer(crash.settings.kafka, crash.bootstrap) as producer:
        for topic, key, value in chunk:
            producer.produce(topic, value, key)


def every_offset(ends: dict[str, dict[int, int]]) -> Counter[tuple[str, int, int]]:
    return Counter((t, p, o) for t, end in ends.items() for p, high in end.items()
                   for o in range(high))


# ---------------------------------------------------------------------------------------------
# the test
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def crash(services: RunningServices, tmp_path: Path) -> Iterator[Crash]:
    sfx = uuid.uuid4().hex[:8]
    rnd = random.Random(SEED)
    n_cdc = int(EVENTS * CDC_SHARE)
    work = Workload(sfx, log_events(EVENTS - n_cdc, rnd), cdc_changes(n_cdc, rnd))
    module = tmp_path / "views.py"
    module.write_text(VIEWS.replace("{sfx}", sfx))
    views = discover(str(module))
    runner = InMemoryRunner(views)
    runner.feed(work.log_topic, work.logs)
    runner.feed(work.cdc_topic, work.changes)
    assert not runner.rejected

    namespace = f"crash_{sfx}"
    key_prefix = f"c{sfx}"
    check_lake(services.catalog_uri, services.warehouse, namespace, create=True)
    settings = services.settings(lake={"namespace": namespace}, redis={"key_prefix": key_prefix})
    catalog = TopicCatalog.from_settings(settings.topics)
    specs = [catalog.get(t) for t in [work.log_topic, work.cdc_topic, *(v.topic for v in views)]]
    TopicAdmin(settings.kafka, settings.kafka.bootstrap_servers or "").ensure(
        specs + [s.dlq() for s in specs])

    env = services.command_env(namespace=namespace, key_prefix=key_prefix,
                               state_dir=tmp_path / "state",
                               REFLUENT_PROCESSING__VIEWS=str(module),
                               REFLUENT_PROCESSING__APP_ID=f"crash-{sfx}")
    crash = Crash(settings, work, runner, views)
    crash.commands = {
        "engine": RefluentCommand("engine", ["process", "--loglevel", "info"], env, tmp_path),
        "lake": RefluentCommand("lake", ["sink", "lake", *crash.sources, *crash.features,
                                 "--group", f"lake-{sfx}"], env, tmp_path),
        "online": RefluentCommand("online", ["sink", "online", "--group", f"online-{sfx}"], env,
                          tmp_path),
    }
    try:
        yield crash
    finally:
        for command in crash.commands.values():
            command.stop(20)


@pytest.mark.timeout(BUDGET_S + 60)
def test_kill_9__engine_and_lake_sink_end_with_the_same_rows_and_features(crash: Crash) -> None:
    rnd = random.Random(SEED)
    plan = ["engine", "lake"] * (KILLS // 2)
    rnd.shuffle(plan)
    chunks = crash.work.chunks(2 * KILLS + 2)
    for command in crash.commands.values():
        command.start()

    # Two chunks up front; then before each kill another chunk, proof the victim is working (a
    # hundred updates published, or a lake commit, since it started), a seeded random pause,
    # the victim frozen, one more chunk it cannot have processed, and SIGKILL.
    for chunk in chunks[:2]:
        produce(crash, chunk)
    crash.note("first chunks produced")
    rest = iter(chunks[2:])
    for k, victim in enumerate(plan):
        # The target is read before the chunk goes out: a fast victim may have done all of it
        # by the time the chunk's produce returns.
        progress = crash.published if victim == "engine" else crash.landed
        target = progress() + (100 if victim == "engine" else 1)
        produce(crash, next(rest, []))

        def working(progress: Callable[[], int] = progress, target: int = target) -> bool:
            return progress() >= target

        crash.wait_until(f"{victim} to make progress before kill {k + 1}", working, 90)
        time.sleep(rnd.uniform(0.0, 3.0))
        crash.commands[victim].freeze()
        pending = next(rest, [])
        assert pending, "a chunk for every kill"
        produce(crash, pending)  # work the frozen victim cannot have done
        crash.commands[victim].kill9()
        crash.note(f"killed {victim} with {len(pending)} new events pending")
        crash.commands[victim].start()
    for chunk in rest:
        produce(crash, chunk)
    crash.note("all events produced")

    # Catch up: Redis first (the engine is done once every entity is as expected), then the
    # lake, until its tables' offsets reach the ends of topics that no longer grow.
    crash.wait_until("Redis to hold the expected features",
                     lambda: not crash.online_mismatches(), crash.left(),
                     explain=lambda: crash.online_mismatches()[:5])
    crash.note("Redis as expected")
    ends: dict[str, dict[int, int]] = {}

    def lake_caught_up() -> bool:
        nonlocal ends
        now = {t: crash.ends(t) for t in crash.sources + crash.features}
        stable, ends = now == ends, now
        offsets = crash.lake_offsets()
        return stable and all(
            offsets[t] == {(t, p): high for p, high in end.items() if high}
            for t, end in now.items())

    crash.wait_until("the lake to land every record", lake_caught_up, crash.left(),
                     explain=lambda: {"topics": ends, "tables": crash.lake_offsets()})
    crash.note("lake caught up")
    print("\n".join(crash.timeline))  # with -s: where the kills landed
    crash.check_alive()
    kills = {name: c.kills for name, c in crash.commands.items()}
    assert kills["engine"] + kills["lake"] >= 5 and kills["engine"] >= 2 and kills["lake"] >= 2

    # Lake: every record of every topic exactly once.
    for topic in crash.sources + crash.features:
        rows = crash.rows(topic, "topic", "partition", "offset")
        got = Counter((r["topic"], r["partition"], r["offset"]) for r in rows)
        assert got == every_offset({topic: ends[topic]}), topic
    # ... and exactly the produced events, by id.
    messages = Counter(r["message"] for r in crash.rows(crash.work.log_topic, "message"))
    assert messages == Counter(e.message for e in crash.work.logs)
    versions = Counter(r["version"] for r in crash.rows(crash.work.cdc_topic, "version"))
    assert versions == Counter(range(len(crash.work.changes)))
    # The windowed view's history: the runner's updates (a replay may publish one again).
    activity = next(v for v in crash.views if v.name.startswith("activity_"))
    history = crash.rows(activity.topic, "entity_id", "sequence", "event_time", "events_1h")
    assert {(r["entity_id"], r["sequence"], r["event_time"], r["events_1h"])
            for r in history} == {
        (u.entity_id, u.sequence, u.event_time, u.values["events_1h"])
        for u in crash.runner.updates if u.view == activity.name}

    # Redis: every entity as the runner has it, and nothing else under the views' keys.
    assert crash.online_mismatches() == []
    client = redis.Redis.from_url(crash.settings.redis.url or "")
    try:
        for view in crash.views:
            pattern = f"{crash.settings.redis.key_prefix}:{view.name}:*"
            keys = list(client.scan_iter(match=pattern, count=1000))
            assert len(keys) == len(crash.runner.online[view.name]), view.name
    finally:
        client.close()
    # No record was dead-lettered along the way.
    dlqs = [f"{t}.dlq" for t in crash.sources + crash.features]
    assert {t: sum(crash.ends(t).values()) for t in dlqs} == dict.fromkeys(dlqs, 0)
