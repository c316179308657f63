"""``refluent privacy report``: the lineage's runs from the lake ledger, and its spend composed
by the accountant (Opacus stepped one step at a time in the test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from opacus.accountants import PRVAccountant
from typer.testing import CliRunner

from refluent.cli.app import app
from refluent.config import Settings
from refluent.privacy.iceberg import IcebergPrivacyLedger
from refluent.privacy.ledger import Spend

pytestmark = pytest.mark.integration


def test_report__shows_every_run_and_the_composed_spend(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "warehouse").mkdir()
    monkeypatch.setenv("REFLUENT_LAKE__CATALOG_URI", f"sqlite:///{tmp_path / 'catalog.db'}")
    monkeypatch.setenv("REFLUENT_LAKE__WAREHOUSE", (tmp_path / "warehouse").as_uri())
    monkeypatch.setenv("REFLUENT_PRIVACY__EPSILON_BUDGET", "8")
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(app, ["privacy", *args], env={"COLUMNS": "200"})
        assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
        return result.output

    assert "churn: no DP run charged yet; budget epsilon 8 at delta 1e-05 (prv)" in cli(
        "report", "churn")
    ledger = IcebergPrivacyLedger.from_settings(Settings())
    runs = [Spend("retrain-1", 1.1, 0.01, 500, "retrain", "2"),
            Spend("update-1", 1.3, 0.004, 300, "update", "2")]
    for spend in runs:
        ledger.charge("churn", spend)
    acc = PRVAccountant()
    for spend in runs:
        for _ in range(spend.steps):
            acc.step(noise_multiplier=spend.noise_multiplier, sample_rate=spend.sample_rate)
    spent = acc.get_epsilon(1e-5)
    out = cli("report", "churn")
    assert "retrain-1" in out and "update-1" in out and "retrain" in out
    assert f"churn: epsilon {spent:.4g} of 8 spent at delta 1e-05 (prv), {8 - spent:.4g} left" \
        in out
