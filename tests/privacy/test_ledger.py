"""The privacy ledger, in memory and as a real lake table, through the same checks: every
entry's epsilon is Opacus' accountant's over the history up to it (stepped one step at a time in
the test), a plan over the budget is refused before anything is recorded, a run id is charged
once, the lake ledger survives a restart, and writers racing for the last of a budget cannot
spend it twice."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from refluent.embedded.services import lake_catalog
from refluent.privacy.errors import BudgetExceededError
from refluent.privacy.iceberg import IcebergPrivacyLedger
from refluent.privacy.ledger import MemoryPrivacyLedger, PrivacyLedger, Spend

pytestmark = pytest.mark.integration

DELTA = 1e-5
T0 = datetime(2026, 12, 7, tzinfo=UTC)

Make = Callable[..., PrivacyLedger]


@pytest.fixture(params=["memory", "iceberg"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Make:
    """Makes ledgers; iceberg ones share one catalog (a restart is a new ledger over it)."""
    if request.param == "memory":
        shared: dict[str, MemoryPrivacyLedger] = {}

        def memory(budget: float = 10.0, accountant: str = "prv") -> PrivacyLedger:
            # One process: "another" ledger is the same one.
            return shared.setdefault("l", MemoryPrivacyLedger(budget, DELTA, accountant))

        return memory
    (tmp_path / "warehouse").mkdir()

    def iceberg(budget: float = 10.0, accountant: str = "prv") -> PrivacyLedger:
        catalog = lake_catalog(f"sqlite:///{tmp_path / 'catalog.db'}",
                               (tmp_path / "warehouse").as_uri())
        return IcebergPrivacyLedger(catalog, "lab", budget=budget, delta=DELTA,
                                    accountant=accountant)

    return iceberg


def _stepped(spends: list[Spend], accountant: str) -> float:
    acc = PRVAccountant() if accountant == "prv" else RDPAccountant()
    for s in spends:
        for _ in range(s.steps):
            acc.step(noise_multiplier=s.noise_multiplier, sample_rate=s.sample_rate)
    return float(acc.get_epsilon(DELTA))


RUNS = [Spend("r1", 1.0, 0.02, 300), Spend("u1", 1.2, 0.005, 400, "update", "1"),
        Spend("r2", 0.9, 0.01, 250, "retrain", "2")]


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_charge__each_entry_carries_the_accountant_s_epsilon_of_its_history(
        make: Make, accountant: str) -> None:
    ledger = make(accountant=accountant)
    for i, spend in enumerate(RUNS, 1):
        entry = ledger.charge("churn", spend, T0)
        assert (entry.seq, entry.spend, entry.delta, entry.accountant) == (
            i, spend, DELTA, accountant)
        assert entry.epsilon_total == pytest.approx(_stepped(RUNS[:i], accountant), rel=1e-4)
    assert [e.spend for e in ledger.entries("churn")] == RUNS
    assert ledger.spent("churn") == pytest.approx(_stepped(RUNS, accountant), rel=1e-4)
    assert ledger.entries("fraud") == [] and ledger.spent("fraud") == 0.0


def test_charge__over_the_budget_is_refused_before_anything_is_recorded(make: Make) -> None:
    first, planned = _stepped(RUNS[:1], "prv"), _stepped(RUNS[:2], "prv")
    budget = (first + planned) / 2
    ledger = make(budget=budget)
    ledger.charge("churn", RUNS[0], T0)
    with pytest.raises(BudgetExceededError) as info:
        ledger.charge("churn", RUNS[1], T0)
    assert (info.value.spent, info.value.budget) == (pytest.approx(first, rel=1e-4),
                                                     pytest.approx(budget))
    assert info.value.planned == pytest.approx(planned, rel=1e-4)
    assert "privacy budget of 'churn' exceeded" in str(info.value)
    assert [e.run_id for e in ledger.entries("churn")] == ["r1"]
    with pytest.raises(BudgetExceededError):
        ledger.plan("churn", RUNS[1])
    assert ledger.plan("churn", Spend("tiny", 2.0, 0.001, 10)) < budget


def test_charge__a_run_id_is_charged_once_and_the_ledger_survives_a_restart(
        make: Make) -> None:
    ledger = make()
    entry = ledger.charge("churn", RUNS[0], T0)
    assert ledger.charge("churn", RUNS[0], T0) == entry
    again = make()  # a new process over the same ledger
    assert again.charge("churn", RUNS[0], T0) == entry
    assert again.entries("churn") == [entry]
    assert again.spent("churn") == pytest.approx(entry.epsilon_total)


def test_charge__writers_racing_for_the_last_of_the_budget_cannot_spend_it_twice(
        make: Make) -> None:
    one = _stepped(RUNS[:1], "prv")
    two = _stepped([RUNS[0], Spend("x", 1.0, 0.02, 300)], "prv")
    budget = (two + _stepped([RUNS[0]] * 3, "prv")) / 2  # two runs fit, three do not
    ledgers = [make(budget=budget) for _ in range(4)]
    ledgers[0].charge("churn", RUNS[0], T0)
    outcomes: list[str] = []
    barrier = threading.Barrier(len(ledgers))

    def race(i: int) -> None:
        barrier.wait()
        try:
            ledgers[i].charge("churn", Spend(f"w{i}", 1.0, 0.02, 300), T0)
            outcomes.append("spent")
        except BudgetExceededError:
            outcomes.append("refused")

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(ledgers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(outcomes) == ["refused", "refused", "refused", "spent"]
    entries = ledgers[0].entries("churn")
    assert [e.seq for e in entries] == [1, 2]
    assert entries[1].epsilon_total == pytest.approx(two, rel=1e-4) and one < budget
    assert ledgers[0].spent("churn") <= budget
