"""Errors of feature views: window and aggregation specs, rejected values, unreadable state."""

from __future__ import annotations

from refluent.errors import RefluentError


class FeatureViewError(RefluentError):
    """Root of the errors raised by feature views and their windowed aggregations."""


class WindowSpecError(FeatureViewError):
    """A window is declared with a size, hop or grace that cannot work."""

    def __init__(self, spec: object, problem: str) -> None:
        self.spec = spec
        self.problem = problem
        super().__init__(f"window {spec}: {problem}")


class AggregationSpecError(FeatureViewError):
    """An aggregation is declared wrongly (unknown kind, missing field, repeated name)."""

    def __init__(self, aggregation: str, problem: str) -> None:
        self.aggregation = aggregation
        self.problem = problem
        super().__init__(f"aggregation {aggregation!r}: {problem}")


class AggregationValueError(FeatureViewError):
    """A record's value cannot be aggregated (a string summed, a dict counted distinct).

    The record is bad data, not a bug: the engine sends it to the dead-letter topic with this
    error's class and message, and the entity's state is left untouched.
    """

    def __init__(
        self, aggregation: str, kind: str, field: str | None, value: object, expected: str
    ) -> None:
        self.aggregation = aggregation
        self.kind = kind
        self.field = field
        self.value = value
        self.expected = expected
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(
            f"aggregation {aggregation!r} ({kind} of field {field!r}) cannot take a "
            f"{type(value).__name__} value {shown}: it needs {expected}"
        )


class EventTimeError(FeatureViewError):
    """An event time is not an integer number of epoch milliseconds."""

    def __init__(self, ts_ms: object) -> None:
        self.ts_ms = ts_ms
        super().__init__(
            f"event time must be an int of epoch milliseconds, got {type(ts_ms).__name__} "
            f"{ts_ms!r}"
        )


class StateError(FeatureViewError):
    """An entity's stored state does not have the shape this view reads."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"feature view state: {problem}")


class ViewSpecError(FeatureViewError):
    """A feature view or entity-state view is declared wrongly, or its module cannot load."""

    def __init__(self, view: str, problem: str) -> None:
        self.view = view
        self.problem = problem
        super().__init__(f"view {view}: {problem}")
