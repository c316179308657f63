"""Request -> prediction latency of the Kafka prediction service, and its highest sustained rate.

Prints one JSON object. Starts its own services (see :mod:`refluent.testing.services`): broker,
Redis, SQLite lake catalog with the model registry.

    python bench/serving_latency.py [--model river|onnx] [--rate 1000] [--seconds 10]

Setup: a model registered as champion (``river``: scaler + logistic regression over 2
features; ``onnx``: a 2-layer perceptron over 8 features), its features written to Redis for
1000 entities through ``RedisOnlineStore``, and the service (``KafkaPredictionService`` with
the default serving settings: drained batches of at most 64, offsets committed every 100 ms)
running in a child process, so the load generator does not share its interpreter.

Measured in this process: a paced producer sends ``PredictionRequest`` records at a fixed rate
and notes each send time; a consumer on ``predictions`` notes each receipt. Latency = receipt
minus send (milliseconds, nearest-rank percentiles). The service reports its own per-batch
breakdown for the same phase: ``fetch`` (online features), ``model`` (one ``predict_many``),
``produce`` (queueing the predictions; the broker's acknowledgements are awaited before each
commit, off the request path).

Phases: warm-up (the consumer group joins); the broker alone (``broker_one_hop_*``: the same
paced stream produced and consumed with no service in between, the floor each of the request's
two hops costs); ``--rate`` requests/s for ``--seconds``; then the rate steps up (3 s per step)
until p99 passes 500 ms (a backlog building up) or the backlog does not drain within 2 s of
the last send;
``max_sustained_rate`` is the last step that held. Goal: ``p99_ms <= 10`` at 1000 requests/s.

``http``: the same rate for the same time as Open Inference Protocol calls to the service's
HTTP front end (``POST /v2/models/bench/infer`` with the entity id, over 32 keep-alive
connections, aiohttp), request to response; each answer is also published to Kafka, off the
response path. No broker hop is on this path, so it shows the service's own latency.

``cpu_percent``: the share of one core each process (broker, Redis, service, load generator)
used while a phase's requests were sent; with two hops through the broker its share is what
limits latency on a small machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from refluent.config import Settings
from refluent.embedded.commands import cpu_seconds
from refluent.observability.stats import quantile
from refluent.processors.aggregations import Aggregation
from refluent.processors.features import FeatureView
from refluent.processors.windows import Tumbling

ENTITIES = 1000
MAX_P99_MS = 500.0
"""A step holds when its backlog drains within 2 s of the last send and its p99 stays under
this: a p99 of the order of the step's length means requests queue up faster than they are
answered, while noise from a shared machine stays well below it."""
GROUP = "bench-serving"
RIVER_FEATURES = ("x1", "x2")
ONNX_FEATURES = tuple(f"f{i}" for i in range(8))


def view(features: tuple[str, ...]) -> FeatureView:
    """The view the model reads: one ``last`` feature per input."""
    return FeatureView("bench", "entity_id", ("logs.app",), tuple(
        Aggregation(f, "last", f, Tumbling(timedelta(hours=1))) for f in features))


# ---------------------------------------------------------------------------------------------
# the service, in a child process
# ---------------------------------------------------------------------------------------------


def serve(settings_data: dict[str, Any], features: tuple[str, ...], requests: str,
          predictions: str, conn: Any) -> None:
    """Run the service (Kafka and HTTP, as ``refluent serve`` does) until told to stop; answer
    ``summary`` with its stage breakdown."""
    from refluent.cli.serve import start_http
    from refluent.registry import ModelRegistry
    from refluent.serving.scorer import build_scorer
    from refluent.serving.service import KafkaPredictionService, settle_heap
    from refluent.streams.kafka import StopSignal

    settings = Settings(**settings_data)
    registry = ModelRegistry.from_settings(settings)
    scorer = build_scorer(settings, models=["bench"], views=[view(features)], registry=registry)
    assert scorer.reader is not None
    scorer.reader.setup()
    scorer.holder.start()
    svc = KafkaPredictionService(settings, settings.kafka.bootstrap_servers or "", scorer,
                                 requests_topic=requests, predictions_topic=predictions,
                                 group_id=GROUP)
    stop = StopSignal()

    def control() -> None:
        while True:
            cmd = conn.recv()
            if cmd == "summary":
                conn.send(svc.stages.summary())
                svc.stages.batches.clear()
            elif cmd == "stop":
                stop.set()
                return

    threading.Thread(target=control, daemon=True).start()
    server, thread, publisher = start_http(settings, settings.kafka.bootstrap_servers or "",
                                           scorer, "127.0.0.1", 0)
    settle_heap()  # as ``refluent serve`` does once started
    port = server.servers[0].sockets[0].getsockname()[1]
    conn.send(("ready", port))
    svc.run(stop=stop)
    server.should_exit = True
    thread.join(10)
    publisher.close()
    scorer.holder.close()
    conn.send("done")


# ---------------------------------------------------------------------------------------------
# load generator and latency consumer
# ---------------------------------------------------------------------------------------------


class Receiver:
    """Consumes ``predictions`` from the beginning and notes each request's receipt time."""

    def __init__(self, settings: Settings, topic: str, partitions: int) -> None:
        conf = settings.kafka.client_config(settings.kafka.bootstrap_servers or "")
        conf.update({"group.id": f"bench-recv-{uuid.uuid4().hex[:6]}",
                     "enable.auto.commit": False, "fetch.wait.max.ms": 5})
        self.consumer = Consumer(conf)
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.received: dict[str, float] = {}
        self.scored_ms: dict[str, float] = {}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # poll() hands over each record as soon as it is fetched; consume(n, timeout) would
        # wait for n records or the timeout, which would count as latency.
        poll = self.consumer.poll
        while not self._stop.is_set():
            msg = poll(0.05)
            if msg is not None and msg.error() is None:
                now = time.perf_counter()
                value = orjson.loads(msg.value())
                self.received[value["request_id"]] = now
                if "latency_ms" in value:
                    self.scored_ms[value["request_id"]] = value["latency_ms"]

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.consumer.close()


