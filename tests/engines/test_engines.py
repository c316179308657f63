"""Each engine (Faust, native) against the real broker gives the in-memory runner's numbers, also
after ``kill -9`` and a restart."""

from __future__ import annotations

import os
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.engines import MARKERS

from refluent.config import Settings
from refluent.embedded.commands import RefluentCommand
from refluent.embedded.errors import CommandError
from refluent.embedded.services import free_port
from refluent.engines.memory import InMemoryRunner
from refluent.processors.features import discover
from refluent.streams.contracts import CdcEnvelope, FeatureUpdate, LogEvent
from refluent.streams.io import tail
from refluent.streams.kafka import (
    Producer,
    TopicAdmin,
    committed_or_start,
    wait_until_committed,
)
from refluent.streams.topics import TopicCatalog
from refluent.testing.kafka import topic_ends
from refluent.testing.parity import (
    ParityError,
    assert_same_final,
    assert_same_updates,
    by_event_time,
)
from refluent.testing.services import RunningServices

pytestmark = pytest.mark.integration

VIEWS = """
from datetime import timedelta
from refluent.processors.aggregations import Aggregation
from refluent.processors.features import EntityStateView, FeatureView, only_ops
from refluent.processors.windows import Hopping, Sliding, Tumbling

activity = FeatureView("activity_{sfx}", "entity_id", ("logs.{sfx}",), (
    Aggregation("events_1h", "count", None, Tumbling(timedelta(hours=1))),
    Aggregation("spend_1h", "sum", "amount", Tumbling(timedelta(hours=1))),
    Aggregation("spend_2h", "sum", "amount", Hopping(timedelta(hours=2), timedelta(hours=1))),
    Aggregation("max_10m", "max", "amount", Sliding(timedelta(minutes=10))),
    Aggregation("pages", "approx_distinct", "page", Tumbling(timedelta(hours=1))),
))
orders = FeatureView("orders_{sfx}", "customer_id", ("cdc.orders_{sfx}",), (
    Aggregation("orders_1h", "count", None, Tumbling(timedelta(hours=1))),
    Aggregation("last_amount", "last", "amount", Tumbling(timedelta(hours=1))),
), transforms=(only_ops("c", "r"),))
customers = EntityStateView("customers_{sfx}", "cdc.customers_{sfx}", columns=("tier",))
"""

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def log_events(n: int, start: int = 0) -> list[LogEvent]:
    return [LogEvent(source="app", ts=T0 + timedelta(seconds=7 * i), message="buy",
                     entity_id=f"u{i % 13}", attributes={"amount": i % 50, "page": f"/p{i % 7}"})
            for i in range(start, start + n)]


def cdc_events(n: int, start: int = 0) -> tuple[list[CdcEnvelope], list[CdcEnvelope]]:
    orders, customers = [], []
    for i in range(start, start + n):
        ms = int((T0 + timedelta(seconds=11 * i)).timestamp() * 1000)
        row = {"id": i, "customer_id": f"c{i % 5}", "amount": float(i)}
        orders.append(CdcEnvelope.model_validate(
            {"op": "c", "after": row, "source": {"ts_ms": ms, "lsn": 10 * i}}))
        cust = {"id": i % 9, "tier": ["basic", "gold", "vip"][i % 3]}
        op = "d" if i % 17 == 16 else "u"
        customers.append(CdcEnvelope.model_validate(
            {"op": op, "before": cust, "after": None if op == "d" else cust,
             "source": {"ts_ms": ms, "lsn": 10 * i + 1}}))
    return orders, customers


def _key(event: Any) -> str:
    if isinstance(event, CdcEnvelope):
        return str(event.row["id"])
    return str(event.entity_id)


def produce(settings: Settings, topic: str, events: list[Any]) -> None:
    spec = TopicCatalog.from_settings(settings.topics).get(topic)
    TopicAdmin(settings.kafka, settings.kafka.bootstrap_servers or "").ensure([spec, spec.dlq()])
    with Producer(settings.kafka, settings.kafka.bootstrap_servers or "") as producer:
        for event in events:
            producer.produce(topic, event.model_dump_json().encode(), _key(event))


@pytest.fixture(params=["faust", "native"])
def setup(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path
          ) -> Iterator[tuple[str, Path, dict[str, str]]]:
    yield engine_setup(settings, tmp_path, request.param)


