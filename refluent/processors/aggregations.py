"""Windowed aggregations: the pure core of feature views.

A feature view computes, per entity, aggregations (:class:`Aggregation`) over event-time windows
(:mod:`refluent.processors.windows`). :class:`WindowedAggregator` is the per-view state machine an
engine runs: for each source event it takes the entity's state, the event time, a sequence number
and the row, and answers :class:`Updated` (with the values to publish), :class:`Late` or
:class:`Duplicate`. It does no I/O and reads no clock, so a replay of the same events gives the
same answers, on any engine.

Kinds: ``count`` (events, whatever their fields hold, like ``COUNT(*)``), ``sum``, ``mean``,
``min``, ``max`` (numbers), ``last`` (the value of the event with the greatest
``(event time, sequence)``) and ``approx_distinct`` (an Apache DataSketches HLL sketch, lg_k=12:
about 1.6 % relative standard error, exact for small counts). A ``None`` or missing value is
skipped by every kind but ``count``. The value of a window with no value is ``0`` for ``count``,
``sum`` and ``approx_distinct`` and ``None`` for the others.

State lifecycle. An entity's state is a dict the engine keeps in a changelog-backed table; a new
entity starts with ``{}``. :meth:`WindowedAggregator.process` mutates it in place (and hands the
same object back as :attr:`Updated.state`); :class:`Late` and :class:`Duplicate` leave it
untouched, so the engine need not store it again. It holds the entity's watermark (the greatest
event time applied), the last offset applied per source ``topic:partition``, the open windows of
tumbling and hopping aggregations, and the events of the last ``size + grace`` for sliding ones.
Windows are dropped as soon as they close, so its size is bounded by the windows' sizes, not by
the entity's history. Everything in it is plain JSON data except the HLL sketches of
``approx_distinct``, which stay live objects between events (encoding one costs microseconds,
and a hopping aggregation keeps one per window): :meth:`WindowedAggregator.dump_state` gives
the plain-JSON form (sketches as base64) when the engine stores the state, and ``process``
reads that form back directly.

Delivery. The engine consumes at least once; the offsets in the state make a replay after a
crash answer :class:`Duplicate` instead of counting an event twice. That holds when the state
the engine restores is one it stored after applying the offsets it records, which is what a
changelog written after each update gives.

Examples:
    >>> from datetime import timedelta
    >>> from refluent.processors.windows import Tumbling, Sliding
    >>> view = WindowedAggregator([
    ...     Aggregation("orders_1h", "count", None, Tumbling(timedelta(hours=1))),
    ...     Aggregation("spend_10m", "sum", "amount", Sliding(timedelta(minutes=10))),
    ... ])
    >>> state = {}
    >>> r = view.process(state, 1_000, 7, {"amount": 12.5}, source=("orders", 0, 7))
    >>> r.values, r.windows["orders_1h"]
    ({'orders_1h': 1, 'spend_10m': 12.5}, (0, 3600000))
    >>> view.process(state, 1_000, 7, {"amount": 12.5}, source=("orders", 0, 7)).offset
    7
    >>> r = view.process(state, 2_000, 8, {"amount": 1}, source=("orders", 0, 8))
    >>> r.values
    {'orders_1h': 2, 'spend_10m': 13.5}
    >>> view.values_as_of(state, 3_600_000)
    {'orders_1h': 0, 'spend_10m': 0}
"""

from __future__ import annotations

import zlib
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from refluent.processors.accumulators import (
    KINDS,
    OPS,
    AggregationKind,
    KindOps,
    ValueRejected,
    dump_distinct,
    sketches,
)
from refluent.processors.errors import (
    AggregationSpecError,
    AggregationValueError,
    EventTimeError,
    StateError,
)
from refluent.processors.windows import (
    Sliding,
    WindowBounds,
    WindowSpec,
    window_from_spec,
)

_STATE_LAYOUT = 1

__all__ = [
    "Aggregation",
    "Duplicate",
    "Late",
    "Result",
    "StateSummary",
    "Updated",
    "WindowedAggregator",
]

# --------------------------------------------------------------------------------------------
# Aggregation specs
# --------------------------------------------------------------------------------------------

_SPEC_KEYS = {"name", "kind", "field", "window", "grace"}


