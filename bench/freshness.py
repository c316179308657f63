"""Feature freshness: how long from an event's produce until its feature is in Redis, at a
steady rate, with the engine and the online sink running (and, with ``--lake``, the lake sink).

Prints one JSON object. The workload is ``bench/ingest.py``'s (log events of ``--entities``
entities plus a share of Debezium changes, the same views). The engine (``--engine``, the
native one by default) and ``refluent sink online`` are started and warmed up on the first
``--warmup`` events (both have joined their groups and applied them); then the rest are produced
at ``--rate`` events per second, paced every 10 ms.

For ``--tracked`` entities of the windowed view, every event's produce time is kept; a poller
reads those entities' event time (``__et``) from Redis every ``--poll-ms`` ms, and an event
counts as fresh at the first poll that shows an event time at or after its own (an entity's
events are produced in event-time order). So each latency is from the ``produce()`` call to the
first read that sees the feature, an upper bound by at most one poll interval;
``to_sink_write`` is the part until the online sink sent the update (its ``__wt``, taken as it
sends the batch: the rest is Redis and the poll); ``engine_part`` is, for every log event, the
time from its produce to the engine's produce of its update (the records' create times). At
the end Redis is checked against the in-memory engine for every entity, as ``bench/ingest.py``
does.

    python bench/freshness.py [--rate 5000] [--seconds 20] [--entities 500] [--tracked 50]
                              [--engine native] [--lake] [--poll-ms 2] [--no-pin] [--keep DIR]
                              [--no-idempotence]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import orjson
from ingest import (
    Bench,
    Workload,
    check_online,
    cores,
    create_topics,
    err,
    make_workload,
    workdir,
)

from refluent.embedded.commands import RefluentCommand, cpu_seconds
from refluent.embedded.services import check_lake
from refluent.observability.stats import summary
from refluent.online_store.base import EVENT_TIME_FIELD, WRITE_TIME_FIELD, online_key
from refluent.online_store.redis import connect
from refluent.streams.kafka import Producer
from refluent.testing.kafka import read_all
from refluent.testing.services import RunningServices, running_services

WARMUP_TIMEOUT_S = 120.0


class Tracker:
    """Produce times of the tracked entities' events, and the poller that sees them land."""

    def __init__(self, bench: Bench, view: str, entities: list[str], poll_ms: float) -> None:
        settings = bench.settings
        self.redis = connect(settings.redis.url or "")
        self.keys = [online_key(settings.redis.key_prefix, view, e).encode() for e in entities]
        self.index = {e: i for i, e in enumerate(entities)}
        self.pending: list[deque[tuple[int, float, float]]] = [deque() for _ in entities]
        self.latencies: list[float] = []
        self.to_write: list[float] = []
        self.poll_s = poll_ms / 1000
        self.polls = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def produced(self, entity: str, ts_ms: int, at: float) -> None:
        i = self.index.get(entity)
        if i is not None:
            with self._lock:
                self.pending[i].append((ts_ms, at, time.time()))

    def reset(self) -> None:
        """Forget the latencies seen so far (the warm-up's)."""
        with self._lock:
            self.latencies.clear()
            self.to_write.clear()

    def left(self) -> int:
        with self._lock:
            return sum(len(q) for q in self.pending)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.redis.close()

    def _run(self) -> None:
        fields = (EVENT_TIME_FIELD.encode(), WRITE_TIME_FIELD.encode())
        while not self._stop.is_set():
            pipe = self.redis.pipeline(transaction=False)
            for key in self.keys:
                pipe.hmget(key, *fields)
            seen = pipe.execute()
            now = time.perf_counter()
            self.polls += 1
            with self._lock:
                for i, (et_raw, wt_raw) in enumerate(seen):
                    if et_raw is None:
                        continue
                    et = int(et_raw)
                    queue = self.pending[i]
                    while queue and queue[0][0] <= et:
                        _, at, wall = queue.popleft()
                        self.latencies.append(now - at)
                        self.to_write.append(int(wt_raw) / 1000 - wall)
            time.sleep(self.poll_s)


def produce_paced(bench: Bench, work: Workload, events: list[tuple[str, bytes, str, int]],
                  rate: float, tracker: Tracker | None) -> float:
    """Produce ``events`` (topic, value, key, event time ms) at ``rate`` per second, paced every
    10 ms; returns the rate achieved."""
    settings = bench.settings
    if bench.extra_env.get("REFLUENT_KAFKA__IDEMPOTENCE") == "false":
        settings = settings.model_copy(update={
            "kafka": settings.kafka.model_copy(update={"idempotence": False})})
    step = max(1, round(rate / 100))
    started = time.perf_counter()
    with Producer(settings.kafka, settings.kafka.bootstrap_servers or "") as producer:
        for n in range(0, len(events), step):
            due = started + n / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            for topic, value, key, ts_ms in events[n:n + step]:
                at = time.perf_counter()
                producer.produce(topic, value, key)
                if tracker is not None and topic == work.log_topic:
                    tracker.produced(key, ts_ms, at)
            producer.poll(0)
    return len(events) / (time.perf_counter() - started)


