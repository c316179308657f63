"""The privacy ledger: one per model lineage, every DP run or update that spent its budget.

An entry is a run as the accountant sees it (noise multiplier, sample rate, steps) with what it
was (run id, retrain or incremental update, the version it made) and the lineage's epsilon
after it, composed by the accountant over the whole history up to it. Guarantees every backend
gives:

- **planned before spent**: :meth:`PrivacyLedger.charge` composes the planned run with the
  history and refuses it (:class:`~refluent.privacy.errors.BudgetExceededError`, naming the
  spend, the plan and the budget) before anything is recorded, so a job charges before its
  first step and never runs a step the budget does not allow;
- **no double spend**: the check and the append are one atomic step against other writers; a
  writer that loses the race re-reads the history and plans again;
- **idempotent**: charging a run id already in the ledger returns its entry and spends nothing.

:class:`MemoryPrivacyLedger` keeps it in this process (tests); the lake table is
:class:`~refluent.privacy.iceberg.IcebergPrivacyLedger`.

Examples:
    >>> ledger = MemoryPrivacyLedger(budget=2.0, delta=1e-5, accountant="rdp")
    >>> entry = ledger.charge("churn", Spend("r1", 1.1, 0.01, 1000))
    >>> round(entry.epsilon_total, 3), entry.seq
    (1.712, 1)
    >>> try:
    ...     ledger.charge("churn", Spend("r2", 1.1, 0.01, 1000))
    ... except BudgetExceededError as exc:
    ...     print(str(exc)[:58])
    privacy budget of 'churn' exceeded: spent epsilon 1.712, w
    >>> [e.run_id for e in ledger.entries("churn")]
    ['r1']
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from refluent.privacy.accountant import Run, epsilon
from refluent.privacy.errors import BudgetExceededError


@dataclass(frozen=True)
class Spend:
    """What one DP run (or incremental update) asks to spend."""

    run_id: str
    """Idempotency key of the run."""
    noise_multiplier: float
    sample_rate: float
    steps: int
    kind: Literal["retrain", "update"] = "retrain"
    model_version: str | None = None
    """The version the run made (or updated), when known."""

    @property
    def run(self) -> Run:
        return Run(self.noise_multiplier, self.sample_rate, self.steps)


@dataclass(frozen=True)
class LedgerEntry:
    """A run recorded in a lineage's ledger."""

    lineage: str
    seq: int
    """Position in the lineage's history, from 1."""
    spend: Spend
    delta: float
    accountant: str
    epsilon_total: float
    """The lineage's epsilon after this run (composed over the history up to it)."""
    at: datetime

    @property
    def run_id(self) -> str:
        return self.spend.run_id


Decide = Callable[[list[LedgerEntry]], tuple[LedgerEntry, bool]]
"""Given a lineage's entries, the entry to return and whether to append it."""


class PrivacyLedger(ABC):
    """One privacy ledger per model lineage (see the module for the guarantees).

    Args:
        budget: Most epsilon a lineage may spend (``privacy.epsilon_budget``).
        delta: The delta epsilon is composed at (``privacy.delta``).
        accountant: ``prv`` or ``rdp`` (``privacy.accountant``).
    """

    def __init__(self, budget: float, delta: float, accountant: str = "prv") -> None:
        self.budget, self.delta, self.accountant = budget, delta, accountant

    @abstractmethod
    def entries(self, lineage: str) -> list[LedgerEntry]:
        """The lineage's entries, oldest first."""

    @abstractmethod
    def _commit(self, lineage: str, decide: Decide) -> LedgerEntry:
        """Atomically against other writers: read the lineage's entries, ``decide`` (which
        may raise), append the entry when it says so. On a lost race, read and decide again."""

    def spent(self, lineage: str) -> float:
        """The lineage's epsilon so far, composed over its whole history."""
        return epsilon([e.spend.run for e in self.entries(lineage)], self.delta,
                       self.accountant)

    def plan(self, lineage: str, spend: Spend) -> float:
        """The lineage's epsilon if ``spend`` ran now.

        Raises:
            BudgetExceededError: it would exceed the budget.
        """
        return self._planned(lineage, self.entries(lineage), spend)

    def _planned(self, lineage: str, current: list[LedgerEntry], spend: Spend) -> float:
        history = [e.spend.run for e in current]
        after = epsilon([*history, spend.run], self.delta, self.accountant)
        if after > self.budget:
            raise BudgetExceededError(lineage, epsilon(history, self.delta, self.accountant),
                                      after, self.budget, self.delta)
        return after

    def charge(self, lineage: str, spend: Spend, now: datetime | None = None) -> LedgerEntry:
        """Record ``spend`` in the lineage's ledger, once the plan fits the budget.

        Raises:
            BudgetExceededError: it would exceed the budget (nothing is recorded).
        """
        at = now or datetime.now(UTC)

        def decide(current: list[LedgerEntry]) -> tuple[LedgerEntry, bool]:
            for e in current:
                if e.run_id == spend.run_id:
                    return e, False
            after = self._planned(lineage, current, spend)
            seq = max((e.seq for e in current), default=0) + 1
            return LedgerEntry(lineage, seq, spend, self.delta, self.accountant, after,
                               at), True

        return self._commit(lineage, decide)


class MemoryPrivacyLedger(PrivacyLedger):
    """The ledger in this process (one lock makes the check and the append atomic)."""

    def __init__(self, budget: float, delta: float, accountant: str = "prv") -> None:
        super().__init__(budget, delta, accountant)
        self._lock = threading.Lock()
        self._entries: dict[str, list[LedgerEntry]] = {}

    def entries(self, lineage: str) -> list[LedgerEntry]:
        with self._lock:
            return list(self._entries.get(lineage, []))

    def _commit(self, lineage: str, decide: Decide) -> LedgerEntry:
        with self._lock:
            current = self._entries.setdefault(lineage, [])
            entry, append = decide(list(current))
            if append:
                current.append(entry)
            return entry


__all__ = ["LedgerEntry", "MemoryPrivacyLedger", "PrivacyLedger", "Spend"]
