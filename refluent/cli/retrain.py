"""``refluent retrain``: a DP-SGD retrain of a model, here or as a job on Kubernetes."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from refluent.config import Settings
    from refluent.jobs.runners import JobSpec


def retrain(
    model: Annotated[str, typer.Argument(help="Model to retrain (its lineage's budget pays).")],
    snapshot: Annotated[int | None, typer.Option(
        help="Snapshot of the predictions table to train at (default: the current one).")
    ] = None,
    examples_snapshot: Annotated[int | None, typer.Option(
        help="Snapshot of the examples table (default: the current one).")] = None,
    run_id: Annotated[str | None, typer.Option(
        help="Idempotency key: a run id already charged or registered runs once.")] = None,
    runner: Annotated[str | None, typer.Option(
        help="Where it runs: local (this process), k8s (a Job), kubeflow (a PyTorchJob); "
             "default jobs.runner.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="local: pin the training set and plan the run without training; "
                          "k8s, kubeflow: print the manifest.")] = False,
    report: Annotated[bool, typer.Option(
        "--report/--no-report", help="local: send the outcome (retrain.completed, "
                                     "retrain.failed, budget.exhausted) to the alerts topic."
    )] = False,
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="KEY=VALUE: a retrain setting for this run only (epochs=3, "
                        "target_epsilon=1.0, hidden=[32,16]); repeatable.")] = None,
) -> None:
    """Retrain MODEL with DP-SGD (Opacus) on its labelled predictions from the lake.

    The run is planned (noise for retrain.target_epsilon, Poisson sample rate, steps) and
    charged to the model's privacy ledger before its first step; a run that would take the
    lineage past privacy.epsilon_budget is refused. The network is exported to ONNX (int8 when
    the validation split allows) and registered as the retrain.alias challenger with its
    lineage and the epsilon composed by the accountant; the feedback loop shadow-scores it
    and promotes it when it wins.
    """
    from refluent.cli.app import console, settings
    from refluent.jobs.params import parse_param, with_params
    from refluent.jobs.runners import JobSpec, make_runner

    params = tuple(parse_param(p) for p in param or ())
    s = with_params(settings(), dict(params))
    name = runner or s.jobs.runner
    spec = JobSpec(model, run_id or uuid.uuid4().hex, snapshot, examples_snapshot, params)
    if name == "local":
        if dry_run:
            _plan(s, spec)
        else:
            _run(s, spec, report)
        return
    job_runner = make_runner(name, s)
    if dry_run:
        console.print(job_runner.render(spec), markup=False, highlight=False, end="")
        return
    launched = job_runner.launch(spec)
    console.print(f"submitted {launched.detail} (run {spec.run_id})")


def _plan(s: Settings, spec: JobSpec) -> None:
    from refluent.cli.app import console
    from refluent.jobs.dpsgd import plan_run
    from refluent.jobs.retrain import RetrainJob
    from refluent.privacy.ledger import Spend

    job = RetrainJob(s)
    ts = job.builder(spec.model).pin(spec.snapshot, spec.examples_snapshot)
    run = plan_run(ts.train_rows, job.dp_config())
    console.print(f"training set of {ts.model}: {ts.train_rows} rows to train, "
                  f"{ts.validation_rows} to validate (from {ts.cutoff:%Y-%m-%d %H:%M:%S}); "
                  f"features {', '.join(ts.features)}; snapshots predictions "
                  f"{ts.predictions_snapshot}, examples {ts.examples_snapshot}")
    console.print(f"DP-SGD plan: noise multiplier {run.noise_multiplier:.4g}, sample rate "
                  f"{run.sample_rate:.4g}, {run.steps} steps, clipping norm "
                  f"{s.retrain.max_grad_norm:g}")
    spent = job.ledger.spent(ts.model)
    after = job.ledger.plan(ts.model, Spend(spec.run_id, *run))
    console.print(f"{ts.model}: epsilon {spent:.4g} spent, {after:.4g} after this run, of "
                  f"{s.privacy.epsilon_budget:g} (delta {s.privacy.delta:g}, "
                  f"{s.privacy.accountant}); nothing trained (--dry-run)")


def _run(s: Settings, spec: JobSpec, report: bool) -> None:
    from refluent.cli.app import console
    from refluent.jobs import outcomes
    from refluent.jobs.retrain import RetrainJob
    from refluent.privacy.errors import BudgetExceededError

    job = RetrainJob(s, progress=True)
    try:
        out = job.run(spec.model, snapshot=spec.snapshot,
                      examples_snapshot=spec.examples_snapshot, run_id=spec.run_id)
    except BudgetExceededError as exc:
        if report:
            outcomes.report(s, outcomes.exhausted(spec.model, spec.run_id, exc))
        raise
    except Exception as exc:
        if report:
            outcomes.report(s, outcomes.failed(spec.model, spec.run_id,
                                               f"{type(exc).__name__}: {exc}"))
        raise
    v = out.version
    if report and not out.repeated:  # a repeated run was reported when it ran
        outcomes.report(s, outcomes.completed(v, spec.run_id, s.privacy.epsilon_budget))
    if out.repeated:
        console.print(f"run {spec.run_id} already made {v.name} v{v.version}; nothing ran "
                      "again")
        return
    lin = v.lineage
    console.print(
        f"{v.name} v{v.version} registered as {s.retrain.alias} (parent v{v.parent}): "
        f"{lin['rows']} rows, {lin['steps']} steps at noise {lin['noise_multiplier']:.4g}, "
        f"{'int8' if lin['int8'] else 'float'} ONNX on {lin['device']} in "
        f"{lin['train_s']:.1f} s")
    metrics = ", ".join(f"{k} {val:.4g}" for k, val in v.metrics.items())
    console.print(f"validation: {metrics}")
    console.print(f"privacy: epsilon {v.epsilon:.4g} of {s.privacy.epsilon_budget:g} for the "
                  f"{v.name} lineage (delta {s.privacy.delta:g}, {s.privacy.accountant})")