@dataclass(frozen=True, slots=True)
class Aggregation:
    """One feature of a view: ``kind`` of ``field`` over ``window``.

    Args:
        name: Feature name (unique within its view).
        kind: One of :data:`KINDS`.
        field: Row field aggregated; None for ``count``, which counts events and takes none.
        window: The windows it is computed over.

    Raises:
        AggregationSpecError: An unknown kind, a missing field, or a field given to ``count``.

    Examples:
        >>> Aggregation.from_spec({"name": "spend_1h", "kind": "sum", "field": "amount",
        ...                        "window": "hopping:1h/5m", "grace": "1m"}).to_spec()
        {'name': 'spend_1h', 'kind': 'sum', 'field': 'amount', 'window': {'type': 'hopping', \
'size': '1h', 'hop': '5m', 'grace': '1m'}}
    """

    name: str
    kind: AggregationKind
    field: str | None
    window: WindowSpec

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise AggregationSpecError(repr(self.name), "the name must be a non-empty string")
        if self.kind not in OPS:
            raise AggregationSpecError(
                self.name, f"unknown kind {self.kind!r}; known: {', '.join(KINDS)}"
            )
        if not isinstance(self.window, WindowSpec):
            raise AggregationSpecError(
                self.name, f"window must be a Tumbling, Hopping or Sliding window, not "
                f"{type(self.window).__name__} (window_from_spec() reads declarations)"
            )
        if self.kind == "count":
            if self.field is not None:
                raise AggregationSpecError(
                    self.name, f"count counts events (COUNT(*)) and takes no field; got "
                    f"{self.field!r}"
                )
        elif not isinstance(self.field, str) or not self.field:
            raise AggregationSpecError(self.name, f"{self.kind} needs the field it aggregates")

    @property
    def empty(self) -> Any:
        """Value of a window with no values: 0 for count, sum and approx_distinct, else None."""
        return OPS[self.kind].empty

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Aggregation:
        """Build an aggregation from a TOML/YAML declaration.

        Keys: ``name``, ``kind``, ``field`` (not for count), ``window`` (text such as
        ``"tumbling:1h"`` or a mapping, see :func:`~refluent.processors.windows.window_from_spec`)
        and optionally ``grace``, applied to a window given as text.
        """
        name = str(spec.get("name", "?"))
        unknown = set(spec) - _SPEC_KEYS
        if unknown:
            raise AggregationSpecError(
                name, f"unknown key(s) {sorted(unknown)}; known: {sorted(_SPEC_KEYS)}"
            )
        if "window" not in spec:
            raise AggregationSpecError(name, "window is missing")
        window_spec = spec["window"]
        if "grace" in spec:
            if isinstance(window_spec, str):
                window_spec = {**window_from_spec(window_spec).to_spec(), "grace": spec["grace"]}
            else:
                raise AggregationSpecError(name, "give grace inside the window mapping")
        return cls(spec.get("name", ""), spec.get("kind", ""), spec.get("field"),
                   window_from_spec(window_spec))

    def to_spec(self) -> dict[str, Any]:
        """The declaration :meth:`from_spec` reads back."""
        spec: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.field is not None:
            spec["field"] = self.field
        spec["window"] = self.window.to_spec()
        return spec


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Updated:
    """The event was applied. (Results are not frozen only because building a frozen
    dataclass costs several times more; treat them as read-only.)

    Attributes:
        values: Feature name -> value of the window reported for it: the window ``current()``
            gives for the event's time, or, for an event that arrived within the grace period
            after that window closed, the earliest still-open window containing it.
        windows: Feature name -> ``(start_ms, end_ms)`` of that window.
        state: The entity's state after the event (the object passed in, mutated).
        late_aggregations: Features for which every window containing the event had closed:
            they report no value (the event still counts for the others).
    """

    values: dict[str, Any]
    windows: dict[str, tuple[int, int]]
    state: dict[str, Any]
    late_aggregations: tuple[str, ...] = ()


@dataclass(slots=True)
class Late:
    """Every window the event falls in, for every aggregation, has closed; nothing was applied.

    Attributes:
        reason: Why, in words.
        ts_ms: The event's time.
        watermark_ms: The entity's watermark.
        closed_at_ms: When the last of the event's windows closed (end + grace).
    """

    reason: str
    ts_ms: int
    watermark_ms: int
    closed_at_ms: int


@dataclass(slots=True)
class Duplicate:
    """The event's offset was already applied for this entity (a replay); nothing was applied.

    Attributes:
        source: ``"topic:partition"``.
        offset: The event's offset.
        last_offset: The last offset applied from that partition.
    """

    source: str
    offset: int
    last_offset: int


Result = Updated | Late | Duplicate
"""What :meth:`WindowedAggregator.process` answers."""


