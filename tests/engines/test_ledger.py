"""The delivery ledger: whatever order a consumer delivers records in, an engine that follows
the ledger applies every record once, in offset order, and commits nothing it has not applied."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refluent.engines.ledger import DeliveryLedger

TP = ("cdc.t", 0)


@pytest.mark.unit
def test_processed__refuses_an_offset_that_is_not_next() -> None:
    ledger = DeliveryLedger()
    ledger.start(TP, 5)
    with pytest.raises(ValueError, match=r"cdc.t\[0\]: processed offset 7, but the next one "
                                         r"to process is 5"):
        ledger.processed(TP, 7)


@pytest.mark.unit
def test_checkpoint__takes_offsets_and_states_of_one_instant() -> None:
    ledger = DeliveryLedger()
    ledger.start(TP, 0)
    ledger.processed(TP, 0)
    ledger.stage("s", "a", 0, b"1")
    first = ledger.checkpoint()
    # What happens after the checkpoint belongs to the next one, even for the same key.
    ledger.processed(TP, 1)
    ledger.stage("s", "a", 0, b"2")
    assert (first.offsets, first.states) == ({TP: 1}, {("s", "a"): (0, b"1")})
    ledger.committed(first.offsets)
    second = ledger.checkpoint()
    assert (second.offsets, second.states) == ({TP: 2}, {("s", "a"): (0, b"2")})


@pytest.mark.unit
def test_stalled__a_partition_that_never_got_a_record_is_read_again_from_its_start() -> None:
    # Started at its committed offset 5 with records up to 9 on the broker, and none ever
    # delivered (the consumer dropped them as already read): due once after_s has passed.
    ledger = DeliveryLedger()
    ledger.start(TP, 5)
    t0 = time.monotonic()
    assert ledger.stalled({TP: 9}, 10.0, now=t0 + 9) == {}
    assert ledger.stalled({TP: 9}, 10.0, now=t0 + 11) == {TP: 5}
    # An admitted record restarts the clock; the frontier it reports is where reading resumes.
    ledger.admit(TP, 5)
    ledger.processed(TP, 5)
    t1 = time.monotonic()
    assert ledger.stalled({TP: 9}, 10.0, now=t1 + 9) == {}
    assert ledger.stalled({TP: 9}, 10.0, now=t1 + 11) == {TP: 6}
    # Caught up, an unknown high watermark, or a partition without a frontier: nothing due.
    assert ledger.stalled({TP: 6}, 10.0, now=t1 + 11) == {}
    assert ledger.stalled({TP: None}, 10.0, now=t1 + 11) == {}
    assert ledger.stalled({("cdc.t", 1): 9}, 10.0, now=t1 + 11) == {}


@pytest.mark.unit
def test_checkpoint__offsets_only_past_the_last_commit_and_for_held_partitions() -> None:
    ledger = DeliveryLedger()
    other = ("cdc.t", 1)
    ledger.start(TP, 3)
    ledger.start(other, 0)
    assert ledger.checkpoint().offsets == {}, "nothing processed: nothing to commit"
    ledger.processed(other, 0)
    assert ledger.checkpoint(only=[TP]).offsets == {}
    ledger.forget([other])
    assert ledger.checkpoint().offsets == {}
    assert not ledger.known(other)


@pytest.mark.property
@settings(max_examples=200, deadline=None)
@given(
    present=st.lists(st.booleans(), min_size=1, max_size=60),
    start=st.integers(0, 20),
    deliveries=st.lists(st.integers(0, 79), min_size=1, max_size=120),
)
def test_any_delivery_order__applies_each_record_once_in_order(
    present: list[bool], start: int, deliveries: list[int],
) -> None:
    # The partition holds a record at offset i when present[i] (absent ones: compaction or
    # transaction markers). The consumer delivers records in any order, with repeats and jumps
    # (stale fetches after a seek). The engine follows the ledger and reads holes itself.
    held = [i for i, p in enumerate(present) if p]
    ledger = DeliveryLedger()
    ledger.start(TP, start)
    applied: list[int] = []

    def read_range(lo: int, hi: int) -> list[int]:
        return [o for o in held if lo <= o < hi]

    for offset in (d for d in deliveries if d in held):
        missing = ledger.admit(TP, offset)
        if missing < 0:
            continue
        nxt = ledger.next_offset(TP)
        assert nxt is not None
        for rec in [*(read_range(nxt, offset) if missing else []), offset]:
            ledger.skip(TP, rec)
            applied.append(rec)
            ledger.processed(TP, rec)
        committed = ledger.checkpoint().offsets.get(TP)
        if committed is not None:
            # Never past what was applied; everything held below it was applied.
            assert committed == applied[-1] + 1
            assert [o for o in held if start <= o < committed] == applied
            ledger.committed({TP: committed})
    expected_end = max((d for d in deliveries if d in held and d >= start), default=None)
    want = [] if expected_end is None else [o for o in held if start <= o <= expected_end]
    assert applied == want