def send_paced(producer: Any, topic: str, model: str, rate: float, seconds: float,
               prefix: str, sent: dict[str, float]) -> None:
    """Send ``rate * seconds`` requests, each at its scheduled time; note the send times."""
    from refluent.streams.contracts import PredictionRequest

    n = int(rate * seconds)
    start = time.perf_counter()
    for i in range(n):
        # Sleep (never spin) until the send time: the service shares the machine's CPUs.
        left = start + i / rate - time.perf_counter()
        if left > 0:
            time.sleep(left)
        producer.poll(0)
        rid = f"{prefix}{i}"
        entity = f"e{i % ENTITIES}"
        req = PredictionRequest(request_id=rid, model=model, entity_id=entity,
                                ts=datetime.now(UTC))
        sent[rid] = time.perf_counter()
        producer.produce(topic, req.model_dump_json().encode(), entity)
    producer.flush()


def cpu_percent(pids: dict[str, int], before: dict[str, float | None], seconds: float
                ) -> dict[str, float]:
    """Share of one core each process used since ``before`` (its CPU seconds then)."""
    out = {}
    for name, pid in pids.items():
        now, then = cpu_seconds(pid), before.get(name)
        if now is not None and then is not None:
            out[name] = round(100 * (now - then) / seconds, 1)
    return out


def phase(producer: Any, topic: str, receiver: Receiver, conn: Any | None, rate: float,
          seconds: float, prefix: str, pids: dict[str, int]) -> dict[str, Any]:
    """One paced phase: latency percentiles, how much was answered, the service's own
    breakdown (``conn`` None: no service, ``receiver`` reads ``topic`` itself) and the CPU
    share of each process in ``pids`` while the requests were sent."""
    sent: dict[str, float] = {}
    if conn is not None:
        conn.send("summary")
        conn.recv()  # drops the previous phase's batches
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    send_paced(producer, topic, "bench", rate, seconds, prefix, sent)
    ended = time.perf_counter()
    cpu = cpu_percent(pids, cpu_before, ended - started)
    deadline = ended + 2.0
    while time.perf_counter() < deadline:
        if all(rid in receiver.received for rid in sent):
            break
        time.sleep(0.01)
    latencies = [(receiver.received[r] - t) * 1000 for r, t in sent.items()
                 if r in receiver.received]
    answered = len(latencies)
    scored = [receiver.scored_ms[r] for r in sent if r in receiver.scored_ms]
    stages = None
    if conn is not None:
        conn.send("summary")
        stages = conn.recv()
    return {
        "rate": rate,
        "sent": len(sent),
        "answered": answered,
        "drained": answered == len(sent),
        "p50_ms": round(quantile(latencies, 0.5), 3),
        "p99_ms": round(quantile(latencies, 0.99), 3),
        "max_ms": round(max(latencies, default=float("nan")), 3),
        "sent_to_scored_ms_p50": round(quantile(scored, 0.5), 3),
        "sent_to_scored_ms_p99": round(quantile(scored, 0.99), 3),
        "service": stages,
        "cpu_percent": cpu,
    }


