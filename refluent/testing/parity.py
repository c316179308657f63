"""Engine parity: does an engine publish what the in-memory engine publishes for the same input?

Feed the input to an :class:`~refluent.engines.memory.InMemoryRunner` (the reference), run the
engine under test on the same records, read back what it published to ``features.<view>`` and
compare:

- :func:`assert_same_final`: per view and entity, the update an online store keeps (the
  greatest ``(event_time, sequence)``) has the same values, deletion flag and event time;
- :func:`assert_same_updates`: every update the engine published, repeats after a crash
  included, is one the reference published with the same values, and none is missing. Updates
  are matched per entity by ``order``: the per-entity version (``sequence``) of a feature view
  whose input is keyed by entity, or the event time of an entity-state view (whose sequence is
  the source offset, which differs between the reference's one partition and a topic's several).

Examples:
    >>> from datetime import UTC, datetime, timedelta
    >>> from refluent.engines.memory import InMemoryRunner
    >>> from refluent.processors.aggregations import Aggregation
    >>> from refluent.processors.features import FeatureView
    >>> from refluent.processors.windows import Tumbling
    >>> from refluent.streams.contracts import LogEvent
    >>> view = FeatureView("clicks", "entity_id", ("logs.web",),
    ...     (Aggregation("n", "count", None, Tumbling(timedelta(minutes=1))),))
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> events = [LogEvent(source="web", ts=t0 + timedelta(seconds=s), message="click",
    ...                    entity_id="u1") for s in (1, 2)]
    >>> reference, engine = InMemoryRunner([view]), InMemoryRunner([view])
    >>> _ = reference.feed("logs.web", events)
    >>> published = engine.feed("logs.web", events)
    >>> published += engine.feed("logs.web", events[1:], offsets=[1])  # a replay
    >>> assert_same_updates(reference, published, "clicks")  # the replayed update is a repeat
    >>> assert_same_final(reference, published[:1])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    refluent.testing.parity.ParityError: view clicks: 1 entity(ies) differ, e.g. u1: ...
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import orjson

from refluent.engines.memory import InMemoryRunner
from refluent.streams.contracts import FeatureUpdate

Order = Callable[[FeatureUpdate], Hashable]


class ParityError(AssertionError):
    """An engine published something the reference did not, or missed something it did."""


def comparable(update: FeatureUpdate) -> dict[str, Any]:
    """What an update means to a reader: values, deletion and event time, as plain JSON."""
    return dict(orjson.loads(orjson.dumps({
        "values": update.values, "deleted": update.deleted,
        "event_time": update.event_time.isoformat()})))


def by_sequence(update: FeatureUpdate) -> Hashable:
    """Match updates by per-entity version (feature views fed keyed by entity)."""
    return update.sequence


def by_event_time(update: FeatureUpdate) -> Hashable:
    """Match updates by event time (entity-state views: one update per change)."""
    return update.event_time.isoformat()


def final(updates: Iterable[FeatureUpdate]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per view and entity, the update an online store keeps (greatest event time, sequence)."""
    kept: dict[tuple[str, str], FeatureUpdate] = {}
    for update in updates:
        key = (update.view, update.entity_id)
        held = kept.get(key)
        if held is None or (update.event_time, update.sequence) >= (held.event_time,
                                                                     held.sequence):
            kept[key] = update
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (view, entity), update in kept.items():
        out.setdefault(view, {})[entity] = comparable(update)
    return out


def _differ(view: str, expected: dict[Any, Any], got: dict[Any, Any]) -> ParityError | None:
    keys = sorted(set(expected) | set(got), key=repr)
    bad = [k for k in keys if expected.get(k) != got.get(k)]
    if not bad:
        return None
    k = bad[0]
    return ParityError(f"view {view}: {len(bad)} entity(ies) differ, e.g. {k}: expected "
                       f"{expected.get(k)}, got {got.get(k)}")


def assert_same_final(reference: InMemoryRunner, updates: Iterable[FeatureUpdate],
                      views: Sequence[str] | None = None) -> None:
    """The engine's final update per entity equals the reference's, for ``views`` (all the
    reference runs when None).

    Raises:
        ParityError: naming the view, how many entities differ and the first one.
    """
    got = final(updates)
    for name in views or [v.name for v in reference.views]:
        want = {entity: comparable(u) for entity, u in reference.online.get(name, {}).items()}
        error = _differ(name, want, got.get(name, {}))
        if error is not None:
            raise error


def assert_same_updates(reference: InMemoryRunner, updates: Iterable[FeatureUpdate], view: str,
                        order: Order = by_sequence) -> None:
    """Every update of ``view`` the engine published (repeats included) is the reference's
    update with the same entity and ``order``, and none of the reference's is missing.

    Raises:
        ParityError: two different updates for one (entity, order), or the sets differ.
    """
    want = {(u.entity_id, order(u)): comparable(u) for u in reference.updates if u.view == view}
    got: dict[tuple[str, Hashable], dict[str, Any]] = {}
    for update in updates:
        if update.view != view:
            continue
        key, seen = (update.entity_id, order(update)), comparable(update)
        held = got.setdefault(key, seen)
        if held != seen:
            raise ParityError(f"view {view}: two different updates for {key}: {held} and {seen}")
    error = _differ(view, want, got)
    if error is not None:
        raise error
