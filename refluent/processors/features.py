"""Feature views, declared once in Python and run by any engine.

A :class:`FeatureView` aggregates events per entity over event-time windows (count, sum, mean,
min, max, last, approximate distinct over tumbling, hopping and sliding windows, each with a
grace period for late events). An :class:`EntityStateView` keeps the latest row per primary key
of a CDC table. Both are plain, frozen declarations: the logic that runs them is pure
(:mod:`refluent.processors.runtime`), so every engine (:mod:`refluent.engines`) gives the
same numbers.

A user's module of views is found by :func:`discover`: every ``FeatureView`` and
``EntityStateView`` at its top level.

Examples:
    >>> from datetime import timedelta
    >>> from refluent.processors.aggregations import Aggregation
    >>> from refluent.processors.windows import Tumbling
    >>> orders = FeatureView(
    ...     name="customer_orders",
    ...     entity="customer_id",
    ...     sources=("cdc.orders",),
    ...     aggregations=(
    ...         Aggregation("orders_1h", "count", None, Tumbling(timedelta(hours=1))),
    ...         Aggregation("spend_1h", "sum", "amount", Tumbling(timedelta(hours=1))),
    ...     ),
    ...     transforms=(only_ops("c", "r"),),
    ... )
    >>> orders.feature_names
    ('orders_1h', 'spend_1h')
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from refluent.processors.aggregations import Aggregation
from refluent.processors.errors import ViewSpecError
from refluent.streams.contracts import CdcEnvelope, LogEvent
from refluent.streams.topics import features_topic

Row = dict[str, Any]
RowTransform = Callable[[Row], Row | None]
"""A pure function of a row: returns the (new) row, or None to skip the event."""

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
OP_FIELD = "__op"
"""Row field holding a CDC change's op (c, u, d, r) for views over CDC topics."""


def only_ops(*ops: str) -> RowTransform:
    """A transform keeping only CDC changes with one of ``ops`` (e.g. creates: ``"c", "r"``)."""
    wanted = frozenset(ops)

    def keep(row: Row) -> Row | None:
        return row if row.get(OP_FIELD) in wanted else None

    keep.__name__ = f"only_ops({', '.join(sorted(wanted))})"
    return keep


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ViewSpecError(str(name), f"{kind} name must match {_NAME.pattern} "
                            "(it names a topic, Redis keys and a lake table)")


@dataclass(frozen=True)
class FeatureView:
    """Windowed aggregations of events per entity.

    Attributes:
        name: View name; updates go to ``features.<name>``.
        entity: Row field holding the entity id (the online store's key).
        sources: Topics read (``cdc.*``, ``logs.*`` or any topic with a contract).
        aggregations: The features.
        transforms: Row transforms applied in order before aggregating; one returning None
            skips the event.
        ttl: How long the online store keeps an entity's values after its last update.
        description: What the view is for.
    """

    name: str
    entity: str
    sources: tuple[str, ...]
    aggregations: tuple[Aggregation, ...]
    transforms: tuple[RowTransform, ...] = ()
    ttl: timedelta = timedelta(days=1)
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("feature view", self.name)
        if not self.sources:
            raise ViewSpecError(self.name, "needs at least one source topic")
        if not self.aggregations:
            raise ViewSpecError(self.name, "needs at least one aggregation")
        names = [a.name for a in self.aggregations]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ViewSpecError(self.name, f"repeated feature name(s) {dupes}")
        if self.ttl <= timedelta(0):
            raise ViewSpecError(self.name, "ttl must be positive")

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the features, in declaration order."""
        return tuple(a.name for a in self.aggregations)

    @property
    def topic(self) -> str:
        """Where the view's updates are published."""
        return features_topic(self.name)


