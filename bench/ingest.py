"""Ingest throughput: source topics to features in Redis and rows in Iceberg, on the embedded
services (Tansu broker, redis-server, SQLite Iceberg catalog), through the real commands.

Prints one JSON object. The workload is ``--events`` events, a share ``--cdc-share`` of them
Debezium changes of a customers table (one entity-state view) and the rest log events of
``--entities`` entities (one windowed feature view with four aggregations). Every event yields
one feature update, so the features topics end up with as many records as there are events.

Phases, each timed from spawning its command until everything it has to do is visible (the
commands' start-up, group joins included):

- ``engine_<name>``: ``refluent process`` on each engine of ``--engines`` (the native engine
  and Faust by default), alone, over the same events already on source topics of its own, until
  its features topics hold every expected update.
- ``lake``: ``refluent sink lake`` alone, over the source and features topics, until every
  table's snapshot offsets reach the end of its topic.
- ``online``: ``refluent sink online`` alone, over the features topics, until its group has
  committed the end of every features topic (it commits only after Redis has answered).
- ``end_to_end``: the three commands (the engine ``--e2e-engine``) started together on fresh
  topics, events produced right after the start; wall time from the first produced event until
  the lake and Redis hold everything. ``from_spawn_s`` adds the time between spawning and the
  first produce; ``cpu_s`` is where the cores went: each command's CPU seconds and the
  services' (broker, Redis) during the phase.

``*_per_cpu_s`` rates of the isolated phases divide by the command's CPU time (user + system,
all threads). ``steady_*`` rates leave the start-up out: they count from the first progress seen
(null when everything appeared in one step), and the steady per-CPU rates count the work after
it against the CPU used since then. Progress is polled once a second with ListOffsets, OffsetFetch
and the tables' snapshot summaries, never with fetches, so polling does not load the broker the
commands share.

Each command is pinned to one core with ``taskset`` where available (on a machine with fewer
than three cores the sinks share one). Redis is checked against the in-memory runner at the end
(every entity's values and event time), so a fast but wrong run does not count.

    python bench/ingest.py [--events 50000] [--entities 500] [--cdc-share 0.2]
                           [--engines native,faust] [--e2e-engine native]
                           [--phase-timeout 600] [--no-pin] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from refluent.config import Settings
from refluent.embedded.commands import RefluentCommand, cpu_seconds
from refluent.embedded.services import check_lake
from refluent.engines.memory import InMemoryRunner
from refluent.lake.catalog import load_table, open_catalog
from refluent.lake.errors import LakeTableNotFoundError
from refluent.lake.offsets import read_offsets
from refluent.online_store.redis import RedisOnlineReader
from refluent.processors.features import discover
from refluent.sinks.pipeline import lake_table_for
from refluent.streams.contracts import CdcEnvelope, LogEvent
from refluent.streams.kafka import (
    Producer,
    TopicAdmin,
    fetched_high_watermarks,
)
from refluent.streams.topics import TopicCatalog
from refluent.testing.kafka import topic_ends
from refluent.testing.services import RunningServices, running_services

err = Console(stderr=True)
GOAL_EVENTS_PER_S = 20_000
T0 = datetime(2026, 6, 1, tzinfo=UTC)
POLL_S = 1.0

VIEWS = """
from datetime import timedelta
from refluent.processors.aggregations import Aggregation
from refluent.processors.features import EntityStateView, FeatureView
from refluent.processors.windows import Sliding, Tumbling

