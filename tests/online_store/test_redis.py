"""The Redis online store: newer-wins writes, tombstones, TTLs, reads with ages, failures."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY
from pydantic import SecretStr

from refluent.config import Settings, safe_url
from refluent.embedded import services as emb
from refluent.online_store.base import (
    OnlineFeatures,
    from_epoch_ms,
    online_key,
    to_epoch_ms,
    view_key_prefix,
)
from refluent.online_store.errors import OnlineStoreError, ReservedFeatureNameError
from refluent.online_store.redis import RedisOnlineReader, RedisOnlineWriter
from refluent.streams.contracts import FeatureUpdate, FeatureValue

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
TTL = timedelta(hours=1)


def record(
    entity: str = "e1",
    values: dict[str, FeatureValue] | None = None,
    *,
    at: datetime = T0,
    seq: int = 0,
    deleted: bool = False,
    view: str = "v",
) -> FeatureUpdate:
    return FeatureUpdate(view=view, entity_id=entity, values=values or {}, event_time=at,
                         sequence=seq, deleted=deleted)


@dataclass
class Store:
    writer: RedisOnlineWriter
    reader: RedisOnlineReader
    raw: redis.Redis
    prefix: str

    def key(self, entity: str, view: str = "v") -> str:
        return online_key(self.prefix, view, entity)

    def hash(self, entity: str, view: str = "v") -> dict[str, str]:
        got: dict[bytes, bytes] = self.raw.hgetall(self.key(entity, view))  # type: ignore[assignment]
        return {k.decode(): v.decode() for k, v in got.items()}

    def read(self, entity: str, features: list[str] | None = None) -> OnlineFeatures:
        return self.reader.get_online_features("v", [entity], features)[0]


@pytest.fixture()
def store(settings: Settings) -> Iterator[Store]:
    url = settings.redis.url
    assert url is not None
    prefix = f"t{uuid.uuid4().hex[:10]}"
    writer = RedisOnlineWriter(url, {"v": TTL}, key_prefix=prefix,
                               default_ttl=timedelta(minutes=5))
    writer.setup()
    reader = RedisOnlineReader(url, key_prefix=prefix)
    reader.setup()
    raw = redis.Redis.from_url(url)
    yield Store(writer, reader, raw, prefix)
    writer.close()
    reader.close()
    raw.close()


def sample(name: str, view: str) -> float:
    return REGISTRY.get_sample_value(name, {"view": view}) or 0.0


# ---------------------------------------------------------------------------------------------
# unit: layout without Redis
# ---------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_key_format__prefix_view_entity_one_key_per_view_and_entity() -> None:
    assert online_key("rf", "orders_1h", "42") == "rf:orders_1h:42"
    assert online_key("", "orders_1h", "42") == "orders_1h:42"
    # The entity id is last, so ids containing ':' cannot collide across views.
    assert online_key("rf", "v", "a:b") == "rf:v:a:b"
    assert view_key_prefix("rf", "v") == "rf:v:"
    for bad in ("", "a:b"):
        with pytest.raises(ValueError, match="free of ':'"):
            online_key("rf", bad, "1")
    store = RedisOnlineWriter("redis://127.0.0.1:1/0", {"v": timedelta(seconds=90)},
                              key_prefix="p", default_ttl=None)
    assert store.key("v", "7") == "p:v:7"
    assert store.ttl_ms("v") == 90_000
    assert store.ttl_ms("unknown") == 0  # no default TTL: keep forever
    assert RedisOnlineReader("redis://127.0.0.1:1/0", key_prefix="p").key("v", "7") == "p:v:7"


@pytest.mark.unit
def test_epoch_ms__exact_round_trip_and_masked_urls() -> None:
    ts = datetime(2024, 5, 1, 12, 0, 0, 123_000, tzinfo=UTC)
    assert from_epoch_ms(to_epoch_ms(ts)) == ts
    assert safe_url("redis://user:pw@host:6379/0") == "redis://user:***@host:6379/0"
    assert safe_url("redis://host:6379/0") == "redis://host:6379/0"


@pytest.mark.unit
def test_writer__rejects_non_positive_ttl() -> None:
    with pytest.raises(ValueError, match="'v'"):
        RedisOnlineWriter("redis://127.0.0.1:1/0", {"v": timedelta(0)})


# ---------------------------------------------------------------------------------------------
# integration: writes
# ---------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_write__older_event_time_never_overwrites_newer(store: Store) -> None:
    store.writer.write([record(values={"n": 2}, at=T0 + timedelta(seconds=10), seq=5)])
    # Late arrival: older event time, even with a higher sequence.
    store.writer.write([record(values={"n": 1}, at=T0, seq=9)])
    got = store.read("e1", ["n"])
    assert got.values == {"n": 2}
    assert got.event_time == T0 + timedelta(seconds=10)
    assert store.hash("e1")["__seq"] == "5"


@pytest.mark.integration
def test_write__same_event_time_lower_sequence_ignored_higher_wins(store: Store) -> None:
    store.writer.write([record(values={"n": 5}, seq=5)])
    store.writer.write([record(values={"n": 4}, seq=4)])
    assert store.read("e1", ["n"]).values == {"n": 5}
    store.writer.write([record(values={"n": 6}, seq=6)])
    assert store.read("e1", ["n"]).values == {"n": 6}


@pytest.mark.integration
def test_write__exact_replay_is_a_noop_and_counted_stale(store: Store) -> None:
    view = f"replay{uuid.uuid4().hex[:6]}"
    batch = [record(values={"n": 1}, seq=3, view=view)]
    store.writer.write(batch)
    first = store.hash("e1", view)
    applied = sample("refluent_online_updates_applied_total", view)
    store.raw.pexpire(store.key("e1", view), 60_000)  # a replay must not touch the key at all
    store.writer.write(batch)
    assert store.hash("e1", view) == first  # write time unchanged: nothing was rewritten
    assert 0 < store.raw.pttl(store.key("e1", view)) <= 60_000
    assert sample("refluent_online_updates_applied_total", view) == applied == 1
    assert sample("refluent_online_updates_stale_total", view) == 1


@pytest.mark.integration
def test_write__in_batch_order_does_not_matter(store: Store) -> None:
    newest = record(values={"n": 3}, at=T0 + timedelta(seconds=3), seq=1)
    store.writer.write([newest, record(values={"n": 1}, seq=7),
                        record(values={"n": 2}, at=T0 + timedelta(seconds=2))])
    assert store.read("e1", ["n"]).values == {"n": 3}


@pytest.mark.integration
def test_delete__tombstone_blocks_older_create_and_newer_create_wins(store: Store) -> None:
    store.writer.write([record(values={"n": 1}, seq=1)])
    store.writer.write([record(at=T0 + timedelta(seconds=5), seq=2, deleted=True)])
    held = store.hash("e1")
    assert held["__del"] == "1"
    assert set(held) == {"__et", "__seq", "__wt", "__del"}
    gone = store.read("e1", ["n"])
    assert (gone.found, gone.deleted, gone.values) == (False, True, {"n": None})
    assert gone.event_time == T0 + timedelta(seconds=5)
    # A create replayed or delivered late (older than the delete) must not resurrect the row.
    store.writer.write([record(values={"n": 1}, at=T0 + timedelta(seconds=4), seq=9)])
    assert store.read("e1", ["n"]).deleted
    assert 0 < store.raw.pttl(store.key("e1")) <= TTL // timedelta(milliseconds=1)
    store.writer.write([record(values={"n": 7}, at=T0 + timedelta(seconds=6), seq=3)])
    back = store.read("e1", ["n"])
    assert (back.found, back.deleted, back.values) == (True, False, {"n": 7})
    assert "__del" not in store.hash("e1")


@pytest.mark.integration
def test_ttl__per_view_and_default_for_unknown_views(store: Store) -> None:
    store.writer.write([record("a", {"n": 1}), record("b", {"n": 1}, view="other")])
    pttl_v = store.raw.pttl(store.key("a"))
    pttl_other = store.raw.pttl(store.key("b", "other"))
    assert 0 < pttl_v <= 3_600_000
    assert pttl_v > 300_000
    assert 0 < pttl_other <= 300_000


@pytest.mark.integration
def test_write__features_absent_from_the_update_are_removed(store: Store) -> None:
    store.writer.write([record(values={"a": 1, "b": [0.5, 1.5], "c": "x"}, seq=1)])
    assert {"a", "b", "c"} <= set(store.hash("e1"))
    store.writer.write([record(values={"a": 2}, seq=2)])
    assert set(store.hash("e1")) == {"a", "__et", "__seq", "__wt"}
    assert store.read("e1").values == {"a": 2}
    assert store.read("e1", ["a", "b"]).values == {"a": 2, "b": None}


@pytest.mark.integration
def test_write__reserved_feature_name_names_view_and_key(store: Store) -> None:
    with pytest.raises(ReservedFeatureNameError, match=rf"'__et'.*'v'.*{store.key('e1')}"):
        store.writer.write([record(values={"__et": 1})])


@pytest.mark.integration
def test_write__reloads_the_script_when_redis_lost_it(store: Store) -> None:
    store.raw.script_flush()
    store.writer.write([record(values={"n": 1})])
    assert store.read("e1", ["n"]).values == {"n": 1}


@pytest.mark.integration
def test_write__one_batch_applies_each_update_in_order_with_newer_wins(store: Store) -> None:
    """A batch is one script call: updates of one key in it are applied one after the other,
    each only when newer than what the ones before it left."""
    applied = store.writer.write([record("a", {"n": 1}, seq=1), record("a", {"n": 3}, seq=3),
                                  record("a", {"n": 2}, seq=2), record("b", {"n": 9}, seq=1)])
    assert applied == [True, True, False, True]
    rows = store.reader.get_online_features("v", ["a", "b"], ["n"])
    assert [r.values for r in rows] == [{"n": 3}, {"n": 9}]


@pytest.mark.integration
def test_write__a_key_redis_refuses_names_the_key(store: Store) -> None:
    store.raw.set(store.key("e1"), "not a hash")
    with pytest.raises(OnlineStoreError, match=rf"key {store.key('e1')}: WRONGTYPE"):
        store.writer.write([record("e0", {"n": 1}), record("e1", {"n": 1})])


@pytest.mark.integration
def test_freshness__observed_per_applied_update_in_seconds(store: Store) -> None:
    view = f"fresh{uuid.uuid4().hex[:6]}"
    at = datetime.now(UTC) - timedelta(seconds=30)
    before = datetime.now(UTC)
    store.writer.write([record("a", {"n": 1}, at=at, view=view),
                        record("b", {"n": 1}, at=at, view=view),
                        record("b", {"n": 0}, at=at - timedelta(seconds=1), view=view)])
    after = datetime.now(UTC)
    count = sample("refluent_feature_freshness_seconds_count", view)
    total = sample("refluent_feature_freshness_seconds_sum", view)
    assert count == 2  # the stale update is not online, so it has no freshness
    low = (before - at).total_seconds() - 0.002  # event time is stored to the millisecond
    high = (after - at).total_seconds() + 0.002
    assert 2 * low <= total <= 2 * high
    assert sample("refluent_online_updates_stale_total", view) == 1


# ---------------------------------------------------------------------------------------------
# integration: reads
# ---------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_read__many_entities_in_one_round_trip_with_ages(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [f"c{i}" for i in range(50)]
    store.writer.write([
        record(e, {"n": i, "avg": i / 2, "tags": "x" * i, "vec": [float(i), 1.0]},
               at=T0 + timedelta(seconds=i), seq=i)
        for i, e in enumerate(ids)
    ])
    sends: list[bytes] = []
    real = redis.connection.AbstractConnection.send_packed_command

    def counting(conn: Any, command: Any, check_health: bool = True) -> None:
        sends.append(command if isinstance(command, bytes) else b"".join(command))
        real(conn, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    now = T0 + timedelta(minutes=5)
    wanted = [*ids[::-1], "nobody"]
    rows = store.reader.get_online_features("v", wanted, ["n", "vec", "missing"], now=now)
    # One write carrying every command, then the replies: one round trip.
    assert len(sends) == 1
    assert sends[0].count(b"HMGET") == len(wanted)
    assert [r.entity_id for r in rows] == wanted
    for row in rows[:-1]:
        i = int(row.entity_id[1:])
        assert row.found and not row.deleted
        assert row.values == {"n": i, "vec": [float(i), 1.0], "missing": None}
        assert row.event_time == T0 + timedelta(seconds=i)
        assert row.age == timedelta(minutes=5) - timedelta(seconds=i)
    every = store.reader.get_online_features("v", ["c3", "c4"], now=now)
    assert every[0].values == {"n": 3, "avg": 1.5, "tags": "xxx", "vec": [3.0, 1.0]}
    assert every[1].age == timedelta(seconds=296)


@pytest.mark.integration
def test_read__missing_entities_are_not_found(store: Store) -> None:
    store.writer.write([record("here", {"n": 1})])
    rows = store.reader.get_online_features("v", ["gone", "here", "also-gone"], ["n"])
    assert [r.found for r in rows] == [False, True, False]
    assert rows[0].values == {"n": None}
    assert rows[0].event_time is None and rows[0].age is None and not rows[0].deleted
    assert store.reader.get_online_features("v", ["gone"])[0].values == {}
    assert store.reader.get_online_features("v", []) == []


@pytest.mark.integration
def test_read__large_batch_spanning_many_socket_reads(store: Store) -> None:
    big = "y" * 2000
    ids = [f"b{i}" for i in range(300)]
    store.writer.write([record(e, {"s": big, "i": i}) for i, e in enumerate(ids)])
    rows = store.reader.get_online_features("v", ids, ["s", "i"])
    assert [r.values["i"] for r in rows] == list(range(300))
    assert all(r.values["s"] == big for r in rows)


@pytest.mark.integration
def test_read__wrong_type_key_names_the_key(store: Store) -> None:
    store.raw.set(store.key("odd"), "not a hash")
    with pytest.raises(OnlineStoreError, match=store.key("odd")):
        store.reader.get_online_features("v", ["odd"], ["n"])
    # The connection stays usable after an error reply.
    store.writer.write([record("fine", {"n": 1})])
    assert store.read("fine", ["n"]).found


@pytest.mark.integration
def test_read__selects_the_database_in_the_url(settings: Settings) -> None:
    url = (settings.redis.url or "").rsplit("/", 1)[0] + "/3"
    prefix = f"t{uuid.uuid4().hex[:10]}"
    writer = RedisOnlineWriter(url, key_prefix=prefix)
    reader = RedisOnlineReader(url, key_prefix=prefix)
    writer.setup()
    writer.write([record("e1", {"n": 1})])
    assert reader.get_online_features("v", ["e1"], ["n"])[0].values == {"n": 1}
    db0 = RedisOnlineReader(settings.redis.url or "", key_prefix=prefix)
    assert not db0.get_online_features("v", ["e1"], ["n"])[0].found
    for closable in (writer, reader, db0):
        closable.close()


@pytest.mark.integration
def test_reader_setup__refused_credentials_name_the_store(settings: Settings) -> None:
    url = (settings.redis.url or "").replace("redis://", "redis://nobody@", 1)
    reader = RedisOnlineReader(url, password=SecretStr("not-the-password"))
    with pytest.raises(OnlineStoreError, match=r"nobody@.*setup: refused: Authentication") as err:
        reader.setup()
    assert "not-the-password" not in str(err.value)
    in_url = RedisOnlineReader(url.replace("nobody@", "nobody:not-the-password@"))
    with pytest.raises(OnlineStoreError, match=r"nobody:\*\*\*@.*refused") as err:
        in_url.setup()
    assert "not-the-password" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# integration: failures
# ---------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_pooled_connections_dropped_by_the_server__next_read_and_write_reconnect(
    store: Store,
) -> None:
    store.writer.write([record("e1", {"n": 1})])
    assert store.read("e1", ["n"]).found
    # Each pool holds one idle connection now: CLIENT ID is answered on it.
    for client in (store.writer._client, store.reader._client):
        assert client is not None
        assert store.raw.client_kill_filter(_id=str(client.client_id())) == 1
    store.writer.write([record("e1", {"n": 2}, seq=1)])
    assert store.read("e1", ["n"]).values == {"n": 2}
    assert store.reader.get_online_features("v", ["e1", "e2"])[0].values == {"n": 2}


@pytest.mark.integration
def test_setup__closed_port_raises_online_store_error_naming_the_address() -> None:
    port = emb.free_port()
    url = f"redis://127.0.0.1:{port}/0"
    writer = RedisOnlineWriter(url, retries=0, socket_timeout=1.0)
    with pytest.raises(OnlineStoreError, match=rf"127\.0\.0\.1:{port}.*upsert script"):
        writer.setup()
    with pytest.raises(OnlineStoreError, match=rf"127\.0\.0\.1:{port}"):
        RedisOnlineReader(url).setup()


@pytest.mark.integration
def test_write__redis_down_raises_online_store_error_naming_key(tmp_path: Path) -> None:
    rec, proc = emb.start_redis(tmp_path)
    store = RedisOnlineWriter(rec.address, retries=0, socket_timeout=1.0, key_prefix="down")
    reader = RedisOnlineReader(rec.address, key_prefix="down")
    try:
        store.setup()
        reader.setup()
        store.write([record("e1", {"n": 1})])
    finally:
        proc.terminate()
        proc.wait(10)
    with pytest.raises(OnlineStoreError, match=r"online store .*key down:v:e1") as err:
        store.write([record("e1", {"n": 2}, seq=1), record("e2", {"n": 2})])
    assert isinstance(err.value.__cause__, redis.RedisError)
    with pytest.raises(OnlineStoreError, match=r"view 'v' \(1 key\(s\) from down:v:e1\)"):
        reader.get_online_features("v", ["e1"], ["n"])
    store.close()
    reader.close()
