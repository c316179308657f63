"""Online feature read latency: ``get_online_features`` beside plain redis-py on the same server.

Prints one JSON object. Starts its own services (see :mod:`refluent.testing.services`) unless
``--redis-url`` names a Redis.

    python bench/online_read.py [--entities 10000] [--features 20] [--iterations 5000]

Writes ``--entities`` entities x ``--features`` features through ``RedisOnlineStore``, then
times, one call after another on one thread (after a warm-up):

- ``online_1x20``: ``get_online_features`` for 1 random entity x 20 named features;
- ``online_100x20``: the same for 100 random entities in one call;
- ``online_1_all``: 1 entity, every feature (HGETALL);
- ``redis_py_hmget_1x22``: redis-py ``HMGET`` of the same 22 fields the reader asks for (20
  features and 2 meta fields) of 1 key, values left undecoded;
- ``redis_py_hgetall_1``: redis-py ``HGETALL`` of 1 key, undecoded;
- ``redis_py_pipeline_100_hgetall``: a redis-py pipeline of 100 ``HGETALL``, undecoded.

The reader goes through redis-py (with the hiredis parser when installed; ``hiredis`` in the
output says whether it was), so the plain redis-py figures are the floor for the same round
trip and the difference is the reader's own work: decoding values and computing ages.
Latencies are in milliseconds
(nearest-rank percentiles). Goal: ``p99_ms_1x20 <= 1.0`` on loopback (Feast's tuned feature
server publishes 4.6 ms p99).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from redis.utils import HIREDIS_AVAILABLE

from refluent.observability.stats import summary
from refluent.online_store.base import DELETED_FIELD, EVENT_TIME_FIELD
from refluent.online_store.redis import RedisOnlineReader
from refluent.sinks.base import SinkRecord
from refluent.sinks.redis import RedisOnlineStore
from refluent.streams.contracts import FeatureUpdate, FeatureValue
from refluent.testing.services import running_services

GOAL_P99_MS_1X20 = 1.0
VIEW = "bench_view"


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    """p50/p99/p999 (nearest rank), mean and max in milliseconds."""
    return summary(samples_ns, scale=1e-6, digits=4, quantiles=(0.5, 0.99, 0.999))


def timed(fn: Callable[[], Any], iterations: int, warmup: int) -> dict[str, float]:
    """Latency of ``fn`` called ``iterations`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    clock = time.perf_counter_ns
    samples = [0] * iterations
    for i in range(iterations):
        start = clock()
        fn()
        samples[i] = clock() - start
    return percentiles(samples)


def load(store: RedisOnlineStore, entities: int, features: int, batch: int) -> dict[str, float]:
    """Write every entity once; returns the write throughput (records built beforehand, so
    only the sink is timed)."""
    at = datetime.now(UTC) - timedelta(seconds=5)
    batches = []
    for first in range(0, entities, batch):
        records = []
        for i in range(first, min(first + batch, entities)):
            values: dict[str, FeatureValue] = {
                f"f{j}": (i * 31 + j) / 7 for j in range(features)}
            update = FeatureUpdate(view=VIEW, entity_id=f"e{i}", values=values, event_time=at,
                                   sequence=i)
            records.append(SinkRecord(f"features.{VIEW}", 0, i, None, update))
        batches.append(records)
    start = time.perf_counter()
    for records in batches:
        store.write(records)
    seconds = time.perf_counter() - start
    return {"updates": entities, "batch": batch, "seconds": round(seconds, 3),
            "updates_per_s": round(entities / seconds)}


def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"bench{random.randrange(1 << 30):x}"
    store = RedisOnlineStore(url, {VIEW: timedelta(hours=1)}, key_prefix=prefix)
    store.setup()
    reader = RedisOnlineReader(url, key_prefix=prefix)
    reader.setup()
    raw = redis.Redis.from_url(url)
    rng = random.Random(args.seed)
    try:
        write = load(store, args.entities, args.features, args.batch)
        names = [f"f{j}" for j in range(args.features)]
        ids = [f"e{i}" for i in range(args.entities)]
        keys = [reader.key(VIEW, e) for e in ids]

        # The reader must return what was written before its speed means anything.
        probe = reader.get_online_features(VIEW, ["e3", "missing"], names)
        assert probe[0].found and probe[0].values["f5"] == (3 * 31 + 5) / 7, probe[0]
        assert not probe[1].found

        def one() -> None:
            reader.get_online_features(VIEW, [rng.choice(ids)], names)

        def hundred() -> None:
            reader.get_online_features(VIEW, rng.sample(ids, 100), names)

        def one_all() -> None:
            reader.get_online_features(VIEW, [rng.choice(ids)])

        fields = [*names, EVENT_TIME_FIELD, DELETED_FIELD]

        def raw_hmget() -> None:
            raw.hmget(rng.choice(keys), fields)

        def raw_one() -> None:
            raw.hgetall(rng.choice(keys))

        def raw_hundred() -> None:
            pipe = raw.pipeline(transaction=False)
            for key in rng.sample(keys, 100):
                pipe.hgetall(key)
            pipe.execute()

        it1, it100, warm = args.iterations, args.iterations_100, args.warmup
        results = {
            "online_1x20": timed(one, it1, warm),
            "online_100x20": timed(hundred, it100, warm // 5),
            "online_1_all": timed(one_all, it1, warm),
            "redis_py_hmget_1x22": timed(raw_hmget, it1, warm),
            "redis_py_hgetall_1": timed(raw_one, it1, warm),
            "redis_py_pipeline_100_hgetall": timed(raw_hundred, it100, warm // 5),
        }
        server = raw.info("server")
    finally:
        # Leave an external Redis as it was.
        cursor = 0
        while True:
            cursor, found = raw.scan(cursor, match=f"{prefix}:*", count=1000)
            if found:
                raw.delete(*found)
            if cursor == 0:
                break
        raw.close()
        reader.close()
        store.close()
    p99 = results["online_1x20"]["p99_ms"]
    return {
        "bench": "online_read",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "redis_version": server.get("redis_version"),
        "redis_py": redis.__version__,
        "hiredis": HIREDIS_AVAILABLE,
        "entities": args.entities,
        "features": args.features,
        "write": write,
        **results,
        "goal": f"p99_ms_1x20 <= {GOAL_P99_MS_1X20}",
        "p99_ms_1x20": p99,
        "goal_met": p99 <= GOAL_P99_MS_1X20,
    }


@contextlib.contextmanager
def redis_url(explicit: str | None) -> Iterator[str]:
    if explicit:
        yield explicit
        return
    with tempfile.TemporaryDirectory(prefix="refluent-bench-") as tmp, \
            running_services(Path(tmp)) as svc:
        yield svc.redis_url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--redis-url", help="Redis to use instead of starting one")
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1_000, help="updates per write")
    parser.add_argument("--iterations", type=int, default=5_000, help="timed 1-entity calls")
    parser.add_argument("--iterations-100", type=int, default=1_000,
                        help="timed 100-entity calls")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.entities < 100:
        parser.error("--entities must be at least 100")
    with redis_url(args.redis_url) as url:
        result = run(url, args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
