"""Sink pipelines against the real broker, lake catalog and Redis: the lake pipeline lands each
topic once (also when resumed by a new consumer group), bad records end in ``<topic>.dlq``, and
the online pipeline leaves Redis holding what the in-memory runner computes."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from refluent.config import Settings
from refluent.embedded.services import check_lake
from refluent.engines.memory import InMemoryRunner
from refluent.lake.catalog import load_table, open_catalog
from refluent.lake.offsets import read_offsets
from refluent.online_store.redis import RedisOnlineReader
from refluent.processors.aggregations import Aggregation
from refluent.processors.features import EntityStateView, FeatureView, only_ops
from refluent.processors.windows import Hopping, Tumbling
from refluent.sinks.pipeline import (
    PipelineStats,
    SinkPipeline,
    lake_routes,
    lake_table_for,
    online_routes,
)
from refluent.streams.contracts import CdcEnvelope, DriftAlert, FeatureUpdate, LogEvent
from refluent.streams.deadletter import DeadLetter
from refluent.streams.kafka import Producer, TopicAdmin
from refluent.streams.topics import ALERTS, TopicCatalog
from refluent.testing.kafka import read_all, unique_topic
from refluent.testing.services import RunningServices

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass
class Lake:
    """Settings with a lake namespace and a Redis key prefix of the test's own."""

    settings: Settings
    namespace: str

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka.bootstrap_servers or ""

    def rows(self, topic: str, *cols: str) -> list[dict[str, Any]]:
        table = load_table(open_catalog(self.settings), lake_table_for(topic), self.namespace)
        return table.scan().to_arrow().select(list(cols)).to_pylist()

    def offsets(self, topic: str) -> dict[tuple[str, int], int]:
        return read_offsets(load_table(open_catalog(self.settings), lake_table_for(topic),
                                       self.namespace))


@pytest.fixture()
def lake(services: RunningServices) -> Lake:
    namespace = f"t_{uuid.uuid4().hex[:10]}"
    check_lake(services.catalog_uri, services.warehouse, namespace, create=True)
    # A shorter session makes group joins (half of it on the embedded broker) quicker.
    settings = services.settings(kafka={"session_timeout_ms": 3000},
                                 lake={"namespace": namespace},
                                 redis={"key_prefix": f"t{uuid.uuid4().hex[:10]}"})
    return Lake(settings, namespace)


# ---------------------------------------------------------------------------------------------
# events
# ---------------------------------------------------------------------------------------------


def logs(n: int, start: int = 0, entities: int = 11) -> list[LogEvent]:
    return [LogEvent(source="app", ts=T0 + timedelta(seconds=13 * i), message=f"m{i}",
                     entity_id=f"u{i % entities}",
                     attributes={"amount": i % 40, "page": f"/p{i % 6}", "i": i})
            for i in range(start, start + n)]


def changes(n: int, start: int = 0) -> list[CdcEnvelope]:
    out = []
    for i in range(start, start + n):
        row = {"id": i % 17, "customer_id": f"c{i % 5}", "amount": float(i), "tier": "abc"[i % 3]}
        op = "c" if i < 17 else ("d" if i % 10 == 3 else "u")
        out.append(CdcEnvelope.model_validate({
            "op": op, "before": None if op == "c" else row, "after": None if op == "d" else row,
            "source": {"ts_ms": int((T0 + timedelta(seconds=7 * i)).timestamp() * 1000),
                       "lsn": 100 + i}}))
    return out


def updates(n: int, view: str, start: int = 0) -> list[FeatureUpdate]:
    return [FeatureUpdate(view=view, entity_id=f"e{i % 7}", values={"n": i, "x": i / 2},
                          event_time=T0 + timedelta(seconds=i), sequence=i)
            for i in range(start, start + n)]


def key_of(event: Any) -> str:
    if isinstance(event, CdcEnvelope):
        return str(event.row["id"])
    return str(event.entity_id)


def produce(settings: Settings, topic: str, events: Sequence[BaseModel | bytes]) -> None:
    """Produce ``events`` (raw bytes as they are, keyed ``bad``) and wait for the acks."""
    with Producer(settings.kafka, settings.kafka.bootstrap_servers or "") as producer:
        for event in events:
            if isinstance(event, bytes):
                producer.produce(topic, event, b"bad")
            else:
                producer.produce(topic, event.model_dump_json().encode(), key_of(event))


