"""The Kafka layer against a real Kafka-protocol broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from refluent.config import Settings
from refluent.streams.kafka import ConsumerLoop, Producer, StopSignal, partition_offsets
from refluent.testing.kafka import read_all, unique_topic

pytestmark = pytest.mark.integration


@contextmanager
def _stop_after(seconds: float) -> Iterator[StopSignal]:
    """A stop signal set after ``seconds``: bounds a run that should stop on its own (the
    test then checks it did not need the signal)."""
    stop = StopSignal()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    try:
        yield stop
    finally:
        timer.cancel()


def _fill(settings: Settings, topic: str, n: int) -> None:
    with Producer(settings.kafka, settings.kafka.bootstrap_servers or "") as producer:
        for i in range(n):
            producer.produce(topic, f'{{"i": {i}}}'.encode(), key=f"k{i % 7}")


def test_produce_consume__keys_keep_order_per_partition(settings: Settings) -> None:
    spec = unique_topic(settings, "logs.app")
    _fill(settings, spec.name, 300)
    records = read_all(settings, spec.name, 300)
    assert len(records) == 300
    by_key: dict[bytes, list[int]] = {}
    partition_of: dict[bytes, set[int]] = {}
    for r in records:
        assert r.key is not None and r.value is not None
        by_key.setdefault(r.key, []).append(int(r.value[6:-1]))
        partition_of.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in partition_of.values()), "one key, one partition"
    assert all(v == sorted(v) for v in by_key.values()), "a key's records stay in order"


def test_handler_failure__commits_nothing_of_that_batch(settings: Settings) -> None:
    spec = unique_topic(settings, "logs.app", partitions=1)
    _fill(settings, spec.name, 50)
    bootstrap = settings.kafka.bootstrap_servers or ""
    group = f"g-fail-{spec.name}"
    seen: list[int] = []

    def fails_on_second_batch(batch: list) -> None:  # type: ignore[type-arg]
        if seen:
            raise RuntimeError("sink down")
        seen.extend(m.offset() for m in batch)

    loop = ConsumerLoop(settings.kafka, bootstrap, group, [spec.name], batch_size=20)
    with pytest.raises(RuntimeError, match="sink down"):
        loop.run(fails_on_second_batch, idle_timeout=20)
    assert seen == list(range(20))

    # A new member of the group resumes right after the last processed batch.
    again: list[int] = []
    ConsumerLoop(settings.kafka, bootstrap, group, [spec.name], batch_size=20).run(
        lambda b: again.extend(m.offset() for m in b), max_records=30, idle_timeout=20)
    assert again == list(range(20, 50))
    rows = partition_offsets(settings.kafka, bootstrap, spec.name, group)
    assert rows == [{"partition": 0, "low": 0, "high": 50, "committed": 50, "lag": 0}]


def test_stop_signal__finishes_batch_commits_and_closes(settings: Settings) -> None:
    spec = unique_topic(settings, "logs.app", partitions=2)
    _fill(settings, spec.name, 100)
    bootstrap = settings.kafka.bootstrap_servers or ""
    group = f"g-stop-{spec.name}"
    stop = StopSignal()
    assigned: list[int] = []
    handled = 0

    def handler(batch: list) -> None:  # type: ignore[type-arg]
        nonlocal handled
        handled += len(batch)
        stop.set()

    loop = ConsumerLoop(settings.kafka, bootstrap, group, [spec.name], batch_size=10,
                        on_assign=lambda tps: assigned.extend(tp.partition for tp in tps))
    stats = loop.run(handler, stop=stop, idle_timeout=20)
    assert sorted(assigned) == [0, 1]
    assert stats.records == handled and 0 < handled <= 10
    rows = partition_offsets(settings.kafka, bootstrap, spec.name, group)
    assert sum(r["committed"] or 0 for r in rows) == handled
    assert sum(r["lag"] or 0 for r in rows) == 100 - handled


def test_pause__holds_a_partition_back_until_resumed_and_loses_nothing(
        settings: Settings) -> None:
    spec = unique_topic(settings, "logs.app", partitions=2)
    _fill(settings, spec.name, 200)
    ends = {r["partition"]: r["high"] for r in partition_offsets(
        settings.kafka, settings.kafka.bootstrap_servers or "", spec.name)}
    assert ends[0] and ends[1], "both partitions hold records"
    loop = ConsumerLoop(settings.kafka, settings.kafka.bootstrap_servers or "",
                        f"g-pause-{spec.name}", [spec.name], batch_size=5)
    seen: list[tuple[int, int]] = []
    paused_at: list[int] = []  # len(seen) when partition 0 was paused
    resumed: list[bool] = []

    def handler(batch: list) -> None:  # type: ignore[type-arg]
        seen.extend((m.partition(), m.offset()) for m in batch)
        if not paused_at:
            loop.pause([(spec.name, 0)])
            paused_at.append(len(seen))
        elif not resumed and (1, ends[1] - 1) in seen:
            assert all(p == 1 for p, _ in seen[paused_at[0]:]), "a paused partition delivered"
            loop.resume([(spec.name, 0)])
            resumed.append(True)

    with _stop_after(60) as stop:
        loop.run(handler, stop=stop, until_caught_up=True)
    assert not stop.is_set(), "the loop did not finish on its own"
    assert resumed, "partition 1 was never read to its end while 0 was paused"
    for partition in (0, 1):
        offsets = [o for p, o in seen if p == partition]
        assert offsets == list(range(ends[partition])), "lost, repeated or reordered"


def test_lag__reports_records_behind_each_partition(settings: Settings) -> None:
    spec = unique_topic(settings, "logs.app", partitions=1)
    _fill(settings, spec.name, 40)
    loop = ConsumerLoop(settings.kafka, settings.kafka.bootstrap_servers or "",
                        f"g-lag-{spec.name}", [spec.name], batch_size=10)
    lags = []

    def handler(batch: list) -> None:  # type: ignore[type-arg]
        lags.append(sum(p.lag for p in loop.lag()))

    loop.run(handler, max_records=40, idle_timeout=20)
    assert lags[0] == 30 and lags[-1] == 0
    assert lags == sorted(lags, reverse=True)


def test_sigterm__worker_process_exits_cleanly_with_offsets_committed(
    settings: Settings, tmp_path: Path
) -> None:
    spec = unique_topic(settings, "logs.app", partitions=1)
    _fill(settings, spec.name, 1000)
    group = f"g-term-{spec.name}"
    progress = tmp_path / "progress"
    script = textwrap.dedent(f"""
        import time
        from refluent.config import KafkaSettings
        from refluent.streams.kafka import ConsumerLoop
        done = 0
        def handler(batch):
            global done
            done += len(batch)
            open({str(progress)!r}, "w").write(str(done))
            time.sleep(0.2)
        loop = ConsumerLoop(KafkaSettings(session_timeout_ms=6000),
                            {settings.kafka.bootstrap_servers!r}, {group!r}, [{spec.name!r}],
                            batch_size=10)
        loop.run(handler)
        print("stopped", done)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not progress.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert progress.exists(), "worker never consumed"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    done = int(out.split()[-1])
    assert 0 < done < 1000
    rows = partition_offsets(settings.kafka, settings.kafka.bootstrap_servers or "",
                             spec.name, group)
    assert rows[0]["committed"] == done


