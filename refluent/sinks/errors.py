"""Errors of the sinks."""

from __future__ import annotations

from collections.abc import Sequence

from refluent.errors import RefluentError


class SinkError(RefluentError):
    """A sink could not write or flush; the batch is not committed and will be replayed."""

    def __init__(self, sink: str, detail: str) -> None:
        self.sink = sink
        self.detail = detail
        super().__init__(f"sink {sink}: {detail}")


class SinkOffsetsAheadError(SinkError):
    """A sink keeps offsets past the end of its topic: the topic was deleted and created again
    (or truncated), and resuming would silently skip the new records up to the old offsets."""

    def __init__(self, sink: str, ahead: list[tuple[str, int, int, int]]) -> None:
        self.ahead = ahead
        shown = ", ".join(f"{t}[{p}] stored {o} > end {e}" for t, p, o, e in ahead[:5])
        more = f" and {len(ahead) - 5} more" if len(ahead) > 5 else ""
        super().__init__(sink, f"offsets past the end of the topic: {shown}{more}. The topic "
                         "was recreated or truncated; to read it from its beginning run "
                         f"`refluent lake reset-offsets {sink.rsplit('.', 1)[-1]}` (rows "
                         "already in the table stay)")


class UnknownSinkError(SinkError):
    """No sink class answers to a destination: its URL scheme is not registered, or the dotted
    path of a user's class does not import or names no sink class."""

    def __init__(self, destination: str, *, scheme: str | None = None,
                 known: Sequence[str] = (), detail: str | None = None) -> None:
        self.destination = destination
        self.scheme = scheme
        self.known = list(known)
        if detail is None:
            detail = (f"unknown scheme {scheme!r} (known: {', '.join(self.known) or 'none'}; "
                      "or the dotted path of your own Sink subclass, such as mypkg.sinks.MySink)")
        super().__init__(destination, detail)
