"""The same checks over every online store (River's ``yield_checks`` idea): the in-memory store
must answer exactly as Redis does, so tests and users can stand it in for Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from refluent.online_store.base import OnlineStoreReader, OnlineStoreWriter
from refluent.online_store.errors import ReservedFeatureNameError
from refluent.online_store.memory import MemoryOnlineStore
from refluent.online_store.redis import RedisOnlineReader, RedisOnlineWriter
from refluent.streams.contracts import FeatureUpdate, FeatureValue

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=1)
Store = tuple[OnlineStoreWriter, OnlineStoreReader]


def up(entity: str = "e1", values: dict[str, FeatureValue] | None = None, *,
       at: datetime = T0, seq: int = 0, deleted: bool = False, view: str = "v") -> FeatureUpdate:
    return FeatureUpdate(view=view, entity_id=entity, values=values or {}, event_time=at,
                         sequence=seq, deleted=deleted)


def read(store: Store, entity: str = "e1", features: list[str] | None = None,
         view: str = "v") -> tuple[bool, bool, dict[str, FeatureValue], datetime | None]:
    row = store[1].get_online_features(view, [entity], features, now=NOW)[0]
    return row.found, row.deleted, row.values, row.event_time


# ---------------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------------


def check_older_event_time_never_overwrites_newer(store: Store) -> None:
    writer = store[0]
    assert writer.write([up(values={"n": 2}, at=T0 + timedelta(seconds=10), seq=5)]) == [True]
    assert writer.write([up(values={"n": 1}, at=T0, seq=9)]) == [False]
    assert read(store, features=["n"]) == (True, False, {"n": 2}, T0 + timedelta(seconds=10))


def check_same_event_time_sequence_breaks_the_tie(store: Store) -> None:
    writer = store[0]
    assert writer.write([up(values={"n": 5}, seq=5), up(values={"n": 4}, seq=4),
                         up(values={"n": 5}, seq=5)]) == [True, False, False]
    assert writer.write([up(values={"n": 6}, seq=6)]) == [True]
    assert read(store, features=["n"])[2] == {"n": 6}


def check_event_time_counts_to_the_millisecond(store: Store) -> None:
    writer = store[0]
    writer.write([up(values={"n": 1}, at=T0 + timedelta(microseconds=900), seq=1)])
    # Same millisecond, lower sequence: not newer, though its microseconds are larger.
    assert writer.write([up(values={"n": 2}, at=T0 + timedelta(microseconds=999), seq=0)]) \
        == [False]
    assert read(store, features=["n"])[3] == T0


def check_tombstone_blocks_an_older_create(store: Store) -> None:
    writer = store[0]
    writer.write([up(values={"n": 1}, seq=1)])
    writer.write([up(at=T0 + timedelta(seconds=5), seq=2, deleted=True)])
    assert read(store, features=["n"]) == (False, True, {"n": None}, T0 + timedelta(seconds=5))
    assert read(store) == (False, True, {}, T0 + timedelta(seconds=5))
    assert writer.write([up(values={"n": 1}, at=T0 + timedelta(seconds=4), seq=9)]) == [False]
    assert writer.write([up(values={"n": 7}, at=T0 + timedelta(seconds=6), seq=3)]) == [True]
    assert read(store, features=["n"])[:3] == (True, False, {"n": 7})


def check_features_absent_from_an_update_disappear(store: Store) -> None:
    writer = store[0]
    writer.write([up(values={"a": 1, "b": [0.5, 1.5], "c": "x"}, seq=1)])
    assert read(store)[2] == {"a": 1, "b": [0.5, 1.5], "c": "x"}
    writer.write([up(values={"a": 2}, seq=2)])
    assert read(store)[2] == {"a": 2}
    assert read(store, features=["a", "b"])[2] == {"a": 2, "b": None}


def check_unknown_entities_and_views_are_not_found(store: Store) -> None:
    store[0].write([up("here", {"n": 1})])
    rows = store[1].get_online_features("v", ["gone", "here"], ["n"], now=NOW)
    assert [(r.entity_id, r.found, r.deleted, r.values, r.age) for r in rows] == [
        ("gone", False, False, {"n": None}, None),
        ("here", True, False, {"n": 1}, NOW - T0),
    ]
    assert read(store, "here", view="other") == (False, False, {}, None)
    assert store[1].get_online_features("v", [], now=NOW) == []


def check_bad_arguments_are_refused(store: Store) -> None:
    with pytest.raises(ReservedFeatureNameError, match=r"'__et'.*'v'"):
        store[0].write([up("ok", {"n": 1}, seq=1), up(values={"__et": 1})])
    assert not read(store, "ok")[0]  # nothing of the batch was written
    with pytest.raises(ValueError, match="free of ':'"):
        store[1].get_online_features("a:b", ["e1"])
    with pytest.raises(ValueError, match="aware"):
        store[1].get_online_features("v", ["e1"], now=datetime(2024, 1, 1))  # noqa: DTZ001
    with pytest.raises(TypeError, match="sequence of ids"):
        store[1].get_online_features("v", "e1")


def check_values_come_back_as_json_would_give_them(store: Store) -> None:
    store[0].write([up(values={"t": (1, 2), "f": 1.5, "s": "x", "b": True, "z": None})])
    assert read(store)[2] == {"t": [1, 2], "f": 1.5, "s": "x", "b": True, "z": None}


CHECKS: list[Callable[[Store], None]] = [
    check_older_event_time_never_overwrites_newer,
    check_same_event_time_sequence_breaks_the_tie,
    check_event_time_counts_to_the_millisecond,
    check_tombstone_blocks_an_older_create,
    check_features_absent_from_an_update_disappear,
    check_unknown_entities_and_views_are_not_found,
    check_bad_arguments_are_refused,
    check_values_come_back_as_json_would_give_them,
]


# ---------------------------------------------------------------------------------------------
# the stores
# ---------------------------------------------------------------------------------------------


@pytest.fixture(params=[pytest.param("memory", marks=pytest.mark.contract),
                        pytest.param("redis", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    if request.param == "memory":
        memory = MemoryOnlineStore()
        yield memory, memory
        return
    url = request.getfixturevalue("settings").redis.url
    prefix = f"c{uuid.uuid4().hex[:10]}"
    writer = RedisOnlineWriter(url, key_prefix=prefix)
    reader = RedisOnlineReader(url, key_prefix=prefix)
    writer.setup()
    reader.setup()
    yield writer, reader
    writer.close()
    reader.close()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_online_store_contract(store: Store, check: Callable[[Store], None]) -> None:
    check(store)
