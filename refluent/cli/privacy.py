"""``refluent privacy``: the privacy ledger of a model lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()

privacy_app = typer.Typer(help="Privacy budgets of model lineages.", no_args_is_help=True)


@privacy_app.command("report")
def report(
    model: Annotated[str, typer.Argument(help="Model lineage (the model's name).")],
    plot: Annotated[Path | None, typer.Option(
        help="Also draw the spend over time to this file (.png, .svg, .pdf, or .html with "
             "the table).")] = None,
) -> None:
    """Every DP run charged to a lineage, its epsilon after each (composed by the accountant
    over the history, not summed), and what is left of the budget."""
    from refluent.cli.app import settings
    from refluent.privacy.iceberg import IcebergPrivacyLedger

    s = settings()
    ledger = IcebergPrivacyLedger.from_settings(s)
    entries = ledger.entries(model)
    p = s.privacy
    if not entries:
        console.print(f"{model}: no DP run charged yet; budget epsilon {p.epsilon_budget:g} "
                      f"at delta {p.delta:g} ({p.accountant})")
        return
    out = Table(title=f"Privacy ledger of {model}")
    for col in ("seq", "charged (UTC)", "kind", "run", "version", "noise", "sample rate",
                "steps", "epsilon after"):
        out.add_column(col, justify="left" if col in ("charged (UTC)", "kind", "run") else
                       "right")
    for e in entries:
        sp = e.spend
        out.add_row(str(e.seq), e.at.strftime("%Y-%m-%d %H:%M:%S"), sp.kind, sp.run_id,
                    sp.model_version or "-", f"{sp.noise_multiplier:.3g}",
                    f"{sp.sample_rate:.3g}", str(sp.steps), f"{e.epsilon_total:.4g}")
    console.print(out)
    spent = ledger.spent(model)
    console.print(f"{model}: epsilon {spent:.4g} of {p.epsilon_budget:g} spent at delta "
                  f"{p.delta:g} ({p.accountant}), {max(p.epsilon_budget - spent, 0):.4g} left")
    if plot is not None:
        from refluent.privacy.plot import save_report

        written = save_report(plot, model, entries, p.epsilon_budget, p.delta, p.accountant)
        console.print(f"plot written to {written}")
