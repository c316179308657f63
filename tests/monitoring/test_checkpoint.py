"""Checkpoints of the monitors: a state restored half-way raises exactly the alerts of a monitor
that never stopped (the oracle is that monitor), and the group may commit only right after a
checkpoint, which then holds every offset seen."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest

from refluent.config import MonitorSettings
from refluent.monitoring.checkpoint import Checkpointing, MemoryMonitorCheckpoints
from refluent.monitoring.monitor import ModelMonitors
from refluent.streams.contracts import DriftAlert, LabeledExample, Prediction
from refluent.streams.origin import Origin

pytestmark = pytest.mark.unit

T0 = datetime(2026, 5, 1, tzinfo=UTC)
SETTINGS = MonitorSettings(warmup=200, min_samples=100, reference_size=500, window_size=500,
                           calibration_size=300)


def _records(n: int = 6_000, seed: int = 4) -> list[Prediction | LabeledExample]:
    rnd = random.Random(seed)
    out: list[Prediction | LabeledExample] = []
    for i in range(n):
        changed = i >= n // 2
        score = rnd.uniform(0.3, 0.7) if changed else rnd.choice(
            [rnd.uniform(0.0, 0.15), rnd.uniform(0.85, 1.0)])
        t = T0 + timedelta(seconds=i)
        features = {"spend": rnd.gauss(130 if changed else 100, 20), "tier": rnd.choice("ab")}
        out.append(Prediction(prediction_id=f"p{i}", request_id=f"r{i}", model_name="m",
                              model_version="1", entity_id="e", score=score,
                              label=score >= 0.5, probabilities={"False": 1 - score,
                                                                 "True": score},
                              features=features, stale=rnd.random() < 0.01, ts=t))
        out.append(LabeledExample(prediction_id=f"p{i}", entity_id="e", model_name="m",
                                  model_version="1", features=features, score=score,
                                  label=rnd.random() < score, predicted_label=score >= 0.5,
                                  prediction_time=t, label_time=t))
    return out


def _feed(monitors: ModelMonitors, records: list[Prediction | LabeledExample], start: int = 0
          ) -> list[DriftAlert]:
    out = []
    for i, r in enumerate(records, start):
        origin = Origin("t", 0, i)
        out += (monitors.on_prediction(r, origin) if isinstance(r, Prediction)
                else monitors.on_example(r, origin))
    return out


@pytest.mark.parametrize("cut", [1, 2_999, 6_000, 9_001])
def test_state__restored_half_way_raises_the_alerts_of_a_monitor_that_never_stopped(
        cut: int) -> None:
    records = _records()
    whole = _feed(ModelMonitors(SETTINGS), records)
    assert {a.detector for a in whole} >= {"psi", "cbpe", "realised", "adwin"}
    first = ModelMonitors(SETTINGS)
    before = _feed(first, records[:cut])
    second = ModelMonitors(SETTINGS)
    second.restore(first.state())
    after = _feed(second, records[cut:], cut)
    assert before + after == whole


class _TP(NamedTuple):
    topic: str
    partition: int


def test_checkpointing__commits_only_after_a_checkpoint_that_holds_every_offset_seen() -> None:
    now = [0.0]
    store = MemoryMonitorCheckpoints()
    state = [b"s0"]
    cp = Checkpointing(store, "g", 10.0, lambda: state[0], clock=lambda: now[0])
    assert cp.load() is None
    cp.seen("a", 0, 4)
    assert cp.commit_ready()  # the first is due at once
    assert store.saved["g"].offsets == {("a", 0): 5} and store.saved["g"].state == b"s0"
    state[0] = b"s1"
    cp.seen("a", 0, 5)
    cp.seen("b", 1, 7)
    now[0] = 9.9
    assert not cp.commit_ready() and store.saved["g"].state == b"s0"
    now[0] = 10.0
    assert cp.commit_ready()
    assert store.saved["g"].offsets == {("a", 0): 6, ("b", 1): 8}
    assert store.saved["g"].state == b"s1" and cp.saved == 2

    again = Checkpointing(store, "g", 10.0, lambda: b"", clock=lambda: now[0])
    assert again.load() == b"s1"
    assert again.start_offsets([_TP("a", 0), _TP("b", 1), _TP("c", 0)]) == {
        ("a", 0): 6, ("b", 1): 8}
    assert not again.commit_ready()  # the loaded checkpoint counts as the last one


def test_checkpointing__without_a_store_commits_after_every_batch() -> None:
    cp = Checkpointing(None, "g", 10.0, lambda: b"")
    cp.seen("a", 0, 1)
    assert cp.load() is None and cp.commit_ready() and cp.start_offsets([_TP("a", 0)]) == {}