def http_phase(port: int, rate: float, seconds: float, pids: dict[str, int],
               connections: int = 32) -> dict[str, Any]:
    """Paced OIP v2 infer calls over ``connections`` keep-alive connections: request to
    response latency (the features read from Redis, the model, the answer; the prediction is
    published to Kafka off the response path)."""
    import asyncio

    import aiohttp

    url = f"http://127.0.0.1:{port}/v2/models/bench/infer"
    latencies: list[float] = []
    failures: list[str] = []

    async def one(session: Any, i: int) -> None:
        body = orjson.dumps({"id": f"h{i}", "inputs": [],
                             "parameters": {"entity_id": f"e{i % ENTITIES}"}})
        started = time.perf_counter()
        async with session.post(url, data=body,
                                headers={"content-type": "application/json"}) as resp:
            await resp.read()
            if resp.status != 200:
                failures.append(f"{resp.status}")
                return
        latencies.append((time.perf_counter() - started) * 1000)

    async def run() -> float:
        connector = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=connector) as session:
            for i in range(50):  # warm-up: connections opened, code paths taken
                await one(session, -1 - i)
            latencies.clear()
            n = int(rate * seconds)
            start = time.perf_counter()
            tasks = []
            for i in range(n):
                left = start + i / rate - time.perf_counter()
                if left > 0:
                    await asyncio.sleep(left)
                tasks.append(asyncio.create_task(one(session, i)))
            await asyncio.gather(*tasks)
            return start

    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    asyncio.run(run())
    cpu = cpu_percent(pids, cpu_before, time.perf_counter() - started)
    return {"rate": rate, "sent": int(rate * seconds), "answered": len(latencies),
            "failures": len(failures), "p50_ms": round(quantile(latencies, 0.5), 3),
            "p99_ms": round(quantile(latencies, 0.99), 3),
            "max_ms": round(max(latencies, default=float("nan")), 3), "cpu_percent": cpu}


# ---------------------------------------------------------------------------------------------


