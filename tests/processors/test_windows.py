"""Window specs: assignment, the served window, closing, validation and declarations."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from refluent.errors import RefluentError
from refluent.processors.errors import FeatureViewError, WindowSpecError
from refluent.processors.windows import (
    Hopping,
    Sliding,
    Tumbling,
    WindowBounds,
    WindowSpec,
    format_duration,
    ms_to_datetime,
    parse_duration,
    parse_window,
    window_from_spec,
)

pytestmark = pytest.mark.unit

MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)


def test_tumbling__assigns_the_one_epoch_aligned_window() -> None:
    w = Tumbling(HOUR)
    assert w.assign(0) == [(0, 3_600_000)]
    assert w.assign(3_599_999) == [(0, 3_600_000)]
    assert w.assign(3_600_000) == [(3_600_000, 7_200_000)]
    assert w.current(5_000_000) == WindowBounds(3_600_000, 7_200_000)


def test_tumbling__negative_times_floor_to_the_earlier_window() -> None:
    assert Tumbling(MIN).assign(-1) == [(-60_000, 0)]
    assert Tumbling(MIN).assign(-60_000) == [(-60_000, 0)]


def test_closes_at__is_end_plus_grace() -> None:
    w = Tumbling(MIN, grace=timedelta(seconds=5))
    assert w.closes_at(w.current(10)) == 65_000
    assert Tumbling(MIN).closes_at((0, 60_000)) == 60_000


def test_hopping__assigns_size_over_hop_windows_by_start() -> None:
    w = Hopping(HOUR, timedelta(minutes=15))
    got = w.assign(3_600_000 + 1)
    assert [b.start_ms for b in got] == [900_000, 1_800_000, 2_700_000, 3_600_000]
    assert all(b.end_ms - b.start_ms == 3_600_000 and b.contains(3_600_001) for b in got)
    assert w.windows_per_event == 4


def test_hopping__current_is_the_window_that_ends_first() -> None:
    w = Hopping(timedelta(minutes=10), timedelta(minutes=5))
    # At 07:00 the windows are [00:00, 10:00) and [05:00, 15:00); the first ends soonest.
    assert w.current(420_000) == (0, 600_000)
    assert w.current(600_000) == (300_000, 900_000)
    assert w.current(420_000) == min(w.assign(420_000), key=lambda b: b.end_ms)


def test_hopping__with_hop_equal_to_size_is_tumbling() -> None:
    assert Hopping(MIN, MIN).assign(61_000) == Tumbling(MIN).assign(61_000)


def test_sliding__window_ends_at_the_event_inclusive() -> None:
    w = Sliding(timedelta(seconds=10))
    assert w.assign(25_000) == [(15_001, 25_001)]
    b = w.current(25_000)
    assert b.contains(25_000) and b.contains(15_001) and not b.contains(15_000)
    assert w.closes_at(b) == 25_001


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda: Tumbling(timedelta(0)), "positive"),
        (lambda: Tumbling(-MIN), "positive"),
        (lambda: Tumbling(MIN, grace=-MIN), "negative"),
        (lambda: Tumbling(timedelta(microseconds=1500)), "whole number of milliseconds"),
        (lambda: Tumbling(60_000), "timedelta"),  # type: ignore[arg-type]
        (lambda: Hopping(MIN, 2 * MIN), "exceed"),
        (lambda: Hopping(MIN, timedelta(seconds=25)), "multiple"),
        (lambda: Hopping(MIN, timedelta(0)), "positive"),
        (lambda: Sliding(timedelta(0)), "positive"),
        (lambda: Sliding(MIN, grace="5m"), "timedelta"),  # type: ignore[arg-type]
    ],
)
def test_bad_window__raises_a_window_spec_error_naming_the_problem(
    make: Callable[[], object], problem: str
) -> None:
    with pytest.raises(WindowSpecError, match=problem) as info:
        make()
    assert isinstance(info.value, FeatureViewError) and isinstance(info.value, RefluentError)


def test_windows__are_values_usable_as_keys() -> None:
    assert Tumbling(HOUR) == Tumbling(timedelta(minutes=60))
    assert Tumbling(HOUR) != Sliding(HOUR)
    assert len({Tumbling(HOUR), Tumbling(HOUR, grace=timedelta(0)), Hopping(HOUR, MIN)}) == 2
    with pytest.raises(AttributeError):
        Tumbling(HOUR).size = MIN  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "ms"),
    [("30s", 30_000), ("5m", 300_000), ("1h", 3_600_000), ("1d", 86_400_000),
     ("1w", 604_800_000), ("250ms", 250), ("1h30m", 5_400_000), ("0", 0), (" 2m 5s ", 125_000)],
)
def test_parse_duration__reads_units(text: str, ms: int) -> None:
    assert parse_duration(text) == timedelta(milliseconds=ms)


@pytest.mark.parametrize("text", ["", "5", "5x", "1.5h", "m5", "5m1h", "1h1h", "-5m", "5 mins"])
def test_parse_duration__rejects_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(WindowSpecError, match="duration"):
        parse_duration(text)


def test_format_duration__writes_what_parse_reads() -> None:
    assert format_duration(timedelta(0)) == "0s"
    assert format_duration(timedelta(days=15)) == "15d"
    value = timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)
    assert parse_duration(format_duration(value)) == value


def test_parse_window__reads_each_kind_and_grace() -> None:
    assert parse_window("tumbling:1h") == Tumbling(HOUR)
    assert parse_window("tumbling:1h", grace="5m") == Tumbling(HOUR, timedelta(minutes=5))
    assert parse_window(" hopping : 1h / 5m ") == Hopping(HOUR, timedelta(minutes=5))
    assert parse_window("sliding:10m grace=30s") == Sliding(10 * MIN, timedelta(seconds=30))
    assert parse_window("sliding:10m", grace=MIN) == Sliding(10 * MIN, MIN)


@pytest.mark.parametrize(
    ("text", "grace", "problem"),
    [
        ("tumbling", None, "not a window"),
        ("weekly:1d", None, "not a window"),
        ("hopping:1h", None, "hopping window needs"),
        ("tumbling:1h/5m", None, "hopping window needs"),
        ("sliding:1h grace=1m", "1m", "grace is given twice"),
        ("hopping:1h/7m", None, "multiple"),
        ("tumbling:1q", None, "duration"),
    ],
)
def test_parse_window__rejects_bad_text(text: str, grace: str | None, problem: str) -> None:
    with pytest.raises(WindowSpecError, match=problem):
        parse_window(text, grace=grace)


@pytest.mark.parametrize(
    "window",
    [Tumbling(HOUR), Tumbling(MIN, timedelta(seconds=5)), Hopping(HOUR, 5 * MIN, MIN),
     Sliding(timedelta(milliseconds=1500))],
)
def test_declarations__round_trip_through_text_and_mapping(window: WindowSpec) -> None:
    assert parse_window(str(window)) == window
    assert window_from_spec(window.to_spec()) == window
    assert window_from_spec(str(window)) == window
    assert window_from_spec(window) is window


def test_window_from_spec__reads_a_toml_style_mapping() -> None:
    spec = {"type": "hopping", "size": "1d", "hop": "1h", "grace": timedelta(minutes=10)}
    assert window_from_spec(spec) == Hopping(timedelta(days=1), HOUR, timedelta(minutes=10))
    assert window_from_spec({"type": "tumbling", "size": "5m"}) == Tumbling(5 * MIN)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"type": "tumbling", "size": "1h", "every": "5m"}, "unknown key"),
        ({"type": "session", "size": "1h"}, "type must be"),
        ({"type": "tumbling"}, "size is missing"),
        ({"type": "hopping", "size": "1h"}, "needs a hop"),
        ({"type": "sliding", "size": "1h", "hop": "1m"}, "needs a hop"),
        ({"type": "tumbling", "size": 3600}, "duration"),
        (42, "mapping or text"),
    ],
)
def test_window_from_spec__rejects_bad_declarations(spec: Any, problem: str) -> None:
    with pytest.raises(WindowSpecError, match=problem):
        window_from_spec(spec)


def test_bounds__convert_to_utc_datetimes() -> None:
    start, end = WindowBounds(1_700_000_000_000, 1_700_003_600_000).to_datetimes()
    assert start == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert end - start == HOUR
    assert ms_to_datetime(-1) == datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
    assert WindowBounds(0, 10).duration_ms == 10
