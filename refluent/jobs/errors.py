"""Errors of the jobs."""

from __future__ import annotations

from refluent.errors import RefluentError


class JobError(RefluentError):
    """Root of the job errors."""


class TrainingSetError(JobError):
    """A training set that cannot be built (no labelled rows, no such feature, ...)."""

    def __init__(self, model: str, problem: str) -> None:
        super().__init__(f"training set of {model!r}: {problem}")
