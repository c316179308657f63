"""Runners of retraining jobs by name: ``local``, ``k8s``, ``kubeflow``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from refluent.jobs.runners.base import JobSpec, Launched, Runner

if TYPE_CHECKING:
    from refluent.config import Settings

RUNNERS = ("local", "k8s", "kubeflow")


def make_runner(name: str, settings: Settings) -> Runner:
    """The runner ``name`` with ``settings``.

    Raises:
        ValueError: an unknown runner.
    """
    if name == "local":
        from refluent.jobs.runners.local import LocalRunner

        return LocalRunner(settings)
    if name == "k8s":
        from refluent.jobs.runners.k8s import KubernetesJobRunner

        return KubernetesJobRunner(settings)
    if name == "kubeflow":
        from refluent.jobs.runners.kubeflow import KubeflowRunner

        return KubeflowRunner(settings)
    raise ValueError(f"unknown job runner {name!r}; known: {', '.join(RUNNERS)}")


__all__ = ["RUNNERS", "JobSpec", "Launched", "Runner", "make_runner"]
