"""Refluent's engines beside a peer: the native engine, the Faust engine and Quix Streams over the
same log events on the same embedded broker, a tumbling count, mean and max of the amount per
entity, each alone.

Prints one JSON object. Each runner gets its own copy of ``--events`` log events (``--entities``
entities, 1.3 s apart in event time, keyed by entity, on a 3-partition topic) and is timed from
spawning its process until its output topic holds one record per event (Refluent publishes one
feature update per event; Quix Streams' ``.current()`` one window value per event): wall time,
``steady`` rate from the first output seen, and the process's CPU seconds (``events_per_cpu_s``
with start-up; ``steady_events_per_cpu_s`` counts the events output after the first output seen
against the CPU used since then, leaving imports and the group join out). Each keeps its state
with a changelog topic. The last output of every entity is then checked against a brute-force
count, mean and max of that entity's events in its last window, so a fast but wrong run does not
count.

The peer runs in its own environment (Quix Streams pins its own client libraries), made on first
use in ``.bench-peers/quix`` (``--quix-python`` to use another); see ``bench/peers/quix_app.py``
for the one patch it needs on the embedded broker.

    python bench/engines_peer.py [--events 50000] [--entities 500] [--runners native,faust,quix]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refluent.embedded.commands import RefluentCommand, cpu_seconds  # noqa: E402
from refluent.streams.contracts import LogEvent  # noqa: E402
from refluent.streams.io import tail  # noqa: E402
from refluent.streams.kafka import Producer, TopicAdmin  # noqa: E402
from refluent.streams.topics import TopicCatalog  # noqa: E402
from refluent.testing.kafka import topic_ends  # noqa: E402
from refluent.testing.services import RunningServices, running_services  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUIX_VERSION = "3.28.1"
T0 = datetime(2026, 6, 1, tzinfo=UTC)
WINDOW = timedelta(hours=1)
PARTITIONS = 3
VIEW = """
from datetime import timedelta
from refluent.processors.aggregations import Aggregation
from refluent.processors.features import FeatureView
from refluent.processors.windows import Tumbling

peer = FeatureView("{view}", "entity_id", ("{topic}",), (
    Aggregation("count", "count", None, Tumbling(timedelta(hours=1))),
    Aggregation("mean", "mean", "amount", Tumbling(timedelta(hours=1))),
    Aggregation("max", "max", "amount", Tumbling(timedelta(hours=1))),
))
"""


def events(n: int, entities: int) -> list[LogEvent]:
    rnd = random.Random(1)
    return [LogEvent(source="app", ts=T0 + timedelta(seconds=1.3 * i), message="view",
                     entity_id=f"u{rnd.randrange(entities)}",
                     attributes={"amount": rnd.randrange(100)}) for i in range(n)]


def expected(evs: list[LogEvent]) -> dict[str, tuple[int, float, int]]:
    """Per entity, count, mean and max of its events in the window of its last event."""
    by_entity: dict[str, list[LogEvent]] = defaultdict(list)
    for e in evs:
        by_entity[str(e.entity_id)].append(e)
    out = {}
    size = int(WINDOW.total_seconds() * 1000)
    for entity, mine in by_entity.items():
        start = int(mine[-1].ts.timestamp() * 1000) // size * size
        amounts = [int(e.attributes["amount"]) for e in mine
                   if start <= int(e.ts.timestamp() * 1000) < start + size]
        out[entity] = (len(amounts), sum(amounts) / len(amounts), max(amounts))
    return out


def quix_python(given: str | None) -> str:
    """The peer environment's interpreter, made on first use."""
    if given:
        return given
    venv = ROOT / ".bench-peers" / "quix"
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"making {venv} (quixstreams=={QUIX_VERSION})", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # noqa: S603
        subprocess.run([str(python), "-m", "pip", "install", "-q",  # noqa: S603
                        f"quixstreams=={QUIX_VERSION}"], check=True)
    return str(python)


