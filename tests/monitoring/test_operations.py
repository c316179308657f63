"""Operational watches against brute-force counts of the produced input: stale features,
requests the serving rejected, dead letters per minute and consumer lag."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from refluent.config import MonitorSettings
from refluent.monitoring.monitor import ModelMonitors
from refluent.monitoring.operations import (
    DeadLetterRate,
    FractionWindow,
    LagWatch,
    PromotionWatch,
)
from refluent.registry.base import AliasEvent
from refluent.streams.contracts import DriftAlert, Prediction
from refluent.streams.deadletter import DeadLetter
from refluent.streams.origin import Origin

pytestmark = pytest.mark.unit

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _shares(flags: list[bool], size: int) -> list[float]:
    return [sum(flags[i:i + size]) / size for i in range(0, len(flags) - size + 1, size)]


def test_fraction_window__fires_on_each_departure_once_with_the_counted_share() -> None:
    rnd = random.Random(3)
    rates = [0.01] * 5 + [0.2] * 3 + [0.01] * 2 + [0.3] * 2
    flags = [rnd.random() < r for r in rates for _ in range(500)]
    window = FractionWindow(size=500, threshold=0.05)
    fired = [(i, share) for i, f in enumerate(flags) if (share := window.update(f)) is not None]
    shares = _shares(flags, 500)
    above = [k for k, s in enumerate(shares) if s > 0.05]
    departures = [k for k in above if k - 1 not in above]
    assert [i for i, _ in fired] == [k * 500 + 499 for k in departures]
    assert [s for _, s in fired] == [shares[k] for k in departures]
    assert departures == [5, 10]


def test_dead_letter_rate__one_alarm_per_burst_per_topic() -> None:
    rate = DeadLetterRate(per_minute=5)
    minute = 60_000
    events = ([("a.dlq", 0 * minute + k, "x") for k in range(4)]        # under the rate
              + [("a.dlq", 1 * minute + k, "x") for k in range(9)]      # a burst ...
              + [("a.dlq", 2 * minute + k, "y") for k in range(9)]      # ... that lasts
              + [("b.dlq", 2 * minute + k, "z") for k in range(5)]      # another topic
              + [("a.dlq", 1 * minute + 99, "x")]                       # late: judged
              + [("a.dlq", 4 * minute + k, "y") for k in range(5)])     # a new burst
    alarms = [a for t, ts, r in events if (a := rate.update(t, ts, r)) is not None]
    assert [(a.topic, a.minute_start_ms, a.count, a.reasons) for a in alarms] == [
        ("a.dlq", minute, 5, {"x": 5}), ("b.dlq", 2 * minute, 5, {"z": 5}),
        ("a.dlq", 4 * minute, 5, {"y": 5})]


def test_lag_watch__fires_when_the_lag_goes_above_and_again_after_it_came_back() -> None:
    watch = LagWatch(threshold=100)
    lags = [0, 50, 101, 500, 90, 200, 300]
    assert [watch.update("g", lag) for lag in lags] == [
        False, False, True, False, False, True, False]


def _prediction(i: int, *, stale: bool = False, model: str = "churn") -> Prediction:
    return Prediction(prediction_id=f"p{i}", request_id=f"r{i}", model_name=model,
                      model_version="2", entity_id="e", score=0.9, label=True,
                      probabilities={"False": 0.1, "True": 0.9},
                      feature_ages_ms={"orders": 9_000.0 + i if stale else 10.0},
                      stale=stale, ts=T0 + timedelta(seconds=i))


def _alerts(monitors: ModelMonitors, events: list[object]) -> list[DriftAlert]:
    out: list[DriftAlert] = []
    for i, event in enumerate(events):
        origin = Origin("t", 0, i)
        if isinstance(event, Prediction):
            out += monitors.on_prediction(event, origin)
        else:
            assert isinstance(event, DeadLetter)
            out += monitors.on_dead_letter(event, Origin("inference.requests.dlq", 0, i),
                                           int((T0 + timedelta(seconds=i)).timestamp() * 1000))
    return out


def test_monitors__stale_features_in_a_window_raise_features_stale_with_the_oldest_age() -> None:
    monitors = ModelMonitors(MonitorSettings(window_size=100, reference_size=100,
                                             stale_share=0.05))
    stale_at = {150, 160, 170, 180, 190, 199, 250}  # 6 in the 2nd window, 1 in the 3rd
    alerts = _alerts(monitors, [_prediction(i, stale=i in stale_at) for i in range(300)])
    stale = [a for a in alerts if a.event == "features.stale"]
    assert len(stale) == 1 and stale[0].window["offset"] == 199
    assert stale[0].statistic == pytest.approx(6 / 100)
    assert stale[0].window["oldest_ms.orders"] == 9_199.0
    assert (stale[0].model_name, stale[0].model_version, stale[0].kind) == (
        "churn", "2", "freshness")
    assert [a.event for a in alerts] == ["features.stale"]


def _rejected(i: int, model: str, reason: str) -> DeadLetter:
    value = f'{{"request_id": "r{i}", "model": "{model}", "entity_id": "e"}}'.encode()
    return DeadLetter("serving", "E", reason, "m", "inference.requests", 0, i, None, b"e", value)


def test_monitors__rejected_requests_raise_model_failing_and_a_burst_deadletters_rising() -> None:
    monitors = ModelMonitors(MonitorSettings(window_size=100, failure_share=0.1,
                                             deadletters_per_minute=20))
    events: list[object] = []
    for i in range(400):
        failing = 100 <= i < 200 and i % 4 == 0  # 25 rejected among the 2nd window's 100
        events.append(_rejected(i, "churn", "model_input") if failing else _prediction(i))
    alerts = _alerts(monitors, events)
    failing = [a for a in alerts if a.event == "model.failing"]
    assert len(failing) == 1
    assert (failing[0].model_name, failing[0].statistic) == ("churn", 0.25)
    assert failing[0].window["reason.model_input"] == 25
    assert failing[0].window["offset"] == 199
    rising = [a for a in alerts if a.event == "deadletters.rising"]
    # 25 dead letters at one a second starting at 100 s: the minute [60 s, 120 s) holds 5,
    # [120 s, 180 s) holds 15, [180 s, 240 s) 5: none reaches 20.
    assert rising == []
    burst = [_rejected(1000 + k, "other", "missing_entity") for k in range(20)]
    at = int(T0.timestamp() * 1000) + 3_600_000
    got = [a for k, d in enumerate(burst)
           for a in monitors.on_dead_letter(d, Origin("inference.requests.dlq", 0, 1000 + k),
                                            at + k)]
    assert [(a.event, a.subject, a.statistic) for a in got] == [
        ("deadletters.rising", "inference.requests.dlq", 20)]
    assert got[0].window["reason.missing_entity"] == 20


def _event(seq: int, version: int, at: datetime, alias: str = "champion") -> AliasEvent:
    return AliasEvent("churn", alias, seq, "promote", version, version - 1 or None, "", at,
                      f"r{seq}")


def test_promotion_watch__new_events_once_in_order_and_none_before_since() -> None:
    watch = PromotionWatch(since=T0)
    old = _event(1, 1, T0 - timedelta(hours=2))
    e2, e3, s1 = _event(2, 2, T0), _event(3, 3, T0), _event(1, 3, T0, "shadow")
    assert watch.update([old]) == []
    assert watch.update([e3, old, e2, s1]) == [e2, e3, s1]
    assert watch.update([old, e2, e3, s1]) == []
    alert = ModelMonitors(MonitorSettings()).on_alias_event(e3)
    assert (alert.event, alert.model_name, alert.model_version, alert.kind) == (
        "model.promoted", "churn", "3", "promotion")
    assert alert.window == {"alias": "champion", "seq": 3, "reason": "",
                            "previous_version": 2}


