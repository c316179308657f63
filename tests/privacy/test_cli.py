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
from refluent.privacy.plot import ledger_figure

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
    # The plot draws the ledger's own numbers, and the page holds the runs.
    page = tmp_path / "ledger.html"
    cli("report", "churn", "--plot", str(page))
    text = page.read_text()
    assert "<svg" in text and "retrain-1" in text and "update-1" in text
    png = tmp_path / "ledger.png"
    cli("report", "churn", "--plot", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    entries = ledger.entries("churn")
    fig = ledger_figure("churn", entries, 8.0)
    line = fig.axes[0].lines[0]
    assert list(line.get_ydata()) == pytest.approx([e.epsilon_total for e in entries])
    assert entries[-1].epsilon_total == pytest.approx(spent)
    assert fig.axes[0].lines[1].get_ydata()[0] == 8.0  # the budget
    assert f"churn: epsilon {spent:.4g} of 8 spent at delta 1e-05 (prv), {8 - spent:.4g} left" \
        in out
