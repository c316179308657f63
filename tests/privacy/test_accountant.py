"""The composed epsilon is Opacus' own accountant's over the same history, composes (two runs
cost more than one, less than twice), and PRV is tighter than RDP."""

from __future__ import annotations

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from refluent.privacy.accountant import Run, epsilon
from refluent.privacy.errors import UnknownAccountantError

pytestmark = pytest.mark.unit

HISTORY = [Run(1.0, 0.02, 800), Run(1.3, 0.01, 1500), Run(0.9, 0.05, 200)]


@pytest.mark.parametrize(("name", "cls"), [("prv", PRVAccountant), ("rdp", RDPAccountant)])
def test_epsilon__is_the_accountant_s_over_the_whole_history(name: str, cls: type) -> None:
    acc = cls()
    for r in HISTORY:
        acc.step(noise_multiplier=r.noise_multiplier, sample_rate=r.sample_rate)
        for _ in range(r.steps - 1):
            acc.step(noise_multiplier=r.noise_multiplier, sample_rate=r.sample_rate)
    assert epsilon(HISTORY, 1e-5, name) == pytest.approx(acc.get_epsilon(1e-5), rel=1e-6)


def test_epsilon__composes_rather_than_sums() -> None:
    one = epsilon(HISTORY[:1], 1e-5)
    two = epsilon(HISTORY[:1] * 2, 1e-5)
    assert one < two < 2 * one
    assert epsilon(HISTORY, 1e-5, "prv") < epsilon(HISTORY, 1e-5, "rdp")
    assert epsilon([Run(1.0, 0.02, 0)], 1e-5) == 0.0


def test_epsilon__an_unknown_accountant_is_named() -> None:
    with pytest.raises(UnknownAccountantError, match="unknown privacy accountant 'gdp'"):
        epsilon(HISTORY, 1e-5, "gdp")


@pytest.mark.parametrize(("name", "cls"), [("prv", PRVAccountant), ("rdp", RDPAccountant)])
def test_epsilon__of_many_interleaved_updates_is_the_accountant_s_over_each_of_them(
        name: str, cls: type) -> None:
    """A retrain, then updates of two kinds interleaved: the accountant is given every run as
    recorded (no merging on the oracle's side)."""
    history = [Run(1.9, 0.125, 40)] + [Run(3.0, 1 / 16, 16), Run(2.0, 0.25, 4)] * 6
    acc = cls()
    acc.history = [tuple(r) for r in history]
    assert epsilon(history, 1e-5, name) == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)