activity = FeatureView("activity_{sfx}", "entity_id", ("logs.{sfx}",), (
    Aggregation("events_1h", "count", None, Tumbling(timedelta(hours=1))),
    Aggregation("spend_1h", "sum", "amount", Tumbling(timedelta(hours=1))),
    Aggregation("max_10m", "max", "amount", Sliding(timedelta(minutes=10))),
    Aggregation("last_page", "last", "page", Tumbling(timedelta(hours=1))),
))
customers = EntityStateView("customers_{sfx}", "cdc.customers_{sfx}", columns=("tier", "credit"))
"""


# ---------------------------------------------------------------------------------------------
# workload
# ---------------------------------------------------------------------------------------------


@dataclass
class Workload:
    """One run's topics, views and events, and what the views make of them."""

    sfx: str
    root: Path
    logs: list[LogEvent]
    changes: list[CdcEnvelope]
    runner: InMemoryRunner = field(init=False)

    def __post_init__(self) -> None:
        self.module = self.root / f"views_{self.sfx}.py"
        self.module.write_text(VIEWS.replace("{sfx}", self.sfx))
        self.views = discover(str(self.module))
        self.runner = InMemoryRunner(self.views)
        self.runner.feed(self.log_topic, self.logs)
        self.runner.feed(self.cdc_topic, self.changes)

    @property
    def log_topic(self) -> str:
        return f"logs.{self.sfx}"

    @property
    def cdc_topic(self) -> str:
        return f"cdc.customers_{self.sfx}"

    @property
    def sources(self) -> list[str]:
        return [self.log_topic, self.cdc_topic]

    @property
    def features(self) -> list[str]:
        return [v.topic for v in self.views]

    @property
    def events(self) -> int:
        return len(self.logs) + len(self.changes)

    @property
    def updates(self) -> int:
        return len(self.runner.updates)