def test_rebalance__second_member_takes_partitions_and_nothing_is_lost(
    settings: Settings,
) -> None:
    spec = unique_topic(settings, "logs.app", partitions=4)
    # Enough work that the first member, slowed until the second joins, cannot finish it
    # alone even when the group join is slow on a loaded machine.
    total = 1000
    _fill(settings, spec.name, total)
    bootstrap = settings.kafka.bootstrap_servers or ""
    group = f"g-rebal-{spec.name}"
    got: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}
    revoked: list[int] = []
    stop_a, stop_b = StopSignal(), StopSignal()
    b_assigned = threading.Event()

    def member(name: str, stop: StopSignal) -> None:
        def handler(batch: list) -> None:  # type: ignore[type-arg]
            got[name].extend((m.partition(), m.offset()) for m in batch)
            if not b_assigned.is_set():
                # Keep work left over until the second member has joined: up to 60 s of it,
                # since a join on a loaded broker can take many seconds.
                time.sleep(0.3)

        def on_assign(tps: list) -> None:  # type: ignore[type-arg]
            if name == "b" and tps:
                b_assigned.set()

        ConsumerLoop(settings.kafka, bootstrap, group, [spec.name], batch_size=5,
                     on_assign=on_assign,
                     on_revoke=lambda tps: revoked.extend(tp.partition for tp in tps)
                     ).run(handler, stop=stop)

    a = threading.Thread(target=member, args=("a", stop_a))
    a.start()
    deadline = time.monotonic() + 30
    while not got["a"] and time.monotonic() < deadline:
        time.sleep(0.05)
    b = threading.Thread(target=member, args=("b", stop_b))
    b.start()
    deadline = time.monotonic() + 120
    while len(set(got["a"]) | set(got["b"])) < total and time.monotonic() < deadline:
        time.sleep(0.1)
    stop_a.set()
    stop_b.set()
    a.join(30)
    b.join(30)
    seen = set(got["a"]) | set(got["b"])
    assert len(seen) == total, "every record processed at least once"
    assert revoked, "the first member gave up partitions"
    assert b_assigned.is_set(), "the second member was never given partitions"
    # Whether records are still left on the second member's partitions when it gets them
    # depends on how long the join took on the broker, so its share of the work is not
    # asserted: the rebalance itself (revoke, assignment, nothing lost) is.
    if os.environ.get("REFLUENT_TEST_SERVICES") != "containers":
        # Duplicates are allowed (at-least-once) but bounded by one batch per revoked partition.
        dupes = len(got["a"]) + len(got["b"]) - len(seen)
        assert dupes <= 5 * len(revoked)


