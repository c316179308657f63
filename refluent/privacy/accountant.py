"""Composing DP-SGD runs into one epsilon, with Opacus' accountants.

A run of DP-SGD is a (noise multiplier, sample rate, steps) triple; a lineage's history is the
list of its runs. Its epsilon at a delta is what the accountant composes over the whole history
(PRV by default, RDP selectable), never a sum of per-run epsilons.

Examples:
    >>> history = [Run(1.1, 0.01, 1000), Run(1.1, 0.01, 500)]
    >>> round(epsilon(history, 1e-5, "rdp"), 3)
    2.064
    >>> epsilon([], 1e-5)
    0.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from refluent.errors import require
from refluent.privacy.errors import UnknownAccountantError

ACCOUNTANTS = ("prv", "rdp")
"""Accountants by name: Opacus' PRV (tight; the default) and RDP."""


class Run(NamedTuple):
    """One DP-SGD run (or incremental update) as the accountant sees it."""

    noise_multiplier: float
    sample_rate: float
    steps: int


def accountant(name: str = "prv") -> Any:
    """A fresh Opacus accountant.

    Raises:
        UnknownAccountantError: ``name`` is neither ``prv`` nor ``rdp``.
    """
    if name not in ACCOUNTANTS:
        raise UnknownAccountantError(name, ACCOUNTANTS)
    accountants: Any = require("opacus.accountants", "privacy")
    return accountants.PRVAccountant() if name == "prv" else accountants.RDPAccountant()


def epsilon(history: Sequence[Run], delta: float, name: str = "prv") -> float:
    """The epsilon of ``history`` composed by the accountant ``name`` at ``delta``."""
    runs = [r for r in history if r.steps > 0]
    if not runs:
        return 0.0
    acc = accountant(name)
    acc.history = [(float(r.noise_multiplier), float(r.sample_rate), int(r.steps))
                   for r in runs]
    return float(acc.get_epsilon(delta))


__all__ = ["ACCOUNTANTS", "Run", "accountant", "epsilon"]
