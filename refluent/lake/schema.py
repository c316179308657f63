"""Schema evolution of lake tables: values turned into column values, the type of a new column,
and what a batch of rows needs from the table's schema.

A row's fields beyond the table's columns become new columns (:func:`infer_type`) in the same
commit as the rows. A value that does not fit its column widens the column where Iceberg allows
it (int to long, float to double); otherwise the value is written, as text, to the column
``<name>__string`` (:data:`CONFLICT_SUFFIX`) and the typed column gets null, so a batch never fails
because of its schema.
"""

from __future__ import annotations

import base64
import enum
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from refluent.errors import MissingExtraError

try:
    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.types import (
        BooleanType,
        DateType,
        DecimalType,
        DoubleType,
        FloatType,
        IcebergType,
        IntegerType,
        ListType,
        LongType,
        NestedField,
        StringType,
        TimestampType,
        TimestamptzType,
    )
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise MissingExtraError(exc.name or "pyiceberg", "iceberg") from exc

CONFLICT_SUFFIX = "__string"
"""Suffix of the text column that receives values which do not fit their typed column."""

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


SKIP = object()
"""What :func:`flat_value` answers, with ``scalars_only``, for a value that is not a scalar."""


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)


def to_json(value: Any) -> str:
    """Compact JSON of any value (Decimals as strings, bytes as base64).

    Examples:
        >>> from decimal import Decimal
        >>> to_json({"price": Decimal("9.90"), "tags": ["a"]})
        '{"price":"9.90","tags":["a"]}'
    """
    if hasattr(value, "model_dump_json"):
        return str(value.model_dump_json())
    opts = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    return orjson.dumps(value, default=_json_default, option=opts).decode()


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def flat_value(value: Any, scalars_only: bool = False) -> Any:
    """The column value of a field: scalars as they are, a list of numbers as a vector, anything
    else as JSON text (or skipped, with ``scalars_only``). Decimals become exact text."""
    if value is None or isinstance(value, bool | int | float | str | date):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return flat_value(value.value, scalars_only)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dtime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if scalars_only:
        return SKIP
    if isinstance(value, list | tuple) and all(_is_number(v) for v in value):
        return [float(v) for v in value]
    return to_json(value)


def column_name(name: str, taken: Iterable[str]) -> str:
    """A column name for a field: dots (Iceberg's path separator) become ``_``, and a name
    already used by a fixed column gets a trailing ``_``.

    Examples:
        >>> column_name("op", {"op", "key"}), column_name("a.b", ())
        ('op_', 'a_b')
    """
    name = name.replace(".", "_") or "_"
    taken = set(taken)
    while name in taken:
        name += "_"
    return name


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int" if _INT64[0] <= v <= _INT64[1] else "other"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, datetime):
        return "ts" if v.tzinfo is None else "tstz"
    if isinstance(v, date):
        return "date"
    if isinstance(v, list) and all(_is_number(x) for x in v):
        return "vector"
    return "other"


_ELEMENT_IDS = iter(range(1_000_000, 2_000_000_000))


def infer_type(values: Iterable[Any]) -> IcebergType | None:
    """The Iceberg type for a new column holding ``values``; None when all are null.

    Examples:
        >>> str(infer_type([1, None, 2])), str(infer_type([1, 2.5])), str(infer_type([1, "a"]))
        ('long', 'double', 'string')
        >>> infer_type([None]) is None
        True
    """
    kinds = {_kind(v) for v in values if v is not None}
    if not kinds:
        return None
    if kinds == {"bool"}:
        return BooleanType()
    if kinds == {"int"}:
        return LongType()
    if kinds <= {"int", "float"}:
        return DoubleType()
    if kinds == {"tstz"}:
        return TimestamptzType()
    if kinds == {"ts"}:
        return TimestampType()
    if kinds == {"date"}:
        return DateType()
    if kinds == {"vector"}:
        return ListType(element_id=next(_ELEMENT_IDS), element_type=DoubleType(),
                        element_required=False)
    return StringType()


def as_text(v: Any) -> str:
    """A value as text for a string column.

    Examples:
        >>> as_text(True), as_text(2.5), as_text([1.0, 2.0])
        ('true', '2.5', '[1.0,2.0]')
    """
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float | Decimal):
        return str(v)
    if isinstance(v, datetime | date):
        return v.isoformat()
    return to_json(v)


@dataclass
class _Fit:
    values: list[Any]
    rejected: dict[int, str] = field(default_factory=dict)
    promote_to: IcebergType | None = None


def fit_values(field_type: IcebergType, values: Sequence[Any]) -> _Fit:
    """Convert ``values`` for a column of ``field_type``: what fits, a wider type when Iceberg
    allows the widening (int to long, float to double), and the rows whose value does not fit
    (as text, for the conflict column)."""
    out: list[Any] = [None] * len(values)
    fit = _Fit(out)
    t = field_type
    if isinstance(t, StringType):
        for i, v in enumerate(values):
            if v is not None:
                out[i] = v if type(v) is str else as_text(v)
        return fit
    check = _check_for(t)
    rejected = fit.rejected
    for i, v in enumerate(values):
        if v is None:
            continue
        ok = check(v)
        if ok is SKIP:
            rejected[i] = as_text(v)
        else:
            out[i] = ok
    if isinstance(t, IntegerType) and any(
            not _INT32[0] <= v <= _INT32[1] for v in out if v is not None):
        fit.promote_to = LongType()
    elif isinstance(t, FloatType) and any(v is not None for v in out):
        fit.promote_to = DoubleType()
    return fit


