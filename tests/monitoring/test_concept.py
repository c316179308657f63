"""Concept drift on a River model's error stream: an alert soon after a known change, none on
the same stream without it (the position of the change is the oracle)."""

from __future__ import annotations

import itertools
import random

import pytest
from river import datasets, tree

from refluent.monitoring.concept import DETECTORS, ErrorDriftMonitor
from refluent.monitoring.errors import UnknownDetectorError

CHANGE = 8_000
BOUND = 1_000


def errors(n: int, seed: int, change: int | None) -> list[int]:
    first = datasets.synth.Agrawal(classification_function=0, seed=seed, perturbation=0.05)
    stream = first.take(n) if change is None else itertools.chain(
        first.take(change),
        datasets.synth.Agrawal(classification_function=4, seed=seed + 1,
                               perturbation=0.05).take(n - change))
    model = tree.HoeffdingTreeClassifier()
    out = []
    for x, y in stream:
        out.append(int(model.predict_one(x) != y))
        model.learn_one(x, y)
    return out


def alerts(errs: list[int], detector: str = "adwin") -> list[int]:
    monitor = ErrorDriftMonitor(detector, seed=0)
    return [d.index for d in (monitor.update(e) for e in errs) if d is not None]


@pytest.mark.integration
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_default_detector__alerts_within_the_bound_after_the_change(seed: int) -> None:
    errs = errors(CHANGE + 3_000, seed, CHANGE)
    found = alerts(errs)
    assert found, "no alert after the change"
    assert CHANGE <= found[0] <= CHANGE + BOUND, found
    assert len(found) == 1  # one alert, then quiet on the new regime (cooldown, fresh detector)


@pytest.mark.integration
def test_default_detector__no_alert_on_100k_stationary_examples() -> None:
    errs = errors(100_000, 7, None)
    assert 0.0 < sum(errs[5_000:]) / len(errs[5_000:]) < 0.2  # the model errs now and then
    assert alerts(errs) == []


@pytest.mark.unit
@pytest.mark.parametrize("detector", sorted(DETECTORS))
def test_every_detector__sees_a_rise_and_ignores_a_fall(detector: str) -> None:
    rnd = random.Random(5)
    rise = [int(rnd.random() < (0.05 if i < 4_000 else 0.6)) for i in range(8_000)]
    fall = [int(rnd.random() < (0.6 if i < 4_000 else 0.05)) for i in range(8_000)]
    # Some detectors also fire on noise now and then (DDM and EDDM do: bench/drift.py counts
    # their false alarms); what each must do is see the rise and not report the fall.
    after = [i for i in alerts(rise, detector) if i >= 4_000]
    assert after and after[0] <= 4_000 + 3_000, (detector, after)
    assert [i for i in alerts(fall, detector) if i >= 4_000] == []


@pytest.mark.unit
def test_warmup_min_samples_and_cooldown() -> None:
    # Errors jump at 500, inside the warm-up of 1,000: nothing is watched until then, and the
    # detector's reference starts at the new level, so no alert.
    assert alerts([int(i >= 500) for i in range(5_000)]) == []
    monitor = ErrorDriftMonitor("hddm_w", warmup=0, min_samples=300, cooldown=2_000)
    # Two rises 1,000 apart: the second falls in the cooldown of the first.
    rnd = random.Random(3)
    errs = [int(rnd.random() < (0.02 if i < 3_000 else 0.3 if i < 4_000 else 0.9))
            for i in range(8_000)]
    found = [d for d in (monitor.update(e) for e in errs) if d is not None]
    assert len(found) == 1 and 3_000 <= found[0].index < 3_300
    d = found[0]
    assert d.error_recent > d.error_before and d.since == 0


@pytest.mark.unit
def test_unknown_detector__names_the_known_ones() -> None:
    with pytest.raises(UnknownDetectorError, match="unknown drift detector 'adwn'; known: adwin"):
        ErrorDriftMonitor("adwn")
