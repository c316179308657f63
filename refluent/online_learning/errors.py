"""Errors of the online learners."""

from __future__ import annotations

from refluent.errors import RefluentError


class LearningError(RefluentError):
    """Root of the errors in :mod:`refluent.online_learning`."""


class CheckpointStateError(LearningError):
    """A checkpoint's learner state cannot be read back (written by something else, or
    damaged); names the model version and checkpoint."""

    def __init__(self, model: str, version: int, seq: int, detail: str) -> None:
        self.model = model
        self.version = version
        self.seq = seq
        super().__init__(f"checkpoint {seq} of model {model!r} version {version}: the learner "
                         f"state cannot be read: {detail}")


class NoChampionError(LearningError):
    """A model has no champion to learn with."""

    def __init__(self, model: str, aliases: dict[str, int]) -> None:
        self.model = model
        held = ", ".join(f"{a}={v}" for a, v in sorted(aliases.items())) or "none"
        super().__init__(f"model {model!r} has no champion to learn with (aliases: {held}); "
                         "promote a version with `refluent models promote`")
