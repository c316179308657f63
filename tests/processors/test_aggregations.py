"""Accumulators, aggregation specs and the per-view state machine (WindowedAggregator)."""

from __future__ import annotations

import copy
import json
import sys
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from refluent.errors import MissingExtraError
from refluent.processors import accumulators as accumulators_module
from refluent.processors.accumulators import KINDS, ApproxDistinctAccumulator, make_accumulator
from refluent.processors.aggregations import (
    Aggregation,
    Duplicate,
    Late,
    Updated,
    WindowedAggregator,
)
from refluent.processors.errors import (
    AggregationSpecError,
    AggregationValueError,
    EventTimeError,
    FeatureViewError,
    StateError,
)
from refluent.processors.windows import Hopping, Sliding, Tumbling

pytestmark = pytest.mark.unit

S = timedelta(seconds=1)
MIN = timedelta(minutes=1)


def json_round_trip(value: Any) -> Any:
    return json.loads(json.dumps(value))


def updated(result: object) -> Updated:
    assert isinstance(result, Updated), result
    return result


# --------------------------------------------------------------------------------------------
# Accumulators
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "values", "expected"),
    [
        ("count", [1, None, "x"], 3),
        ("sum", [1, None, 2.5], 3.5),
        ("sum", [1, 2, True], 4),
        ("mean", [1, None, 2, 6], 3.0),
        ("min", [3, None, -1.5, 2], -1.5),
        ("max", [3, None, -1.5, 2], 3),
        ("sum", [Decimal("1.25"), 1], 2.25),
        ("approx_distinct", ["a", "b", None, "a", 7, 7.0, True, 1], 4),
    ],
)
def test_accumulator__aggregates_and_skips_none(kind: str, values: list[Any], expected: Any
                                                ) -> None:
    acc = make_accumulator(kind)
    for i, value in enumerate(values):
        acc.add(value, ts_ms=i, seq=i)
    assert acc.result() == expected
    assert type(acc.result()) is type(expected)


@pytest.mark.parametrize("kind", KINDS)
def test_accumulator__empty_result(kind: str) -> None:
    expected = 0 if kind in ("count", "sum", "approx_distinct") else None
    assert make_accumulator(kind).result() == expected
    acc = make_accumulator(kind)
    if kind != "count":
        acc.add(None)
        assert acc.result() == expected


@pytest.mark.parametrize("kind", KINDS)
def test_accumulator__state_survives_a_json_round_trip_and_carries_on(kind: str) -> None:
    first: list[Any] = ["a", 3, 1.5] if kind in ("last", "approx_distinct") else [3, 1.5]
    second: list[Any] = [4, -2, "a"] if kind in ("last", "approx_distinct") else [4, -2]
    whole = make_accumulator(kind)
    part = make_accumulator(kind)
    for i, value in enumerate(first):
        whole.add(value, i, i)
        part.add(value, i, i)
    state = json_round_trip(part.to_state())
    resumed = type(part).from_state(state)
    assert resumed.result() == part.result()
    for i, value in enumerate(second, start=10):
        whole.add(value, i, i)
        resumed.add(value, i, i)
    assert resumed.result() == whole.result()
    assert json_round_trip(resumed.to_state()) == json_round_trip(whole.to_state())


def test_last__is_the_value_with_the_greatest_time_then_sequence() -> None:
    acc = make_accumulator("last")
    acc.add("t20", ts_ms=20, seq=1)
    acc.add("t10", ts_ms=10, seq=9)  # older event, later arrival
    assert acc.result() == "t20"
    acc.add("t20-seq2", ts_ms=20, seq=2)
    acc.add("t20-seq0", ts_ms=20, seq=0)
    assert acc.result() == "t20-seq2"
    acc.add(None, ts_ms=99, seq=0)
    assert acc.result() == "t20-seq2"


def test_last__keeps_json_values_and_converts_decimals() -> None:
    acc = make_accumulator("last")
    acc.add(Decimal("2.5"), 1, 1)
    assert acc.result() == 2.5
    acc.add((1, 2.0), 2, 2)
    assert acc.result() == [1, 2.0]
    with pytest.raises(AggregationValueError, match="dict"):
        acc.add({"nested": 1}, 3, 3)


