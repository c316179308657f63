"""The privacy ledger of a lineage as a picture: the lineage's epsilon after each run over time,
against its budget.

:func:`ledger_figure` draws it (matplotlib, no display needed); :func:`save_report` writes it as
PNG, SVG or PDF by the path's suffix, or as an HTML page holding the SVG and the table of runs.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from refluent.errors import require
from refluent.privacy.ledger import LedgerEntry

FORMATS = (".png", ".svg", ".pdf", ".html")
_COLOURS = {"retrain": "#1f77b4", "update": "#ff7f0e"}


def ledger_figure(lineage: str, entries: Sequence[LedgerEntry], budget: float) -> Any:
    """A figure of ``entries`` (oldest first): a step line of the epsilon after each run, a
    marker per run coloured by its kind, and the budget as a dashed line."""
    figure_module: Any = require("matplotlib.figure", "privacy")
    fig = figure_module.Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    times = [e.at for e in entries]
    eps = [e.epsilon_total for e in entries]
    ax.step(times, eps, where="post", color="#444444", linewidth=1.5, label="epsilon spent")
    for kind, colour in _COLOURS.items():
        mine = [(e.at, e.epsilon_total) for e in entries if e.spend.kind == kind]
        if mine:
            ax.scatter(*zip(*mine, strict=True), color=colour, zorder=3, label=kind)
    ax.axhline(budget, color="#d62728", linestyle="--", label=f"budget {budget:g}")
    ax.set_ylim(0, max([budget, *eps]) * 1.1)
    ax.set_ylabel("epsilon (composed)")
    ax.set_title(f"Privacy ledger of {lineage}")
    ax.legend(loc="center left")
    fig.autofmt_xdate()
    return fig


def save_report(path: Path, lineage: str, entries: Sequence[LedgerEntry], budget: float,
                delta: float, accountant: str) -> Path:
    """Write the figure to ``path`` (by suffix: .png, .svg, .pdf, or .html with the table).

    Raises:
        ValueError: another suffix.
    """
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot write a plot to {path}: the suffix is not one of "
                         f"{', '.join(FORMATS)}")
    fig = ledger_figure(lineage, entries, budget)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix != ".html":
        fig.savefig(path)
        return path
    svg = io.StringIO()
    fig.savefig(svg, format="svg")
    rows = "".join(
        f"<tr><td>{e.seq}</td><td>{e.at:%Y-%m-%d %H:%M:%S}</td><td>{html.escape(e.spend.kind)}"
        f"</td><td>{html.escape(e.run_id)}</td><td>{html.escape(e.spend.model_version or '-')}"
        f"</td><td>{e.spend.noise_multiplier:.4g}</td><td>{e.spend.sample_rate:.4g}</td>"
        f"<td>{e.spend.steps}</td><td>{e.epsilon_total:.4g}</td></tr>" for e in entries)
    name = html.escape(lineage)
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>Privacy ledger of {name}"
        f"</title></head><body><h1>Privacy ledger of {name}</h1>"
        f"<p>budget epsilon {budget:g} at delta {delta:g} ({html.escape(accountant)})</p>"
        f"{svg.getvalue()}<table border='1'><tr><th>seq</th><th>charged (UTC)</th>"
        f"<th>kind</th><th>run</th><th>version</th><th>noise</th><th>sample rate</th>"
        f"<th>steps</th><th>epsilon after</th></tr>{rows}</table></body></html>",
        encoding="utf-8")
    return path


__all__ = ["FORMATS", "ledger_figure", "save_report"]
