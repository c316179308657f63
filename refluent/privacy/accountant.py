"""Composing DP-SGD runs into one epsilon, with Opacus' accountants.

A run of DP-SGD is a (noise multiplier, sample rate, steps) triple; a lineage's history is the
list of its runs. Its epsilon at a delta is what the accountant composes over the whole history
(PRV by default, RDP selectable), never a sum of per-run epsilons.

Runs of the same noise multiplier and sample rate are one mechanism composed with itself, so
they are handed to the accountant as one entry with their steps summed (:func:`merged`): the
same epsilon (to 1e-11 relative under PRV, exactly under RDP), and a cost that grows with the
number of distinct mechanisms instead of the number of runs, which matters for a lineage of
many incremental updates.

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


def merged(history: Sequence[Run]) -> list[Run]:
    """``history`` with the runs of one noise multiplier and sample rate as one run of their
    summed steps, in order of first appearance; runs of no step are left out.

    Examples:
        >>> merged([Run(1.0, 0.1, 5), Run(2.0, 0.1, 3), Run(1.0, 0.1, 7), Run(1.0, 0.5, 0)])
        [Run(noise_multiplier=1.0, sample_rate=0.1, steps=12), Run(noise_multiplier=2.0, \
sample_rate=0.1, steps=3)]
    """
    steps: dict[tuple[float, float], int] = {}
    for r in history:
        if r.steps > 0:
            key = (float(r.noise_multiplier), float(r.sample_rate))
            steps[key] = steps.get(key, 0) + int(r.steps)
    return [Run(s, q, n) for (s, q), n in steps.items()]


def epsilon(history: Sequence[Run], delta: float, name: str = "prv") -> float:
    """The epsilon of ``history`` composed by the accountant ``name`` at ``delta``."""
    runs = merged(history)
    if not runs:
        return 0.0
    acc = accountant(name)
    acc.history = [tuple(r) for r in runs]
    return float(acc.get_epsilon(delta))


__all__ = ["ACCOUNTANTS", "Run", "accountant", "epsilon", "merged"]