def encoded(work: Workload) -> list[tuple[str, bytes, str, int]]:
    """The workload's events in production order: four log events, then a change, and so on."""
    logs = [(work.log_topic, e.model_dump_json().encode(), e.entity_id or "",
             int(e.ts.timestamp() * 1000)) for e in work.logs]
    changes = [(work.cdc_topic, c.model_dump_json().encode(), str(c.row["id"]),
                int(c.event_time.timestamp() * 1000)) for c in work.changes]
    out: list[tuple[str, bytes, str, int]] = []
    per_change = max(1, len(logs) // max(1, len(changes)))
    while logs or changes:
        out += logs[:per_change]
        del logs[:per_change]
        out += changes[:1]
        del changes[:1]
    return out


def engine_delays(bench: Bench, work: Workload, view_topic: str, skip: int) -> list[float]:
    """Seconds from each log event's produce (its record's create time) to its feature
    update's (the engine's produce), for the events after the first ``skip``."""
    sources = {(r.partition, r.offset): r.timestamp_ms for r in read_all(
        bench.settings, work.log_topic, len(work.logs), timeout=5)}
    out = []
    for rec in read_all(bench.settings, view_topic, len(work.logs), timeout=5):
        update = orjson.loads(rec.value or b"{}")
        produced = sources.get((update["source_partition"], update["source_offset"]))
        if produced is not None and rec.timestamp_ms is not None:
            out.append((produced, (rec.timestamp_ms - produced) / 1000))
    out.sort()
    return [d for _, d in out[skip:]]


def wait_applied(tracker: Tracker, procs: list[RefluentCommand], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while tracker.left():
        for proc in procs:
            proc.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{tracker.left()} tracked event(s) not in Redis after "
                               f"{timeout:.0f}s")
        time.sleep(0.05)


def run(args: argparse.Namespace, services: RunningServices, root: Path) -> dict[str, Any]:
    namespace = f"fresh_{uuid.uuid4().hex[:8]}"
    check_lake(services.catalog_uri, services.warehouse, namespace, create=True)
    bench = Bench(services, root, namespace, f"f{uuid.uuid4().hex[:8]}", not args.no_pin)
    total = args.warmup + int(args.rate * args.seconds)
    work = make_workload(root, total, args.entities, args.cdc_share, seed=3)
    events = encoded(work)
    window_view = next(v.name for v in work.views if v.topic.startswith("features.activity"))
    tracked = [f"u{i}" for i in range(args.tracked)]
    engine_core, lake_core, online_core = cores(bench.pin)
    create_topics(bench.settings, work.sources + work.features)
    if args.no_idempotence:
        bench.extra_env["REFLUENT_KAFKA__IDEMPOTENCE"] = "false"
    procs = [bench.engine(work, engine_core, args.engine), bench.online(work, online_core)]
    if args.lake:
        procs.append(bench.lake(work, lake_core))
    tracker = Tracker(bench, window_view, tracked, args.poll_ms)
    tracker.start()
    try:
        err.print(f"warm-up: {args.warmup} events, until the tracked ones are in Redis")
        produce_paced(bench, work, events[:args.warmup], args.rate, tracker)
        wait_applied(tracker, procs, WARMUP_TIMEOUT_S)
        tracker.reset()
        cpu_before = [cpu_seconds(p.pid or 0) or 0.0 for p in procs]
        err.print(f"{len(events) - args.warmup} events at {args.rate:.0f}/s")
        achieved = produce_paced(bench, work, events[args.warmup:], args.rate, tracker)
        wait_applied(tracker, procs, 60.0)
        cpu = [(cpu_seconds(p.pid or 0) or 0.0) - b for p, b in zip(procs, cpu_before, strict=True)]
        latencies, to_write = list(tracker.latencies), list(tracker.to_write)
    finally:
        tracker.stop()
    delays = engine_delays(bench, work, f"features.{window_view}",
                           int(args.warmup * len(work.logs) / total))
    checked = 0
    try:
        deadline = time.monotonic() + 120
        while True:  # the last untracked updates may still be on their way
            try:
                checked = check_online(bench.settings, work)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    finally:
        bench.stop_all()
    names = ["engine", "online", "lake"][:len(procs)]
    return {
        "bench": "freshness",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "pinned": cores(bench.pin),
        "broker": services.kind,
        "engine": args.engine,
        "with_lake_sink": args.lake,
        "idempotent_producers": not args.no_idempotence,
        "rate_asked": args.rate,
        "rate_achieved": round(achieved, 1),
        "events": len(events) - args.warmup,
        "tracked_entities": args.tracked,
        "samples": len(latencies),
        "poll_ms": args.poll_ms,
        "freshness": summary(latencies, quantiles=(0.5, 0.9, 0.99), digits=1),
        "to_sink_write": summary(to_write, digits=1),
        "engine_part": summary(delays, quantiles=(0.5, 0.9, 0.99), digits=1),
        "cpu_share": {n: round(c / args.seconds, 3) for n, c in zip(names, cpu, strict=True)},
        "entities_checked": checked,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=5000.0, help="Events per second.")
    parser.add_argument("--seconds", type=float, default=20.0, help="Seconds at that rate.")
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--entities", type=int, default=500)
    parser.add_argument("--cdc-share", type=float, default=0.2)
    parser.add_argument("--tracked", type=int, default=50)
    parser.add_argument("--engine", default="native")
    parser.add_argument("--lake", action="store_true", help="Run the lake sink as well.")
    parser.add_argument("--poll-ms", type=float, default=2.0)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--no-idempotence", action="store_true",
                        help="Every producer without idempotence (kafka.idempotence = false): "
                             "the embedded broker stalls idempotent deliveries now and then.")
    parser.add_argument("--keep", help="Keep the services' state and the commands' logs here.")
    args = parser.parse_args()
    with workdir(args.keep) as root, running_services(root / "services") as svc:
        result = run(args, svc, root)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