def _check_for(t: IcebergType) -> Callable[[Any], Any]:
    """The check of one value for a column of type ``t``: the value to store, or SKIP."""
    if isinstance(t, BooleanType):
        return lambda v: v if type(v) is bool else SKIP
    if isinstance(t, IntegerType | LongType):
        lo, hi = _INT64
        return lambda v: v if (type(v) is int or (isinstance(v, int) and not isinstance(
            v, bool))) and lo <= v <= hi else SKIP
    if isinstance(t, FloatType | DoubleType):
        return lambda v: float(v) if type(v) is float or _is_number(v) else SKIP
    if isinstance(t, TimestamptzType):
        return lambda v: v if isinstance(v, datetime) and v.tzinfo is not None else SKIP
    if isinstance(t, TimestampType):
        return lambda v: v if isinstance(v, datetime) and v.tzinfo is None else SKIP
    if isinstance(t, DateType):
        return lambda v: v if isinstance(v, date) and not isinstance(v, datetime) else SKIP
    if isinstance(t, ListType):
        if isinstance(t.element_type, FloatType | DoubleType):
            return lambda v: [float(x) for x in v] if isinstance(v, list) and all(
                _is_number(x) for x in v) else SKIP
        return lambda v: SKIP
    if isinstance(t, DecimalType):
        return lambda v: _fit_decimal(v, t)
    return lambda v: SKIP


def _fit_decimal(v: Any, t: DecimalType) -> Any:
    if isinstance(v, bool) or not isinstance(v, int | str | Decimal):
        return SKIP
    try:
        d = Decimal(v)
        q = d.quantize(Decimal(1).scaleb(-t.scale))
    except (InvalidOperation, ValueError):
        return SKIP
    if q != d or len(q.as_tuple().digits) > t.precision:
        return SKIP
    return q


@dataclass
class ColumnPlan:
    """What a batch needs from the table schema, and its column values."""

    new_fields: list[NestedField]
    columns: dict[str, list[Any]]

    @property
    def evolves(self) -> bool:
        """True when the schema must change before the rows can be appended."""
        return bool(self.new_fields)


def plan_columns(schema: Schema, rows: Sequence[Mapping[str, Any]],
                 declared: Mapping[str, IcebergType] | None = None) -> ColumnPlan:
    """Match ``rows`` against ``schema``: the fields to add or widen and each column's values.

    ``declared`` gives the type of a column the table may lack (a mapping's fixed columns);
    other new columns take the type of their values (:func:`infer_type`). A value that fits
    neither goes, as text, to ``<column>__string``. All-null new columns are not created.
    """
    declared = declared or {}
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    new_fields: list[NestedField] = []
    columns: dict[str, list[Any]] = {}
    conflicts: dict[str, list[Any]] = {}
    next_id = iter(range(1, 1_000_000))

    def place(name: str, values: list[Any]) -> None:
        existing = _find(schema, name)
        if existing is not None:
            t: IcebergType | None = existing.field_type
        else:
            t = declared.get(name) or infer_type(values)
        if t is None:
            return
        fit = fit_values(t, values)
        if existing is None:
            new_fields.append(NestedField(next(next_id), name, t, required=False))
        elif fit.promote_to is not None:
            new_fields.append(NestedField(next(next_id), name, fit.promote_to,
                                          required=existing.required))
        columns[name] = fit.values
        if fit.rejected:
            text = conflicts.setdefault(name + CONFLICT_SUFFIX, [None] * len(values))
            for i, v in fit.rejected.items():
                text[i] = v

    for name in names:
        place(name, [row.get(name) for row in rows])
    for name, values in conflicts.items():
        place(name, values)
    return ColumnPlan(new_fields, columns)


def _find(schema: Schema, name: str) -> NestedField | None:
    try:
        return schema.find_field(name)
    except ValueError:
        return None


def arrow_table(schema: Schema, columns: Mapping[str, list[Any]], num_rows: int) -> pa.Table:
    """A pyarrow table in exactly the table's schema (missing columns null)."""
    arrow_schema = schema.as_arrow()
    arrays = []
    for f in arrow_schema:
        values = columns.get(f.name)
        arrays.append(pa.array(values if values is not None else [None] * num_rows, type=f.type))
    return pa.Table.from_arrays(arrays, schema=arrow_schema)


def optional_schema(schema: Schema) -> Schema:
    """``schema`` with every top-level field optional (for ``union_by_name``)."""
    return Schema(*(NestedField(f.field_id, f.name, f.field_type, required=False, doc=f.doc)
                    for f in schema.fields))