@pytest.mark.parametrize("kind", ["sum", "mean", "min", "max"])
@pytest.mark.parametrize("value", ["12.5", [1], {"a": 1}, float("nan"), float("inf")])
def test_numeric_kinds__reject_non_numbers_naming_aggregation_field_and_type(kind: str,
                                                                              value: Any) -> None:
    acc = make_accumulator(kind, name="spend_1h", field="amount")
    acc.add(1)
    with pytest.raises(AggregationValueError) as info:
        acc.add(value)
    message = str(info.value)
    assert "'spend_1h'" in message and "'amount'" in message and kind in message
    assert type(value).__name__ in message
    assert info.value.aggregation == "spend_1h" and info.value.field == "amount"
    assert acc.result() == 1  # the rejected value left no trace


def test_approx_distinct__rejects_unhashable_values() -> None:
    acc = ApproxDistinctAccumulator("merchants", "merchant")
    with pytest.raises(AggregationValueError, match="a string or a finite number"):
        acc.add(["a"])
    with pytest.raises(AggregationValueError, match="finite"):
        acc.add(float("nan"))


def test_approx_distinct__is_within_five_percent_for_many_values() -> None:
    acc = ApproxDistinctAccumulator()
    for i in range(20_000):
        acc.add(f"user-{i}")
        acc.add(f"user-{i // 2}")
    assert abs(acc.result() - 20_000) <= 0.05 * 20_000
    resumed = ApproxDistinctAccumulator.from_state(json_round_trip(acc.to_state()))
    assert resumed.result() == acc.result()


def test_approx_distinct__state_is_a_base64_compact_sketch() -> None:
    import base64

    import datasketches

    acc = ApproxDistinctAccumulator()
    for value in ("a", "b", "c"):
        acc.add(value)
    state = acc.to_state()
    assert isinstance(state, str)
    sketch = datasketches.hll_sketch.deserialize(base64.b64decode(state))
    assert sketch.lg_config_k == 12 and round(sketch.get_estimate()) == 3


def test_approx_distinct__names_the_extra_when_datasketches_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(accumulators_module, "_datasketches", None)
    monkeypatch.setitem(sys.modules, "datasketches", None)
    with pytest.raises(MissingExtraError, match=r"refluent\[features\]") as info:
        ApproxDistinctAccumulator()
    assert info.value.module == "datasketches"
    view = [Aggregation("n", "approx_distinct", "x", Tumbling(MIN))]
    with pytest.raises(MissingExtraError):
        WindowedAggregator(view)
    # The spec itself needs no sketch library (views can be declared and rendered without it).
    assert view[0].kind == "approx_distinct"


def test_make_accumulator__rejects_unknown_kinds() -> None:
    with pytest.raises(AggregationSpecError, match="median"):
        make_accumulator("median")


# --------------------------------------------------------------------------------------------
# Aggregation specs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("", "sum", "x", Tumbling(MIN)), "non-empty"),
        (("a", "median", "x", Tumbling(MIN)), "unknown kind"),
        (("a", "sum", None, Tumbling(MIN)), "needs the field"),
        (("a", "count", "x", Tumbling(MIN)), "takes no field"),
        (("a", "sum", "x", "tumbling:1m"), "window must be"),
    ],
)
def test_aggregation__rejects_bad_specs(args: tuple[Any, ...], problem: str) -> None:
    with pytest.raises(AggregationSpecError, match=problem) as info:
        Aggregation(*args)
    assert isinstance(info.value, FeatureViewError)


def test_aggregation__declarations_round_trip() -> None:
    agg = Aggregation.from_spec({"name": "n", "kind": "approx_distinct", "field": "m",
                                 "window": "sliding:10m", "grace": "30s"})
    assert agg == Aggregation("n", "approx_distinct", "m", Sliding(10 * MIN, 30 * S))
    assert Aggregation.from_spec(agg.to_spec()) == agg
    assert json_round_trip(agg.to_spec()) == agg.to_spec()
    count = Aggregation.from_spec({"name": "c", "kind": "count",
                                   "window": {"type": "tumbling", "size": "1h"}})
    assert count.field is None and count.empty == 0


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"name": "a", "kind": "sum", "field": "x"}, "window is missing"),
        ({"name": "a", "kind": "sum", "field": "x", "window": "tumbling:1m", "every": 1},
         "unknown key"),
        ({"name": "a", "kind": "sum", "field": "x", "grace": "1m",
          "window": {"type": "tumbling", "size": "1m"}}, "inside the window"),
    ],
)
def test_aggregation_from_spec__rejects_bad_declarations(spec: dict[str, Any], problem: str
                                                         ) -> None:
    with pytest.raises(AggregationSpecError, match=problem):
        Aggregation.from_spec(spec)


