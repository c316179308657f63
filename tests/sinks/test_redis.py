"""The online-store sink: it writes through the online store's writer and speaks SinkError."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from refluent.config import Settings
from refluent.embedded import services as emb
from refluent.online_store.redis import RedisOnlineReader
from refluent.sinks.base import SinkRecord
from refluent.sinks.errors import SinkError
from refluent.sinks.redis import RedisOnlineStore
from refluent.streams.contracts import FeatureUpdate, FeatureValue

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def record(entity: str = "e1", values: dict[str, FeatureValue] | None = None, *,
           seq: int = 0) -> SinkRecord[FeatureUpdate]:
    update = FeatureUpdate(view="v", entity_id=entity, values=values or {}, event_time=T0,
                           sequence=seq)
    return SinkRecord("features.v", 0, seq, entity.encode(), update)


@pytest.fixture()
def sink(settings: Settings) -> Iterator[tuple[RedisOnlineStore, RedisOnlineReader]]:
    url = settings.redis.url
    assert url is not None
    prefix = f"t{uuid.uuid4().hex[:10]}"
    store = RedisOnlineStore(url, {"v": timedelta(hours=1)}, key_prefix=prefix)
    store.setup()
    reader = RedisOnlineReader(url, key_prefix=prefix)
    yield store, reader
    store.close()
    reader.close()


@pytest.mark.unit
def test_sink__layout_and_ttls_are_the_writers() -> None:
    store = RedisOnlineStore("redis://127.0.0.1:1/0", {"v": timedelta(seconds=90)},
                             key_prefix="p", default_ttl=None)
    assert store.key("v", "7") == "p:v:7"
    assert (store.ttl_ms("v"), store.ttl_ms("unknown")) == (90_000, 0)
    with pytest.raises(ValueError, match="'v'"):
        RedisOnlineStore("redis://127.0.0.1:1/0", {"v": timedelta(0)})


@pytest.mark.unit
def test_write__before_setup_is_a_sink_error_naming_the_sink() -> None:
    store = RedisOnlineStore("redis://127.0.0.1:1/0", name="online-test")
    with pytest.raises(SinkError, match="sink online-test: write"):
        store.write([record()])


@pytest.mark.integration
def test_write__skips_tombstone_records(
        sink: tuple[RedisOnlineStore, RedisOnlineReader]) -> None:
    store, reader = sink
    empty: SinkRecord[FeatureUpdate] = SinkRecord("features.v", 0, 1, b"e1", None)
    store.write([empty, record("e2", {"n": 1})])
    store.flush()
    assert not reader.get_online_features("v", ["e1"])[0].found
    assert reader.get_online_features("v", ["e2"])[0].found


@pytest.mark.integration
def test_write__reserved_feature_name_is_a_sink_error_naming_view_and_key(
        sink: tuple[RedisOnlineStore, RedisOnlineReader]) -> None:
    store, _ = sink
    key = store.key("v", "e1")
    with pytest.raises(SinkError, match=rf"sink redis-online: .*'__et'.*'v'.*{key}"):
        store.write([record(values={"__et": 1})])


@pytest.mark.integration
def test_setup__closed_port_raises_sink_error_naming_sink_and_address() -> None:
    port = emb.free_port()
    store = RedisOnlineStore(f"redis://127.0.0.1:{port}/0", retries=0, socket_timeout=1.0)
    with pytest.raises(SinkError, match=rf"sink redis-online: .*127\.0\.0\.1:{port}"):
        store.setup()


@pytest.mark.integration
def test_write__redis_down_raises_sink_error_naming_key(tmp_path: Path) -> None:
    rec, proc = emb.start_redis(tmp_path)
    store = RedisOnlineStore(rec.address, retries=0, socket_timeout=1.0, key_prefix="down")
    try:
        store.setup()
        store.write([record("e1", {"n": 1})])
    finally:
        proc.terminate()
        proc.wait(10)
    with pytest.raises(SinkError, match=r"sink redis-online: .*key down:v:e1") as err:
        store.write([record("e1", {"n": 2}, seq=1), record("e2", {"n": 2})])
    assert isinstance(err.value.__cause__.__cause__, redis.RedisError)  # type: ignore[union-attr]
    store.close()