def create_topics(settings: Settings, names: list[str]) -> None:
    catalog = TopicCatalog.from_settings(settings.topics)
    specs = [catalog.get(name) for name in names]
    TopicAdmin(settings.kafka, settings.kafka.bootstrap_servers or "").ensure(
        specs + [s.dlq() for s in specs])


def run_lake(lake: Lake, topics: list[str], expected: int, group: str | None = None,
             idle: float = 8.0) -> PipelineStats:
    """Run the lake pipeline until ``expected`` records were consumed (0: until it has read
    every assigned partition to its end), or ``idle`` seconds passed without a record (the
    group join counts)."""
    pipeline = SinkPipeline(lake.settings, lake.bootstrap, group or f"lake-{uuid.uuid4().hex[:8]}",
                            lake_routes(lake.settings, topics), batch_size=500)
    return pipeline.run(max_records=expected or None, idle_timeout=idle,
                        until_caught_up=not expected)


def coordinates(rows: list[dict[str, Any]]) -> Counter[tuple[str, int, int]]:
    return Counter((r["topic"], r["partition"], r["offset"]) for r in rows)


# ---------------------------------------------------------------------------------------------
# lake pipeline
# ---------------------------------------------------------------------------------------------


def test_lake__each_kind_of_topic_lands_in_its_table_with_exactly_the_produced_rows(
        lake: Lake) -> None:
    log_t = unique_topic(lake.settings, "logs.app").name
    cdc_t = unique_topic(lake.settings, "cdc.orders").name
    feat_t = unique_topic(lake.settings, "features.pv").name
    log_events, cdc_events, feat_events = logs(120), changes(60), updates(40, "pv")
    produce(lake.settings, log_t, log_events)
    produce(lake.settings, cdc_t, cdc_events)
    produce(lake.settings, feat_t, feat_events)

    stats = run_lake(lake, [log_t, cdc_t, feat_t], 220)

    assert (stats.records, stats.written, stats.dead_lettered) == (220, 220, 0)
    raw = lake.rows(log_t, "topic", "partition", "offset", "message", "entity_id", "payload")
    assert sorted(r["message"] for r in raw) == sorted(e.message for e in log_events)
    # The whole event is kept: it reads back equal to what was produced.
    by_message = {e.message: e for e in log_events}
    assert all(LogEvent.model_validate_json(r["payload"]) == by_message[r["message"]]
               and r["entity_id"] == by_message[r["message"]].entity_id for r in raw)
    assert set(coordinates(raw).values()) == {1}
    assert {r["topic"] for r in raw} == {log_t}

    cdc = lake.rows(cdc_t, "topic", "partition", "offset", "op", "key", "position")
    assert Counter((r["op"], r["key"]) for r in cdc) == Counter(
        (e.op, str(e.row["id"])) for e in cdc_events)
    assert set(coordinates(cdc).values()) == {1}

    feats = lake.rows(feat_t, "topic", "partition", "offset", "view", "entity_id", "sequence",
                      "n", "x")
    assert sorted((r["entity_id"], r["sequence"], r["n"], r["x"]) for r in feats) == sorted(
        (u.entity_id, u.sequence, u.values["n"], u.values["x"]) for u in feat_events)
    assert set(coordinates(feats).values()) == {1}

    # Every table records, per partition, the offset after the last row it holds.
    for topic, rows in ((log_t, raw), (cdc_t, cdc), (feat_t, feats)):
        ends: dict[tuple[str, int], int] = {}
        for r in rows:
            tp = (r["topic"], r["partition"])
            ends[tp] = max(ends.get(tp, 0), r["offset"] + 1)
        assert lake.offsets(topic) == ends