class Run:
    """One runner's topics, process and measurements."""

    def __init__(self, name: str, svc: RunningServices, root: Path, evs: list[LogEvent],
                 quix: str | None) -> None:
        self.name, self.svc, self.root, self.evs, self.quix = name, svc, root, evs, quix
        sfx = uuid.uuid4().hex[:6]
        self.topic = f"logs.peer_{name}_{sfx}"
        self.view = f"peer_{name}_{sfx}"
        self.output = f"features.{self.view}"
        self.group = f"peer-{name}-{sfx}"
        self.settings = svc.settings()

    def prepare(self) -> None:
        catalog = TopicCatalog.from_settings(self.settings.topics)
        specs = [catalog.get(t) for t in (self.topic, self.output)]
        specs = [replace(s, partitions=PARTITIONS) for s in specs]
        TopicAdmin(self.settings.kafka, self.svc.bootstrap_servers).ensure(
            specs + [s.dlq() for s in specs])
        with Producer(self.settings.kafka, self.svc.bootstrap_servers) as producer:
            for e in self.evs:
                producer.produce(self.topic, e.model_dump_json().encode(), e.entity_id)

    def spawn(self) -> subprocess.Popen[bytes] | RefluentCommand:
        log = (self.root / f"{self.name}.log").open("ab")
        if self.name == "quix":
            return subprocess.Popen(  # noqa: S603 - the bench's own peer script
                [self.quix or "", str(ROOT / "bench" / "peers" / "quix_app.py"),
                 "--bootstrap", self.svc.bootstrap_servers, "--input", self.topic,
                 "--output", self.output, "--group", self.group,
                 "--state-dir", str(self.root / f"quix-state-{self.group}")],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        module = self.root / f"{self.view}.py"
        module.write_text(VIEW.replace("{view}", self.view).replace("{topic}", self.topic))
        env = self.svc.command_env(namespace="peer", state_dir=self.root / "state",
                                   REFLUENT_PROCESSING__VIEWS=str(module),
                                   REFLUENT_PROCESSING__APP_ID=self.group,
                                   REFLUENT_PROCESSING__ENGINE=self.name,
                                   REFLUENT_TOPICS__DEFAULT_PARTITIONS=str(PARTITIONS))
        return RefluentCommand(self.name, ["process"], env, self.root).start()

    def measure(self, timeout: float) -> dict[str, Any]:
        started = time.perf_counter()
        proc = self.spawn()
        popen = proc.proc if isinstance(proc, RefluentCommand) else proc
        assert popen is not None  # noqa: S101 - started
        first: float | None = None
        first_done, first_cpu = 0, None
        try:
            while True:
                done = sum(topic_ends(self.settings, self.output).values())
                now = time.perf_counter() - started
                if done and first is None:
                    first, first_done, first_cpu = now, done, cpu_seconds(popen.pid)
                if done >= len(self.evs):
                    break
                if popen.poll() is not None or now > timeout:
                    log = (self.root / f"{self.name}.log").read_text(errors="replace")
                    raise RuntimeError(f"{self.name}: {done} of {len(self.evs)} after "
                                       f"{now:.0f}s\n{log[-3000:]}")
                time.sleep(0.25)
            cpu = cpu_seconds(popen.pid)
        finally:
            popen.terminate()
            try:
                popen.wait(30)
            except subprocess.TimeoutExpired:
                popen.kill()
        n = len(self.evs)
        return {"seconds": round(now, 2), "events_per_s": round(n / now),
                "steady_events_per_s": round(n / (now - first)) if first and now > first
                else None, "first_output_s": round(first or 0, 2), "cpu_s": cpu,
                "events_per_cpu_s": round(n / cpu) if cpu else None,
                "steady_events_per_cpu_s": round((n - first_done) / (cpu - first_cpu))
                if cpu and first_cpu is not None and cpu > first_cpu and n > first_done
                else None,
                "checked_entities": self.check()}

    def check(self) -> int:
        """The last output of each entity against the brute force; returns entities checked."""
        last: dict[str, tuple[Any, ...]] = {}
        for rec in tail(self.settings.kafka, self.svc.bootstrap_servers, self.output,
                        from_beginning=True, idle_timeout=3):
            value = orjson.loads(rec.value or b"{}")
            key = (rec.key or b"").decode()
            if self.name == "quix":
                got = (value["count"], value["mean"], value["max"])
                order: tuple[Any, ...] = (value["start"], rec.partition, rec.offset)
            else:
                v = value["values"]
                got = (v["count"], v["mean"], v["max"])
                order = (value["event_time"], value["sequence"])
            if key not in last or order >= last[key][0]:
                last[key] = (order, got)
        want = expected(self.evs)
        wrong = {k: (last.get(k, (None, None))[1], w) for k, w in want.items()
                 if k not in last or last[k][1][0] != w[0] or last[k][1][2] != w[2]
                 or abs(last[k][1][1] - w[1]) > 1e-9}
        if wrong:
            raise AssertionError(f"{self.name}: {len(wrong)} entities differ, e.g. "
                                 f"{list(wrong.items())[:3]}")
        return len(want)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--entities", type=int, default=500)
    ap.add_argument("--runners", type=lambda v: [r for r in v.split(",") if r],
                    default=["native", "faust", "quix"])
    ap.add_argument("--quix-python", default=None)
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()
    quix = quix_python(args.quix_python) if "quix" in args.runners else None
    evs = events(args.events, args.entities)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="refluent-peer-") as tmp, \
            running_services(Path(tmp) / "services") as svc:
        for name in args.runners:
            run = Run(name, svc, Path(tmp), evs, quix)
            run.prepare()
            print(f"{name}: {args.events} events on {run.topic}", file=sys.stderr)
            out[name] = run.measure(args.timeout)
            print(f"{name}: {out[name]}", file=sys.stderr)
        broker = svc.kind
    native = out.get("native", {}).get("events_per_cpu_s")
    quix_rate = out.get("quix", {}).get("events_per_cpu_s")
    print(json.dumps({
        "bench": "engines_peer", "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "broker": broker, "events": args.events, "entities": args.entities,
        "partitions": PARTITIONS, "window": "tumbling 1h: count, mean, max per entity",
        "quixstreams": QUIX_VERSION if quix else None, **out,
        "goal": "native events_per_cpu_s >= 50000 and ahead of quix",
        "native_ahead_of_quix": (native > quix_rate) if native and quix_rate else None,
        "goal_met": bool(native and quix_rate and native >= 50_000 and native > quix_rate),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
