"""CDC semantics: upserts, deletes, truncates, duplicates, out-of-order delivery, key changes."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refluent.processors.cdc import apply_change, apply_truncate, is_newer, order_key
from refluent.streams.contracts import CdcEnvelope


def env(op: str, before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
        lsn: int | None = None, ts: int = 1000, **source: Any) -> CdcEnvelope:
    src = {"ts_ms": ts, **source}
    if lsn is not None:
        src["lsn"] = lsn
    return CdcEnvelope.model_validate({"op": op, "before": before, "after": after,
                                       "source": src, "ts_ms": ts + 5})


class Table:
    """A tiny driver: applies changes to per-key states like an engine would."""

    def __init__(self, pk: tuple[str, ...] = ("id",)) -> None:
        self.pk = pk
        self.states: dict[str, dict[str, Any]] = {}
        self.published: list[tuple[str, dict[str, Any] | None]] = []

    def apply(self, e: CdcEnvelope, offset: int) -> None:
        if e.op == "t":
            changes = apply_truncate(self.states, e, offset=offset)
        else:
            row = e.after if e.after is not None else e.before
            assert row is not None
            key = "|".join(str(row[c]) for c in self.pk)
            old = None
            if e.op == "u" and e.before is not None:
                old = self.states.get("|".join(str(e.before[c]) for c in self.pk))
            changes = apply_change(self.states.get(key, {}), e, self.pk, offset=offset,
                                   old_state=old)
        for ch in changes:
            self.states[ch.key] = ch.state
            self.published.append((ch.key, ch.row))

    def rows(self) -> dict[str, dict[str, Any]]:
        return {k: s["row"] for k, s in self.states.items() if not s["deleted"]}


@pytest.mark.unit
def test_create_update_delete__upsert_then_delete() -> None:
    t = Table()
    t.apply(env("c", after={"id": 1, "tier": "basic"}, lsn=10), 0)
    t.apply(env("u", before={"id": 1, "tier": "basic"}, after={"id": 1, "tier": "gold"}, lsn=20),
            1)
    assert t.rows() == {"1": {"id": 1, "tier": "gold"}}
    t.apply(env("d", before={"id": 1, "tier": "gold"}, lsn=30), 2)
    assert t.rows() == {}
    assert t.published[-1] == ("1", None)


@pytest.mark.unit
def test_snapshot_read__upserts_like_a_create() -> None:
    t = Table()
    t.apply(env("r", after={"id": 5, "x": 1}, lsn=1, snapshot="true"), 0)
    assert t.rows() == {"5": {"id": 5, "x": 1}}


@pytest.mark.unit
def test_delete_then_recreate__row_comes_back() -> None:
    t = Table()
    t.apply(env("c", after={"id": 1, "v": "a"}, lsn=10), 0)
    t.apply(env("d", before={"id": 1, "v": "a"}, lsn=20), 1)
    t.apply(env("c", after={"id": 1, "v": "b"}, lsn=30), 2)
    assert t.rows() == {"1": {"id": 1, "v": "b"}}


@pytest.mark.unit
def test_replayed_duplicates__change_nothing_and_publish_nothing() -> None:
    t = Table()
    changes = [env("c", after={"id": 1, "v": 1}, lsn=10),
               env("u", before={"id": 1, "v": 1}, after={"id": 1, "v": 2}, lsn=20)]
    for i, e in enumerate(changes):
        t.apply(e, i)
    published = len(t.published)
    for i, e in enumerate(changes):  # the processor restarted and consumed them again
        t.apply(e, i)
    assert len(t.published) == published
    assert t.rows() == {"1": {"id": 1, "v": 2}}


@pytest.mark.unit
def test_out_of_order__older_change_never_overwrites_newer() -> None:
    t = Table()
    t.apply(env("u", before={"id": 1, "v": 1}, after={"id": 1, "v": 2}, lsn=20), 0)
    t.apply(env("c", after={"id": 1, "v": 1}, lsn=10), 1)  # delivered late
    assert t.rows() == {"1": {"id": 1, "v": 2}}


@pytest.mark.unit
def test_late_create_after_delete__does_not_resurrect() -> None:
    t = Table()
    t.apply(env("d", before={"id": 1}, lsn=30), 0)
    t.apply(env("c", after={"id": 1}, lsn=10), 1)
    assert t.rows() == {}


@pytest.mark.unit
def test_mysql_positions__order_by_file_then_pos_then_row() -> None:
    a = env("c", after={"id": 1}, file="mysql-bin.000003", pos=900, row=0)
    b = env("u", after={"id": 1}, file="mysql-bin.000004", pos=4, row=0)
    c = env("u", after={"id": 1}, file="mysql-bin.000004", pos=4, row=1)
    assert is_newer(order_key(b, 1), order_key(a, 0))
    assert is_newer(order_key(c, 2), order_key(b, 1))
    assert not is_newer(order_key(a, 3), order_key(c, 2))


@pytest.mark.unit
def test_without_position__orders_by_source_time_then_offset() -> None:
    t = Table()
    t.apply(env("c", after={"id": 1, "v": 1}, ts=1000), 5)
    t.apply(env("u", after={"id": 1, "v": 2}, ts=1000), 6)  # same ms: later offset wins
    t.apply(env("u", after={"id": 1, "v": 0}, ts=900), 7)  # older source time loses
    assert t.rows() == {"1": {"id": 1, "v": 2}}


@pytest.mark.unit
def test_primary_key_change__is_delete_plus_create() -> None:
    t = Table()
    t.apply(env("c", after={"id": 1, "v": "x"}, lsn=10), 0)
    t.apply(env("u", before={"id": 1, "v": "x"}, after={"id": 2, "v": "x"}, lsn=20), 1)
    assert t.rows() == {"2": {"id": 2, "v": "x"}}
    assert t.published[-2:] == [("1", None), ("2", {"id": 2, "v": "x"})]


@pytest.mark.unit
def test_composite_key__joins_columns() -> None:
    t = Table(pk=("order_id", "line"))
    t.apply(env("c", after={"order_id": 7, "line": 2, "qty": 1}, lsn=1), 0)
    assert list(t.rows()) == ["7|2"]


@pytest.mark.unit
def test_truncate__deletes_older_rows_only() -> None:
    t = Table()
    t.apply(env("c", after={"id": 1}, lsn=10), 0)
    t.apply(env("c", after={"id": 2}, lsn=50), 1)
    t.apply(env("t", lsn=30), 2)
    assert t.rows() == {"2": {"id": 2}}


@pytest.mark.unit
def test_missing_primary_key__raises_key_error() -> None:
    with pytest.raises(KeyError):
        apply_change({}, env("c", after={"name": "no id"}, lsn=1), ("id",), offset=0)


@st.composite
def histories(draw: st.DrawFn) -> list[CdcEnvelope]:
    """A table's true history: changes with increasing LSNs over a few keys."""
    n = draw(st.integers(1, 40))
    live: dict[int, int] = {}
    out = []
    for lsn in range(1, n + 1):
        key = draw(st.integers(0, 4))
        if key in live and draw(st.booleans()):
            if draw(st.booleans()):
                out.append(env("d", before={"id": key, "v": live.pop(key)}, lsn=lsn * 10))
                continue
            v = draw(st.integers(0, 9))
            out.append(env("u", before={"id": key, "v": live[key]}, after={"id": key, "v": v},
                           lsn=lsn * 10))
            live[key] = v
        else:
            v = draw(st.integers(0, 9))
            out.append(env("c", after={"id": key, "v": v}, lsn=lsn * 10))
            live[key] = v
    return out