def test_lake__alerts_land_with_their_model_detector_statistic_and_window(lake: Lake) -> None:
    create_topics(lake.settings, [ALERTS])  # the sink knows the topic by its catalog name
    run = uuid.uuid4().hex[:8]
    alerts = [DriftAlert(alert_id=f"{run}-{i}", model_name="churn", model_version=str(i % 3),
                         detector="psi", kind="feature", feature="spend", statistic=0.2 + i,
                         threshold=0.2, detected_at=T0 + timedelta(minutes=i),
                         window={"first_request": 1000 * i, "last_request": 1000 * i + 999,
                                 "topic": "predictions", "partition": 0, "offset": 1000 * i})
              for i in range(5)]
    alerts.append(DriftAlert(alert_id=f"{run}-lag", event="consumer.lagging",
                             subject="refluent-serving", detector="lag", kind="lag",
                             statistic=20_000, threshold=10_000, detected_at=T0))
    with Producer(lake.settings.kafka, lake.bootstrap) as producer:
        for a in alerts:
            producer.produce(ALERTS, a.model_dump_json().encode(), a.entity_key())

    stats = run_lake(lake, [ALERTS], 0)  # other tests' alerts land too, each once

    rows = lake.rows(ALERTS, "alert_id", "event", "model_name", "model_version", "subject",
                     "detector", "statistic", "threshold", "event_time", "payload")
    assert stats.dead_lettered == 0
    assert len({r["alert_id"] for r in rows}) == len(rows)  # each alert once
    by_id = {r["alert_id"]: r for r in rows if r["alert_id"].startswith(run)}
    assert sorted(by_id) == sorted(a.alert_id for a in alerts)
    for a in alerts:
        row = by_id[a.alert_id]
        assert (row["event"], row["model_name"], row["model_version"], row["subject"],
                row["detector"], row["statistic"], row["threshold"], row["event_time"]) == (
            a.event, a.model_name, a.model_version, a.subject, a.detector, a.statistic,
            a.threshold, a.detected_at)
        assert DriftAlert.model_validate_json(row["payload"]).window == a.window


def test_lake__bad_records_go_to_the_dlq_and_the_totals_balance(lake: Lake) -> None:
    log_spec = unique_topic(lake.settings, "logs.app", partitions=1)
    cdc_spec = unique_topic(lake.settings, "cdc.orders", partitions=1)
    good_logs = logs(50)
    # Undecodable input: not JSON, and JSON of the wrong shape.
    log_input: list[BaseModel | bytes] = [*good_logs[:20], b"{not json", *good_logs[20:40],
                                          b'{"source": "app"}', *good_logs[40:]]
    # Decodes as a change, but its row lacks the primary key: the lake table rejects it.
    no_pk = CdcEnvelope.model_validate({"op": "c", "after": {"name": "x"},
                                        "source": {"ts_ms": 1_770_000_000_000, "lsn": 1}})
    good_cdc = changes(30)
    cdc_input: list[BaseModel | bytes] = [*good_cdc[:10], b"\xff\xfe", *good_cdc[10:]]
    produce(lake.settings, log_spec.name, log_input)
    produce(lake.settings, cdc_spec.name, cdc_input)
    with Producer(lake.settings.kafka, lake.bootstrap) as producer:
        producer.produce(cdc_spec.name, no_pk.model_dump_json().encode(), b"nopk")
    total_in = len(log_input) + len(cdc_input) + 1

    stats = run_lake(lake, [log_spec.name, cdc_spec.name], total_in)

    landed_logs = lake.rows(log_spec.name, "message", "offset")
    landed_cdc = lake.rows(cdc_spec.name, "key", "offset")
    log_dlq = read_all(lake.settings, log_spec.dlq().name, 2, timeout=5)
    cdc_dlq = read_all(lake.settings, cdc_spec.dlq().name, 2, timeout=5)
    letters = [DeadLetter.parse(r.headers, r.key, r.value) for r in log_dlq + cdc_dlq]

    assert sorted(r["message"] for r in landed_logs) == sorted(e.message for e in good_logs)
    assert sorted(r["key"] for r in landed_cdc) == sorted(str(e.row["id"]) for e in good_cdc)
    assert len(log_dlq) == 2 and len(cdc_dlq) == 2
    # in = landed + dead-lettered, counted by the pipeline and by what the topics hold.
    assert stats.records == total_in
    assert len(landed_logs) + len(landed_cdc) + len(letters) == total_in
    assert (stats.written, stats.dead_lettered) == (80, 4)  # 3 decode failures + 1 lake row
    assert {(d.topic, d.offset, d.step) for d in letters} == {
        (log_spec.name, 20, "decode"), (log_spec.name, 41, "decode"),
        (cdc_spec.name, 10, "decode"), (cdc_spec.name, 31, "lake")}
    assert {r.value for r in log_dlq} == {b"{not json", b'{"source": "app"}'}
    # Dead-lettered offsets count as consumed: the tables resume after them.
    assert lake.offsets(log_spec.name) == {(log_spec.name, 0): len(log_input)}
    assert lake.offsets(cdc_spec.name) == {(cdc_spec.name, 0): len(cdc_input) + 1}


