"""Accumulators: what each aggregation kind accepts, how it folds a value into a window's cell,
and what the cell answers (the per-kind core :class:`~refluent.processors.aggregations.\
WindowedAggregator` runs).

Kinds: ``count`` (events, whatever their fields hold, like ``COUNT(*)``), ``sum``, ``mean``,
``min``, ``max`` (numbers), ``last`` (the value of the event with the greatest
``(event time, sequence)``) and ``approx_distinct`` (an Apache DataSketches HLL sketch, lg_k=12).
"""

from __future__ import annotations

import base64
import math
import numbers
from abc import ABC
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, Literal, get_args

from refluent.errors import require
from refluent.processors.errors import AggregationSpecError, AggregationValueError, StateError

AggregationKind = Literal["count", "sum", "mean", "min", "max", "last", "approx_distinct"]
KINDS: tuple[str, ...] = get_args(AggregationKind)
"""Every aggregation kind."""

HLL_LG_K = 12
"""log2 of the HLL sketch's register count: 4096 registers, about 1.6 % relative error."""

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


# --------------------------------------------------------------------------------------------
# Values: what each kind accepts
# --------------------------------------------------------------------------------------------


class ValueRejected(Exception):
    """A value a kind cannot take; turned into AggregationValueError by the caller, who knows the
    aggregation's name and field."""

    def __init__(self, expected: str) -> None:
        self.expected = expected


def _present(value: Any) -> Any:
    # count counts events, whatever their fields hold.
    return True


def _number(value: Any) -> Any:
    kind = type(value)
    if kind is int:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        raise ValueRejected("a finite number")
    if kind is bool:
        return int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, Decimal | numbers.Real):
        return _number(float(value))
    raise ValueRejected("a number")