@dataclass(frozen=True, slots=True)
class StateSummary:
    """What an entity's state holds, for debugging and tests (see
    :meth:`WindowedAggregator.describe_state`).

    Attributes:
        watermark_ms: Greatest event time applied, None before the first event.
        offsets: Last offset applied per ``"topic:partition"``.
        windows: Tumbling/hopping feature -> the windows held, by start.
        buffered: Sliding feature -> event times of the values buffered, in order.
    """

    watermark_ms: int | None
    offsets: dict[str, int]
    windows: dict[str, list[WindowBounds]]
    buffered: dict[str, list[int]]


# --------------------------------------------------------------------------------------------
# The per-view state machine
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Member:
    """An aggregation inside a window group: which of the group's columns holds its cells, and
    which of the event's checked values it takes."""

    column: int
    value_index: int
    name: str
    ops: KindOps


@dataclass(frozen=True, slots=True)
class _Group:
    """Tumbling/hopping aggregations sharing one window spec, and so one set of windows.

    State: ``[first_start, columns]``, one column per member, where ``column[i]`` is the
    member's cell for the window starting at ``first_start + i * hop`` (None while empty).
    Columns, rather than one record per window, let one event update its ``size / hop``
    windows in a single pass per aggregation.
    """

    key: str
    size: int
    hop: int
    grace: int
    members: tuple[_Member, ...]
    names: tuple[str, ...]
    sketches: tuple[int, ...]


# Reading a sliding window [lo, hi) of a buffer (parallel lists; values last). Every value of
# the window is at hand, so approx_distinct counts exactly: a sketch's estimate would be within
# its error bound of that.
_Buffer = list[list[Any]]
_SLIDE_READERS: dict[str, Callable[[_Buffer, int, int], Any]] = {
    "count": lambda buf, lo, hi: hi - lo,
    "sum": lambda buf, lo, hi: sum(buf[-1][lo:hi]),
    "mean": lambda buf, lo, hi: sum(buf[-1][lo:hi]) / (hi - lo) if hi > lo else None,
    "min": lambda buf, lo, hi: min(buf[-1][lo:hi]) if hi > lo else None,
    "max": lambda buf, lo, hi: max(buf[-1][lo:hi]) if hi > lo else None,
    "last": lambda buf, lo, hi: buf[-1][hi - 1] if hi > lo else None,
    "approx_distinct": lambda buf, lo, hi: len(set(buf[-1][lo:hi])),
}


@dataclass(frozen=True, slots=True)
class _Slider:
    """One sliding aggregation.

    State: parallel lists ordered by (event time, sequence): ``[times]`` for count,
    ``[times, values]`` for most kinds, ``[times, sequences, values]`` for last.
    """

    key: str
    size: int
    grace: int
    value_index: int
    name: str
    lists: int
    read: Callable[[_Buffer, int, int], Any]


def _crc(text: str) -> str:
    return f"{zlib.crc32(text.encode()):08x}"