def make_workload(root: Path, events: int, entities: int, cdc_share: float,
                  seed: int) -> Workload:
    """Log events of ``entities`` entities, 1.3 s apart in event time, and changes of
    ``entities // 5`` customers (creates first, then updates and some deletes)."""
    rnd = random.Random(seed)
    n_cdc = int(events * cdc_share)
    logs = [LogEvent(source="app", ts=T0 + timedelta(seconds=1.3 * i), message="view",
                     entity_id=f"u{rnd.randrange(entities)}",
                     attributes={"amount": rnd.randrange(100), "page": f"/p{rnd.randrange(40)}"})
            for i in range(events - n_cdc)]
    customers = max(1, entities // 5)
    changes = []
    for i in range(n_cdc):
        cid = i if i < customers else rnd.randrange(customers)
        row = {"id": cid, "tier": rnd.choice(["basic", "gold", "vip"]),
               "credit": round(rnd.random() * 1000, 2)}
        op = "c" if i < customers else ("d" if rnd.random() < 0.05 else "u")
        changes.append(CdcEnvelope.model_validate({
            "op": op, "before": None if op == "c" else row, "after": None if op == "d" else row,
            "source": {"ts_ms": int((T0 + timedelta(seconds=6.5 * i)).timestamp() * 1000),
                       "lsn": 1000 + i}}))
    return Workload(uuid.uuid4().hex[:8], root, logs, changes)


def create_topics(settings: Settings, names: list[str]) -> None:
    catalog = TopicCatalog.from_settings(settings.topics)
    specs = [catalog.get(n) for n in names]
    TopicAdmin(settings.kafka, settings.kafka.bootstrap_servers or "").ensure(
        specs + [s.dlq() for s in specs])


def produce(settings: Settings, work: Workload) -> float:
    """Produce the workload (acknowledged); returns the seconds it took."""
    started = time.perf_counter()
    with Producer(settings.kafka, settings.kafka.bootstrap_servers or "") as producer:
        for event in work.logs:
            producer.produce(work.log_topic, event.model_dump_json().encode(),
                             event.entity_id)
        for change in work.changes:
            producer.produce(work.cdc_topic, change.model_dump_json().encode(),
                             str(change.row["id"]))
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------


@dataclass
class Bench:
    """The services, the settings the commands get, and where their logs go."""

    services: RunningServices
    root: Path
    namespace: str
    key_prefix: str
    pin: bool
    procs: list[RefluentCommand] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    """Settings every command gets on top (``REFLUENT_...`` variables)."""

    @property
    def settings(self) -> Settings:
        return self.services.settings(lake={"namespace": self.namespace},
                                      redis={"key_prefix": self.key_prefix})

    def env(self, work: Workload) -> dict[str, str]:
        svc = self.services
        env = {k: v for k, v in os.environ.items() if not k.startswith("REFLUENT_")}
        empty = self.root / "empty.toml"
        empty.touch()
        env.update({
            "REFLUENT_CONFIG": str(empty),
            "REFLUENT_KAFKA__BOOTSTRAP_SERVERS": svc.bootstrap_servers,
            "REFLUENT_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "REFLUENT_REDIS__URL": svc.redis_url,
            "REFLUENT_REDIS__KEY_PREFIX": self.key_prefix,
            "REFLUENT_LAKE__CATALOG_URI": svc.catalog_uri,
            "REFLUENT_LAKE__WAREHOUSE": svc.warehouse,
            "REFLUENT_LAKE__NAMESPACE": self.namespace,
            "REFLUENT_PROCESSING__VIEWS": str(work.module),
            "REFLUENT_PROCESSING__APP_ID": f"bench-{work.sfx}",
            "REFLUENT_EMBEDDED__STATE_DIR": str(self.root / "cli-state"),
            **self.extra_env,
        })
        return env

    def spawn(self, name: str, args: list[str], work: Workload, core: int | None,
              **extra: str) -> RefluentCommand:
        prefix = ["taskset", "-c", str(core)] if core is not None else []
        cmd = RefluentCommand(f"{name}-{work.sfx}", args, {**self.env(work), **extra},
                              self.root, prefix=prefix).start()
        self.procs.append(cmd)
        return cmd

    def engine(self, work: Workload, core: int | None, engine: str) -> RefluentCommand:
        return self.spawn(f"engine-{engine}", ["process"], work, core,
                          REFLUENT_PROCESSING__ENGINE=engine)

    def lake(self, work: Workload, core: int | None) -> RefluentCommand:
        return self.spawn("lake", ["sink", "lake", *work.sources, *work.features,
                                   "--group", f"lake-{work.sfx}"], work, core)

    def online(self, work: Workload, core: int | None) -> RefluentCommand:
        return self.spawn("online", ["sink", "online", "--group", f"online-{work.sfx}"], work,
                          core)

    def stop_all(self) -> None:
        for cmd in self.procs:
            cmd.terminate()
        for cmd in self.procs:
            cmd.stop()
        self.procs.clear()


def cores(pin: bool) -> list[int | None]:
    """Cores for the engine, the lake sink and the online sink (None: not pinned)."""
    if not pin or shutil.which("taskset") is None or not hasattr(os, "sched_getaffinity"):
        return [None, None, None]
    mine: list[int | None] = [*sorted(os.sched_getaffinity(0))]
    if len(mine) >= 3:
        return mine[:3]
    # Two cores: the engine (the slowest stage) gets one, the two sinks share the other.
    return [mine[0], mine[-1], mine[-1]]


# ---------------------------------------------------------------------------------------------
# progress probes
# ---------------------------------------------------------------------------------------------


class Probe:
    """Cheap progress reads for polling: ListOffsets, OffsetFetch and one small fetch.

    ListOffsets(latest) is exact on Kafka; the embedded broker answers the start of the last
    batch plus one, so the end is completed with a fetch of that last batch only (small, and
    once a second), whose response carries the exact high watermark.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumers: dict[str, Consumer] = {}
        self._partitions: dict[str, list[int]] = {}

    def _consumer(self, group: str) -> Consumer:
        consumer = self._consumers.get(group)
        if consumer is None:
            conf = self.settings.kafka.client_config(self.settings.kafka.bootstrap_servers or "")
            conf.update({"group.id": group, "enable.auto.commit": False})
            consumer = self._consumers[group] = Consumer(conf)
        return consumer

    def _tps(self, topic: str) -> list[TopicPartition]:
        if topic not in self._partitions:
            md = self._consumer("bench-probe").list_topics(topic, timeout=10)
            self._partitions[topic] = sorted(md.topics[topic].partitions)
        return [TopicPartition(topic, p) for p in self._partitions[topic]]

    def ends(self, topic: str) -> dict[int, int]:
        consumer = self._consumer("bench-probe")
        listed = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1]
                  for tp in self._tps(topic)}
        starts: dict[tuple[str, int], int | None] = {
            (topic, p): end - 1 for p, end in listed.items() if end > 0}
        if not starts:
            return listed
        kafka = self.settings.kafka
        marks = fetched_high_watermarks(kafka, kafka.bootstrap_servers or "", starts)
        return {p: max(end, marks.get((topic, p), (0, 0))[1]) for p, end in listed.items()}

    def committed(self, topic: str, group: str) -> dict[int, int]:
        got = self._consumer(group).committed(self._tps(topic), timeout=10)
        return {tp.partition: max(tp.offset, 0) for tp in got}

    def close(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers.clear()


def features_produced(probe: Probe, work: Workload) -> int:
    return sum(sum(probe.ends(t).values()) for t in work.features)


def lake_landed(settings: Settings, ends: dict[str, dict[int, int]]) -> int:
    """Records (rows, tombstones) the lake tables' offsets cover, counted against ``ends``."""
    catalog = open_catalog(settings)
    done = 0
    for topic, end in ends.items():
        try:
            table = load_table(catalog, lake_table_for(topic), settings.lake.namespace)
        except LakeTableNotFoundError:  # the sink has not set up yet
            continue
        offsets = read_offsets(table)
        done += sum(min(offsets.get((topic, p), 0), high) for p, high in end.items())
    return done


def online_applied(probe: Probe, work: Workload) -> int:
    """Feature updates the online sink has committed (it commits only once Redis answered)."""
    done = 0
    for topic in work.features:
        ends, committed = probe.ends(topic), probe.committed(topic, f"online-{work.sfx}")
        done += sum(min(committed.get(p, 0), high) for p, high in ends.items())
    return done


@dataclass
class Waited:
    """How a phase went: its seconds, and at its first progress seen (None: none before the
    end) the seconds, the count done and the first command's CPU seconds."""

    seconds: float
    first: float | None = None
    first_done: int = 0
    first_cpu: float | None = None

    def steady_per_cpu_s(self, total: int, cpu: float | None) -> float | None:
        """Work done after the first progress per CPU-second used since then."""
        if cpu is None or self.first_cpu is None or cpu <= self.first_cpu:
            return None
        return rate(total - self.first_done, cpu - self.first_cpu)


def wait_for(progress: Progress, label: str, total: int, probe: Callable[[], int],
             procs: list[RefluentCommand], timeout: float) -> Waited:
    """Poll ``probe`` until it reaches ``total``. Raises if a command exits (with its output)
    or ``timeout`` passes."""
    task = progress.add_task(label, total=total)
    started = time.perf_counter()
    waited = Waited(0.0)
    for _ in range(int(timeout / POLL_S) + 1):
        done = probe()
        progress.update(task, completed=done)
        now = time.perf_counter() - started
        if done and waited.first is None:
            waited.first, waited.first_done = now, done
            waited.first_cpu = cpu_seconds(procs[0].pid) if procs[0].pid is not None else None
        if done >= total:
            waited.seconds = now
            return waited
        for cmd in procs:
            cmd.check_alive()
        if now > timeout:
            break
        time.sleep(POLL_S)
    raise TimeoutError(f"{label}: {probe()} of {total} after {timeout:.0f}s")


def rate(n: int, seconds: float | None) -> float | None:
    return round(n / seconds, 1) if seconds else None


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------


def check_online(settings: Settings, work: Workload) -> int:
    """Compare every entity in Redis with the in-memory runner; returns the entities checked.

    Raises:
        AssertionError: an entity differs.
    """
    reader = RedisOnlineReader.from_settings(settings, socket_timeout=10)
    checked = 0
    try:
        for view in work.views:
            expected = work.runner.online[view.name]
            ids = sorted(expected)
            for i in range(0, len(ids), 500):
                for got in reader.get_online_features(view.name, ids[i:i + 500]):
                    want = expected[got.entity_id]
                    assert got.event_time == want.event_time, (view.name, got.entity_id)
                    assert got.deleted == want.deleted, (view.name, got.entity_id)
                    if not want.deleted:
                        assert got.values == want.values, (view.name, got.entity_id)
                    checked += 1
    finally:
        reader.close()
    return checked


# ---------------------------------------------------------------------------------------------
# phases
# ---------------------------------------------------------------------------------------------


def isolated(bench: Bench, work: Workload, args: argparse.Namespace, progress: Progress,
             probe: Probe) -> dict[str, Any]:
    """Each engine, then the lake sink, then the online sink, each alone."""
    settings = bench.settings
    engine_core, lake_core, online_core = cores(bench.pin)
    out: dict[str, Any] = {}
    for i, name in enumerate(args.engines):
        # Each engine gets the same events on topics of its own (its state starts empty).
        mine = work if i == 0 else make_workload(work.root, args.events, args.entities,
                                                 args.cdc_share, seed=1)
        create_topics(settings, mine.sources + mine.features)
        produce_s = produce(settings, mine)
        out.setdefault("produce", {"seconds": round(produce_s, 2),
                                   "events_per_s": rate(mine.events, produce_s)})
        engine = bench.engine(mine, engine_core, name)
        waited = wait_for(progress, f"{name} engine (source -> features)", mine.updates,
                          lambda m=mine: features_produced(probe, m), [engine],
                          args.phase_timeout)
        cpu = cpu_seconds(engine.pid) if engine.pid is not None else None
        bench.stop_all()
        out[f"engine_{name}"] = {
            "seconds": round(waited.seconds, 2),
            "events_per_s": rate(mine.events, waited.seconds),
            "steady_events_per_s": rate(mine.events, waited.seconds - (waited.first or 0)),
            "startup_s": round(waited.first or 0, 2), "cpu_s": cpu,
            "events_per_cpu_s": rate(mine.events, cpu),
            "steady_events_per_cpu_s": waited.steady_per_cpu_s(mine.updates, cpu)}

    ends = {t: topic_ends(settings, t) for t in work.sources + work.features}
    total = sum(sum(e.values()) for e in ends.values())
    lake = bench.lake(work, lake_core)
    waited = wait_for(progress, "lake (sources + features -> Iceberg)", total,
                      lambda: lake_landed(settings, ends), [lake], args.phase_timeout)
    cpu = cpu_seconds(lake.pid) if lake.pid is not None else None
    bench.stop_all()
    out["lake"] = {"seconds": round(waited.seconds, 2), "records": total,
                   "records_per_s": rate(total, waited.seconds),
                   "events_per_s": rate(work.events, waited.seconds),
                   "steady_records_per_s": rate(total, waited.seconds - (waited.first or 0)),
                   "cpu_s": cpu, "records_per_cpu_s": rate(total, cpu),
                   "steady_records_per_cpu_s": waited.steady_per_cpu_s(total, cpu)}

    online = bench.online(work, online_core)
    waited = wait_for(progress, "online (features -> Redis)", work.updates,
                      lambda: online_applied(probe, work), [online], args.phase_timeout)
    cpu = cpu_seconds(online.pid) if online.pid is not None else None
    bench.stop_all()
    out["online"] = {"seconds": round(waited.seconds, 2),
                     "updates_per_s": rate(work.updates, waited.seconds),
                     "events_per_s": rate(work.events, waited.seconds),
                     "steady_updates_per_s": rate(work.updates,
                                                  waited.seconds - (waited.first or 0)),
                     "cpu_s": cpu, "updates_per_cpu_s": rate(work.updates, cpu),
                     "steady_updates_per_cpu_s": waited.steady_per_cpu_s(work.updates, cpu)}
    out["online"]["entities_checked"] = check_online(settings, work)
    return out


def end_to_end(bench: Bench, work: Workload, args: argparse.Namespace, progress: Progress,
               probe: Probe) -> dict[str, Any]:
    """All three commands at once on fresh topics, events produced right after the start."""
    settings = bench.settings
    engine_core, lake_core, online_core = cores(bench.pin)
    create_topics(settings, work.sources + work.features)
    services = {n: cpu_seconds(pid) or 0.0 for n, pid in bench.services.pids.items()}
    spawned = time.perf_counter()
    procs = [bench.engine(work, engine_core, args.e2e_engine), bench.lake(work, lake_core),
             bench.online(work, online_core)]
    started = time.perf_counter()
    produce(settings, work)
    produced = time.perf_counter()
    wait_for(progress, "end to end: features topics", work.updates,
             lambda: features_produced(probe, work), procs, args.phase_timeout)
    ends = {t: topic_ends(settings, t) for t in work.sources + work.features}
    total = sum(sum(e.values()) for e in ends.values())
    left = args.phase_timeout - (time.perf_counter() - started)
    wait_for(progress, "end to end: Redis", work.updates,
             lambda: online_applied(probe, work), procs, left)
    left = args.phase_timeout - (time.perf_counter() - started)
    wait_for(progress, "end to end: Iceberg", total,
             lambda: lake_landed(settings, ends), procs, left)
    done = time.perf_counter()
    # Where the two cores went: each command's CPU seconds (start-up included), and the
    # services' during the phase.
    cpu = {n: cpu_seconds(p.pid) if p.pid is not None else None
           for n, p in zip(("engine", "lake", "online"), procs, strict=True)}
    cpu.update({n: round((cpu_seconds(pid) or 0.0) - services[n], 2)
                for n, pid in bench.services.pids.items()})
    bench.stop_all()
    wall = done - started
    return {"seconds": round(wall, 2), "from_spawn_s": round(done - spawned, 2),
            "produce_s": round(produced - started, 2), "events_per_s": rate(work.events, wall),
            "lake_records": total, "cpu_s": cpu,
            "entities_checked": check_online(settings, work)}


def run(args: argparse.Namespace, services: RunningServices, root: Path) -> dict[str, Any]:
    namespace = f"bench_{uuid.uuid4().hex[:8]}"
    check_lake(services.catalog_uri, services.warehouse, namespace, create=True)
    bench = Bench(services, root, namespace, f"b{uuid.uuid4().hex[:8]}", not args.no_pin)
    probe = Probe(bench.settings)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err) as progress:
            work = make_workload(root, args.events, args.entities, args.cdc_share, seed=1)
            err.print(f"{work.events} events -> {work.updates} feature updates")
            phases = isolated(bench, work, args, progress, probe)
            work2 = make_workload(root, args.events, args.entities, args.cdc_share, seed=2)
            phases["end_to_end"] = end_to_end(bench, work2, args, progress, probe)
    except BaseException:
        for log in sorted(root.glob("*.log")):
            err.print(f"--- {log.name} ---")
            err.print(log.read_text(errors="replace")[-2000:], markup=False, highlight=False)
        raise
    finally:
        bench.stop_all()
        probe.close()
    e2e = phases["end_to_end"]["events_per_s"] or 0.0
    return {
        "bench": "ingest",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "pinned": cores(bench.pin),
        "broker": services.kind,
        "events": args.events,
        "entities": args.entities,
        "cdc_share": args.cdc_share,
        "feature_updates": work.updates,
        "engines": args.engines,
        "e2e_engine": args.e2e_engine,
        **phases,
        "goal": f"end_to_end events_per_s >= {GOAL_EVENTS_PER_S}",
        "end_to_end_events_per_s": e2e,
        "goal_met": e2e >= GOAL_EVENTS_PER_S,
    }


@contextlib.contextmanager
def workdir(keep: str | None) -> Iterator[Path]:
    if keep:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="refluent-ingest-") as tmp:
        yield Path(tmp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--entities", type=int, default=500)
    parser.add_argument("--cdc-share", type=float, default=0.2)
    parser.add_argument("--engines", type=lambda v: [e for e in v.split(",") if e],
                        default=["native", "faust"],
                        help="Engines timed alone, in order (comma-separated).")
    parser.add_argument("--e2e-engine", default="native", help="The engine of the end-to-end "
                        "phase.")
    parser.add_argument("--phase-timeout", type=float, default=600.0,
                        help="Longest a phase may take (seconds).")
    parser.add_argument("--no-pin", action="store_true", help="Do not pin commands to cores.")
    parser.add_argument("--keep", help="Keep the services' state, logs and lake in this folder.")
    args = parser.parse_args()
    with workdir(args.keep) as root, running_services(root / "services") as svc:
        result = run(args, svc, root)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
