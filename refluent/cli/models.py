"""``refluent models``: register, list, inspect, promote and roll back model versions.

The registry lives in the lake named by the same settings as the library (``REFLUENT_LAKE__*``,
then ``refluent.toml``), else the embedded catalog that ``refluent up`` created; artifacts go
under ``REFLUENT_REGISTRY__ARTIFACT_ROOT`` (default ``<warehouse>/models``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from refluent.registry.base import ModelVersion
    from refluent.registry.store import IcebergModelRegistry

console = Console()

models_app = typer.Typer(help="Register, list, inspect, promote and roll back models.",
                         no_args_is_help=True)

AliasOption = Annotated[str, typer.Option("--alias", "-a", help="The alias to move.")]
_KEY_METRICS = 3


def _registry() -> IcebergModelRegistry:
    from refluent.cli.app import settings
    from refluent.registry.store import IcebergModelRegistry

    return IcebergModelRegistry.from_settings(settings())


def _when(v: ModelVersion) -> str:
    return v.created_at.strftime("%Y-%m-%d %H:%M:%S")


def _metrics_text(metrics: dict[str, float], limit: int = _KEY_METRICS) -> str:
    """The first metrics, compactly.

    Examples:
        >>> _metrics_text({"auc": 0.91234, "log_loss": 0.3, "n": 1000.0, "mae": 1.0})
        'auc=0.9123, log_loss=0.3, n=1000 (+1)'
    """
    parts = [f"{k}={v:.4g}" for k, v in list(metrics.items())[:limit]]
    more = f" (+{len(metrics) - limit})" if len(metrics) > limit else ""
    return ", ".join(parts) + more


def _json_text(value: Any) -> Text:
    # Text, not str: a value such as "[bold]" is data, not Rich markup.
    return Text(orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode())


@models_app.command("list")
def list_models(
    name: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
) -> None:
    """List every version: kind, task, aliases, creation time, epsilon and key metrics."""
    registry = _registry()
    versions = registry.versions(name)
    held: dict[tuple[str, int], list[str]] = {}
    for model in sorted({v.name for v in versions}):
        for alias, version in registry.aliases(model).items():
            held.setdefault((model, version), []).append(alias)
    out = Table(title="Registered models")
    for col in ("name", "version", "kind", "task", "aliases", "created (UTC)", "epsilon",
                "metrics"):
        out.add_column(col, justify="right" if col in ("version", "epsilon") else "left")
    for v in versions:
        out.add_row(Text(v.name), str(v.version), v.kind, v.task,
                    Text(", ".join(held.get((v.name, v.version), [])) or "-"), _when(v),
                    "-" if v.epsilon is None else f"{v.epsilon:.3g}",
                    Text(_metrics_text(v.metrics) or "-"))
    if not versions:
        console.print("no models registered yet (refluent models register NAME FILE ...)")
        return
    console.print(out)


@models_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int | None, typer.Option(
        "--version", "-v", help="Version to show (default: the champion, else the latest).")
    ] = None,
) -> None:
    """Show one version: lineage, metrics, aliases and checkpoints; and the alias history."""
    registry = _registry()
    aliases = registry.aliases(name)
    if version is None:
        version = aliases.get("champion", registry.versions(name)[-1].version)
    v = registry.get(name, version)
    held = [a for a, held_by in aliases.items() if held_by == v.version]
    details = Table(title=f"{name} version {v.version}", show_header=False)
    details.add_column("field", style="bold")
    details.add_column("value")
    for label, value in (
        ("kind", Text(v.kind)), ("task", Text(v.task)),
        ("features", Text(", ".join(v.feature_names) or "any")),
        ("aliases", Text(", ".join(held) or "-")),
        ("parent", Text("-" if v.parent is None else str(v.parent))),
        ("created (UTC)", Text(_when(v))),
        ("epsilon", Text("-" if v.epsilon is None else f"{v.epsilon:.4g}")),
        ("metrics", _json_text(v.metrics)), ("lineage", _json_text(v.lineage)),
        ("artifact", Text(v.artifact_uri)), ("description", Text(v.description or "-")),
    ):
        details.add_row(label, value)
    console.print(details)
    checkpoints = registry.checkpoints(name, v.version)
    if checkpoints:
        cps = Table(title=f"Checkpoints of version {v.version}")
        for col in ("seq", "examples", "offsets", "created (UTC)"):
            cps.add_column(col, justify="right" if col in ("seq", "examples") else "left")
        for cp in checkpoints[-10:]:
            cps.add_row(str(cp.seq), str(cp.examples), _json_text(cp.offsets),
                        cp.created_at.strftime("%Y-%m-%d %H:%M:%S"))
        if len(checkpoints) > 10:
            cps.caption = f"latest 10 of {len(checkpoints)}"
        console.print(cps)
    else:
        console.print(f"no checkpoints of version {v.version}")
    events = registry.alias_events(name)
    if events:
        history = Table(title=f"Alias history of {name}")
        for col in ("alias", "seq", "event", "version", "previous", "reason", "at (UTC)"):
            history.add_column(col)
        for e in events:
            history.add_row(Text(e.alias), str(e.seq), e.event, str(e.version),
                            "-" if e.previous_version is None else str(e.previous_version),
                            Text(e.reason or "-"), e.at.strftime("%Y-%m-%d %H:%M:%S"))
        console.print(history)


@models_app.command("promote")
def promote(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Argument(help="Version to promote.")],
    alias: AliasOption = "champion",
    reason: Annotated[str, typer.Option(help="Why (kept in the alias history).")] = "",
) -> None:
    """Point an alias (default champion) at a version, atomically."""
    registry = _registry()
    before = registry.aliases(name).get(alias)
    registry.promote(name, version, alias, reason=reason)
    if before == version:
        console.print(f"{name}: {alias} already is version {version}")
    else:
        console.print(f"[green]✓[/] {name}: {alias} -> version {version}"
                      + (f" (was {before})" if before is not None else ""), highlight=False)


@models_app.command("rollback")
def rollback(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: AliasOption = "champion",
) -> None:
    """Point an alias back at the version that held it before."""
    registry = _registry()
    before = registry.aliases(name).get(alias)
    back = registry.rollback(name, alias)
    console.print(f"[green]✓[/] {name}: {alias} -> version {back.version} (was {before})",
                  highlight=False)


@models_app.command("prune")
def prune(
    name: Annotated[str, typer.Argument(help="Model name.")],
    keep: Annotated[int, typer.Option(min=1, help="Newest checkpoints kept per version.")] = 10,
    version: Annotated[int | None, typer.Option(help="Only this version.")] = None,
) -> None:
    """Delete all but the newest checkpoints of each version (rows, then artifacts)."""
    pruned = _registry().prune_checkpoints(name, keep, version=version)
    if not pruned:
        console.print(f"{name}: nothing to prune (at most {keep} checkpoint(s) per version)")
        return
    by_version: dict[int, list[int]] = {}
    for cp in pruned:
        by_version.setdefault(cp.version, []).append(cp.seq)
    for v, seqs in sorted(by_version.items()):
        console.print(f"[green]✓[/] {name} v{v}: {len(seqs)} checkpoint(s) deleted "
                      f"({seqs[0]}..{seqs[-1]}), the newest {keep} kept", highlight=False)


@models_app.command("gc")
def gc_artifacts(
    older_than_hours: Annotated[float, typer.Option(
        min=0, help="Only files last modified this long ago (a registration may be writing "
                    "a younger one).")] = 24.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List, delete nothing.")] = False,
) -> None:
    """Delete artifact files no model version or checkpoint points to."""
    from datetime import timedelta

    paths = _registry().delete_orphan_artifacts(timedelta(hours=older_than_hours),
                                                dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    for path in paths:
        console.print(f"  {path}", highlight=False)
    console.print(f"[green]✓[/] {verb} {len(paths)} unreferenced artifact file(s)")


def _parse_metrics(items: list[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        try:
            if not sep or not key:
                raise ValueError
            out[key] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{item!r} is not NAME=NUMBER",
                                     param_hint="--metric") from None
    return out


@models_app.command("register")
def register(
    name: Annotated[str, typer.Argument(help="Model name.")],
    file: Annotated[Path, typer.Argument(
        help="A pickled River estimator (--kind river) or an .onnx graph (--kind onnx).",
        exists=True, dir_okay=False, readable=True)],
    kind: Annotated[str, typer.Option(
        "--kind", "-k", help="river, onnx, or the dotted path of a ServableModel class.")],
    task: Annotated[str | None, typer.Option(
        help="classification or regression (default: read off the model).")] = None,
    features: Annotated[str | None, typer.Option(
        help="Comma-separated input names in order (ONNX: required unless the graph's "
             "metadata has them).")] = None,
    alias: Annotated[str | None, typer.Option(
        "--alias", "-a", help="Promote the new version to this alias.")] = None,
    parent: Annotated[int | None, typer.Option(help="Version it was derived from.")] = None,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", "-m", help="NAME=NUMBER (repeatable).")] = None,
    epsilon: Annotated[float | None, typer.Option(
        min=0, help="Differential-privacy epsilon its training spent.")] = None,
) -> None:
    """Register FILE as the next version of NAME.

    A River artifact is a pickle: register and serve only files you trust.
    """
    from refluent.models.base import TASKS
    from refluent.models.kinds import KINDS, is_known_kind, load_model

    if not is_known_kind(kind):
        raise typer.BadParameter(f"{kind!r} is not one of {', '.join(KINDS)} (nor the dotted "
                                 "path of a ServableModel class)", param_hint="--kind")
    if task is not None and task not in TASKS:
        raise typer.BadParameter(f"{task!r} is not one of {', '.join(TASKS)}",
                                 param_hint="--task")
    meta: dict[str, Any] = {"name": f"{name} ({file.name})"}
    if task is not None:
        meta["task"] = task
    if features:
        meta["feature_names"] = [f.strip() for f in features.split(",") if f.strip()]
    metrics = _parse_metrics(metric)
    model = load_model(kind, file.read_bytes(), meta)
    registered = _registry().register(name, model, parent=parent, metrics=metrics,
                                      epsilon=epsilon, description=description, alias=alias,
                                      lineage={"source_file": file.name})
    console.print(f"[green]✓[/] registered {name} version {registered.version} "
                  f"({registered.kind} {registered.task}, "
                  f"{len(registered.feature_names) or 'any'} features)"
                  + (f", {alias} -> {registered.version}" if alias else ""), highlight=False)
