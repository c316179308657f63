"""Errors of the privacy ledger."""

from __future__ import annotations

from refluent.errors import RefluentError


class PrivacyError(RefluentError):
    """Root of the privacy errors."""


class BudgetExceededError(PrivacyError):
    """A planned DP run would spend more than the lineage's budget; nothing was run."""

    def __init__(self, lineage: str, spent: float, planned: float, budget: float,
                 delta: float) -> None:
        self.lineage, self.spent, self.planned, self.budget = lineage, spent, planned, budget
        super().__init__(
            f"privacy budget of {lineage!r} exceeded: spent epsilon {spent:.4g}, with the "
            f"planned run {planned:.4g} > budget {budget:.4g} (delta {delta:g}); raise "
            f"privacy.epsilon_budget, plan fewer steps or more noise, or start a new lineage")


class LedgerCommitError(PrivacyError):
    """The ledger's table did not take the entry after every retry."""

    def __init__(self, table: str, attempts: int, last: str) -> None:
        super().__init__(f"privacy ledger {table}: no commit after {attempts} attempts "
                         f"(last: {last})")


class UnknownAccountantError(PrivacyError):
    """An accountant name that does not exist."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown privacy accountant {name!r}; known: {', '.join(known)}")