def test_start_offsets__override_the_group_offset_on_assignment(settings: Settings) -> None:
    spec = unique_topic(settings, "logs.app", partitions=2)
    _fill(settings, spec.name, 60)
    bootstrap = settings.kafka.bootstrap_servers or ""
    got: list[tuple[int, int]] = []
    loop = ConsumerLoop(settings.kafka, bootstrap, f"g-seek-{spec.name}", [spec.name],
                        start_offsets=lambda tps: {(spec.name, 0): 5})
    counts = {p["partition"]: p["high"] for p in partition_offsets(settings.kafka, bootstrap,
                                                                    spec.name)}
    expected = (counts[0] or 0) - 5 + (counts[1] or 0)
    loop.run(lambda b: got.extend((m.partition(), m.offset()) for m in b),
             max_records=expected, idle_timeout=20)
    assert min(o for p, o in got if p == 0) == 5
    assert min(o for p, o in got if p == 1) == 0
    assert len(got) == expected


def test_commit_ready__holds_commits_until_sinks_flushed(settings: Settings) -> None:
    spec = unique_topic(settings, "logs.app", partitions=1)
    _fill(settings, spec.name, 30)
    bootstrap = settings.kafka.bootstrap_servers or ""
    group = f"g-ready-{spec.name}"
    flushed = {"upto": 0}
    handled = 0

    def handler(batch: list) -> None:  # type: ignore[type-arg]
        nonlocal handled
        handled += len(batch)
        if handled >= 20 and not flushed["upto"]:
            flushed["upto"] = handled

    ConsumerLoop(settings.kafka, bootstrap, group, [spec.name], batch_size=10,
                 commit_ready=lambda: bool(flushed["upto"]) and handled == flushed["upto"]
                 ).run(handler, max_records=30, idle_timeout=20)
    rows = partition_offsets(settings.kafka, bootstrap, spec.name, group)
    assert rows[0]["committed"] == 20, "the last 10 were never declared durable"


