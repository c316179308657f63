"""Webhook dispatch: deliveries per second and latency from an alert on the topic to the
receiver's 2xx.

Prints one JSON object. Starts its own broker and Redis (``refluent.testing.services``).

    python bench/webhooks.py [--burst 2000] [--rate 50] [--seconds 10]
                             [--subscriber-concurrency 8]

The dispatcher (:class:`~refluent.webhooks.dispatcher.WebhookDispatcher`, default settings:
8 deliveries in flight, here all 8 allowed to the one receiver) runs in this process and
delivers to a verifying :class:`~refluent.webhooks.receiver.WebhookReceiver` on loopback, also
in this process (both share one interpreter, so the numbers are a floor). Two phases:

- ``burst``: ``--burst`` alerts produced at once; deliveries per second from the first
  produce to the last delivery handled;
- ``paced``: ``--rate`` alerts per second for ``--seconds``; per alert, the time from its
  produce to the receiver handling it (p50, p99, max).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refluent.observability.stats import summary  # noqa: E402
from refluent.streams.contracts import DriftAlert  # noqa: E402
from refluent.streams.kafka import Producer, StopSignal, TopicAdmin  # noqa: E402
from refluent.streams.topics import TopicCatalog  # noqa: E402
from refluent.testing.services import running_services  # noqa: E402
from refluent.webhooks.base import Subscriber, new_secret, subscriber_id  # noqa: E402
from refluent.webhooks.dispatcher import WebhookDispatcher  # noqa: E402
from refluent.webhooks.receiver import WebhookReceiver  # noqa: E402
from refluent.webhooks.redis import RedisOutbox  # noqa: E402


def alert(i: int, sfx: str) -> DriftAlert:
    return DriftAlert(alert_id=f"{sfx}-{i}", model_name=f"m{i % 4}", model_version="1",
                      detector="adwin", kind="error", statistic=0.3, threshold=0.1,
                      detected_at=datetime.now(UTC))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--burst", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--subscriber-concurrency", type=int, default=8,
                    help="sends under way to the one receiver (all of webhooks.concurrency)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_services(Path(tmp)) as svc:
        settings = svc.settings()
        settings = settings.model_copy(update={"webhooks": settings.webhooks.model_copy(
            update={"allow_networks": ["127.0.0.0/8"], "group": "bench-webhooks",
                    "subscriber_concurrency": args.subscriber_concurrency})})
        sfx = uuid.uuid4().hex[:6]
        topic = f"alerts.{sfx}"
        catalog = TopicCatalog.from_settings(settings.topics)
        TopicAdmin(settings.kafka, svc.bootstrap_servers).ensure(
            [replace(catalog.get("alerts"), name=topic)])
        handled_at: dict[str, float] = {}
        secret = new_secret()

        def on_event(payload: dict[str, object]) -> None:
            data = payload["data"]
            assert isinstance(data, dict)  # noqa: S101 - the contract's shape
            handled_at[str(data["alert_id"])] = time.perf_counter()

        receiver = WebhookReceiver(secret, on_event=on_event).start()
        outbox = RedisOutbox(svc.redis_url, key_prefix=f"b{sfx}")
        outbox.put_subscriber(Subscriber(subscriber_id(receiver.url), receiver.url, ("*",),
                                         secret))
        dispatcher = WebhookDispatcher(settings, svc.bootstrap_servers, outbox,
                                       alerts_topic=topic)
        stop = StopSignal()
        thread = threading.Thread(target=dispatcher.run, kwargs={"stop": stop}, daemon=True)
        thread.start()
        producer = Producer(settings.kafka, svc.bootstrap_servers)
        # Warm-up: the group join and connections, outside the timings.
        producer.produce(topic, alert(-1, sfx).model_dump_json().encode(), b"m")
        producer.flush()
        while f"{sfx}--1" not in handled_at:
            time.sleep(0.05)

        produced: dict[str, float] = {}
        t0 = time.perf_counter()
        for i in range(args.burst):
            a = alert(i, sfx)
            produced[a.alert_id] = time.perf_counter()
            producer.produce(topic, a.model_dump_json().encode(), a.model_name.encode())
        producer.flush()
        deadline = time.monotonic() + 300
        while len(handled_at) < args.burst + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        burst_s = max(handled_at.values()) - t0
        burst_done = len(handled_at) - 1

        paced_ids = []
        n = int(args.rate * args.seconds)
        start = time.perf_counter()
        for i in range(n):
            due = start + i / args.rate
            while time.perf_counter() < due:
                time.sleep(0.001)
            a = alert(100_000 + i, sfx)
            produced[a.alert_id] = time.perf_counter()
            producer.produce(topic, a.model_dump_json().encode(), a.model_name.encode())
            producer.poll(0)
            paced_ids.append(a.alert_id)
        producer.flush()
        deadline = time.monotonic() + 120
        while any(i not in handled_at for i in paced_ids) and time.monotonic() < deadline:
            time.sleep(0.01)
        latencies = [handled_at[i] - produced[i] for i in paced_ids if i in handled_at]
        stop.set()
        thread.join(30)
        producer.close()
        receiver.stop()
        repeats = sum(r.repeat for r in receiver.received)
        out = {
            "burst": {"alerts": args.burst, "delivered": burst_done,
                      "seconds": round(burst_s, 3),
                      "deliveries_per_s": round(burst_done / burst_s, 1)},
            "paced": {"rate_per_s": args.rate, "alerts": n, "delivered": len(latencies),
                      "latency": summary(latencies)},
            "repeated_deliveries": repeats, "rejected": len(receiver.rejected),
            "concurrency": settings.webhooks.concurrency,
            "subscriber_concurrency": settings.webhooks.subscriber_concurrency,
            "dispatcher_stats": dispatcher.stats.__dict__,
        }
        outbox.clear()
        outbox.close()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