def test_lake__a_second_run_with_a_new_group_resumes_from_the_tables_without_duplicates(
        lake: Lake) -> None:
    log_t = unique_topic(lake.settings, "logs.app").name
    cdc_t = unique_topic(lake.settings, "cdc.orders").name
    first_logs, first_cdc = logs(90), changes(40)
    produce(lake.settings, log_t, first_logs)
    produce(lake.settings, cdc_t, first_cdc)
    first = run_lake(lake, [log_t, cdc_t], 130, group="lake-first")
    assert first.records == 130

    more_logs, more_cdc = logs(45, start=90), changes(25, start=40)
    produce(lake.settings, log_t, more_logs)
    produce(lake.settings, cdc_t, more_cdc)
    # A group that never committed: only the tables say where to start.
    second = run_lake(lake, [log_t, cdc_t], 0, group="lake-second", idle=4)
    # And a third run over topics that hold nothing new.
    third = run_lake(lake, [log_t, cdc_t], 0, group="lake-third", idle=4)

    assert second.records == 70
    assert third.records == 0
    raw = lake.rows(log_t, "topic", "partition", "offset", "message")
    cdc = lake.rows(cdc_t, "topic", "partition", "offset", "op", "key")
    assert sorted(r["message"] for r in raw) == sorted(e.message for e in first_logs + more_logs)
    assert Counter((r["op"], r["key"]) for r in cdc) == Counter(
        (e.op, str(e.row["id"])) for e in first_cdc + more_cdc)
    assert set(coordinates(raw).values()) == {1}
    assert set(coordinates(cdc).values()) == {1}


def test_lake__a_restart_does_not_dead_letter_the_last_record_again(lake: Lake) -> None:
    # The dead letter is a partition's last record: only it can move the table's offsets.
    spec = unique_topic(lake.settings, "logs.app", partitions=1)
    produce(lake.settings, spec.name, [*logs(5), b"{not json"])
    first = run_lake(lake, [spec.name], 6, group="lake-dlq")
    again = run_lake(lake, [spec.name], 0, group="lake-dlq", idle=4)

    assert (first.records, first.dead_lettered) == (6, 1)
    assert again.records == 0
    assert len(read_all(lake.settings, spec.dlq().name, 10, timeout=3)) == 1


def test_lake__a_row_the_table_rejects_is_dead_lettered_whole(lake: Lake) -> None:
    spec = unique_topic(lake.settings, "cdc.orders", partitions=1)
    no_pk = CdcEnvelope.model_validate({"op": "c", "after": {"name": "x"},
                                        "source": {"ts_ms": 1_770_000_000_000, "lsn": 1}})
    raw = no_pk.model_dump_json().encode()
    with Producer(lake.settings.kafka, lake.bootstrap) as producer:
        producer.produce(spec.name, raw, b"nopk")
    run_lake(lake, [spec.name], 1)

    (letter,) = read_all(lake.settings, spec.dlq().name, 1, timeout=3)
    assert DeadLetter.parse(letter.headers, letter.key, letter.value).step == "lake"
    assert CdcEnvelope.model_validate_json(letter.value or b"null") == no_pk


# ---------------------------------------------------------------------------------------------
# online pipeline
# ---------------------------------------------------------------------------------------------