@pytest.mark.timeout(45)
def test_drain__hands_over_fetched_records_without_waiting_for_a_full_batch(
    settings: Settings,
) -> None:
    # poll_timeout is far beyond the test's timeout: without drain the first consume() would
    # wait for it, since the batch (64) never fills from 5 records.
    spec = unique_topic(settings, "logs.app", partitions=1)
    _fill(settings, spec.name, 5)
    bootstrap = settings.kafka.bootstrap_servers or ""
    group = f"g-drain-{spec.name}"
    stop = StopSignal()
    batches: list[list[int]] = []

    def handler(batch: list) -> None:  # type: ignore[type-arg]
        batches.append([m.offset() for m in batch])
        if sum(map(len, batches)) == 5:
            stop.set()

    loop = ConsumerLoop(settings.kafka, bootstrap, group, [spec.name], batch_size=64,
                        commit_interval_s=3600)
    stats = loop.run(handler, stop=stop, poll_timeout=120, drain=True)
    assert [o for b in batches for o in b] == list(range(5))
    # One asynchronous commit (the first batch), none within the interval, and one at the end
    # for what came after it.
    assert stats.commits == (1 if len(batches) == 1 else 2)
    rows = partition_offsets(settings.kafka, bootstrap, spec.name, group)
    assert rows[0]["committed"] == 5


def test_wait_until_committed__returns_at_the_group_end_and_names_what_is_left(
    settings: Settings,
) -> None:
    from refluent.streams.errors import NotCaughtUpError
    from refluent.streams.kafka import group_lag, wait_until_committed
    from refluent.testing.kafka import topic_ends

    spec = unique_topic(settings, "logs.app", partitions=2)
    _fill(settings, spec.name, 30)
    bootstrap = settings.kafka.bootstrap_servers or ""
    group = f"g-wait-{spec.name}"
    assert sum(topic_ends(settings, spec.name).values()) == 30
    assert group_lag(settings.kafka, bootstrap, [spec.name], group) == 30  # nothing committed
    with pytest.raises(NotCaughtUpError, match=rf"group {group} has 30 record\(s\) of "
                                               rf"{spec.name} uncommitted"):
        wait_until_committed(settings.kafka, bootstrap, [spec.name], group, timeout_s=0.5,
                             what="nobody", poll_s=0.1)
    ConsumerLoop(settings.kafka, bootstrap, group, [spec.name], batch_size=10).run(
        lambda b: None, max_records=30, idle_timeout=20)
    checked: list[int] = []
    wait_until_committed(settings.kafka, bootstrap, [spec.name], group, timeout_s=10, what="loop",
                         check=lambda: checked.append(1))
    assert checked, "the liveness check runs before each poll"
    assert group_lag(settings.kafka, bootstrap, [spec.name], group) == 0


@pytest.mark.timeout(60)
def test_until_caught_up__stops_when_the_group_already_committed_the_end(
    settings: Settings,
) -> None:
    # A second run finds nothing to consume: no partition gets a position, and the run must
    # still see that it is at the end (an earlier run, or a crashed one, did the work).
    spec = unique_topic(settings, "logs.app", partitions=3)
    _fill(settings, spec.name, 30)
    bootstrap = settings.kafka.bootstrap_servers or ""
    group = f"g-caught-{spec.name}"
    first = ConsumerLoop(settings.kafka, bootstrap, group, [spec.name]).run(
        lambda b: None, until_caught_up=True)
    assert first.records == 30
    with _stop_after(30) as stop:
        second = ConsumerLoop(settings.kafka, bootstrap, group, [spec.name]).run(
            lambda b: None, stop=stop, until_caught_up=True)
    assert not stop.is_set(), "the second run only stopped when told to"
    assert second.records == 0
    # Partitions started from offsets the caller keeps (a lake sink's) count as read too.
    ends = {p: r["high"] for p, r in enumerate(partition_offsets(settings.kafka, bootstrap,
                                                                 spec.name))}
    def kept(tps: list) -> dict[tuple[str, int], int]:  # type: ignore[type-arg]
        return {(t.topic, t.partition): ends[t.partition] for t in tps}

    third = ConsumerLoop(settings.kafka, bootstrap, f"{group}-own", [spec.name],
                         start_offsets=kept, done_offsets=kept)
    with _stop_after(30) as stop:
        assert third.run(lambda b: None, stop=stop, until_caught_up=True).records == 0
    assert not stop.is_set(), "the run with its own start offsets only stopped when told to"