@dataclass(frozen=True)
class EntityStateView:
    """The latest row per primary key of a CDC table (see :mod:`refluent.processors.cdc`).

    Attributes:
        name: View name; updates go to ``features.<name>``.
        source: The ``cdc.<table>`` topic.
        primary_key: Primary-key columns; their values joined by ``|`` are the entity id.
        columns: Columns served as features (None: every column but the primary key).
        transforms: Row transforms applied to each new row (None from one deletes the row).
        ttl: How long the online store keeps a row after its last change.
        description: What the view is for.
    """

    name: str
    source: str
    primary_key: tuple[str, ...] = ("id",)
    columns: tuple[str, ...] | None = None
    transforms: tuple[RowTransform, ...] = ()
    ttl: timedelta = timedelta(days=30)
    description: str = ""
    sources: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        _check_name("entity-state view", self.name)
        if not self.source.startswith("cdc."):
            raise ViewSpecError(self.name, f"source {self.source!r} is not a cdc.<table> topic")
        if not self.primary_key:
            raise ViewSpecError(self.name, "needs a primary key")
        if self.ttl <= timedelta(0):
            raise ViewSpecError(self.name, "ttl must be positive")
        object.__setattr__(self, "sources", (self.source,))

    @property
    def topic(self) -> str:
        """Where the view's updates are published."""
        return features_topic(self.name)

    def project(self, row: Row) -> Row:
        """The features served for ``row``: ``columns``, else every non-key column."""
        if self.columns is not None:
            return {c: row.get(c) for c in self.columns}
        return {k: v for k, v in row.items() if k not in self.primary_key}


View = FeatureView | EntityStateView


def apply_transforms(transforms: tuple[RowTransform, ...], row: Row) -> Row | None:
    """Run ``transforms`` in order; None as soon as one skips the row."""
    for transform in transforms:
        out = transform(row)
        if out is None:
            return None
        row = out
    return row


def event_row(event: BaseModel) -> tuple[Row, int]:
    """The row a view sees for ``event`` and its event time in epoch milliseconds.

    - CDC change: the changed row (``after``, else ``before``) plus ``__op``; the source time.
    - Log event: its attributes plus ``entity_id``, ``source``, ``level``, ``message``; ``ts``.
    - Any other contract: its fields; its ``ts``/``event_time`` field.

    Raises:
        ViewSpecError: the event has no event time.
    """
    if isinstance(event, CdcEnvelope):
        row = dict(event.row)
        row[OP_FIELD] = event.op
        return row, int(event.event_time.timestamp() * 1000)
    if isinstance(event, LogEvent):
        row = dict(event.attributes)
        row.update(entity_id=event.entity_id, source=event.source, level=event.level,
                   message=event.message)
        return row, int(event.ts.timestamp() * 1000)
    data = event.model_dump()
    for name in ("event_time", "ts", "detected_at", "requested_at"):
        if name in data and data[name] is not None:
            return data, int(data[name].timestamp() * 1000)
    raise ViewSpecError(type(event).__name__, "events of this contract carry no event time")


# ---------------------------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------------------------


def load_module(target: str) -> ModuleType:
    """Import a module by dotted name or by path to a ``.py`` file.

    Raises:
        ViewSpecError: it cannot be found or fails to import.
    """
    path = Path(target)
    try:
        if target.endswith(".py") or path.is_file():
            if not path.is_file():
                raise FileNotFoundError(target)
            name = f"refluent_user_views_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(target)
    except ViewSpecError:
        raise
    except Exception as exc:  # noqa: BLE001 - a user module may raise anything on import
        raise ViewSpecError(target, f"cannot import the feature module: "
                                    f"{type(exc).__name__}: {exc}") from exc


def discover(target: str | ModuleType) -> list[View]:
    """Every feature view and entity-state view at the top level of a module.

    Raises:
        ViewSpecError: the module cannot be imported, or two views share a name.
    """
    module = load_module(target) if isinstance(target, str) else target
    views: list[View] = []
    for value in vars(module).values():
        if isinstance(value, (FeatureView, EntityStateView)) and value not in views:
            views.append(value)
    seen: dict[str, View] = {}
    for view in views:
        if view.name in seen:
            raise ViewSpecError(view.name, f"declared twice in {module.__name__}")
        seen[view.name] = view
    return views


def validate(views: list[View], known_topic: Callable[[str], bool]) -> list[str]:
    """Problems that make ``views`` unable to run, as messages (empty: all good).

    ``known_topic`` says whether the topic catalog knows a source topic.
    """
    problems = []
    for view in views:
        for source in view.sources:
            if not known_topic(source):
                problems.append(f"view {view.name}: source topic {source!r} is not in the "
                                "catalog (add it to topics.cdc_tables / topics.log_sources)")
    return problems
