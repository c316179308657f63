"""Views run over events by the in-memory runner (the engines' reference)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from refluent.engines.memory import InMemoryRunner
from refluent.processors.aggregations import Aggregation
from refluent.processors.errors import ViewSpecError
from refluent.processors.features import EntityStateView, FeatureView, discover, only_ops
from refluent.processors.windows import Hopping, Sliding, Tumbling
from refluent.streams.contracts import CdcEnvelope, LogEvent

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def order(op: str, oid: int, customer: str | None, amount: Any, at: timedelta,
          lsn: int) -> CdcEnvelope:
    row = {"id": oid, "customer_id": customer, "amount": amount}
    ms = int((T0 + at).timestamp() * 1000)
    return CdcEnvelope.model_validate({
        "op": op, "before": row if op in ("u", "d") else None,
        "after": row if op != "d" else None, "source": {"ts_ms": ms, "lsn": lsn}})


ORDERS = FeatureView(
    name="customer_orders", entity="customer_id", sources=("cdc.orders",),
    aggregations=(
        Aggregation("orders_1h", "count", None, Tumbling(H, grace=timedelta(minutes=5))),
        Aggregation("spend_1h", "sum", "amount", Tumbling(H, grace=timedelta(minutes=5))),
        Aggregation("spend_2h_hop", "sum", "amount", Hopping(2 * H, H)),
        Aggregation("max_30m", "max", "amount", Sliding(timedelta(minutes=30))),
    ),
    transforms=(only_ops("c", "r"),),
)


def test_feature_view__aggregates_creates_per_customer() -> None:
    runner = InMemoryRunner([ORDERS])
    runner.feed("cdc.orders", [
        order("c", 1, "alice", 10.0, timedelta(minutes=1), 1),
        order("c", 2, "alice", 5.0, timedelta(minutes=20), 2),
        order("u", 2, "alice", 6.0, timedelta(minutes=21), 3),  # skipped by the transform
        order("c", 3, "bob", 7.5, timedelta(minutes=40), 4),
        order("c", 4, "alice", 1.0, timedelta(minutes=61), 5),
    ])
    alice = runner.online["customer_orders"]["alice"]
    assert alice.values["orders_1h"] == 1 and alice.values["spend_1h"] == 1.0
    assert alice.values["spend_2h_hop"] == 16.0
    assert alice.values["max_30m"] == 1.0
    assert alice.windows["orders_1h"] == (T0 + H, T0 + 2 * H)
    assert runner.online["customer_orders"]["bob"].values["spend_1h"] == 7.5
    assert len(runner.updates) == 4


def test_replay_after_crash__changes_nothing_and_republishes_only_the_last() -> None:
    events = [order("c", i, "alice", 1.0, timedelta(minutes=i), i) for i in range(5)]
    runner = InMemoryRunner([ORDERS])
    runner.feed("cdc.orders", events)
    before = dict(runner.states["customer_orders"])
    again = runner.feed("cdc.orders", events, offsets=list(range(5)))
    assert runner.states["customer_orders"] == before
    assert [u.source_offset for u in again] == [4]
    assert runner.online["customer_orders"]["alice"].values["orders_1h"] == 5


def test_late_event__is_rejected_with_reason_and_state_unchanged() -> None:
    runner = InMemoryRunner([ORDERS])
    runner.feed("cdc.orders", [order("c", 1, "a", 1.0, 3 * H, 1)])
    before = dict(runner.states["customer_orders"])
    runner.feed("cdc.orders", [order("c", 2, "a", 1.0, timedelta(minutes=5), 2)])
    assert [(r.reason, r.origin.offset) for r in runner.rejected] == [("late", 1)]
    assert runner.states["customer_orders"] == before


def test_bad_records__missing_entity_and_unsummable_value_are_rejected() -> None:
    runner = InMemoryRunner([ORDERS])
    runner.feed("cdc.orders", [order("c", 1, None, 1.0, H, 1),
                               order("c", 2, "a", "lots", H, 2),
                               order("c", 3, "a", 2.0, H, 3)])
    assert [r.reason for r in runner.rejected] == ["no_entity", "bad_value"]
    assert "amount" in runner.rejected[1].detail
    assert runner.online["customer_orders"]["a"].values["spend_1h"] == 2.0


CUSTOMERS = EntityStateView(name="customers", source="cdc.customers",
                            columns=("tier", "country"))


def cust(op: str, cid: int, tier: str | None, lsn: int, before_id: int | None = None
         ) -> CdcEnvelope:
    row = {"id": cid, "tier": tier, "country": "DE", "email": "x@example.com"}
    before = dict(row, id=before_id) if before_id is not None else row
    return CdcEnvelope.model_validate({
        "op": op, "before": before if op in ("u", "d") else None,
        "after": row if op != "d" else None, "source": {"ts_ms": 1000 + lsn, "lsn": lsn}})


def test_entity_state_view__upsert_delete_and_out_of_order() -> None:
    runner = InMemoryRunner([CUSTOMERS])
    runner.feed("cdc.customers", [cust("c", 1, "basic", 10), cust("u", 1, "gold", 20),
                                  cust("c", 2, "basic", 30), cust("d", 2, None, 40),
                                  cust("c", 2, "basic", 35)])  # late: older than the delete
    online = runner.online["customers"]
    assert online["1"].values == {"tier": "gold", "country": "DE"}
    assert online["2"].deleted and online["2"].values == {}


def test_entity_state_view__key_change_and_truncate() -> None:
    runner = InMemoryRunner([CUSTOMERS])
    runner.feed("cdc.customers", [cust("c", 1, "basic", 10),
                                  cust("u", 9, "basic", 20, before_id=1)])
    online = runner.online["customers"]
    assert online["1"].deleted and not online["9"].deleted
    truncate = CdcEnvelope.model_validate({"op": "t", "source": {"ts_ms": 5000, "lsn": 50}})
    runner.feed("cdc.customers", [truncate])
    assert all(u.deleted for u in runner.online["customers"].values())


def test_view_declarations__reject_bad_names_and_sources() -> None:
    with pytest.raises(ViewSpecError, match="name must match"):
        FeatureView("Bad-Name", "e", ("logs.app",), ORDERS.aggregations)
    with pytest.raises(ViewSpecError, match="repeated feature"):
        FeatureView("v", "e", ("logs.app",), ORDERS.aggregations[:1] * 2)
    with pytest.raises(ViewSpecError, match="not a cdc"):
        EntityStateView("v", "logs.app")


def test_discover__finds_views_in_a_module_file(tmp_path: Any) -> None:
    module = tmp_path / "my_views.py"
    module.write_text(
        "from datetime import timedelta\n"
        "from refluent.processors.aggregations import Aggregation\n"
        "from refluent.processors.features import EntityStateView, FeatureView\n"
        "from refluent.processors.windows import Tumbling\n"
        "clicks = FeatureView('clicks', 'entity_id', ('logs.web',), (Aggregation('n', 'count',"
        " None, Tumbling(timedelta(minutes=1))),))\n"
        "users = EntityStateView('users', 'cdc.users')\n")
    assert sorted(v.name for v in discover(str(module))) == ["clicks", "users"]
    with pytest.raises(ViewSpecError, match="cannot import"):
        discover(str(tmp_path / "missing.py"))


def test_log_events__aggregate_attributes() -> None:
    view = FeatureView("pages", "entity_id", ("logs.web",), (
        Aggregation("distinct_pages_1h", "approx_distinct", "page", Tumbling(H)),
        Aggregation("last_page", "last", "page", Tumbling(H)),
        Aggregation("mean_ms", "mean", "latency_ms", Tumbling(H)),
    ))
    runner = InMemoryRunner([view])
    runner.feed("logs.web", [
        LogEvent(source="web", ts=T0 + timedelta(seconds=i), message="view", entity_id="u1",
                 attributes={"page": f"/p{i % 3}", "latency_ms": 10 * i}) for i in range(6)])
    values = runner.online["pages"]["u1"].values
    assert values == {"distinct_pages_1h": 3, "last_page": "/p2", "mean_ms": 25.0}