def engine_setup(settings: Settings, tmp_path: Path, engine_name: str
                 ) -> tuple[str, Path, dict[str, str]]:
    """A fresh suffix, the views module and the engine's environment."""
    sfx = uuid.uuid4().hex[:6]
    module = tmp_path / "views.py"
    module.write_text(VIEWS.replace("{sfx}", sfx))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFLUENT_")}
    env.update({
        "REFLUENT_CONFIG": os.environ["REFLUENT_CONFIG"],
        "REFLUENT_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers or "",
        "REFLUENT_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "REFLUENT_PROCESSING__VIEWS": str(module),
        "REFLUENT_PROCESSING__APP_ID": f"engine-test-{sfx}",
        "REFLUENT_PROCESSING__ENGINE": engine_name,
        "REFLUENT_EMBEDDED__STATE_DIR": str(tmp_path / "state"),
    })
    return sfx, module, env


def engine(env: dict[str, str], cwd: Path) -> RefluentCommand:
    """``refluent process`` with ``env``, its output in ``engine.log``."""
    return RefluentCommand("engine", ["process"], env, cwd)


def expected_online(module: Path, feeds: list[tuple[str, list[Any]]]) -> InMemoryRunner:
    runner = InMemoryRunner(discover(str(module)))
    for topic, events in feeds:
        runner.feed(topic, events)
    return runner


def published(settings: Settings, view: str) -> list[FeatureUpdate]:
    """Every update the engine published for ``view`` (the test's suffixed name)."""
    return [FeatureUpdate.model_validate_json(rec.value or b"{}") for rec in tail(
        settings.kafka, settings.kafka.bootstrap_servers or "", f"features.{view}",
        from_beginning=True, idle_timeout=5)]


def check(settings: Settings, runner: InMemoryRunner, sfx: str, cmd: RefluentCommand) -> None:
    """Wait until the engine has committed all it was given (it commits an offset only once
    the updates of the records below it are acknowledged, so they are all readable then),
    then compare the final update per entity."""
    wait_until_committed(settings.kafka, settings.kafka.bootstrap_servers or "",
                         [f"logs.{sfx}", f"cdc.orders_{sfx}", f"cdc.customers_{sfx}"],
                         f"engine-test-{sfx}", timeout_s=180, what="the engine",
                         check=cmd.check_alive)
    updates = [u for view in ("activity", "orders", "customers")
               for u in published(settings, f"{view}_{sfx}")]
    try:
        assert_same_final(runner, updates)
    except ParityError as exc:
        raise AssertionError(f"{exc}; dead letters: {dead(settings)}") from exc


def dead(settings: Settings) -> list[str]:
    """What the engine dead-lettered, to explain a mismatch."""
    from refluent.streams.deadletter import DeadLetter
    from refluent.streams.kafka import TopicAdmin

    names = TopicAdmin(settings.kafka, settings.kafka.bootstrap_servers or "").wait_ready()
    out = []
    for topic in names:
        if topic.endswith(".dlq"):
            for rec in tail(settings.kafka, settings.kafka.bootstrap_servers or "", topic,
                            from_beginning=True, idle_timeout=2):
                letter = DeadLetter.parse(rec.headers, rec.key, rec.value)
                out.append(f"{letter.topic}@{letter.offset}: {letter.reason}: {letter.message}")
    return out


def test_engine__matches_the_in_memory_runner(
    settings: Settings, setup: tuple[str, Path, dict[str, str]], tmp_path: Path
) -> None:
    sfx, module, env = setup
    logs = log_events(300)
    orders, customers = cdc_events(120)
    port = free_port()
    cmd = engine({**env, "REFLUENT_PROCESSING__METRICS_PORT": str(port)}, tmp_path).start()
    try:
        produce(settings, f"logs.{sfx}", logs)
        produce(settings, f"cdc.orders_{sfx}", orders)
        produce(settings, f"cdc.customers_{sfx}", customers)
        runner = expected_online(module, [(f"logs.{sfx}", logs),
                                          (f"cdc.orders_{sfx}", orders),
                                          (f"cdc.customers_{sfx}", customers)])
        check(settings, runner, sfx, cmd)
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        text = scraped.decode()
        assert f'refluent_records_in_total{{group="engine-test-{sfx}",topic="logs.{sfx}"}} 300.0'\
            in text
        assert f'refluent_feature_updates_total{{view="activity_{sfx}"}} 300.0' in text
        assert "refluent_engine_record_seconds_bucket" in text
    finally:
        code = cmd.stop()
    assert code == 0, cmd.output(3000)


