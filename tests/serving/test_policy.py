"""Feature plans, stale-feature policies and the micro-batcher: pure logic, no services."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import timedelta

import pytest

from refluent.processors.aggregations import Aggregation
from refluent.processors.features import EntityStateView, FeatureView
from refluent.processors.windows import Tumbling
from refluent.serving.batching import MicroBatcher
from refluent.serving.policy import (
    FeatureCatalog,
    FeaturePlanError,
    StalePolicies,
    StoreRead,
    assemble,
    check_numeric,
    needed_reads,
)
from refluent.streams.contracts import FeatureValue
from refluent.streams.processing import RecordRejected

pytestmark = pytest.mark.unit

HOUR = Tumbling(timedelta(hours=1))
ORDERS = FeatureView("orders", "customer_id", ("cdc.orders",), (
    Aggregation("n_1h", "count", None, HOUR),
    Aggregation("spend_1h", "sum", "amount", HOUR),
    Aggregation("avg_1h", "mean", "amount", HOUR),
))
ACTIVITY = FeatureView("activity", "entity_id", ("logs.app",), (
    Aggregation("n_1h", "count", None, HOUR),
    Aggregation("last_page", "last", "page", HOUR),
))
CUSTOMERS = EntityStateView("customers", "cdc.customers", columns=("tier", "credit"))
ANY_COLUMNS = EntityStateView("profile", "cdc.profile")
CATALOG = FeatureCatalog([ORDERS, ACTIVITY, CUSTOMERS, ANY_COLUMNS])


def fresh(values: Mapping[str, FeatureValue], age_s: float = 1.0) -> StoreRead:
    return StoreRead(dict(values), age_s, True)


MISSING = StoreRead({}, None, False)


# ---------------------------------------------------------------------------------------------
# plans
# ---------------------------------------------------------------------------------------------


def test_plan__plain_names_resolve_to_the_one_view_declaring_them() -> None:
    plan = CATALOG.plan(["spend_1h", "tier", "last_page"], "m")
    assert [(r.view, r.features, r.inputs) for r in plan.reads] == [
        ("orders", ("spend_1h",), ("spend_1h",)),
        ("activity", ("last_page",), ("last_page",)),
        ("customers", ("tier",), ("tier",)),
    ]
    assert plan.request_only == ()


def test_plan__qualified_names_pick_the_view_and_keep_the_qualified_input_name() -> None:
    plan = CATALOG.plan(["orders.n_1h", "activity.n_1h", "profile.anything"], "m")
    assert [(r.view, r.features, r.inputs) for r in plan.reads] == [
        ("orders", ("n_1h",), ("orders.n_1h",)),
        ("activity", ("n_1h",), ("activity.n_1h",)),
        ("profile", ("anything",), ("profile.anything",)),
    ]


def test_plan__a_plain_name_two_views_declare_is_an_error_naming_both() -> None:
    with pytest.raises(FeaturePlanError, match=r"model churn: input 'n_1h'.*orders, activity"):
        CATALOG.plan(["n_1h"], "churn")


def test_plan__a_qualified_feature_the_view_lacks_is_an_error() -> None:
    with pytest.raises(FeaturePlanError, match=r"view 'orders' has no feature 'nope'"):
        CATALOG.plan(["orders.nope"], "m")


def test_plan__names_no_view_declares_must_come_with_the_request() -> None:
    plan = CATALOG.plan(["tier", "basket_size", "x.y"], "m")
    assert plan.request_only == ("basket_size", "x.y")


def test_plan__a_model_without_declared_inputs_reads_every_view_whole() -> None:
    plan = CATALOG.plan([], "m")
    assert plan.any_input
    assert [(r.view, r.features) for r in plan.reads] == [
        ("orders", None), ("activity", None), ("customers", None), ("profile", None)]


def test_defaults__empty_window_values_and_none_for_entity_state() -> None:
    assert CATALOG.defaults("orders") == {"n_1h": 0, "spend_1h": 0, "avg_1h": None}
    assert CATALOG.defaults("customers") == {"tier": None, "credit": None}


def test_needed_reads__skips_views_whose_inputs_the_request_brings() -> None:
    plan = CATALOG.plan(["spend_1h", "tier"], "m")
    assert [r.view for r in needed_reads(plan, {"tier": "gold"})] == ["orders"]
    assert needed_reads(plan, {"tier": "gold", "spend_1h": 3.0}) == []


# ---------------------------------------------------------------------------------------------
# stale policies
# ---------------------------------------------------------------------------------------------


def policies(default: str = "flag", **per_view: str) -> StalePolicies:
    return StalePolicies(default, per_view, max_age_s=60.0)  # type: ignore[arg-type]


PLAN = CATALOG.plan(["spend_1h", "avg_1h", "tier", "basket"], "m")


def test_assemble__fresh_values_with_request_features_winning() -> None:
    out = assemble("c1", PLAN, {"orders": fresh({"spend_1h": 10.0, "avg_1h": 5.0}, 2.5),
                                "customers": fresh({"tier": "gold"}, 0.25)},
                   {"basket": 3, "avg_1h": 7.0}, policies(), CATALOG)
    assert out.features == {"spend_1h": 10.0, "avg_1h": 7.0, "tier": "gold", "basket": 3}
    assert out.ages_ms == {"orders": 2500.0, "customers": 250.0}
    assert not out.stale


def test_assemble__flag_serves_stale_values_and_flags_them() -> None:
    out = assemble("c1", PLAN, {"orders": fresh({"spend_1h": 10.0, "avg_1h": 5.0}, 600),
                                "customers": fresh({"tier": "gold"})},
                   {"basket": 1}, policies("flag"), CATALOG)
    assert out.stale
    assert out.features["spend_1h"] == 10.0
    assert out.ages_ms["orders"] == 600_000.0


def test_assemble__flag_with_a_missing_entity_serves_without_its_features() -> None:
    out = assemble("c1", PLAN, {"orders": MISSING, "customers": fresh({"tier": "gold"})},
                   {"basket": 1}, policies("flag"), CATALOG)
    assert out.stale
    assert out.features == {"tier": "gold", "basket": 1}
    assert "orders" not in out.ages_ms


def test_assemble__reject_names_the_view_and_the_age() -> None:
    with pytest.raises(RecordRejected) as info:
        assemble("c1", PLAN, {"orders": fresh({"spend_1h": 1.0, "avg_1h": 1.0}, 120.0),
                              "customers": fresh({"tier": "gold"})},
                 {"basket": 1}, policies("flag", orders="reject"), CATALOG)
    assert info.value.reason == "stale_features"
    assert "view 'orders'" in str(info.value) and "120.0s old" in str(info.value)


def test_assemble__reject_of_a_missing_entity_is_missing_entity() -> None:
    with pytest.raises(RecordRejected) as info:
        assemble("c9", PLAN, {"orders": fresh({"spend_1h": 1.0, "avg_1h": 1.0}),
                              "customers": MISSING},
                 {"basket": 1}, policies("reject"), CATALOG)
    assert info.value.reason == "missing_entity"
    assert "view 'customers'" in str(info.value) and "'c9'" in str(info.value)


def test_assemble__default_serves_declared_defaults_when_they_exist() -> None:
    plan = CATALOG.plan(["n_1h_x", "orders.n_1h", "spend_1h"], "m")
    out = assemble("c1", plan, {"orders": fresh({"n_1h": 9, "spend_1h": 99.0}, 3600)},
                   {"n_1h_x": 1}, policies("default"), CATALOG)
    assert out.features == {"orders.n_1h": 0, "spend_1h": 0, "n_1h_x": 1}
    assert not out.stale


def test_assemble__default_without_a_default_value_rejects_naming_the_feature() -> None:
    with pytest.raises(RecordRejected) as info:
        assemble("c1", PLAN, {"orders": MISSING, "customers": fresh({"tier": "gold"})},
                 {"basket": 1}, policies("default"), CATALOG)
    assert info.value.reason == "missing_features"
    assert "'avg_1h' has no default" in str(info.value)


def test_assemble__default_is_fine_when_the_request_brings_the_feature() -> None:
    out = assemble("c1", PLAN, {"orders": MISSING, "customers": fresh({"tier": "gold"})},
                   {"basket": 1, "avg_1h": 4.0}, policies("default"), CATALOG)
    assert out.features == {"spend_1h": 0, "avg_1h": 4.0, "tier": "gold", "basket": 1}


def test_assemble__a_missing_request_only_input_rejects() -> None:
    with pytest.raises(RecordRejected) as info:
        assemble("c1", PLAN, {"orders": fresh({"spend_1h": 1.0, "avg_1h": 1.0}),
                              "customers": fresh({"tier": "gold"})},
                 {}, policies(), CATALOG)
    assert info.value.reason == "missing_features" and "'basket'" in str(info.value)


def test_assemble__any_input_model_gets_every_value_qualified() -> None:
    plan = CATALOG.plan([], "m")
    out = assemble("c1", plan, {"orders": fresh({"n_1h": 2, "avg_1h": None}),
                                "activity": fresh({"n_1h": 5}), "customers": MISSING,
                                "profile": fresh({"age": 40})},
                   {"device": "ios"}, policies(), CATALOG)
    assert out.features == {"orders.n_1h": 2, "activity.n_1h": 5, "profile.age": 40,
                            "device": "ios"}
    assert out.stale  # customers missing under flag


def test_assemble__no_entity_uses_request_features_only() -> None:
    out = assemble(None, PLAN, {}, {"spend_1h": 1.0, "avg_1h": 2.0, "tier": "a", "basket": 1},
                   policies("reject"), CATALOG)
    assert out.features == {"spend_1h": 1.0, "avg_1h": 2.0, "tier": "a", "basket": 1}


def test_check_numeric__names_missing_and_non_numeric_inputs() -> None:
    check_numeric("m", ["a", "b"], {"a": 1, "b": 2.5, "c": "ignored"})
    with pytest.raises(RecordRejected) as info:
        check_numeric("m", ["a", "b"], {"a": 1})
    assert info.value.reason == "missing_features" and "'b'" in str(info.value)
    with pytest.raises(RecordRejected) as info:
        check_numeric("m", ["a"], {"a": "12"})
    assert info.value.reason == "feature_type" and "str '12'" in str(info.value)
    with pytest.raises(RecordRejected) as info:
        check_numeric("m", ["a"], {"a": [1.0]})
    assert info.value.reason == "feature_type"


# ---------------------------------------------------------------------------------------------
# micro-batching
# ---------------------------------------------------------------------------------------------


def test_batcher__concurrent_submissions_share_a_batch_and_get_their_own_results() -> None:
    seen: list[list[int]] = []
    gate = threading.Event()

    def process(items: list[int]) -> list[int]:
        gate.wait(5)
        seen.append(items)
        return [i * 10 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(process, max_batch_size=100, linger_s=0.05)
    batcher.start()
    first = batcher.submit([1])  # held by the gate while the others queue
    time.sleep(0.02)
    futures = [batcher.submit([i, i + 100]) for i in range(2, 6)]
    gate.set()
    assert first.result(5) == [10]
    assert [f.result(5) for f in futures] == [[i * 10, (i + 100) * 10] for i in range(2, 6)]
    batcher.close()
    assert sum(len(b) for b in seen) == 9
    assert len(seen) < 5  # the four waiting submissions did not each get their own batch


def test_batcher__never_exceeds_max_batch_size_nor_splits_a_submission() -> None:
    seen: list[list[int]] = []
    block = threading.Event()

    def process(items: list[int]) -> list[int]:
        block.wait(5)
        seen.append(items)
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(process, max_batch_size=4, linger_s=0.05)
    batcher.start()
    futures = [batcher.submit(list(range(k * 10, k * 10 + 3))) for k in range(5)]
    big = batcher.submit(list(range(100, 107)))
    block.set()
    for k, f in enumerate(futures):
        assert f.result(5) == list(range(k * 10, k * 10 + 3))
    assert big.result(5) == list(range(100, 107))
    batcher.close()
    assert all(len(b) <= 4 for b in seen if b[0] < 100)
    assert [100, 101, 102, 103, 104, 105, 106] in seen


def test_batcher__an_error_reaches_every_submitter_of_the_batch_and_the_next_batch_runs() -> None:
    calls = 0

    def process(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if 13 in items:
            raise ValueError("unlucky")
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(process, max_batch_size=1, linger_s=0.0)
    batcher.start()
    bad = batcher.submit([13])
    good = batcher.submit([7])
    with pytest.raises(ValueError, match="unlucky"):
        bad.result(5)
    assert good.result(5) == [7]
    batcher.close()


def test_batcher__close_processes_what_was_submitted() -> None:
    release = threading.Event()

    def process(items: list[int]) -> list[int]:
        release.wait(5)
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(process, max_batch_size=2, linger_s=0.0)
    batcher.start()
    futures = [batcher.submit([i]) for i in range(6)]
    release.set()
    batcher.close()
    assert [f.result(0) for f in futures] == [[i] for i in range(6)]
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit([1])
