"""Sink backends found by URL scheme or by the dotted path of a user's own class."""

from __future__ import annotations

from typing import Any

import pytest

from refluent.config import Settings
from refluent.sinks.base import SINK_BACKENDS, Sink, SinkRecord, register_sink, sink_class
from refluent.sinks.errors import SinkError, UnknownSinkError
from refluent.sinks.pipeline import lake_routes, online_routes

pytestmark = pytest.mark.unit


class MemorySink(Sink[Any]):
    """A user's own sink: keeps what it is given."""

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.records: list[SinkRecord[Any]] = []

    def write(self, batch: list[SinkRecord[Any]]) -> None:
        self.records.extend(batch)


NOT_A_SINK = object()


@pytest.mark.parametrize(("destination", "expected"), [
    ("iceberg", "IcebergSink"),
    ("iceberg+sql://catalog/lake", "IcebergSink"),  # <backend>+<transport> falls back
    ("ICEBERG+REST://catalog", "IcebergSink"),
    ("redis://localhost:6379/0", "RedisOnlineStore"),
    ("rediss://cache.example:6380", "RedisOnlineStore"),
])
def test_sink_class__a_registered_scheme_gives_its_backend(destination: str,
                                                            expected: str) -> None:
    cls = sink_class(destination)
    assert cls.__name__ == expected and issubclass(cls, Sink)


def test_sink_class__an_unknown_scheme_names_it_and_the_known_ones() -> None:
    with pytest.raises(UnknownSinkError) as caught:
        sink_class("kinesis://stream")
    error = caught.value
    assert isinstance(error, SinkError)
    assert (error.scheme, error.known) == ("kinesis", sorted(SINK_BACKENDS))
    assert str(error) == (
        "sink kinesis://stream: unknown scheme 'kinesis' (known: iceberg, redis, rediss; or "
        "the dotted path of your own Sink subclass, such as mypkg.sinks.MySink)")


@pytest.mark.parametrize("separator", [".", ":"])
def test_sink_class__a_dotted_path_gives_the_users_class(separator: str) -> None:
    assert sink_class(f"{__name__}{separator}MemorySink") is MemorySink


@pytest.mark.parametrize(("destination", "says"), [
    (f"{__name__}.NOT_A_SINK", "is <object object"),
    (f"{__name__}.Missing", "is nothing, not a subclass of refluent.sinks.base.Sink"),
    ("no_such_package.sinks.MySink", "cannot import no_such_package.sinks: No module named"),
])
def test_sink_class__a_dotted_path_that_names_no_sink_says_why(destination: str,
                                                               says: str) -> None:
    with pytest.raises(UnknownSinkError, match=f"^sink {destination}: ") as caught:
        sink_class(destination)
    assert says in str(caught.value)


def test_register_sink__adds_a_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("refluent.sinks.base.SINK_BACKENDS", dict(SINK_BACKENDS))
    register_sink("Memory", MemorySink)
    assert sink_class("memory://anything") is MemorySink
    assert sink_class("memory+tcp://anything") is MemorySink


def test_lake_routes__write_through_the_destinations_class() -> None:
    settings = Settings(lake={"namespace": "lab"})
    routes = lake_routes(settings, ["logs.app"], make_catalog=lambda: None,
                         destination=f"{__name__}.MemorySink")
    (sink,) = routes["logs.app"]
    assert isinstance(sink, MemorySink)
    assert sink.args[2:] == ("raw_logs_app", "lab")
    with pytest.raises(UnknownSinkError, match="unknown scheme 'ftp'"):
        lake_routes(settings, ["logs.app"], make_catalog=lambda: None, destination="ftp://x")
    with pytest.raises(UnknownSinkError, match="unknown scheme 'ftp'"):
        online_routes(settings, [], destination="ftp://x")