def test_view__rejects_repeated_names_and_empty_views() -> None:
    with pytest.raises(AggregationSpecError, match="used twice"):
        WindowedAggregator([Aggregation("a", "count", None, Tumbling(MIN))] * 2)
    with pytest.raises(AggregationSpecError, match="at least one"):
        WindowedAggregator([])


# --------------------------------------------------------------------------------------------
# WindowedAggregator
# --------------------------------------------------------------------------------------------


def tumbling_view(grace: timedelta = timedelta(0)) -> WindowedAggregator:
    window = Tumbling(MIN, grace)
    return WindowedAggregator([
        Aggregation("n", "count", None, window),
        Aggregation("total", "sum", "amount", window),
        Aggregation("avg", "mean", "amount", window),
        Aggregation("last_city", "last", "city", window),
    ])


def test_process__aggregates_the_current_window_and_reports_its_bounds() -> None:
    view = tumbling_view()
    state: dict[str, Any] = {}
    updated(view.process(state, 1_000, 1, {"amount": 10, "city": "Oslo"}))
    r = updated(view.process(state, 59_999, 2, {"amount": 20, "city": None}))
    assert r.values == {"n": 2, "total": 30, "avg": 15.0, "last_city": "Oslo"}
    assert r.windows == dict.fromkeys(("n", "total", "avg", "last_city"), (0, 60_000))
    assert r.state is state and r.late_aggregations == ()
    r = updated(view.process(state, 60_000, 3, {"amount": 1}))
    assert r.values == {"n": 1, "total": 1, "avg": 1.0, "last_city": None}
    assert r.windows["n"] == (60_000, 120_000)


def test_process__state_starts_empty_and_stays_plain_json() -> None:
    view = tumbling_view()
    state: dict[str, Any] = {}
    view.process(state, 1_000, 1, {"amount": 1.5, "city": "Oslo"}, source=("orders", 0, 1))
    assert json_round_trip(state) == state
    assert view.dump_state(state) is state


def test_process__replayed_offsets_are_duplicates_and_change_nothing() -> None:
    view = tumbling_view()
    state: dict[str, Any] = {}
    for offset in (5, 6):
        view.process(state, offset * 1_000, offset, {"amount": 1}, source=("orders", 3, offset))
    before = copy.deepcopy(state)
    for offset in (6, 5, 0):
        r = view.process(state, offset * 1_000, offset, {"amount": 1}, source=("orders", 3, offset))
        assert r == Duplicate("orders:3", offset, 6)
    assert state == before
    # Another partition (or topic) has its own offsets.
    assert isinstance(view.process(state, 7_000, 1, {"amount": 1}, ("orders", 1, 1)), Updated)
    r = updated(view.process(state, 8_000, 7, {"amount": 1}, ("orders", 3, 7)))
    assert r.values["n"] == 4
    assert view.describe_state(state).offsets == {"orders:3": 7, "orders:1": 1}


def test_process__without_a_source_applies_every_event() -> None:
    view = tumbling_view()
    state: dict[str, Any] = {}
    view.process(state, 1, 1, {})
    assert updated(view.process(state, 1, 1, {})).values["n"] == 2


def test_process__late_beyond_grace_is_late_and_changes_nothing() -> None:
    view = tumbling_view(grace=timedelta(seconds=5))
    state: dict[str, Any] = {}
    view.process(state, 10_000, 1, {"amount": 1})
    view.process(state, 65_000, 2, {"amount": 2}, source=("orders", 0, 2))  # [0, 60s) closes
    before = copy.deepcopy(state)
    r = view.process(state, 59_000, 3, {"amount": 100}, source=("orders", 0, 3))
    assert isinstance(r, Late)
    assert (r.ts_ms, r.watermark_ms, r.closed_at_ms) == (59_000, 65_000, 65_000)
    assert "59000" in r.reason and "65000" in r.reason
    assert state == before


def test_process__late_within_grace_reports_the_events_own_window() -> None:
    view = tumbling_view(grace=timedelta(seconds=5))
    state: dict[str, Any] = {}
    view.process(state, 10_000, 1, {"amount": 1, "city": "Oslo"})
    view.process(state, 62_000, 2, {"amount": 2, "city": "Rome"})
    r = updated(view.process(state, 30_000, 3, {"amount": 4, "city": "Bern"}))
    assert r.windows["total"] == (0, 60_000)
    assert r.values == {"n": 2, "total": 5, "avg": 2.5, "last_city": "Bern"}
    assert view.values_as_of(state, 62_000) == {"n": 1, "total": 2, "avg": 2.0,
                                                "last_city": "Rome"}


