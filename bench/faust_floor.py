"""What Faust itself costs per event on this machine: the floor under the Faust engine.

Runs four bare Faust agents over the same pre-produced topic (``--events`` 200-byte records,
3 partitions, 500 keys) on the embedded broker, each in its own worker process:

- ``consume``: the agent iterates the stream and does nothing else;
- ``send``: plus one ``send_soon`` to an output topic per event (a feature update);
- ``table``: plus one table write per event (a changelog record);
- ``send_and_table``: both, which is the I/O the engine does per event.

For each it reports events per wall second and per CPU second of the worker (all its threads),
counted from the first event to the last. Compare ``send_and_table`` with the ``engine`` phase of
``bench/ingest.py``: the difference is what Refluent's views add on top of Faust.

    python bench/faust_floor.py [--events 30000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODES = ("consume", "send", "table", "send_and_table")
PARTITIONS = 3


def worker(bootstrap: str, topic: str, events: int, mode: str) -> None:
    """One Faust worker running the bare agent; writes its result line to stderr and exits."""
    import faust

    app = faust.App(f"floor-{topic}", broker=f"kafka://{bootstrap}", web_enabled=False,
                    producer_linger=0.005, topic_partitions=PARTITIONS, store="memory://")
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
           "value_serializer": "raw"}
    src = app.topic(topic, **raw)
    out = app.topic(topic + "-out", **raw)
    schema = faust.Schema(key_type=str, value_type=bytes, key_serializer="json",
                          value_serializer="raw")
    table = app.Table(f"state-{topic}", default=None, schema=schema, partitions=PARTITIONS)
    write_table = mode in ("table", "send_and_table")
    send = mode in ("send", "send_and_table")
    seen = {"n": 0}
    started: list[float] = []

    @app.agent(src)
    async def bare(stream: Any) -> None:
        async for event in stream.events():
            if not started:
                started[:] = [time.perf_counter(), time.process_time()]
            if write_table:
                table[event.key.decode()] = event.value
            if send:
                out.send_soon(key=event.key, value=event.value)
            seen["n"] += 1
            if seen["n"] == events:
                wall = time.perf_counter() - started[0]
                cpu = time.process_time() - started[1]
                # The worker redirects stdout to its logger: write the result to stderr as is.
                os.write(2, ("RESULT " + json.dumps({"wall_s": wall, "cpu_s": cpu}) + "\n")
                         .encode())
                os._exit(0)

    class Worker(faust.Worker):  # type: ignore[misc]
        def on_setup_root_logger(self, logger: Any, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            logger.setLevel(level or 30)

    Worker(app, loglevel="warn", quiet=True).execute_from_commandline()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        bootstrap, topic, events, mode = args.worker
        worker(bootstrap, topic, int(events), mode)
        return 0

    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from refluent.testing.services import running_services

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, running_services(Path(tmp)) as services:
        admin = AdminClient({"bootstrap.servers": services.bootstrap_servers})
        for mode in MODES:
            topic = f"floor-{mode}-{os.getpid()}"
            admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result()
            producer = Producer({"bootstrap.servers": services.bootstrap_servers,
                                 "linger.ms": 5})
            for i in range(args.events):
                producer.produce(topic, b"x" * 200, key=str(i % 500).encode())
            producer.flush()
            print(f"{mode}: running {args.events} events", file=sys.stderr)
            proc = subprocess.run(  # noqa: S603 - this script, by path
                [sys.executable, __file__, "--worker", services.bootstrap_servers, topic,
                 str(args.events), mode], capture_output=True, text=True, timeout=600,
                check=False)
            lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("RESULT ")]
            if not lines:
                raise RuntimeError(f"{mode}: the worker ended without a result:\n"
                                   f"{proc.stderr[-2000:]}")
            got = json.loads(lines[-1].removeprefix("RESULT "))
            results[mode] = {"events_per_s": round(args.events / got["wall_s"], 1),
                             "events_per_cpu_s": round(args.events / got["cpu_s"], 1),
                             "cpu_us_per_event": round(got["cpu_s"] / args.events * 1e6, 1)}
    print(json.dumps({"bench": "faust_floor", "python": platform.python_version(),
                      "cpus": os.cpu_count(), "events": args.events, "modes": results},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