def setup_model(settings: Settings, kind: str) -> tuple[str, ...]:
    """Register the champion and write its features for every entity."""
    from refluent.examples.models import onnx_mlp_classifier, river_classifier, synthetic_rows
    from refluent.registry import ModelRegistry
    from refluent.sinks.base import SinkRecord
    from refluent.sinks.redis import RedisOnlineStore
    from refluent.streams.contracts import FeatureUpdate

    registry = ModelRegistry.from_settings(settings)
    if kind == "river":
        features = RIVER_FEATURES
        model = river_classifier(features)
        for x, label, _ in synthetic_rows(features, 500, 0):
            model.learn_one(x, label)
    else:
        features = ONNX_FEATURES
        model = onnx_mlp_classifier(features, seed=0).model()
    registry.register("bench", model, alias="champion")
    registry.close()
    store = RedisOnlineStore(settings.redis.url or "", key_prefix=settings.redis.key_prefix)
    store.setup()
    rows = synthetic_rows(features, ENTITIES, 1)
    at = datetime.now(UTC)
    store.write([SinkRecord("features.bench", 0, i, None, FeatureUpdate(
        view="bench", entity_id=f"e{i}", values=rows[i][0], event_time=at, sequence=i))
        for i in range(ENTITIES)])
    store.close()
    return features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("river", "onnx"), default="river")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", default="1000,1500,2000,3000,4000,6000",
                        help="Rates tried after the main phase, in order, until one fails.")
    args = parser.parse_args()

    from refluent.streams.kafka import Producer, TopicAdmin
    from refluent.streams.topics import TopicCatalog
    from refluent.testing.services import running_services

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, running_services(Path(tmp)) as svc:
        tag = uuid.uuid4().hex[:6]
        settings = svc.settings(lake={"namespace": f"bench_{tag}"},
                                redis={"key_prefix": f"b{tag}"})
        catalog = TopicCatalog.from_settings(settings.topics)
        requests, predictions = f"inference.requests-{tag}", f"predictions-{tag}"
        floor_topic = f"predictions-floor-{tag}"
        specs = [replace(catalog.get("inference.requests"), name=requests),
                 replace(catalog.get("predictions"), name=predictions),
                 replace(catalog.get("predictions"), name=floor_topic)]
        TopicAdmin(settings.kafka, svc.bootstrap_servers).ensure(
            specs + [s.dlq() for s in specs[:2]])
        features = setup_model(settings, args.model)

        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=serve, args=(settings.model_dump(mode="json"), features,
                                               requests, predictions, child), daemon=True)
        proc.start()
        ready, http_port = parent.recv()
        assert ready == "ready"
        receiver = Receiver(settings, predictions, specs[1].partitions)
        # The CPU each process takes while requests are sent: the broker's share shows how
        # much of the machine the two hops cost.
        pids = {**svc.pids, "service": proc.pid, "load_generator": os.getpid()}
        # One producer for every phase, connected (and given its producer id) beforehand.
        producer = Producer(settings.kafka, svc.bootstrap_servers, **{"linger.ms": 0})
        producer.produce(requests + ".dlq", b"warm-up")
        producer.flush()
        from refluent.serving.service import settle_heap

        settle_heap()  # the load generator's own collections would count as latency
        try:
            warm = phase(producer, requests, receiver, parent, 200, 2.0, "w", pids)
            deadline = time.perf_counter() + 20
            while not warm["drained"] and time.perf_counter() < deadline:
                # The group join can take a few seconds: wait until the warm-up is answered.
                time.sleep(0.2)
                warm["drained"] = len([r for r in receiver.received if r.startswith("w")]
                                      ) == warm["sent"]
            # The broker alone: the same paced stream, one hop, no service.
            floor_receiver = Receiver(settings, floor_topic, specs[2].partitions)
            time.sleep(1.0)
            floor = phase(producer, floor_topic, floor_receiver, None, args.rate, 4.0, "f",
                          pids)
            floor_receiver.close()
            main_phase = phase(producer, requests, receiver, parent, args.rate, args.seconds,
                               "m", pids)
            http = http_phase(http_port, args.rate, args.seconds, pids)
            steps = []
            sustained = 0.0
            for k, rate in enumerate(float(r) for r in args.steps.split(",") if r):
                result = phase(producer, requests, receiver, parent, rate, 3.0, f"s{k}_",
                               pids)
                steps.append({key: result[key] for key in
                              ("rate", "sent", "answered", "p50_ms", "p99_ms", "drained",
                               "cpu_percent")})
                if not result["drained"] or result["p99_ms"] > MAX_P99_MS:
                    break
                sustained = rate
        finally:
            parent.send("stop")
            proc.join(30)
            receiver.close()
            producer.close()
        out = {
            "benchmark": "serving_latency",
            "model": args.model,
            "features": len(features),
            "entities": ENTITIES,
            "batch": {"max_batch_size": settings.serving.max_batch_size, "drained": True,
                      "commit_interval_ms": settings.serving.commit_interval_ms},
            "rate": args.rate,
            "p50_ms": main_phase["p50_ms"],
            "p99_ms": main_phase["p99_ms"],
            "max_ms": main_phase["max_ms"],
            "sent_to_scored_ms_p50": main_phase["sent_to_scored_ms_p50"],
            "sent_to_scored_ms_p99": main_phase["sent_to_scored_ms_p99"],
            "answered": f"{main_phase['answered']}/{main_phase['sent']}",
            "service_breakdown_per_batch": main_phase["service"],
            "cpu_percent": main_phase["cpu_percent"],
            "broker_one_hop_cpu_percent": floor["cpu_percent"],
            "broker_one_hop_p50_ms": floor["p50_ms"],
            "broker_one_hop_p99_ms": floor["p99_ms"],
            "http": http,
            "goal_p99_ms": 10.0,
            "goal_met": main_phase["p99_ms"] <= 10.0 and main_phase["drained"],
            "goal_met_http": http["p99_ms"] <= 10.0 and http["answered"] == http["sent"],
            "steps": steps,
            "max_sustained_rate": sustained,
            "services": svc.kind,
            "python": platform.python_version(),
            "cpus": mp.cpu_count(),
            "seconds": round(time.perf_counter() - started, 1),
        }
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
