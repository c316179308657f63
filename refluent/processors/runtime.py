"""Running a view over decoded events: pure, given the entity states the engine stores.

Every view kind has a :class:`ViewRuntime` with the same two calls, so no engine branches on
the kind of view it runs:

- :meth:`ViewRuntime.entity`: the entity whose state a decoded event changes (the key an engine
  partitions by; None when the event changes nothing);
- :meth:`ViewRuntime.process`: apply the event, given the view's stored states (:class:`States`),
  and return an :class:`Outcome`: the states to store and the updates to publish, each the JSON
  form of a :class:`~refluent.streams.contracts.FeatureUpdate` (built without a model per
  update: engines serialise it once; :meth:`Outcome.feature_updates` gives the models);
- :meth:`ViewRuntime.dump`: a state as it is stored (JSON data; the states an outcome holds
  are live and may keep decoded sketches).

A record a view cannot take (no entity, a late event, a value it cannot aggregate) raises
:class:`~refluent.streams.processing.RecordRejected`, which the engine dead-letters.

Replays: every state remembers the last offset applied per source partition, so a record
consumed again after a crash changes nothing. Its update is published again when it was the last
one applied (the crash may have lost it after the state was saved); downstream sinks drop the
repeat by its ``(event_time, sequence)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from refluent.processors import cdc
from refluent.processors.aggregations import Duplicate, Late, WindowedAggregator
from refluent.processors.errors import FeatureViewError
from refluent.processors.features import (
    EntityStateView,
    FeatureView,
    View,
    apply_transforms,
    event_row,
)
from refluent.streams.contracts import CdcEnvelope, FeatureUpdate
from refluent.streams.origin import Origin
from refluent.streams.processing import RecordRejected

State = dict[str, Any]
TRUNCATED = "\x00truncated"
"""The state key under which an entity-state view keeps its table's last truncate (no primary
key can be it: keys are column values joined by ``|``, and this starts with NUL)."""
Keyed = tuple[str, dict[str, Any], int]
"""An event as a windowed view applies it: entity id, transformed row, event time (ms)."""


class States(Protocol):
    """The stored entity states of one view, as an engine holds them."""

    def get(self, key: str) -> State:
        """The state of entity ``key``, ``{}`` when none; the caller may change it."""
        ...

    def items(self) -> Iterable[tuple[str, State]]:
        """Every state held (a truncate changes them all)."""
        ...


UpdateJson = dict[str, Any]
"""A :class:`~refluent.streams.contracts.FeatureUpdate` in its JSON form, as
``model_dump(mode="json")`` gives it."""


@dataclass
class Outcome:
    """What processing one record did: states to store (entity -> live state, see
    :meth:`ViewRuntime.dump`) and updates to publish (their JSON form)."""

    states: dict[str, State] = field(default_factory=dict)
    updates: list[UpdateJson] = field(default_factory=list)

    def feature_updates(self) -> list[FeatureUpdate]:
        """The updates as validated models."""
        return [FeatureUpdate.model_validate(u) for u in self.updates]


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as the contracts write a UTC time (``...T08:00:00.123000Z``).

    Examples:
        >>> iso_ms(0), iso_ms(1_714_550_400_123)
        ('1970-01-01T00:00:00Z', '2024-05-01T08:00:00.123000Z')
    """
    day, rest = divmod(ms, 86_400_000)
    date = _DAYS.get(day)
    if date is None:
        if len(_DAYS) >= 1024:
            _DAYS.clear()
        date = _DAYS[day] = datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%dT")
    seconds, frac = divmod(rest, 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    if frac:
        return f"{date}{hour:02d}:{minute:02d}:{second:02d}.{frac:03d}000Z"
    return f"{date}{hour:02d}:{minute:02d}:{second:02d}Z"


_DAYS: dict[int, str] = {}


_BOUNDS: dict[tuple[int, int], list[str]] = {}


def _bounds(start_ms: int, end_ms: int) -> list[str]:
    """A window's bounds in JSON form; windows repeat for every event in them, so recent
    answers are kept (the lists are shared: never change them)."""
    key = (start_ms, end_ms)
    pair = _BOUNDS.get(key)
    if pair is None:
        if len(_BOUNDS) >= 4096:
            _BOUNDS.clear()
        pair = _BOUNDS[key] = [iso_ms(start_ms), iso_ms(end_ms)]
    return pair


def update_json(view: str, entity: str, values: dict[str, Any], event_time_ms: int,
                windows: dict[str, tuple[int, int]], sequence: int, origin: Origin,
                deleted: bool = False) -> UpdateJson:
    """A feature update's JSON form, field for field as the contract writes it.

    Examples:
        >>> from refluent.streams.origin import Origin
        >>> u = update_json("v", "u1", {"n": 2}, 60_000, {"n": (0, 60_000)}, 3,
        ...                 Origin("logs.app", 1, 7))
        >>> FeatureUpdate.model_validate(u).model_dump(mode="json") == u
        True
    """
    return {
        "schema_version": _SCHEMA_VERSION,
        "view": view,
        "entity_id": entity,
        "values": values,
        "event_time": iso_ms(event_time_ms),
        "windows": {k: _bounds(*bounds) for k, bounds in windows.items()},
        "deleted": deleted,
        "sequence": sequence,
        "source_topic": origin.topic,
        "source_partition": origin.partition,
        "source_offset": origin.offset,
    }


_SCHEMA_VERSION = FeatureUpdate.model_fields["schema_version"].default


class ViewRuntime(ABC):
    """Runs one view over decoded events; pure: state comes in through :class:`States`.

    Attributes:
        keyed_by_source: The view's state is partitioned like its one source topic, by the
            record's own key (a CDC table's primary key), so an engine applies each record on
            the partition it was read from. Otherwise an engine partitions by
            :meth:`entity` (repartitioning records whose key is not their entity).
    """

    keyed_by_source: ClassVar[bool] = False

    def __init__(self, view: View) -> None:
        self.view = view
        self.step = f"view:{view.name}"

    def dump(self, state: State) -> State:
        """``state`` as it is stored (plain JSON data); the live state is left as it is."""
        return state

    @abstractmethod
    def entity(self, event: BaseModel | None) -> str | None:
        """The entity whose state ``event`` changes; None when it changes none on its own.

        Raises:
            RecordRejected: the event names no entity the view can use.
        """

    @abstractmethod
    def process(self, event: BaseModel | None, origin: Origin, states: States) -> Outcome:
        """Apply ``event``, read at ``origin``, to the view's ``states``.

        Returns the states to store and the updates to publish; a replayed record changes
        nothing (its update is published again when it was the last one applied).

        Raises:
            RecordRejected: the view cannot take the record (the engine dead-letters it).
        """


class FeatureViewRuntime(ViewRuntime):
    """Runs a :class:`FeatureView`."""

    view: FeatureView

    def __init__(self, view: FeatureView) -> None:
        super().__init__(view)
        self.aggregator = WindowedAggregator(view.aggregations)
        # The last event keyed and its answer: an engine asks entity() to route an event and
        # then process() to apply it, and the transforms run once.
        self._keyed: tuple[BaseModel | None, Keyed | None] = (None, None)

    def dump(self, state: State) -> State:
        agg = state.get("agg")
        if not agg:
            return state
        dumped = self.aggregator.dump_state(agg)
        return state if dumped is agg else {**state, "agg": dumped}

    def entity(self, event: BaseModel | None) -> str | None:
        keyed = self.key(event)
        return None if keyed is None else keyed[0]

    def process(self, event: BaseModel | None, origin: Origin, states: States) -> Outcome:
        keyed = self.key(event)
        if keyed is None:
            return Outcome()
        entity, row, ts_ms = keyed
        return self.apply(states.get(entity), entity, row, ts_ms, origin)

    def key(self, event: BaseModel | None) -> Keyed | None:
        """The entity id, transformed row and event time of ``event``; None to skip it.

        Raises:
            RecordRejected: the row has no entity id.
        """
        if event is None:  # a tombstone: nothing to aggregate
            return None
        last, keyed = self._keyed
        if last is event:
            return keyed
        row, ts_ms = event_row(event)
        out = apply_transforms(self.view.transforms, row)
        if out is None:
            keyed = None
        else:
            entity = out.get(self.view.entity)
            if entity is None or entity == "":
                raise RecordRejected(self.step, "no_entity",
                                     f"field {self.view.entity!r} is missing or empty")
            keyed = (str(entity), out, ts_ms)
        self._keyed = (event, keyed)
        return keyed

    def apply(self, state: State, entity: str, row: dict[str, Any], ts_ms: int,
              origin: Origin) -> Outcome:
        """Apply one keyed event (see :meth:`key`) to ``entity``'s ``state``.

        ``state`` is changed in place only when the event is applied (the outcome then holds
        it to store); a rejected, late or repeated event leaves it as it was.

        Raises:
            RecordRejected: a late event or a value the aggregations cannot take.
        """
        working = state
        agg_state = working.setdefault("agg", {})
        try:
            result = self.aggregator.process(
                agg_state, ts_ms, origin.offset, row,
                (origin.topic, origin.partition, origin.offset))
        except FeatureViewError as exc:
            raise RecordRejected(self.step, "bad_value", str(exc)) from exc
        if isinstance(result, Duplicate):
            return _republish_last(state, origin)
        if isinstance(result, Late):
            raise RecordRejected(self.step, "late", result.reason)
        # Publish the entity's values as of its watermark, not as of this event: events of one
        # entity may be applied out of event-time order (several source partitions), and the
        # online store keeps the update with the greatest (event_time, sequence). With the
        # watermark as event time and a per-entity version as sequence, the last update
        # applied is the one that wins, and it holds every event applied so far.
        wm = self.aggregator.watermark(result.state)
        assert wm is not None  # noqa: S101 - an event was applied
        if wm == ts_ms:
            values, windows = result.values, result.windows
        else:
            values = self.aggregator.values_as_of(result.state, wm)
            windows = {}
            for a in self.view.aggregations:
                bounds = a.window.current(wm)
                windows[a.name] = (bounds.start_ms, bounds.end_ms)
        version = int(working.get("version", 0)) + 1
        working["version"] = version
        update = update_json(self.view.name, entity, values, wm, windows, version, origin)
        working["agg"] = result.state  # live: sketches stay decoded (see dump())
        working["last"] = update
        return Outcome({entity: working}, [update])


class EntityStateRuntime(ViewRuntime):
    """Runs an :class:`EntityStateView` (latest row per primary key)."""

    view: EntityStateView
    keyed_by_source = True

    def entity(self, event: BaseModel | None) -> str | None:
        return self.key(event)

    def key(self, event: BaseModel | None) -> str | None:
        """The primary key the change is about; None for a truncate or tombstone.

        Raises:
            RecordRejected: the row lacks a primary-key column, or the event is not a change.
        """
        if event is None:
            return None
        if not isinstance(event, CdcEnvelope):
            raise RecordRejected(self.step, "not_cdc",
                                 f"{type(event).__name__} is not a Debezium change")
        if event.op == "t":
            return None
        try:
            return cdc.primary_key_of(event.row, self.view.primary_key)
        except KeyError as exc:
            raise RecordRejected(self.step, "no_entity",
                                 f"primary-key column {exc} missing from the row") from exc

    def process(self, event: BaseModel | None, origin: Origin, states: States) -> Outcome:
        """Apply one change (a truncate: to every state held).

        Raises:
            RecordRejected: the event is not a change, or its row lacks a primary-key column.
        """
        key = self.key(event)
        if key is None:
            if isinstance(event, CdcEnvelope) and event.op == "t":
                return self._truncate(event, origin, states)
            return Outcome()
        assert isinstance(event, CdcEnvelope)  # noqa: S101 - key() checked it
        old_state = None
        if event.op == "u" and event.before is not None:
            try:
                old_key = cdc.primary_key_of(event.before, self.view.primary_key)
            except KeyError:
                old_key = key
            if old_key != key:
                old_state = states.get(old_key)
        state = states.get(key)
        try:
            changes = cdc.apply_change(state, event, self.view.primary_key, offset=origin.offset,
                                       old_state=old_state,
                                       truncated=states.get(TRUNCATED).get("order"))
        except (KeyError, ValueError) as exc:
            raise RecordRejected(self.step, "bad_change", str(exc)) from exc
        if not changes:
            return _republish_last(state, origin)
        return self._publish(changes, origin)

    def _truncate(self, event: CdcEnvelope, origin: Origin, states: States) -> Outcome:
        """Delete every row older than the truncate, and remember its position (under
        :data:`TRUNCATED`) unless a later truncate is already remembered."""
        rows = {k: v for k, v in states.items() if k != TRUNCATED}
        outcome = self._publish(cdc.apply_truncate(rows, event, offset=origin.offset), origin)
        order = cdc.order_key(event, origin.offset)
        if cdc.is_newer(order, states.get(TRUNCATED).get("order")):
            outcome.states[TRUNCATED] = {"order": order}
        return outcome

    def _publish(self, changes: list[cdc.RowChange], origin: Origin) -> Outcome:
        out = Outcome()
        for change in changes:
            row = change.row
            if row is not None:
                row = apply_transforms(self.view.transforms, row)
            deleted = row is None
            update = update_json(
                self.view.name, change.key,
                {} if deleted else _plain(self.view.project(row or {})),
                change.event_time_ms, {}, origin.offset, origin, deleted=deleted)
            state = change.state
            if change.row is not None:
                state["row"] = _plain(change.row)  # decimals, dates: JSON for the changelog
            state["last"] = update
            out.states[change.key] = state
            out.updates.append(update)
        return out


def _republish_last(state: State, origin: Origin) -> Outcome:
    """A replayed record: publish its update again only if it was the last one applied (the
    crash may have lost it after the state was saved); otherwise nothing."""
    last = state.get("last")
    if last is not None and (last.get("source_topic"), last.get("source_partition"),
                             last.get("source_offset")) == (origin.topic, origin.partition,
                                                            origin.offset):
        return Outcome({}, [last])
    return Outcome()


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """Feature values as JSON scalars: decimals to float, dates and times to ISO text."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if v is None or isinstance(v, (bool, int, float, str)):
            out[k] = v
        elif hasattr(v, "isoformat"):
            out[k] = v.isoformat()
        else:
            try:
                out[k] = float(v)
            except (TypeError, ValueError):
                out[k] = str(v)
    return out


def runtime_for(view: View) -> ViewRuntime:
    """The runtime of ``view``."""
    if isinstance(view, FeatureView):
        return FeatureViewRuntime(view)
    return EntityStateRuntime(view)
