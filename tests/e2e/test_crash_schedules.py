"""SIGKILL the engine and the sinks at seeded random moments, many short schedules: every
schedule ends with every update published once per input record, the online store and the lake
exactly as the input says.

Each schedule runs the real commands as subprocesses on the session's broker, Redis and lake
catalog: ``refluent process`` (Faust in even schedules, the native engine in odd ones; one member,
or two when the schedule scales out), ``refluent
sink lake`` and ``refluent sink online``. Three views cover both view kinds and both engine paths:
an entity-state view over a CDC table, a windowed view over logs keyed by entity (applied where
it is read) and a windowed view over CDC orders keyed by order id (forwarded by customer through
the engine's repartition topic).

A schedule is 2-4 kills. Each targets a moment of the victim's life: its start-up (before it
asks to join the group), the group join, table recovery (partitions assigned, not yet ready), a
rebalance (a second engine member joining, or a member's partitions revoked) or steady
processing, reached by watching the victim's log. At that moment the victim is frozen (SIGSTOP),
the test makes sure it holds uncommitted input (new events are produced if it has none), and it
is killed; the kill's pending work is measured and asserted. The victim starts again at once.
After the last kill the rest of the events are produced, the engine finishes, the sinks are
killed once more and ``--until-caught-up`` runs of both sinks must return on their own.

The oracle never runs the view runtime: it reads the produced records back from the source
topics and computes, per record, the update it must cause (the change's row for CDC; a
brute-force count, sum and max over the entity's records so far in the event's window for
logs) and the final state per entity. At the end:

- every source record has its update in ``features.<view>`` (a replay may publish one twice, with
  the same content), and no update comes from anywhere else;
- Redis holds each entity's final values (deleted customers as deleted);
- every lake table holds each record of its topic exactly once, and the source tables exactly
  the produced events.

``REFLUENT_CRASH_SCHEDULES`` sets the number of schedules (20 by default), run four at a time.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
import traceback
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.engines import MARKERS

from refluent.config import Settings
from refluent.embedded.commands import RefluentCommand
from refluent.embedded.services import check_lake
from refluent.lake.catalog import load_table, open_catalog
from refluent.lake.errors import LakeTableNotFoundError
from refluent.lake.offsets import read_offsets
from refluent.online_store.redis import RedisOnlineReader
from refluent.sinks.pipeline import lake_table_for
from refluent.streams.kafka import Producer, TopicAdmin, group_lag, wait_until_committed
from refluent.streams.topics import TopicCatalog
from refluent.testing.kafka import read_all, topic_ends
from refluent.testing.services import RunningServices

pytestmark = pytest.mark.e2e

# Read at import: the autouse fixture in conftest.py clears REFLUENT_* variables for each test.
SCHEDULES = int(os.environ.get("REFLUENT_CRASH_SCHEDULES", "20"))
FIRST = int(os.environ.get("REFLUENT_CRASH_FIRST_SCHEDULE", "0"))
"""Number of the first schedule (its seed is ``SEED + number``): to run one schedule again."""
PARALLEL = 4
SEED = 20261207
CUSTOMERS, CHANGES = 150, 2400
ENTITIES, LOGS = 100, 2400
BUYERS, ORDERS = 60, 800
CHUNKS = 12
"""The events are produced in this many chunks: two up front, one after each restart of an
engine member (a backlog for its start-up), one whenever a frozen victim has nothing pending,
the rest after the last kill."""
CATCH_UP_S = 180.0
"""Longest wait for the engine to commit everything after the last kill (it needs well under a
minute; commits that stop advancing, as Faust's own did after such starts, never get there)."""
PARTITIONS = 3
T0 = datetime(2026, 5, 1, tzinfo=UTC)
HOUR_MS = 3_600_000

VIEWS = """
from datetime import timedelta
from refluent.processors.aggregations import Aggregation
from refluent.processors.features import EntityStateView, FeatureView, only_ops
from refluent.processors.windows import Tumbling

customers = EntityStateView("customers_{sfx}", "cdc.customers_{sfx}",
                            columns=("tier", "credit"))
activity = FeatureView("activity_{sfx}", "entity_id", ("logs.w_{sfx}",), (
    Aggregation("n_1h", "count", None, Tumbling(timedelta(hours=1))),
    Aggregation("spend_1h", "sum", "amount", Tumbling(timedelta(hours=1))),
    Aggregation("max_1h", "max", "amount", Tumbling(timedelta(hours=1))),
))
orders = FeatureView("orders_{sfx}", "customer_id", ("cdc.orders_{sfx}",), (
    Aggregation("orders_1d", "count", None, Tumbling(timedelta(days=1))),
    Aggregation("amount_1d", "sum", "amount", Tumbling(timedelta(days=1))),
), transforms=(only_ops("c",),))
"""

ENGINES = ("faust", "native")
"""Schedule ``n`` runs the engine ``ENGINES[n % 2]``."""


SINK_START_S = 6.0
"""A sink killed this soon after its start, before its first commit, is still starting (imports,
group join)."""
ENGINE_PHASES = {"start-up", "group join", "recovery", "rebalance", "steady"}
SINK_PHASES = {"start-up", "steady"}


# ---------------------------------------------------------------------------------------------
# workload and oracle
# ---------------------------------------------------------------------------------------------


def _ms(seconds: float) -> int:
    return int((T0 + timedelta(seconds=seconds)).timestamp() * 1000)


def workload(sfx: str, rnd: random.Random) -> list[tuple[str, str, bytes]]:
    """(topic, key, value) of every event, interleaved across the three topics."""
    customers: list[tuple[str, str, bytes]] = []
    alive: set[int] = set()
    for i in range(CHANGES):
        cid = rnd.randrange(CUSTOMERS)
        op = "c" if cid not in alive else ("d" if rnd.random() < 0.2 else "u")
        row = {"id": cid, "tier": rnd.choice(["basic", "gold", "vip"]),
               "credit": rnd.randrange(10_000) / 100, "version": i}
        (alive.discard if op == "d" else alive.add)(cid)
        env = {"op": op, "before": None if op == "c" else row, "after": None if op == "d" else row,
               "source": {"ts_ms": _ms(5 * i), "lsn": 1000 + i}}
        customers.append((f"cdc.customers_{sfx}", str(cid), orjson.dumps(env)))
    logs = [(f"logs.w_{sfx}", f"u{e}", orjson.dumps({
        "source": "app", "ts": (T0 + timedelta(seconds=37 * i)).isoformat(), "message": f"e{i}",
        "entity_id": f"u{e}", "attributes": {"amount": rnd.randrange(100)}}))
        for i, e in ((i, rnd.randrange(ENTITIES)) for i in range(LOGS))]
    orders = [(f"cdc.orders_{sfx}", str(i), orjson.dumps({
        "op": "c", "before": None, "after": {"id": i, "customer_id": f"b{rnd.randrange(BUYERS)}",
                                             "amount": rnd.randrange(1, 500)},
        "source": {"ts_ms": _ms(i), "lsn": 5000 + i}})) for i in range(ORDERS)]
    out: list[tuple[str, str, bytes]] = []
    for a, b, c in zip(customers, logs, orders + [None] * (len(customers) - len(orders)),
                       strict=True):
        out += [a, b] + ([c] if c is not None else [])
    return out


@dataclass
class Expected:
    """What each source record must cause, computed from the records read back."""

    updates: dict[str, dict[tuple[int, int], dict[str, Any]]] = field(default_factory=dict)
    """view -> (source partition, offset) -> fields the update must have (None: any)."""
    final: dict[str, dict[str, dict[str, Any] | None]] = field(default_factory=dict)
    """view -> entity -> final values (None: deleted)."""
    lake_ids: dict[str, tuple[str, Counter[Any]]] = field(default_factory=dict)
    """source topic -> (column, multiset of its values) the lake table must hold."""


def expected(settings: Settings, sfx: str, ends: dict[str, dict[int, int]]) -> Expected:
    out = Expected()
    topics = {"customers": f"cdc.customers_{sfx}", "activity": f"logs.w_{sfx}",
              "orders": f"cdc.orders_{sfx}"}
    records = {name: sorted(read_all(settings, topic, sum(ends[topic].values())),
                            key=lambda r: (r.partition, r.offset))
               for name, topic in topics.items()}
    for name, topic in topics.items():
        assert len(records[name]) == sum(ends[topic].values()), f"read back all of {topic}"

    # Entity state: each change is newer than the last (LSNs grow), so each one is an update.
    updates, final = {}, {}
    for r in records["customers"]:
        env = orjson.loads(r.value or b"null")
        row = env["after"] or env["before"]
        deleted = env["op"] == "d"
        updates[(r.partition, r.offset)] = {
            "entity_id": str(row["id"]), "deleted": deleted, "sequence": r.offset,
            "values": {} if deleted else {"tier": row["tier"], "credit": row["credit"]}}
    for r in sorted(records["customers"], key=lambda r: orjson.loads(r.value or b"{}")[
            "source"]["lsn"]):
        env = orjson.loads(r.value or b"null")
        row = env["after"] or env["before"]
        final[str(row["id"])] = None if env["op"] == "d" else {"tier": row["tier"],
                                                                "credit": row["credit"]}
    out.updates[f"customers_{sfx}"], out.final[f"customers_{sfx}"] = updates, final

    # Windowed view read where it is: one entity's records on one partition, in event-time
    # order, so every update is determined: brute force over the entity's records so far.
    updates, seen = {}, defaultdict(list)
    for r in records["activity"]:
        event = orjson.loads(r.value or b"null")
        ts = int(datetime.fromisoformat(event["ts"]).timestamp() * 1000)
        entity = event["entity_id"]
        seen[entity].append((ts, event["attributes"]["amount"]))
        window = ts - ts % HOUR_MS
        amounts = [a for t, a in seen[entity] if window <= t < window + HOUR_MS]
        updates[(r.partition, r.offset)] = {
            "entity_id": entity, "sequence": len(seen[entity]), "event_time_ms": ts,
            "values": {"n_1h": len(amounts), "spend_1h": sum(amounts), "max_1h": max(amounts)}}
    out.updates[f"activity_{sfx}"] = updates
    out.final[f"activity_{sfx}"] = {}
    for entity, events in seen.items():
        ts = max(t for t, _ in events)
        window = ts - ts % HOUR_MS
        amounts = [a for t, a in events if window <= t < window + HOUR_MS]
        out.final[f"activity_{sfx}"][entity] = {"n_1h": len(amounts), "spend_1h": sum(amounts),
                                                 "max_1h": max(amounts)}

    # Forwarded view: a customer's orders come from every partition, so the order they are
    # applied in varies; each order still has its update and the day's totals are fixed.
    updates, totals = {}, defaultdict(list)
    for r in records["orders"]:
        row = orjson.loads(r.value or b"null")["after"]
        updates[(r.partition, r.offset)] = {"entity_id": row["customer_id"]}
        totals[row["customer_id"]].append(row["amount"])
    out.updates[f"orders_{sfx}"] = updates
    out.final[f"orders_{sfx}"] = {c: {"orders_1d": len(a), "amount_1d": sum(a)}
                                  for c, a in totals.items()}

    out.lake_ids = {
        topics["customers"]: ("version", Counter(range(CHANGES))),
        topics["activity"]: ("message", Counter(f"e{i}" for i in range(LOGS))),
        topics["orders"]: ("id", Counter(range(ORDERS)))}
    return out


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, float) or isinstance(got, float):
        return math.isclose(float(got), float(want), rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want)
    return bool(got == want)