def test_process__partly_late_event_counts_only_where_windows_are_open() -> None:
    view = WindowedAggregator([
        Aggregation("n_1m", "count", None, Tumbling(MIN)),
        Aggregation("n_5m", "count", None, Tumbling(5 * MIN)),
    ])
    state: dict[str, Any] = {}
    view.process(state, 10_000, 1, {})
    view.process(state, 70_000, 2, {})
    r = updated(view.process(state, 20_000, 3, {}))
    assert r.values == {"n_5m": 3} and r.late_aggregations == ("n_1m",)
    assert r.windows == {"n_5m": (0, 300_000)}


def test_process__hopping_reports_the_window_that_ends_first() -> None:
    window = Hopping(3 * MIN, MIN)
    view = WindowedAggregator([Aggregation("n", "count", None, window)])
    state: dict[str, Any] = {}
    view.process(state, 30_000, 1, {})       # windows [-2m,1m) [-1m,2m) [0,3m)
    r = updated(view.process(state, 150_000, 2, {}))  # [0,3m) [1m,4m) [2m,5m)
    assert r.windows["n"] == (0, 180_000) and r.values["n"] == 2
    held = view.describe_state(state).windows["n"]
    assert held == [(0, 180_000), (60_000, 240_000), (120_000, 300_000)]
    assert view.values_as_of(state, 200_000) == {"n": 1}  # [1m, 4m)


def test_process__hopping_late_event_reports_the_earliest_open_window() -> None:
    view = WindowedAggregator([Aggregation("n", "count", None, Hopping(3 * MIN, MIN))])
    state: dict[str, Any] = {}
    view.process(state, 150_000, 1, {})   # watermark 2.5m: [-1m, 2m) has closed
    r = updated(view.process(state, 70_000, 2, {}))  # in [-1m,2m) [0,3m) [1m,4m)
    assert r.windows["n"] == (0, 180_000) and r.values["n"] == 2


def test_process__sliding_covers_the_size_before_each_event_whatever_the_order() -> None:
    window = Sliding(10 * S, grace=5 * S)
    view = WindowedAggregator([
        Aggregation("n", "count", None, window),
        Aggregation("total", "sum", "x", window),
        Aggregation("lo", "min", "x", window),
        Aggregation("newest", "last", "x", window),
        Aggregation("kinds", "approx_distinct", "k", window),
    ])
    state: dict[str, Any] = {}
    view.process(state, 1_000, 1, {"x": 1, "k": "a"})
    view.process(state, 11_000, 2, {"x": 2, "k": "b"})  # (1s, 11s]: the first falls out
    r = updated(view.process(state, 11_000, 3, {"x": 3, "k": "b"}))
    assert r.values == {"n": 2, "total": 5, "lo": 2, "newest": 3, "kinds": 1}
    assert r.windows["n"] == (1_001, 11_001)
    r = updated(view.process(state, 8_000, 0, {"x": -4, "k": "c"}))  # late, within grace
    assert r.values == {"n": 2, "total": -3, "lo": -4, "newest": -4, "kinds": 2}
    assert r.windows["total"] == (-1_999, 8_001)
    r = updated(view.process(state, 11_000, 2, {"x": 9, "k": "d"}))  # same time, lower seq
    assert r.values["newest"] == 3 and r.values["n"] == 4
    assert isinstance(view.process(state, 5_999, 9, {"x": 1}), Late)


def test_process__sliding_keeps_events_accepted_for_other_windows() -> None:
    view = WindowedAggregator([
        Aggregation("n_10s", "count", None, Sliding(10 * S)),
        Aggregation("n_1m", "count", None, Tumbling(MIN)),
    ])
    state: dict[str, Any] = {}
    view.process(state, 20_000, 1, {})
    r = updated(view.process(state, 15_000, 2, {}))  # (5s, 15s] closed at 15.001 s
    assert r.late_aggregations == ("n_10s",) and r.values == {"n_1m": 2}
    # ...but the event is in the open window (12s, 22s] of the next one.
    assert updated(view.process(state, 22_000, 3, {})).values["n_10s"] == 3


