"""Errors of the monitors."""

from __future__ import annotations

from refluent.errors import RefluentError


class MonitorError(RefluentError):
    """Root of the monitoring errors."""


class UnknownDetectorError(MonitorError):
    """A detector name that does not exist."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        self.name = name
        super().__init__(f"unknown drift detector {name!r}; known: {', '.join(known)}")