# ---------------------------------------------------------------------------------------------
# one schedule
# ---------------------------------------------------------------------------------------------


@dataclass
class Kill:
    victim: str
    target: str
    phase: str = ""
    pending: int = 0
    at_s: float = 0.0


def plan(seed: int) -> tuple[list[Kill], bool]:
    """The schedule of ``seed``: its kills (victim, targeted moment) and whether a second
    engine member joins. An early moment of a life is only targeted right after that victim
    was killed (and so started again)."""
    rnd = random.Random(seed)
    kills: list[Kill] = []
    scale_out = rnd.random() < 0.35
    previous = ""
    for i in range(rnd.randint(2, 4)):
        victim = rnd.choice(["engine", "engine", "engine", "lake", "online"])
        fresh = i == 0 or victim == previous
        if victim == "engine":
            targets = ["start-up", "group join", "recovery", "steady"] if fresh else ["steady"]
            if scale_out and not any(k.target == "rebalance" for k in kills):
                targets.append("rebalance")
        else:
            targets = ["start-up", "steady"] if fresh else ["steady"]
        kills.append(Kill(victim, rnd.choice(targets)))
        previous = victim
    return kills, scale_out


def engine_phase(log: str, engine: str = "faust") -> str:
    """Where an engine member is in its life, from what it logged since it started."""
    m = MARKERS[engine]
    if m.join not in log:
        return "start-up"
    ready = log.rfind(m.ready)
    revoked = [r.start() for r in m.revoked.finditer(log)]
    if revoked and revoked[-1] > ready:
        return "rebalance"
    if m.assigned not in log:
        return "group join"
    if ready < log.rfind(m.assigned):
        return "recovery"
    return "steady"