def test_process__drops_closed_windows_so_state_stays_bounded() -> None:
    window = Hopping(MIN, 20 * S, grace=10 * S)
    view = WindowedAggregator([
        Aggregation("n", "count", None, window),
        Aggregation("recent", "max", "x", Sliding(30 * S, grace=10 * S)),
    ])
    state: dict[str, Any] = {}
    for i in range(2_000):
        ts = i * 1_000 - (i % 7) * 3_000
        view.process(state, ts, i, {"x": i}, source=("t", 0, i))
        summary = view.describe_state(state)
        wm = summary.watermark_ms
        assert wm is not None
        assert all(window.closes_at(b) > wm for b in summary.windows["n"])
        assert all(t > wm - 40_000 for t in summary.buffered["recent"])
        # (size + grace) / hop windows at most, and the events of the last size + grace.
        assert len(summary.windows["n"]) <= 4 and len(summary.buffered["recent"]) <= 40
    assert len(json.dumps(state)) < 1_000


def test_process__bad_value_raises_before_anything_changes() -> None:
    view = tumbling_view()
    state: dict[str, Any] = {}
    view.process(state, 1_000, 1, {"amount": 1}, source=("orders", 0, 1))
    before = copy.deepcopy(state)
    with pytest.raises(AggregationValueError, match=r"'total' \(sum of field 'amount'\).* str"):
        view.process(state, 2_000, 2, {"amount": "1"}, source=("orders", 0, 2))
    assert state == before


def test_process__rejects_non_integer_event_times() -> None:
    with pytest.raises(EventTimeError, match="float"):
        tumbling_view().process({}, 1.5, 1, {})  # type: ignore[arg-type]


def test_process__rejects_a_state_it_did_not_write() -> None:
    with pytest.raises(StateError, match="expected keys"):
        tumbling_view().process({"count": 3}, 1, 1, {})


def sketch_view() -> WindowedAggregator:
    return WindowedAggregator([
        Aggregation("users", "approx_distinct", "user", Hopping(MIN, 30 * S, grace=10 * S)),
        Aggregation("n", "count", None, Hopping(MIN, 30 * S, grace=10 * S)),
        Aggregation("spend", "sum", "amount", Sliding(MIN)),
    ])


def test_dump_state__gives_plain_json_that_process_carries_on_from() -> None:
    view = sketch_view()
    live: dict[str, Any] = {}
    revived: dict[str, Any] = {}
    events = [(i * 700 - (i % 5) * 2_000, i, {"user": f"u{i % 37}", "amount": i % 11})
              for i in range(400)]
    for ts, seq, row in events:
        expected = view.process(live, ts, seq, row, ("t", 0, seq))
        stored = json.dumps(view.dump_state(revived)) if revived else "{}"
        revived = json.loads(stored)
        got = view.process(revived, ts, seq, row, ("t", 0, seq))
        assert type(got) is type(expected)
        if isinstance(got, Updated) and isinstance(expected, Updated):
            assert (got.values, got.windows) == (expected.values, expected.windows)
    assert view.values_as_of(json_round_trip(view.dump_state(live)), 280_000) == \
        view.values_as_of(live, 280_000)
    # The live state holds sketches; dumping does not change it.
    assert view.dump_state(live) is not live
    with pytest.raises(TypeError):
        json.dumps(live)


def test_values_as_of__reads_without_changing_state_and_empties_old_windows() -> None:
    view = sketch_view()
    state: dict[str, Any] = {}
    for i in range(10):
        view.process(state, 100_000 + i * 1_000, i, {"user": f"u{i % 3}", "amount": 2})
    snapshot = json.dumps(view.dump_state(state))
    assert view.values_as_of(state, 109_000) == {"users": 3, "n": 10, "spend": 20}
    assert view.values_as_of(state, 1_000_000) == {"users": 0, "n": 0, "spend": 0}
    assert view.values_as_of({}, 0) == view.empty_values() == {"users": 0, "n": 0, "spend": 0}
    assert json.dumps(view.dump_state(state)) == snapshot


def test_view_change__keeps_windows_of_unchanged_aggregations() -> None:
    old = tumbling_view()
    state: dict[str, Any] = {}
    old.process(state, 1_000, 1, {"amount": 5}, source=("t", 0, 1))
    new = WindowedAggregator([
        Aggregation("n", "count", None, Tumbling(MIN)),
        Aggregation("top", "max", "amount", Tumbling(MIN)),
    ])
    r = updated(new.process(state, 2_000, 2, {"amount": 3}, source=("t", 0, 2)))
    assert r.values == {"n": 1, "top": 3}  # the window group changed: it starts afresh
    assert isinstance(new.process(state, 2_000, 2, {}, source=("t", 0, 2)), Duplicate)
    assert len(state["windows"]) == 1  # the old view's windows are gone
    same = WindowedAggregator(list(new.aggregations))
    assert updated(same.process(state, 3_000, 3, {"amount": 1})).values == {"n": 2, "top": 3}
