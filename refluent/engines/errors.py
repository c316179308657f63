"""Errors of the engines that run feature views."""

from __future__ import annotations

from collections.abc import Sequence

from refluent.errors import RefluentError


class EngineError(RefluentError):
    """An engine cannot be chosen or run."""


class UnknownEngineError(EngineError):
    """``processing.engine`` names no engine."""

    def __init__(self, name: str, known: Sequence[str], detail: str = "") -> None:
        self.name = name
        self.known = list(known)
        super().__init__(
            f"unknown engine {name!r}: known engines are {', '.join(self.known)}, or give a "
            f"class by dotted path (package.module:Class)" + (f" ({detail})" if detail else ""))