class WindowedAggregator:
    """The per-view state machine: one entity's events in, feature values out.

    Args:
        aggregations: The view's aggregations (unique names). Aggregations over the same
            tumbling or hopping window share its windows in the state.

    Raises:
        AggregationSpecError: No aggregations, repeated names, or a non-:class:`Aggregation`.
        MissingExtraError: An ``approx_distinct`` aggregation without ``datasketches``.

    A view's definition is fingerprinted into each entity's state. State written under another
    definition is adopted on its next event: windows of aggregations that are still declared
    the same way are kept, the others are dropped, and new aggregations start empty.
    """

    def __init__(self, aggregations: Sequence[Aggregation]) -> None:
        aggs = tuple(aggregations)
        if not aggs:
            raise AggregationSpecError("(view)", "a view needs at least one aggregation")
        seen: set[str] = set()
        for agg in aggs:
            if not isinstance(agg, Aggregation):
                raise AggregationSpecError(repr(agg), "not an Aggregation")
            if agg.name in seen:
                raise AggregationSpecError(agg.name, "the name is used twice in one view")
            seen.add(agg.name)
            if agg.kind == "approx_distinct":
                sketches()
        self.aggregations = aggs
        # Each distinct (field, kind of check) is read and checked once per event; inputs[i] is
        # the position of aggregation i's value among them.
        checks: dict[tuple[str | None, Callable[[Any], Any]], int] = {}
        inputs = [
            checks.setdefault((agg.field, OPS[agg.kind].coerce), len(checks)) for agg in aggs
        ]
        self._checks = tuple(checks)
        self._check_owner = tuple(aggs[inputs.index(i)] for i in range(len(checks)))

        by_window: dict[WindowSpec, list[int]] = {}
        sliders: list[_Slider] = []
        for index, agg in enumerate(aggs):
            if isinstance(agg.window, Sliding):
                text = f"{agg.window}|{agg.name}:{agg.kind}:{agg.field}"
                lists = 1 if agg.kind == "count" else 3 if agg.kind == "last" else 2
                sliders.append(_Slider(
                    f"{agg.window._text()}#{_crc(text)}", agg.window.size_ms,
                    agg.window.grace_ms, inputs[index], agg.name, lists,
                    _SLIDE_READERS[agg.kind],
                ))
            else:
                by_window.setdefault(agg.window, []).append(index)
        groups = []
        for window, indexes in by_window.items():
            members = tuple(
                _Member(j, inputs[i], aggs[i].name, OPS[aggs[i].kind])
                for j, i in enumerate(indexes)
            )
            text = f"{window}|" + ";".join(f"{aggs[i].name}:{aggs[i].kind}:{aggs[i].field}"
                                           for i in indexes)
            groups.append(_Group(
                f"{window._text()}#{_crc(text)}", window.size_ms, window.hop_ms, window.grace_ms,
                members, tuple(m.name for m in members),
                tuple(j for j, i in enumerate(indexes) if aggs[i].kind == "approx_distinct"),
            ))
        self._groups = tuple(groups)
        self._sliders = tuple(sliders)
        # The hot path reads plain tuples: attribute lookups cost more than the arithmetic.
        self._group_plan = tuple(
            (
                g.key, g.size, g.hop, g.grace,
                tuple((m.column, m.value_index, m.ops.add, m.ops.bulk) for m in g.members),
                tuple((m.column, m.name, m.ops.result) for m in g.members),
                g.names,
            )
            for g in groups
        )
        keys = [g.key for g in groups] + [s.key for s in sliders]
        self._fingerprint = f"{_STATE_LAYOUT}:{_crc('/'.join(keys))}"
        self._sketch_groups = tuple(g for g in groups if g.sketches)
        self._slider_plan = tuple(
            (s.key, s.size, s.grace, s.value_index, s.name, s.lists, s.read) for s in sliders
        )
        # For the late check, (hop, size + grace) per window group: an event's last window
        # starts at the hop boundary at or before it and closes size + grace later. A sliding
        # window ends 1 ms after its event.
        self._closes = tuple((g.hop, g.size + g.grace) for g in groups) + tuple(
            (1, 1 + s.grace) for s in sliders
        )

    @property
    def names(self) -> tuple[str, ...]:
        """The features' names, in declaration order."""
        return tuple(agg.name for agg in self.aggregations)

    @property
    def retention_ms(self) -> int:
        """How far behind the watermark the state reaches: the largest size + grace."""
        return max(agg.window.size_ms + agg.window.grace_ms for agg in self.aggregations)

    def empty_values(self) -> dict[str, Any]:
        """Every feature's value for an entity with no events."""
        return {agg.name: agg.empty for agg in self.aggregations}

    # ---- state ------------------------------------------------------------------------------

    def _adopt(self, state: dict[str, Any]) -> None:
        """Make ``state`` this view's: initialise ``{}``, or keep what still applies of a state
        written under another definition."""
        if not state:
            windows: dict[str, Any] = {}
            state["wm"] = None
            state["offsets"] = {}
        else:
            held = state.get("windows")
            if (not isinstance(held, dict) or not isinstance(state.get("offsets"), dict)
                    or not (state.get("wm") is None or type(state.get("wm")) is int)):
                raise StateError(
                    f"expected keys view, wm, offsets, windows; got {sorted(state)!r}"
                )
            windows = {key: held[key] for key in self._keys() if key in held}
        for group in self._groups:
            windows.setdefault(group.key, [0, [[] for _ in group.members]])
        for slider in self._sliders:
            windows.setdefault(slider.key, [[] for _ in range(slider.lists)])
        state["windows"] = windows
        state["view"] = self._fingerprint

    def _keys(self) -> list[str]:
        return [g.key for g in self._groups] + [s.key for s in self._sliders]

    def dump_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """The state as plain JSON data, for the engine to store.

        Only ``approx_distinct`` sketches need encoding (to base64); a view without them gets
        ``state`` itself back. Otherwise the result shares its unchanged parts with ``state``:
        serialise it before the next :meth:`process` call. :meth:`process` and
        :meth:`values_as_of` read the result (after a JSON round trip) as they read ``state``,
        e.g. after a restart; while running, keep passing the live ``state``, since carrying on
        from the dump decodes every sketch an event touches again.
        """
        if not self._sketch_groups or not state:
            return state
        windows = dict(state["windows"])
        for group in self._sketch_groups:
            first, columns = windows[group.key]
            columns = list(columns)
            for j in group.sketches:
                columns[j] = [dump_distinct(cell) for cell in columns[j]]
            windows[group.key] = [first, columns]
        return {**state, "windows": windows}

    @staticmethod
    def watermark(state: Mapping[str, Any]) -> int | None:
        """The entity's watermark: the greatest event time applied (None before any)."""
        return state.get("wm")

    # ---- the hot path -------------------------------------------------------------------------

    def process(
        self,
        state: dict[str, Any],
        ts_ms: int,
        seq: int,
        row: Mapping[str, Any],
        source: tuple[str, int, int] | None = None,
    ) -> Result:
        """Apply one event of the entity whose state is ``state``.

        Args:
            state: The entity's state (``{}`` for a new entity); mutated in place when the
                answer is :class:`Updated`, otherwise left as it was (a state written under
                another view definition is adopted first, see the class docstring).
            ts_ms: Event time, epoch milliseconds.
            seq: Tie-breaker after event time for ``last`` (usually the source offset).
            row: The event's fields; a missing field reads as None.
            source: ``(topic, partition, offset)`` of the record, to answer :class:`Duplicate`
                for an offset at or below the last one applied from that partition: a replayed
                record that was applied, late or rejected the first time is not handled
                twice, as long as a later offset was applied since. None turns the check off.

        Returns:
            :class:`Updated`, :class:`Late` (every window of the event closed: window end +
            grace at or before the entity's watermark) or :class:`Duplicate`.

        Raises:
            AggregationValueError: A value an aggregation cannot take (the record belongs in
                the dead-letter topic); checked before anything is applied.
            EventTimeError: ``ts_ms`` is not an int.
            StateError: ``state`` is not a state this class wrote.
        """
        if type(ts_ms) is not int:
            raise EventTimeError(ts_ms)
        if state.get("view") != self._fingerprint:
            self._adopt(state)
        source_key = None
        if source is not None:
            topic, partition, offset = source
            source_key = f"{topic}:{partition}"
            last_offset = state["offsets"].get(source_key)
            if last_offset is not None and offset <= last_offset:
                return Duplicate(source_key, offset, last_offset)
        wm = state["wm"]
        if wm is not None and ts_ms < wm:
            closes = max(ts_ms - ts_ms % hop + reach for hop, reach in self._closes)
            if closes <= wm:
                return Late(
                    f"event time {ts_ms} is behind the entity's watermark {wm}: every window it "
                    f"falls in closed by {closes} (window end + grace)",
                    ts_ms, wm, closes,
                )

        # Check every value before changing anything, so a rejected record leaves no trace.
        values_in: list[Any] = []
        for field, coerce in self._checks:
            value = True if field is None else row.get(field)
            if value is not None:
                try:
                    value = coerce(value)
                except ValueRejected as exc:
                    agg = self._check_owner[len(values_in)]
                    raise AggregationValueError(
                        agg.name, agg.kind, agg.field, value, exc.expected
                    ) from None
            values_in.append(value)

        advanced = wm is None or ts_ms > wm
        if advanced:
            state["wm"] = wm = ts_ms
        if source_key is not None:
            state["offsets"][source_key] = offset
        windows = state["windows"]
        values: dict[str, Any] = {}
        bounds: dict[str, tuple[int, int]] = {}
        late: list[str] = []

        for key, size, hop, grace, adders, readers, names in self._group_plan:
            gstate = windows[key]
            first, columns = gstate
            held = len(columns[0])
            if advanced and held:
                # Drop the windows that closed: start + size + grace <= watermark.
                closed = (wm - size - grace - first) // hop + 1
                if closed > 0:
                    if closed > held:
                        closed = held
                    for column in columns:
                        del column[:closed]
                    held -= closed
                    gstate[0] = first = first + closed * hop
            last_start = ts_ms - ts_ms % hop
            start = last_start - size + hop
            min_open = wm - size - grace + 1
            if start < min_open:
                # Windows of the event that already closed take nothing: skip to the first open.
                start -= ((start - min_open) // hop) * hop
                if start > last_start:
                    late.extend(names)
                    continue
            if not held:
                gstate[0] = first = start
            elif start < first:
                pad = [None] * ((first - start) // hop)
                for column in columns:
                    column[0:0] = pad
                held += len(pad)
                gstate[0] = first = start
            i0 = (start - first) // hop
            i1 = (last_start - first) // hop + 1
            if i1 > held:
                pad = [None] * (i1 - held)
                for column in columns:
                    column.extend(pad)
            if i1 - i0 == 1:
                for j, i, add, _ in adders:
                    value = values_in[i]
                    if value is not None:
                        column = columns[j]
                        column[i0] = add(column[i0], value, ts_ms, seq)
            else:
                for j, i, _, bulk in adders:
                    value = values_in[i]
                    if value is not None:
                        bulk(columns[j], i0, i1, value, ts_ms, seq)
            window = (start, start + size)
            for j, name, result in readers:
                values[name] = result(columns[j][i0])
                bounds[name] = window

        for key, size, grace, i, name, lists, read in self._slider_plan:
            buf = windows[key]
            times = buf[0]
            horizon = wm - size - grace  # events at or before it are in no open window
            if advanced and times and times[0] <= horizon:
                cut = bisect_right(times, horizon)
                for column in buf:
                    del column[:cut]
            value = values_in[i]
            if value is not None and ts_ms > horizon:
                if not times or ts_ms > times[-1]:
                    times.append(ts_ms)
                    if lists == 2:
                        buf[1].append(value)
                    elif lists == 3:
                        buf[1].append(seq)
                        buf[2].append(value)
                else:
                    pos = bisect_right(times, ts_ms)
                    if lists == 3:
                        seqs = buf[1]
                        while pos and times[pos - 1] == ts_ms and seqs[pos - 1] > seq:
                            pos -= 1
                        seqs.insert(pos, seq)
                    times.insert(pos, ts_ms)
                    if lists > 1:
                        buf[-1].insert(pos, value)
            if ts_ms + grace >= wm:
                values[name] = read(buf, bisect_right(times, ts_ms - size),
                                    bisect_right(times, ts_ms))
                bounds[name] = (ts_ms - size + 1, ts_ms + 1)
            else:
                late.append(name)

        return Updated(values, bounds, state, tuple(late) if late else ())

    # ---- reads ------------------------------------------------------------------------------

    def values_as_of(self, state: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
        """Every feature's value as of ``now_ms``, for serving reads; ``state`` is not changed.

        A tumbling or hopping feature reads the window ``current(now_ms)`` gives, a sliding one
        ``(now_ms - size, now_ms]``. A window the entity has no events in (or that ended
        before the state's reach, ``watermark - size - grace``) reads as the empty value.
        """
        windows = state.get("windows") or {}
        values: dict[str, Any] = {}
        for group in self._groups:
            first, columns = windows.get(group.key) or (0, [[]])
            start = now_ms - now_ms % group.hop - group.size + group.hop
            i = (start - first) // group.hop
            held = 0 <= i < len(columns[0]) and (start - first) % group.hop == 0
            for member in group.members:
                values[member.name] = (
                    member.ops.result(columns[member.column][i]) if held else member.ops.empty
                )
        for slider in self._sliders:
            buf = windows.get(slider.key)
            if not buf or not buf[0]:
                values[slider.name] = slider.read([[]], 0, 0)
                continue
            times = buf[0]
            lo = bisect_right(times, now_ms - slider.size)
            hi = bisect_right(times, now_ms)
            values[slider.name] = slider.read(buf, lo, hi)
        return {name: values[name] for name in self.names}

    def describe_state(self, state: Mapping[str, Any]) -> StateSummary:
        """What ``state`` holds: watermark, offsets, the windows and buffered events kept."""
        windows = state.get("windows") or {}
        held: dict[str, list[WindowBounds]] = {}
        for group in self._groups:
            first, columns = windows.get(group.key) or (0, [[]])
            bounds = [
                WindowBounds(first + i * group.hop, first + i * group.hop + group.size)
                for i, cells in enumerate(zip(*columns, strict=True))
                if any(cell is not None for cell in cells)
            ]
            for name in group.names:
                held[name] = list(bounds)
        buffered = {
            slider.name: list((windows.get(slider.key) or [[]])[0]) for slider in self._sliders
        }
        return StateSummary(state.get("wm"), dict(state.get("offsets") or {}), held, buffered)