def _json_value(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is bool:
        return value
    if kind is float or isinstance(value, Decimal | numbers.Real):
        return _number(value)
    if isinstance(value, list | tuple):
        try:
            return [_number(item) for item in value]
        except ValueRejected:
            pass
    raise ValueRejected("a string, a number, a bool or a list of numbers")


def _distinct_key(value: Any) -> Any:
    # Numbers count by value (1, 1.0 and True are one value), strings by text. The key is what
    # the sketch hashes and what sliding windows keep, so both count the same things.
    kind = type(value)
    if kind is str:
        return value
    if kind is not int:
        try:
            value = _number(value)
        except ValueRejected:
            raise ValueRejected("a string or a finite number") from None
        if type(value) is float:
            if not value.is_integer():
                return value
            value = int(value)
    return value if _I64_MIN <= value <= _I64_MAX else str(value)


# --------------------------------------------------------------------------------------------
# Cells: one aggregation's partial result for one window, as plain JSON data (None = empty)
# --------------------------------------------------------------------------------------------

Cell = Any


def _add_count(cell: Cell, value: Any, ts_ms: int, seq: int) -> Cell:
    return 1 if cell is None else cell + 1


def _add_sum(cell: Cell, value: Any, ts_ms: int, seq: int) -> Cell:
    return value if cell is None else cell + value


def _add_mean(cell: Cell, value: Any, ts_ms: int, seq: int) -> Cell:
    if cell is None:
        return [1, value]
    cell[0] += 1
    cell[1] += value
    return cell


def _add_min(cell: Cell, value: Any, ts_ms: int, seq: int) -> Cell:
    return value if cell is None or value < cell else cell


def _add_max(cell: Cell, value: Any, ts_ms: int, seq: int) -> Cell:
    return value if cell is None or value > cell else cell


def _add_last(cell: Cell, value: Any, ts_ms: int, seq: int) -> Cell:
    # Ties on (ts, seq) go to the later arrival.
    if cell is None or ts_ms > cell[0] or (ts_ms == cell[0] and seq >= cell[1]):
        return [ts_ms, seq, value]
    return cell


_datasketches: Any = None


def sketches() -> Any:
    global _datasketches
    if _datasketches is None:
        _datasketches = require("datasketches", "features")
    return _datasketches


def _new_sketch() -> Any:
    ds = _datasketches or sketches()
    return ds.hll_sketch(HLL_LG_K, ds.tgt_hll_type.HLL_4)


def _live_sketch(cell: Cell) -> Any:
    if type(cell) is str:
        try:
            return sketches().hll_sketch.deserialize(base64.b64decode(cell, validate=True))
        except (ValueError, RuntimeError) as exc:
            raise StateError(f"an approx_distinct sketch does not decode: {exc}") from exc
    return cell


def _add_distinct(cell: Cell, value: Any, ts_ms: int, seq: int) -> Cell:
    if cell is None:
        cell = _new_sketch()
    elif type(cell) is str:
        cell = _live_sketch(cell)
    cell.update(value)
    return cell


def _result_plain(cell: Cell) -> Any:
    return cell


def _result_count(cell: Cell) -> Any:
    return 0 if cell is None else cell


def _result_mean(cell: Cell) -> Any:
    return None if cell is None else cell[1] / cell[0]


def _result_last(cell: Cell) -> Any:
    return None if cell is None else cell[2]


def _result_distinct(cell: Cell) -> Any:
    return 0 if cell is None else round(_live_sketch(cell).get_estimate())


def _dump_plain(cell: Cell) -> Any:
    return cell


def dump_distinct(cell: Cell) -> Any:
    if cell is None or type(cell) is str:
        return cell
    return base64.b64encode(cell.serialize_compact()).decode("ascii")


# Bulk adds: one value into the cells [i0, i1) of a column, one per hopping window the event
# falls in. A comprehension costs a fraction of a call per cell.


def _bulk_count(col: list[Cell], i0: int, i1: int, value: Any, ts_ms: int, seq: int) -> None:
    col[i0:i1] = [1 if c is None else c + 1 for c in col[i0:i1]]


def _bulk_sum(col: list[Cell], i0: int, i1: int, value: Any, ts_ms: int, seq: int) -> None:
    col[i0:i1] = [value if c is None else c + value for c in col[i0:i1]]


def _bulk_mean(col: list[Cell], i0: int, i1: int, value: Any, ts_ms: int, seq: int) -> None:
    col[i0:i1] = [[1, value] if c is None else [c[0] + 1, c[1] + value] for c in col[i0:i1]]


def _bulk_min(col: list[Cell], i0: int, i1: int, value: Any, ts_ms: int, seq: int) -> None:
    col[i0:i1] = [value if c is None or value < c else c for c in col[i0:i1]]


def _bulk_max(col: list[Cell], i0: int, i1: int, value: Any, ts_ms: int, seq: int) -> None:
    col[i0:i1] = [value if c is None or value > c else c for c in col[i0:i1]]


def _bulk_last(col: list[Cell], i0: int, i1: int, value: Any, ts_ms: int, seq: int) -> None:
    # One list shared by the windows it wins: last cells are replaced, never changed in place.
    new = [ts_ms, seq, value]
    col[i0:i1] = [
        new if c is None or ts_ms > c[0] or (ts_ms == c[0] and seq >= c[1]) else c
        for c in col[i0:i1]
    ]


def _bulk_distinct(col: list[Cell], i0: int, i1: int, value: Any, ts_ms: int, seq: int) -> None:
    for i in range(i0, i1):
        cell = col[i]
        if cell is None:
            col[i] = cell = _new_sketch()
        elif type(cell) is str:
            col[i] = cell = _live_sketch(cell)
        cell.update(value)


@dataclass(frozen=True, slots=True)
class KindOps:
    """How one kind checks values, adds them to a cell, reads a cell and stores it."""

    coerce: Callable[[Any], Any]
    add: Callable[[Cell, Any, int, int], Cell]
    bulk: Callable[[list[Cell], int, int, Any, int, int], None]
    result: Callable[[Cell], Any]
    dump: Callable[[Cell], Any]
    empty: Any
    needs_field: bool = True


OPS: dict[str, KindOps] = {
    "count": KindOps(_present, _add_count, _bulk_count, _result_count, _dump_plain, 0,
                  needs_field=False),
    "sum": KindOps(_number, _add_sum, _bulk_sum, _result_count, _dump_plain, 0),
    "mean": KindOps(_number, _add_mean, _bulk_mean, _result_mean, _dump_plain, None),
    "min": KindOps(_number, _add_min, _bulk_min, _result_plain, _dump_plain, None),
    "max": KindOps(_number, _add_max, _bulk_max, _result_plain, _dump_plain, None),
    "last": KindOps(_json_value, _add_last, _bulk_last, _result_last, _dump_plain, None),
    "approx_distinct": KindOps(_distinct_key, _add_distinct, _bulk_distinct, _result_distinct,
                            dump_distinct, 0),
}


# --------------------------------------------------------------------------------------------
# Accumulators: one window's aggregate as an object
# --------------------------------------------------------------------------------------------


class Accumulator(ABC):
    """One aggregate over a stream of values, with a JSON-able state.

    Args:
        name: Aggregation name, for error messages (default: the kind).
        field: Field the values come from, for error messages.

    Raises:
        AggregationValueError: From :meth:`add`, for a value the kind cannot take.

    Examples:
        >>> import json
        >>> acc = make_accumulator("mean")
        >>> for v in (1, 2, None, 6):
        ...     acc.add(v)
        >>> acc.result()
        3.0
        >>> MeanAccumulator.from_state(json.loads(json.dumps(acc.to_state()))).result()
        3.0
    """

    __slots__ = ("_cell", "field", "name")
    kind: ClassVar[str]
    _ops: ClassVar[KindOps]

    def __init__(self, name: str | None = None, field: str | None = None) -> None:
        self.name = name or self.kind
        self.field = field
        self._cell: Cell = None

    def add(self, value: Any, ts_ms: int = 0, seq: int = 0) -> None:
        """Add one event's value (skipped when None, except by ``count``).

        ``ts_ms`` and ``seq`` order events for ``last``; the other kinds ignore them.
        """
        if value is None and self._ops.needs_field:
            return
        try:
            value = self._ops.coerce(value)
        except ValueRejected as exc:
            raise AggregationValueError(
                self.name, self.kind, self.field, value, exc.expected
            ) from None
        self._cell = self._ops.add(self._cell, value, ts_ms, seq)

    def result(self) -> Any:
        """The aggregate so far (the kind's empty value before any value)."""
        return self._ops.result(self._cell)

    def to_state(self) -> Any:
        """The state as plain JSON data."""
        return self._ops.dump(self._cell)

    @classmethod
    def from_state(
        cls, state: Any, name: str | None = None, field: str | None = None
    ) -> Accumulator:
        """An accumulator carrying on from :meth:`to_state`'s output (after a JSON round trip)."""
        acc = cls(name, field)
        acc._cell = state
        return acc


class CountAccumulator(Accumulator):
    """Number of events (values are not looked at).

    Examples:
        >>> acc = CountAccumulator()
        >>> acc.add(None); acc.add("x"); acc.result()
        2
    """

    __slots__ = ()
    kind = "count"
    _ops = OPS["count"]


class SumAccumulator(Accumulator):
    """Sum of numbers (an int while every value is an int; bools count as 0 and 1).

    Examples:
        >>> acc = SumAccumulator()
        >>> acc.add(2); acc.add(True); acc.result()
        3
    """

    __slots__ = ()
    kind = "sum"
    _ops = OPS["sum"]


class MeanAccumulator(Accumulator):
    """Arithmetic mean of numbers."""

    __slots__ = ()
    kind = "mean"
    _ops = OPS["mean"]


class MinAccumulator(Accumulator):
    """Smallest number."""

    __slots__ = ()
    kind = "min"
    _ops = OPS["min"]


class MaxAccumulator(Accumulator):
    """Largest number."""

    __slots__ = ()
    kind = "max"
    _ops = OPS["max"]


class LastAccumulator(Accumulator):
    """Value of the event with the greatest ``(ts_ms, seq)``, whatever the arrival order.

    Examples:
        >>> acc = LastAccumulator()
        >>> acc.add("b", ts_ms=20, seq=1); acc.add("a", ts_ms=10, seq=2); acc.result()
        'b'
    """

    __slots__ = ()
    kind = "last"
    _ops = OPS["last"]


class ApproxDistinctAccumulator(Accumulator):
    """Approximate number of distinct values: an HLL sketch (Apache DataSketches, lg_k=12).

    Strings count by text and numbers by value (``1``, ``1.0`` and ``True`` are one value). The
    state is the compact sketch in base64.

    Raises:
        MissingExtraError: ``datasketches`` is not installed (``refluent[features]``).

    Examples:
        >>> acc = ApproxDistinctAccumulator()
        >>> for v in ("a", "b", "a", 1, 1.0):
        ...     acc.add(v)
        >>> acc.result()
        3
    """

    __slots__ = ()
    kind = "approx_distinct"
    _ops = OPS["approx_distinct"]

    def __init__(self, name: str | None = None, field: str | None = None) -> None:
        sketches()
        super().__init__(name, field)


_ACCUMULATORS: dict[str, type[Accumulator]] = {
    cls.kind: cls
    for cls in (
        CountAccumulator,
        SumAccumulator,
        MeanAccumulator,
        MinAccumulator,
        MaxAccumulator,
        LastAccumulator,
        ApproxDistinctAccumulator,
    )
}


def make_accumulator(kind: str, name: str | None = None, field: str | None = None) -> Accumulator:
    """A fresh accumulator of ``kind`` (one of :data:`KINDS`).

    Raises:
        AggregationSpecError: An unknown kind.
    """
    try:
        cls = _ACCUMULATORS[kind]
    except KeyError:
        raise AggregationSpecError(
            name or str(kind), f"unknown kind {kind!r}; known: {', '.join(KINDS)}"
        ) from None
    return cls(name, field)
