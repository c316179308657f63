"""Where a retraining job runs: the :class:`Runner` interface and the job it is given.

A job is one ``refluent retrain`` command (:func:`retrain_args`) for one :class:`JobSpec`. The
job itself charges the ledger, registers its version and reports its outcome; a runner only
starts it where it should run: a process on this machine (:mod:`~refluent.jobs.runners.local`),
a Kubernetes ``Job`` (:mod:`~refluent.jobs.runners.k8s`) or a Kubeflow ``PyTorchJob``
(:mod:`~refluent.jobs.runners.kubeflow`). Starting the same spec twice runs it at most once:
the run id names the Kubernetes object, and a run id already charged or registered does
nothing again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from refluent.jobs.params import param_arg

if TYPE_CHECKING:
    from refluent.config import Settings
    from refluent.streams.contracts import Scalar


@dataclass(frozen=True)
class JobSpec:
    """One retraining job."""

    model: str
    run_id: str
    """Idempotency key: the ledger's and the registry's run id, and the job's name."""
    snapshot: int | None = None
    """Snapshot of the predictions table to train at (default: the current one)."""
    examples_snapshot: int | None = None
    """Snapshot of the examples table (default: the current one)."""
    params: tuple[tuple[str, Scalar], ...] = ()
    """Overrides of ``retrain.*`` for this run (:mod:`refluent.jobs.params`)."""


def retrain_args(spec: JobSpec) -> list[str]:
    """The arguments of ``refluent retrain`` that run ``spec`` where the job runs (and report
    its outcome to ``alerts``).

    Examples:
        >>> " ".join(retrain_args(JobSpec("churn", "r1", snapshot=42, params=(("epochs", 3),))))
        'retrain churn --run-id r1 --runner local --report --snapshot 42 --param epochs=3'
    """
    args = ["retrain", spec.model, "--run-id", spec.run_id, "--runner", "local", "--report"]
    if spec.snapshot is not None:
        args += ["--snapshot", str(spec.snapshot)]
    if spec.examples_snapshot is not None:
        args += ["--examples-snapshot", str(spec.examples_snapshot)]
    for key, value in spec.params:
        args += ["--param", param_arg(key, value)]
    return args


@dataclass(frozen=True)
class Launched:
    """What starting a job did."""

    runner: str
    job: str
    """The job's name (Kubernetes) or process id (local)."""
    finished: bool
    """True when the runner waited for the job to end (local)."""
    ok: bool | None = None
    """Whether it succeeded, when finished."""
    detail: str = ""
    """Why it failed (the end of the job's error output), or where it was submitted."""
    exit_code: int | None = None
    """The job's exit status, when finished (None when it was ended for taking too long)."""


class Runner(ABC):
    """Starts retraining jobs somewhere."""

    name: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abstractmethod
    def render(self, spec: JobSpec) -> str:
        """What :meth:`launch` would start, as text (``--dry-run``)."""

    @abstractmethod
    def launch(self, spec: JobSpec) -> Launched:
        """Start the job; a job of the same run id already started is not started again."""