def views(sfx: str) -> list[FeatureView | EntityStateView]:
    return [
        FeatureView(f"act_{sfx}", "entity_id", (f"logs.act_{sfx}",), (
            Aggregation("events_1h", "count", None, Tumbling(timedelta(hours=1))),
            Aggregation("spend_2h", "sum", "amount",
                        Hopping(timedelta(hours=2), timedelta(hours=1))),
            Aggregation("last_page", "last", "page", Tumbling(timedelta(hours=1))),
        ), ttl=timedelta(days=2)),
        FeatureView(f"ord_{sfx}", "customer_id", (f"cdc.ord_{sfx}",), (
            Aggregation("orders_1h", "count", None, Tumbling(timedelta(hours=1))),
        ), transforms=(only_ops("c", "u"),)),
        EntityStateView(f"cust_{sfx}", f"cdc.cust_{sfx}", columns=("tier", "amount")),
    ]


def test_online__redis_ends_with_what_the_in_memory_runner_computes(lake: Lake) -> None:
    sfx = uuid.uuid4().hex[:8]
    found = views(sfx)
    runner = InMemoryRunner(found)
    runner.feed(f"logs.act_{sfx}", logs(400, entities=23))
    runner.feed(f"cdc.ord_{sfx}", changes(150))
    runner.feed(f"cdc.cust_{sfx}", changes(150))
    assert not runner.rejected
    produced: dict[str, list[FeatureUpdate]] = {}
    for update in runner.updates:
        produced.setdefault(update.view, []).append(update)
    assert {v.name for v in found} == set(produced)
    # Redelivery in any order: every update of one view shuffled, plus a replay of a third of
    # them. Newer-wins by (event_time, sequence) must still leave the latest.
    rnd = random.Random(7)
    total = 0
    create_topics(lake.settings, [v.topic for v in found])
    for view in found:
        batch = list(produced[view.name])
        batch += rnd.sample(batch, len(batch) // 3)
        rnd.shuffle(batch)
        produce(lake.settings, view.topic, batch)
        total += len(batch)

    pipeline = SinkPipeline(lake.settings, lake.bootstrap, f"online-{sfx}",
                            online_routes(lake.settings, found), batch_size=300)
    stats = pipeline.run(max_records=total, idle_timeout=8)

    assert (stats.records, stats.dead_lettered) == (total, 0)
    reader = RedisOnlineReader.from_settings(lake.settings)
    try:
        for view in found:
            expected = runner.online[view.name]
            got = reader.get_online_features(view.name, sorted(expected))
            assert {g.entity_id: (g.found, g.deleted, g.event_time, g.values) for g in got} == {
                e: (not u.deleted, u.deleted, u.event_time, {} if u.deleted else u.values)
                for e, u in expected.items()}, view.name
    finally:
        reader.close()
    assert any(u.deleted for u in runner.online[f"cust_{sfx}"].values())


def test_lake__a_recreated_topic_stops_the_sink_until_its_offsets_are_reset(
        lake: Lake) -> None:
    from confluent_kafka.admin import AdminClient

    from refluent.lake.offsets import reset_offsets
    from refluent.sinks.errors import SinkOffsetsAheadError

    spec = unique_topic(lake.settings, "logs.app", partitions=1)
    produce(lake.settings, spec.name, logs(30))
    assert run_lake(lake, [spec.name], 30).written == 30

    # The topic goes away and comes back empty (what a restart of the embedded broker does).
    admin = AdminClient(lake.settings.kafka.client_config(lake.bootstrap))
    admin.delete_topics([spec.name])[spec.name].result(10)
    for _ in range(50):
        if spec.name not in admin.list_topics(timeout=5).topics:
            break
        time.sleep(0.1)
    TopicAdmin(lake.settings.kafka, lake.bootstrap).ensure([spec])
    produce(lake.settings, spec.name, logs(5, start=100))

    with pytest.raises(SinkOffsetsAheadError) as caught:
        run_lake(lake, [spec.name], 5)
    assert caught.value.ahead == [(spec.name, 0, 30, 5)]
    assert "reset-offsets" in str(caught.value)

    table = load_table(open_catalog(lake.settings), lake_table_for(spec.name), lake.namespace)
    assert reset_offsets(table, [spec.name]) == {(spec.name, 0): 30}
    assert run_lake(lake, [spec.name], 5).written == 5
    messages = sorted(r["message"] for r in lake.rows(spec.name, "message"))
    assert messages == sorted([f"m{i}" for i in range(30)] + [f"m{i}" for i in range(100, 105)])
