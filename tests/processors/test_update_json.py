"""Feature updates in their JSON form, checked against the contract's own serialisation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from refluent.processors.runtime import iso_ms, update_json
from refluent.streams.contracts import FeatureUpdate
from refluent.streams.origin import Origin

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MS = st.integers(-(10**12), 253_402_300_799_999)  # years 1938 to 9999


@pytest.mark.property
@given(MS)
def test_iso_ms__is_the_contract_s_text_of_that_instant(ms: int) -> None:
    instant = EPOCH + timedelta(milliseconds=ms)
    assert datetime.fromisoformat(iso_ms(ms)) == instant
    update = FeatureUpdate(view="v", entity_id="e", values={}, event_time=instant)
    assert iso_ms(ms) == update.model_dump(mode="json")["event_time"]


@pytest.mark.property
@given(MS, st.integers(-(10**12), 253_402_300_739_999), st.integers(0, 2**40), st.dictionaries(
    st.text(min_size=1, max_size=5),
    st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=5),
              st.floats(allow_nan=False, allow_infinity=False))))
def test_update_json__equals_the_contract_s_json_of_the_same_update(
        event_ms: int, start_ms: int, sequence: int, values: dict[str, object]) -> None:
    windows = {name: (start_ms, start_ms + 60_000) for name in values}
    got = update_json("v", "u1", values, event_ms, windows, sequence, Origin("t", 2, 9))
    want = FeatureUpdate(
        view="v", entity_id="u1", values=values,  # type: ignore[arg-type]
        event_time=EPOCH + timedelta(milliseconds=event_ms),
        windows={k: (EPOCH + timedelta(milliseconds=s), EPOCH + timedelta(milliseconds=e))
                 for k, (s, e) in windows.items()},
        sequence=sequence, source_topic="t", source_partition=2, source_offset=9)
    assert got == want.model_dump(mode="json")
