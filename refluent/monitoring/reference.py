"""The data-drift reference of a model version from its training window.

With ``monitor.reference = "training"`` a version's features are compared with what it was
trained on rather than with its first requests. The registry's lineage of the version says
where that is:

- ``training_table``: the lake table of the labelled examples it was trained on (a table the
  lake sink wrote from ``examples``: the whole event in ``payload``), qualified or in the lake's
  namespace;
- ``snapshot_id`` (optional): the table's snapshot it was trained on (default: the newest).

The reference is the features of the last ``size`` rows of that snapshot for the version's
model (rows of other models are left out when the table has a ``model_name`` column). The score
is not in a training window (the rows hold an older model's scores), so it keeps the first
requests as its reference. A version without such a lineage, or whose table cannot be read,
keeps the first requests for every feature, and the monitor logs why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from refluent.errors import RefluentError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from refluent.registry.base import ModelRegistry

log = logging.getLogger(__name__)

TRAINING_TABLE = "training_table"
"""Lineage key naming the table a version was trained on."""
SNAPSHOT_ID = "snapshot_id"
"""Lineage key naming the snapshot of that table."""

References = Callable[[str, str], list[dict[str, Any]] | None]
"""(model, version) -> reference rows (feature name -> value), or None for the first requests."""


def training_rows(catalog: Catalog, namespace: str, table: str, model: str,
                  snapshot_id: int | None, size: int) -> list[dict[str, Any]]:
    """The features of the last ``size`` rows of ``model`` in ``table`` (at ``snapshot_id``).

    Raises:
        LakeTableNotFoundError: no such table.
    """
    from pyiceberg.expressions import AlwaysTrue, BooleanExpression, EqualTo

    from refluent.lake.catalog import load_table

    t = load_table(catalog, table, namespace)
    names = {f.name for f in t.schema().fields}
    only: BooleanExpression = AlwaysTrue()
    if "model_name" in names:
        only = EqualTo("model_name", model)  # type: ignore[call-arg, arg-type]
    scan = t.scan(row_filter=only, snapshot_id=snapshot_id,
                  selected_fields=tuple(c for c in ("offset", "payload") if c in names))
    rows = scan.to_arrow().to_pylist()
    rows.sort(key=lambda r: r.get("offset") or 0)
    out = []
    for row in rows[-size:]:
        event = orjson.loads(row["payload"]) if row.get("payload") else {}
        features = event.get("features")
        if isinstance(features, dict):
            out.append({k: v for k, v in features.items() if not isinstance(v, list)})
    return out


def training_references(registry: Callable[[], ModelRegistry], catalog: Callable[[], Catalog],
                        namespace: str, size: int) -> References:
    """A :data:`References` reading each version's training window (see the module); the
    registry and catalog are opened when a version is first looked up."""

    def reference(model: str, version: str) -> list[dict[str, Any]] | None:
        try:
            lineage = registry().get(model, int(version)).lineage
        except (RefluentError, ValueError) as exc:
            log.info("%s v%s: no registered lineage (%s); its first requests are the "
                     "reference", model, version, exc)
            return None
        table = lineage.get(TRAINING_TABLE)
        if not table:
            log.info("%s v%s: its lineage names no %s; its first requests are the reference",
                     model, version, TRAINING_TABLE)
            return None
        snapshot = lineage.get(SNAPSHOT_ID)
        try:
            rows = training_rows(catalog(), namespace, str(table), model,
                                 int(snapshot) if snapshot is not None else None, size)
        except (RefluentError, ValueError) as exc:
            log.warning("%s v%s: training window %s not read (%s); its first requests are "
                        "the reference", model, version, table, exc)
            return None
        if not rows:
            log.warning("%s v%s: training window %s holds no rows of it; its first requests "
                        "are the reference", model, version, table)
            return None
        return rows

    return reference


__all__ = ["SNAPSHOT_ID", "TRAINING_TABLE", "References", "training_references",
           "training_rows"]
