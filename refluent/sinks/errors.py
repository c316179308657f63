"""Errors of the sinks."""

from __future__ import annotations

from refluent.errors import RefluentError


class SinkError(RefluentError):
    """A sink could not write or flush; the batch is not committed and will be replayed."""

    def __init__(self, sink: str, detail: str) -> None:
        self.sink = sink
        self.detail = detail
        super().__init__(f"sink {sink}: {detail}")