def test_read_range__returns_exactly_the_offsets_asked_for(settings: Settings) -> None:
    from refluent.streams.kafka import committed_or_start, read_range

    spec = unique_topic(settings, "logs.app", partitions=1)
    _fill(settings, spec.name, 20)
    bootstrap = settings.kafka.bootstrap_servers or ""
    got = read_range(settings.kafka, bootstrap, spec.name, 0, 5, 12)
    assert [m.offset() for m in got] == list(range(5, 12))
    assert [int(m.value()[6:-1]) for m in got] == list(range(5, 12))  # the records themselves
    # Past the end: what there is, without waiting for records that do not exist.
    assert [m.offset() for m in read_range(settings.kafka, bootstrap, spec.name, 0, 18, 40)
            ] == [18, 19]
    assert read_range(settings.kafka, bootstrap, spec.name, 0, 7, 7) == []
    group = f"g-range-{spec.name}"
    assert committed_or_start(settings.kafka, bootstrap, group, [(spec.name, 0)]) == {
        (spec.name, 0): 0}
    ConsumerLoop(settings.kafka, bootstrap, group, [spec.name]).run(
        lambda b: None, max_records=13, idle_timeout=20)
    assert committed_or_start(settings.kafka, bootstrap, group, [(spec.name, 0)]) == {
        (spec.name, 0): 13}


@pytest.mark.timeout(120)
def test_until_caught_up__waits_for_the_share_another_member_holds(
    settings: Settings, tmp_path: Path,
) -> None:
    # Another member of the group holds some partitions and works through them slowly (as a
    # crashed one does not at all, until its session times out). A run that stops once caught
    # up must not stop at the end of its own share: it returns when the group is done.
    from refluent.streams.kafka import group_lag

    spec = unique_topic(settings, "logs.app", partitions=4)
    _fill(settings, spec.name, 200)
    bootstrap = settings.kafka.bootstrap_servers or ""
    group = f"g-share-{spec.name}"
    joined = tmp_path / "joined"
    script = textwrap.dedent(f"""
        import time
        from refluent.config import KafkaSettings
        from refluent.streams.kafka import ConsumerLoop
        def handler(batch):
            open({str(joined)!r}, "w").write("yes")
            time.sleep(0.5)
        ConsumerLoop(KafkaSettings(session_timeout_ms=6000), {bootstrap!r}, {group!r},
                     [{spec.name!r}], batch_size=5).run(handler)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not joined.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert joined.exists(), "the other member never got records"
        assigned: list[int] = []
        with _stop_after(90) as stop:
            ConsumerLoop(settings.kafka, bootstrap, group, [spec.name], batch_size=10,
                         on_assign=lambda tps: assigned.extend(t.partition for t in tps)).run(
                lambda b: None, stop=stop, until_caught_up=True)
        assert not stop.is_set(), "the run only stopped when told to"
        assert 0 < len(set(assigned)) < 4, "the other member kept a share"
        assert group_lag(settings.kafka, bootstrap, [spec.name], group) == 0
        assert proc.poll() is None, "the other member was still working"
    finally:
        proc.kill()
        proc.wait()