class ScheduleFailed(AssertionError):
    pass


@dataclass
class Schedule:
    """One schedule's topics, commands, kills and checks."""

    number: int
    services: RunningServices
    root: Path
    kills: list[Kill] = field(default_factory=list)
    scale_out: bool = False
    notes: list[str] = field(default_factory=list)
    commands: dict[str, RefluentCommand] = field(default_factory=dict)
    marks: dict[str, Any] = field(default_factory=dict)
    """Per sink, what it had committed when it last started."""

    def __post_init__(self) -> None:
        self.seed = SEED + self.number
        self.engine = ENGINES[self.number % len(ENGINES)]
        self.kills, self.scale_out = plan(self.seed)
        self.sfx = uuid.uuid4().hex[:8]
        self.dir = self.root / f"schedule-{self.number:02d}"
        self.dir.mkdir(parents=True)
        self.namespace = f"sched_{self.sfx}"
        self.app_id = f"sched-{self.sfx}"
        self.settings = self.services.settings(lake={"namespace": self.namespace},
                                               redis={"key_prefix": f"s{self.sfx}"})
        self.bootstrap = self.services.bootstrap_servers
        self.views = [f"customers_{self.sfx}", f"activity_{self.sfx}", f"orders_{self.sfx}"]
        self.sources = [f"cdc.customers_{self.sfx}", f"logs.w_{self.sfx}",
                        f"cdc.orders_{self.sfx}"]
        self.features = [f"features.{v}" for v in self.views]
        self.repartition = f"{self.app_id}-orders_{self.sfx}-by-entity"
        events = workload(self.sfx, random.Random(self.seed))
        self.chunks = [events[i * len(events) // CHUNKS:(i + 1) * len(events) // CHUNKS]
                       for i in range(CHUNKS)]
        self.started = time.monotonic()

    # -- set-up ------------------------------------------------------------------------------

    def setup(self) -> None:
        module = self.dir / "views.py"
        module.write_text(VIEWS.replace("{sfx}", self.sfx))
        check_lake(self.services.catalog_uri, self.services.warehouse, self.namespace,
                   create=True)
        catalog = TopicCatalog.from_settings(self.settings.topics)
        specs = [catalog.get(t) for t in self.sources + self.features]
        specs = [replace(spec, partitions=PARTITIONS) for spec in specs]
        TopicAdmin(self.settings.kafka, self.bootstrap).ensure(specs + [s.dlq() for s in specs])
        env = self.services.command_env(
            namespace=self.namespace, key_prefix=f"s{self.sfx}", state_dir=self.dir / "state",
            REFLUENT_PROCESSING__VIEWS=str(module), REFLUENT_PROCESSING__APP_ID=self.app_id,
            REFLUENT_TOPICS__DEFAULT_PARTITIONS=str(PARTITIONS),
            REFLUENT_PROCESSING__ENGINE=self.engine)
        engine_args = ["process", "--loglevel", "info"]
        self.commands = {
            "engine": RefluentCommand("engine", engine_args, env, self.dir),
            "engine-2": RefluentCommand("engine-2", engine_args, env, self.dir),
            "lake": RefluentCommand("lake", ["sink", "lake", *self.sources, *self.features,
                                             "--group", f"lake-{self.sfx}"], env, self.dir),
            "online": RefluentCommand("online", ["sink", "online", "--group",
                                                 f"online-{self.sfx}"], env, self.dir),
        }

    def produce(self) -> None:
        if not self.chunks:
            return
        chunk = self.chunks.pop(0)
        with Producer(self.settings.kafka, self.bootstrap) as producer:
            for topic, key, value in chunk:
                producer.produce(topic, value, key)

    def note(self, text: str) -> None:
        self.notes.append(f"{time.monotonic() - self.started:6.1f}s {text}")

    # -- probes ------------------------------------------------------------------------------

    def lake_offsets(self) -> dict[str, dict[tuple[str, int], int]]:
        catalog = open_catalog(self.settings)
        out: dict[str, dict[tuple[str, int], int]] = {}
        for topic in self.sources + self.features:
            try:
                table = load_table(catalog, lake_table_for(topic), self.namespace)
            except LakeTableNotFoundError:
                out[topic] = {}
                continue
            out[topic] = read_offsets(table)
        return out

    def pending(self, victim: str) -> int:
        """Records the victim's consumer group (or lake tables) has not committed."""
        if victim.startswith("engine"):
            topics = self.sources + ([self.repartition] if self._exists(self.repartition)
                                     else [])
            return group_lag(self.settings.kafka, self.bootstrap, topics, self.app_id)
        if victim == "online":
            return group_lag(self.settings.kafka, self.bootstrap, self.features,
                             f"online-{self.sfx}")
        offsets = self.lake_offsets()
        return sum(max(high - offsets[t].get((t, p), 0), 0)
                   for t in self.sources + self.features
                   for p, high in topic_ends(self.settings, t).items())

    def _exists(self, topic: str) -> bool:
        return topic in TopicAdmin(self.settings.kafka, self.bootstrap).wait_ready()

    def committed_marker(self, victim: str) -> Any:
        """Something that changes when the sink commits (its group offsets or table
        offsets)."""
        if victim == "online":
            from refluent.streams.kafka import partition_offsets

            return [partition_offsets(self.settings.kafka, self.bootstrap, t,
                                      f"online-{self.sfx}") for t in self.features]
        return self.lake_offsets()

    def wait(self, what: str, done: Callable[[], bool], timeout: float = 90.0,
             poll: float = 0.05) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            for name, command in self.commands.items():
                if command.proc is not None and name in self.running:
                    command.check_alive()
            if time.monotonic() > deadline:
                raise ScheduleFailed(f"timed out waiting for {what}")
            time.sleep(poll)

    @property
    def running(self) -> set[str]:
        return {n for n, c in self.commands.items()
                if c.proc is not None and c.proc.poll() is None}

    def start(self, name: str) -> None:
        if name in ("lake", "online"):
            self.marks[name] = self.committed_marker(name)
        self.commands[name].start()

    # -- kills -------------------------------------------------------------------------------

    def reach(self, kill: Kill) -> str:
        """Wait for the targeted moment of the victim's life; returns the victim's name."""
        rnd = random.Random(f"{self.seed}-{len(self.notes)}")
        if kill.target == "rebalance":
            # A second member joins: the first one gives up partitions and rebalances; it is
            # killed in the middle of that.
            second = self.commands["engine-2"]
            if second.proc is None or second.proc.poll() is not None:
                second.start()
                self.produce()
                self.note("second engine member started")
            first = self.commands["engine"]
            self.wait("the first member's rebalance",
                      lambda: engine_phase(first.life_output(), self.engine) == "rebalance")
            return "engine"
        victim = kill.victim
        command = self.commands[victim]
        if victim == "engine":
            if kill.target == "start-up":
                time.sleep(rnd.uniform(0.0, 1.0))
                return victim
            # A moment that passed too quickly to be caught is taken at the next one seen
            # (the phase recorded is the one the victim was in).
            wanted = {"group join": ("group join", "recovery", "rebalance", "steady"),
                      "recovery": ("recovery", "rebalance", "steady"),
                      "steady": ("steady",)}[kill.target]
            self.wait(f"the engine's {kill.target}",
                      lambda: engine_phase(command.life_output(), self.engine) in wanted,
                      timeout=90)
            if kill.target == "steady":
                self.produce()
                time.sleep(rnd.uniform(0.0, 1.5))
            return victim
        if kill.target == "start-up":
            time.sleep(rnd.uniform(0.0, 1.5))
            return victim
        # Steady: the sink has committed in this life (new events give it something to land).
        started_with = self.marks[victim]
        if self.committed_marker(victim) == started_with:
            self.produce()
            self.wait(f"the {victim} sink to commit",
                      lambda: self.committed_marker(victim) != started_with, poll=0.3)
        time.sleep(rnd.uniform(0.0, 1.0))
        return victim

    def kill(self, kill: Kill) -> None:
        victim = kill.victim = self.reach(kill)
        command = self.commands[victim]
        life = command.life_output()
        command.freeze()
        kill.at_s = time.monotonic() - command.started_at
        if victim.startswith("engine"):
            kill.phase = engine_phase(life, self.engine)
        else:
            # A sink still starting (loading, joining its group) has committed nothing yet.
            starting = (kill.at_s < SINK_START_S
                        and self.committed_marker(victim) == self.marks[victim])
            kill.phase = "start-up" if starting else "steady"
        # Work pending at the moment of the kill: new events if the victim holds none (a sink
        # waits for the engine to turn them into updates).
        if self.pending(victim) == 0:
            self.produce()
            self.wait(f"work pending for the {victim}", lambda: self.pending(victim) > 0,
                      poll=0.2)
        command.kill9()
        kill.pending = self.pending(victim)
        self.note(f"killed {victim} ({kill.target} targeted, {kill.phase} seen, "
                  f"{kill.at_s:.1f}s into its life, {kill.pending} record(s) pending)")
        self.start(victim)
        if victim.startswith("engine"):
            self.produce()

    # -- run ---------------------------------------------------------------------------------

    def run(self) -> None:
        self.setup()
        self.produce()
        self.produce()
        for name in ("lake", "online", "engine"):
            self.start(name)
        self.note("started")
        for kill in self.kills:
            self.kill(kill)
        while self.chunks:
            self.produce()
        self.note("all events produced")
        engines = [c for n, c in self.commands.items() if n.startswith("engine")
                   and n in self.running]
        wait_until_committed(self.settings.kafka, self.bootstrap,
                             self.sources + [self.repartition], self.app_id,
                             timeout_s=CATCH_UP_S,
                             what="the engine", check=lambda: [e.check_alive() for e in engines])
        self.note("engine caught up")
        # The sinks crash once more; runs that stop once caught up must stop on their own.
        for name in ("lake", "online"):
            if name in self.running:
                self.commands[name].kill9()
        for name in ("lake", "online"):
            command = self.commands[name]
            command.args = [*command.args, "--until-caught-up"]
            command.start()
        for name in ("lake", "online"):
            code = self.commands[name].wait(240)
            if code != 0:
                raise ScheduleFailed(f"{name} --until-caught-up exited {code}")
        self.note("sinks caught up and returned")
        for engine in engines:
            engine.stop(20)

    # -- checks ------------------------------------------------------------------------------

    def check(self) -> list[str]:
        problems: list[str] = []
        ends = {t: topic_ends(self.settings, t) for t in self.sources + self.features}
        want = expected(self.settings, self.sfx, ends)
        for kill in self.kills:
            if kill.pending <= 0:
                problems.append(f"kill of {kill.victim} ({kill.phase}) left nothing pending")
        # Every source record's update, once in content, and nothing else.
        for view, topic in zip(self.views, self.features, strict=True):
            got: dict[tuple[int, int], set[bytes]] = defaultdict(set)
            for r in read_all(self.settings, topic, sum(ends[topic].values())):
                update = orjson.loads(r.value or b"null")
                got[(update["source_partition"], update["source_offset"])].add(
                    orjson.dumps(update, option=orjson.OPT_SORT_KEYS))
            expected_updates = want.updates[view]
            missing = sorted(set(expected_updates) - set(got))
            extra = sorted(set(got) - set(expected_updates))
            if missing:
                problems.append(f"{view}: {len(missing)} of {len(expected_updates)} source "
                                f"records have no update (first: {missing[:5]})")
            if extra:
                problems.append(f"{view}: updates from unknown source records {extra[:5]}")
            for where, contents in sorted(got.items()):
                if where not in expected_updates:
                    continue
                if len(contents) != 1:
                    problems.append(f"{view}: source record {where} has {len(contents)} "
                                    f"different updates")
                    continue
                update = orjson.loads(next(iter(contents)))
                fields = dict(expected_updates[where])
                if "event_time_ms" in fields:
                    ts = int(datetime.fromisoformat(update["event_time"]).timestamp() * 1000)
                    update["event_time_ms"] = ts
                wrong = {k: (update.get(k), v) for k, v in fields.items()
                         if not _same(update.get(k), v)}
                if wrong:
                    problems.append(f"{view}: update of source record {where} differs (got, "
                                    f"want): {wrong}")
                    break
        # Redis: each entity's final values.
        reader = RedisOnlineReader.from_settings(self.settings, socket_timeout=10)
        try:
            for view in self.views:
                finals = want.final[view]
                ids = sorted(finals)
                for got_row in reader.get_online_features(view, ids):
                    final = finals[got_row.entity_id]
                    ok = (got_row.deleted and not got_row.found) if final is None else (
                        got_row.found and _same(got_row.values, final))
                    if not ok:
                        problems.append(f"online {view}/{got_row.entity_id}: got "
                                        f"{got_row.values} found={got_row.found} deleted="
                                        f"{got_row.deleted}, want {final}")
                        break
        finally:
            reader.close()
        # Lake: each record once; the source tables hold exactly the produced events.
        catalog = open_catalog(self.settings)
        for topic in self.sources + self.features:
            table = load_table(catalog, lake_table_for(topic), self.namespace)
            column = want.lake_ids[topic][0] if topic in want.lake_ids else None
            cols = ["topic", "partition", "offset"] + ([column] if column else [])
            rows = table.scan().to_arrow().select(cols).to_pylist()
            offsets = Counter((r["topic"], r["partition"], r["offset"]) for r in rows)
            every = Counter((topic, p, o) for p, high in ends[topic].items()
                            for o in range(high))
            if offsets != every:
                problems.append(f"lake {topic}: {sum((every - offsets).values())} record(s) "
                                f"missing, {sum((offsets - every).values())} extra")
            if column and Counter(r[column] for r in rows) != want.lake_ids[topic][1]:
                problems.append(f"lake {topic}: the {column} values are not the produced ones")
        dlqs = {t: sum(topic_ends(self.settings, f"{t}.dlq").values())
                for t in self.sources + self.features}
        if any(dlqs.values()):
            problems.append(f"dead letters: {dlqs}")
        return problems

    def report(self) -> str:
        logs = "\n".join(f"--- {n} ---\n{c.output(2500)}" for n, c in self.commands.items()
                         if c.proc is not None)
        return "\n".join(self.notes) + "\n" + logs

    def stop(self) -> None:
        for command in self.commands.values():
            command.stop(20)


# ---------------------------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def schedules(services: RunningServices, tmp_path: Path) -> Iterator[list[Schedule]]:
    made = [Schedule(n, services, tmp_path) for n in range(FIRST, FIRST + SCHEDULES)]
    try:
        yield made
    finally:
        for schedule in made:
            schedule.stop()


@pytest.mark.timeout(1800)
def test_kill_9_schedules__every_update_once_and_the_stores_exact(
    schedules: list[Schedule],
) -> None:
    failures: list[str] = []
    lock = threading.Lock()

    def one(schedule: Schedule) -> None:
        try:
            schedule.run()
            problems = schedule.check()
        except Exception as exc:  # noqa: BLE001 - reported with the schedule's timeline
            problems = [f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"]
        if problems:
            with lock:
                failures.append(f"schedule {schedule.number} (seed {schedule.seed}): "
                                + "; ".join(problems[:6]) + "\n" + schedule.report())
        schedule.stop()

    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(one, schedules))
    table = "\n".join(f"schedule {s.number:2d} ({s.engine}): " + ", ".join(
        f"{k.victim}@{k.phase}({k.pending})" for k in s.kills) for s in schedules)
    print(table)  # with -s: where every kill landed
    assert not failures, "\n\n".join(failures)
    # The kills covered every moment the issue names, for the engines and both sinks, and
    # each engine was killed with work pending several times.
    seen: dict[str, set[str]] = defaultdict(set)
    engine_kills: Counter[str] = Counter()
    for schedule in schedules:
        for kill in schedule.kills:
            seen["engine" if kill.victim.startswith("engine") else kill.victim].add(kill.phase)
            if kill.victim.startswith("engine"):
                engine_kills[schedule.engine] += 1
    if SCHEDULES >= 20:
        assert seen["engine"] >= ENGINE_PHASES, table
        assert min(engine_kills[e] for e in ENGINES) >= 5, (engine_kills, table)
        assert seen["lake"] >= SINK_PHASES and seen["online"] >= SINK_PHASES, table


ISSUE_CHANGES, ISSUE_KEYS = 30_000, 6_000


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("engine_name", "kill_after_s"), [
    ("faust", (9.0, 5.0)),  # the schedule that lost most of a Faust run
    ("native", (3.0, 2.0)),  # the native engine is through 30,000 changes in seconds
])
def test_two_kills_the_second_in_start_up__the_entity_state_view_stays_exact(
    services: RunningServices, tmp_path: Path, engine_name: str,
    kill_after_s: tuple[float, float],
) -> None:
    """The schedule that lost most of a run: an entity-state view over 30,000 Debezium changes
    on 3 partitions, each engine killed twice early (Faust 9 s after its start and 5 s after its
    restart, the native engine 3 s and 2 s: during start-up, state recovery and the group join,
    with the killed member still in the group),
    then run until its group has committed everything; then the online sink, killed once,
    run with ``--until-caught-up``. Every key in Redis must be the source table's final row."""
    sfx = uuid.uuid4().hex[:8]
    topic, view = f"cdc.customers_{sfx}", f"customers_{sfx}"
    app_id, namespace = f"issue-{sfx}", f"issue_{sfx}"
    settings = services.settings(lake={"namespace": namespace}, redis={"key_prefix": f"i{sfx}"})
    catalog = TopicCatalog.from_settings(settings.topics)
    specs = [replace(catalog.get(t), partitions=PARTITIONS) for t in (topic, f"features.{view}")]
    TopicAdmin(settings.kafka, services.bootstrap_servers).ensure(
        specs + [s.dlq() for s in specs])
    rnd = random.Random(SEED)
    final: dict[str, dict[str, Any] | None] = {}
    with Producer(settings.kafka, services.bootstrap_servers) as producer:
        for i in range(ISSUE_CHANGES):
            cid = rnd.randrange(ISSUE_KEYS)
            op = "c" if final.get(str(cid)) is None else ("d" if rnd.random() < 0.25 else "u")
            row = {"id": cid, "tier": rnd.choice(["basic", "gold", "vip"]), "credit": i}
            final[str(cid)] = None if op == "d" else {"tier": row["tier"], "credit": i}
            producer.produce(topic, orjson.dumps({
                "op": op, "before": None if op == "c" else row,
                "after": None if op == "d" else row,
                "source": {"ts_ms": _ms(i), "lsn": 1000 + i}}), str(cid))
    module = tmp_path / "views.py"
    module.write_text("from refluent.processors.features import EntityStateView\n"
                      f"customers = EntityStateView({view!r}, {topic!r}, "
                      "columns=('tier', 'credit'))\n")
    env = services.command_env(namespace=namespace, key_prefix=f"i{sfx}",
                               state_dir=tmp_path / "state",
                               REFLUENT_PROCESSING__VIEWS=str(module),
                               REFLUENT_PROCESSING__APP_ID=app_id,
                               REFLUENT_PROCESSING__ENGINE=engine_name)
    engine = RefluentCommand("engine", ["process"], env, tmp_path)
    online = RefluentCommand("online", ["sink", "online", "--group", f"online-{sfx}"], env,
                             tmp_path)
    try:
        for after_s in kill_after_s:
            engine.start()
            time.sleep(after_s)
            engine.kill9()
        assert group_lag(settings.kafka, services.bootstrap_servers, [topic], app_id) > 0, \
            "the kills landed while changes were still to be processed"
        engine.start()
        online.start()
        wait_until_committed(settings.kafka, services.bootstrap_servers, [topic], app_id,
                             timeout_s=CATCH_UP_S, what="the engine", check=engine.check_alive)
        online.kill9()
        online.args.append("--until-caught-up")
        assert online.start().wait(240) == 0
    finally:
        engine.stop(20)
        online.stop(20)

    ends = topic_ends(settings, f"features.{view}")
    updates = read_all(settings, f"features.{view}", sum(ends.values()))
    covered = {(orjson.loads(r.value or b"{}")["source_partition"],
                orjson.loads(r.value or b"{}")["source_offset"]) for r in updates}
    sources = topic_ends(settings, topic)
    lost = sum(1 for p, high in sources.items() for o in range(high) if (p, o) not in covered)
    assert lost == 0, f"{lost} of {ISSUE_CHANGES} changes have no update"
    reader = RedisOnlineReader.from_settings(settings, socket_timeout=10)
    try:
        wrong = [f"{got.entity_id}: got {got.values} deleted={got.deleted}, want "
                 f"{final[got.entity_id]}"
                 for got in reader.get_online_features(view, sorted(final))
                 if not ((got.deleted and not got.found) if final[got.entity_id] is None
                         else (got.found and _same(got.values, final[got.entity_id])))]
    finally:
        reader.close()
    assert wrong == [], f"{len(wrong)} of {len(final)} rows wrong, e.g. {wrong[:5]}"
