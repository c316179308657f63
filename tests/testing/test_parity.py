"""The engine-parity check finds every kind of difference and accepts repeats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from refluent.engines.memory import InMemoryRunner
from refluent.processors.aggregations import Aggregation
from refluent.processors.features import EntityStateView, FeatureView
from refluent.processors.windows import Tumbling
from refluent.streams.contracts import CdcEnvelope, FeatureUpdate, LogEvent
from refluent.testing.parity import (
    ParityError,
    assert_same_final,
    assert_same_updates,
    by_event_time,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CLICKS = FeatureView("clicks", "entity_id", ("logs.web",),
                     (Aggregation("n", "count", None, Tumbling(timedelta(minutes=1))),))
USERS = EntityStateView("users", "cdc.users", columns=("tier",))


def clicks(n: int) -> list[LogEvent]:
    return [LogEvent(source="web", ts=T0 + timedelta(seconds=i), message="click",
                     entity_id=f"u{i % 3}") for i in range(n)]


def reference() -> tuple[InMemoryRunner, list[FeatureUpdate]]:
    runner = InMemoryRunner([CLICKS])
    return runner, runner.feed("logs.web", clicks(9))


def test_parity__accepts_the_same_updates_in_any_order_with_repeats() -> None:
    runner, updates = reference()
    published = list(reversed(updates)) + updates[3:5]
    assert_same_updates(runner, published, "clicks")
    assert_same_final(runner, published)


def test_parity__a_missing_update_fails_every_update_but_not_final() -> None:
    runner, updates = reference()
    published = updates[:2] + updates[3:]  # u2's first update lost, its last one kept
    assert_same_final(runner, published)
    with pytest.raises(ParityError, match=r"view clicks: 1 entity\(ies\) differ, e.g. \('u2', 1\)"):
        assert_same_updates(runner, published, "clicks")


def test_parity__a_different_value_fails_both() -> None:
    runner, updates = reference()
    wrong = updates[-1].model_copy(update={"values": {"n": 99}})
    published = [*updates[:-1], wrong]
    with pytest.raises(ParityError, match="view clicks: 1 entity"):
        assert_same_final(runner, published)
    with pytest.raises(ParityError, match="view clicks: 1 entity"):
        assert_same_updates(runner, published, "clicks")


def test_parity__two_different_updates_for_one_version_fail() -> None:
    runner, updates = reference()
    twin = updates[0].model_copy(update={"values": {"n": 5}})
    with pytest.raises(ParityError, match="two different updates for"):
        assert_same_updates(runner, [*updates, twin], "clicks")


def test_parity__an_extra_entity_fails_final() -> None:
    runner, updates = reference()
    extra = updates[0].model_copy(update={"entity_id": "ghost"})
    with pytest.raises(ParityError, match="ghost"):
        assert_same_final(runner, [*updates, extra])


def test_parity__entity_state_updates_match_by_event_time() -> None:
    changes = [CdcEnvelope.model_validate(
        {"op": "u", "before": {"id": 1, "tier": "a"}, "after": {"id": 1, "tier": t},
         "source": {"ts_ms": 1_700_000_000_000 + i, "lsn": i}}) for i, t in enumerate("bcd")]
    runner = InMemoryRunner([USERS])
    updates = runner.feed("cdc.users", changes)
    # Another engine read the same changes at other offsets: other sequences, same changes.
    moved = [u.model_copy(update={"sequence": u.sequence + 100}) for u in updates]
    assert_same_updates(runner, moved, "users", order=by_event_time)
    with pytest.raises(ParityError):
        assert_same_updates(runner, moved[1:], "users", order=by_event_time)