def pending(settings: Settings, sfx: str) -> int:
    """Input records the engine's group has not committed (exact ends from fetch responses)."""
    bootstrap = settings.kafka.bootstrap_servers or ""
    ends = {(t, p): end for t in (f"logs.{sfx}", f"cdc.orders_{sfx}", f"cdc.customers_{sfx}")
            for p, end in topic_ends(settings, t).items()}
    committed = committed_or_start(settings.kafka, bootstrap, f"engine-test-{sfx}", list(ends))
    return sum(end - committed[tp] for tp, end in ends.items())


def wait_for_output(settings: Settings, topic: str, cmd: RefluentCommand,
                    timeout: float = 180) -> None:
    """Return as soon as ``topic`` holds a record (the engine has made progress)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cmd.check_alive()
        try:
            if sum(topic_ends(settings, topic).values()) > 0:
                return
        except Exception:  # noqa: BLE001, S110 - the engine has not created it yet
            pass
        time.sleep(0.05)
    raise AssertionError(f"no output on {topic} after {timeout:.0f}s:\n{cmd.output(3000)}")


def check_every_update(settings: Settings, runner: InMemoryRunner, sfx: str) -> None:
    """Every update the engine published (repeats after a crash included) is one the
    in-memory engine published, with the same values, and none of those is missing (the
    orders view is left out: its records are repartitioned from several source partitions,
    so its per-entity order, and with it each intermediate update, is the engine's own)."""
    assert_same_updates(runner, published(settings, f"activity_{sfx}"), f"activity_{sfx}")
    assert_same_updates(runner, published(settings, f"customers_{sfx}"), f"customers_{sfx}",
                        order=by_event_time)


def test_engine__kill_9_and_restart_gives_the_same_features(
    settings: Settings, setup: tuple[str, Path, dict[str, str]], tmp_path: Path
) -> None:
    sfx, module, env = setup
    logs = log_events(6000)
    orders, customers = cdc_events(600)
    cmd = engine(env, tmp_path).start()
    try:
        produce(settings, f"logs.{sfx}", logs[:3000])
        produce(settings, f"cdc.orders_{sfx}", orders[:300])
        produce(settings, f"cdc.customers_{sfx}", customers[:300])
        wait_for_output(settings, f"features.activity_{sfx}", cmd)
        # Frozen, it cannot take the second half before the kill: the kill lands with work
        # pending whatever the engine's speed.
        cmd.freeze()
        produce(settings, f"logs.{sfx}", logs[3000:])
        produce(settings, f"cdc.orders_{sfx}", orders[300:])
        produce(settings, f"cdc.customers_{sfx}", customers[300:])
        cmd.kill9()
        left = pending(settings, sfx)
        assert left > 0, "the kill landed after the engine had committed all of its input"
        cmd.start()
        runner = expected_online(module, [(f"logs.{sfx}", logs),
                                          (f"cdc.orders_{sfx}", orders),
                                          (f"cdc.customers_{sfx}", customers)])
        check(settings, runner, sfx, cmd)
        check_every_update(settings, runner, sfx)
    finally:
        cmd.stop()


def wait_in_log(cmd: RefluentCommand, found: Any, what: str, timeout: float = 120) -> None:
    """Wait until ``found(log of cmd's current life)`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cmd.check_alive()
        if found(cmd.life_output()):
            return
        time.sleep(0.1)
    raise AssertionError(f"{cmd.name}: no sign of {what} after {timeout:.0f}s:\n"
                         f"{cmd.output(3000)}")


def test_engine__a_member_joins_and_leaves_mid_run_and_the_features_stay_exact(
    settings: Settings, setup: tuple[str, Path, dict[str, str]], tmp_path: Path
) -> None:
    """A second member joins while the first has work in hand (the group rebalances: the first
    gives partitions up, the second restores their states), takes part, and then leaves with
    SIGTERM while input is still arriving (the first restores them back); every update and the
    final features are the in-memory engine's."""
    sfx, module, env = setup
    markers = MARKERS[env["REFLUENT_PROCESSING__ENGINE"]]
    logs = log_events(4500)
    orders, customers = cdc_events(450)
    thirds = [(i * len(logs) // 3, i * len(orders) // 3) for i in range(4)]

    def produce_part(k: int) -> None:
        (lo, co), (hi, ch) = thirds[k], thirds[k + 1]
        produce(settings, f"logs.{sfx}", logs[lo:hi])
        produce(settings, f"cdc.orders_{sfx}", orders[co:ch])
        produce(settings, f"cdc.customers_{sfx}", customers[co:ch])

    args = ["process", "--loglevel", "info"]
    first = RefluentCommand("engine", args, env, tmp_path).start()
    second = RefluentCommand("engine-2", args, env, tmp_path)
    try:
        produce_part(0)
        wait_for_output(settings, f"features.activity_{sfx}", first)
        second.start()
        produce_part(1)
        # The first member gives its partitions up, the second takes a share of them.
        wait_in_log(first, markers.revoked.search, "a revocation")
        wait_in_log(second, lambda log: markers.ready in log, "being ready")
        produce_part(2)
        time.sleep(0.5)  # the second member applies some of the new input
        assert second.stop() == 0, second.output(3000)  # leaves the group
        runner = expected_online(module, [(f"logs.{sfx}", logs),
                                          (f"cdc.orders_{sfx}", orders),
                                          (f"cdc.customers_{sfx}", customers)])
        check(settings, runner, sfx, first)
        check_every_update(settings, runner, sfx)
        # The second member held partitions; the first was assigned three times (alone,
        # beside the second, alone again).
        assert markers.assigned in second.output(), second.output(3000)
        if env["REFLUENT_PROCESSING__ENGINE"] == "native":
            assert "native engine: assigned nothing" not in second.output(), second.output(3000)
        assert first.output().count(markers.assigned) >= 3, first.output(3000)
    finally:
        second.stop()
        first.stop()


def test_engine__an_app_moved_from_faust_to_native_carries_on_from_faust_s_state(
    services: RunningServices, settings: Settings, tmp_path: Path
) -> None:
    """The default engine changed from Faust to the native one: an app that ran on Faust and is
    restarted on the native engine (same app id) restores Faust's changelogs, takes the
    group's committed offsets and the repartition topic as they are, and carries on. Every
    update and the final features are the in-memory engine's over the whole stream."""
    if services.kind == "local":
        pytest.skip("the embedded broker refuses a group's new assignment protocol even once the "
                    "group is empty (Kafka accepts it), so a group Faust used cannot be joined "
                    "by another client; runs on Kafka (REFLUENT_TEST_SERVICES=containers)")
    sfx, module, env = engine_setup(settings, tmp_path, "faust")
    logs = log_events(3000)
    orders, customers = cdc_events(300)
    half_l, half_c = len(logs) // 2, len(orders) // 2
    faust_cmd = engine(env, tmp_path).start()
    try:
        produce(settings, f"logs.{sfx}", logs[:half_l])
        produce(settings, f"cdc.orders_{sfx}", orders[:half_c])
        produce(settings, f"cdc.customers_{sfx}", customers[:half_c])
        first = expected_online(module, [(f"logs.{sfx}", logs[:half_l]),
                                         (f"cdc.orders_{sfx}", orders[:half_c]),
                                         (f"cdc.customers_{sfx}", customers[:half_c])])
        check(settings, first, sfx, faust_cmd)
    finally:
        assert faust_cmd.stop() == 0, faust_cmd.output(3000)
    native_cmd = RefluentCommand("engine-native", ["process", "--loglevel", "info"],
                                 {**env, "REFLUENT_PROCESSING__ENGINE": "native"}, tmp_path)
    # Faust's member may stay in the group until its session times out (its assignor is not
    # one the native engine's consumer speaks): the engine names that and exits, and is
    # started again until the group lets it in.
    deadline = time.monotonic() + 60
    while True:
        native_cmd.start()
        try:
            wait_in_log(native_cmd, lambda log: "native engine: assigned" in log, "joining",
                        timeout=60)
            break
        except CommandError as exc:
            assert "Inconsistent group protocol" in str(exc), exc
            assert time.monotonic() < deadline, exc
            time.sleep(1)
    try:
        produce(settings, f"logs.{sfx}", logs[half_l:])
        produce(settings, f"cdc.orders_{sfx}", orders[half_c:])
        produce(settings, f"cdc.customers_{sfx}", customers[half_c:])
        runner = expected_online(module, [(f"logs.{sfx}", logs),
                                          (f"cdc.orders_{sfx}", orders),
                                          (f"cdc.customers_{sfx}", customers)])
        check(settings, runner, sfx, native_cmd)
        check_every_update(settings, runner, sfx)
        # It restored Faust's states rather than starting empty.
        assert "restored" in native_cmd.output() and " 0 entities" not in native_cmd.output(), \
            native_cmd.output(3000)
    finally:
        native_cmd.stop()