@pytest.mark.property
@settings(max_examples=150, deadline=None)
@given(history=histories(), seed=st.integers(0, 2**32 - 1), dupes=st.integers(0, 20))
def test_any_delivery_order_with_duplicates__ends_in_the_true_state(
    history: list[CdcEnvelope], seed: int, dupes: int
) -> None:
    truth = Table()
    for i, e in enumerate(history):
        truth.apply(e, i)
    rng = random.Random(seed)
    delivered = list(enumerate(history)) + [rng.choice(list(enumerate(history)))
                                            for _ in range(dupes)]
    rng.shuffle(delivered)
    t = Table()
    for offset, (_, e) in enumerate(delivered):
        t.apply(e, offset)
    assert t.rows() == truth.rows()


@pytest.mark.unit
def test_change_older_than_a_truncate_delivered_after_it__is_ignored() -> None:
    """A truncate has no key, so on a topic of several partitions the changes before it may be
    read after it: the table's last truncate position keeps them out (and a newer change in)."""
    truncate = env("t", lsn=39)
    late = env("c", after={"id": 1, "v": "a"}, lsn=17)
    newer = env("c", after={"id": 2, "v": "b"}, lsn=50)
    mark = order_key(truncate, 5)
    assert apply_change({}, late, ("id",), offset=3, truncated=mark) == []
    [created] = apply_change({}, newer, ("id",), offset=6, truncated=mark)
    assert (created.key, created.row) == ("2", {"id": 2, "v": "b"})
    # Without the mark, the late change would bring the row back.
    assert [c.key for c in apply_change({}, late, ("id",), offset=3)] == ["1"]
