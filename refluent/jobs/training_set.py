"""Training sets from the lake: the features as served joined to their labels, at pinned
snapshots.

The ``predictions`` table holds every prediction with the features exactly as the model saw
them (``feature__<name>`` columns, see :class:`~refluent.lake.mappings.PredictionsTable`); the
``examples`` table holds the labels the feedback join matched to them. A training set is the
predictions of one model that have a label, each with its served features and its label:

- **reproducible**: both tables are read at pinned snapshots, so the same two snapshot ids give
  the same rows, whatever was written since (:meth:`TrainingSetBuilder.pin` takes the current
  ones, and :class:`TrainingSet` records them for the model's lineage);
- **leak-free by construction**: a feature value is the one served with the prediction, never
  a later value of the online store;
- **streamed**: the feature table is read in Arrow batches of at most ``batch_rows`` rows; only
  the labels (prediction id -> label) and one timestamp per labelled row are held in memory;
- **split by time**: the last ``validation_fraction`` of the labelled predictions, by
  prediction time, is the validation set, so a model is validated on what came after what it
  learned from.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import orjson

from refluent.errors import require
from refluent.jobs.errors import TrainingSetError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

FEATURE_PREFIX = "feature__"
PREDICTIONS_TABLE = "predictions"
EXAMPLES_TABLE = "examples"

Split = Literal["train", "validation"]


@dataclass(frozen=True)
class TrainingSet:
    """What a training set is, enough to build it again."""

    model: str
    predictions_table: str
    predictions_snapshot: int
    examples_table: str
    examples_snapshot: int
    features: tuple[str, ...]
    cutoff: datetime
    """Predictions at or after it are the validation set."""
    train_rows: int
    validation_rows: int
    offsets: dict[str, dict[str, int]] = field(default_factory=dict)
    """Table -> ``topic:partition`` -> next offset its sink had consumed at the snapshot: the
    stream positions the training set covers."""

    def lineage(self) -> dict[str, Any]:
        """What a model version trained on it records (the monitor's training reference reads
        ``training_table`` and ``snapshot_id``)."""
        return {"training_table": self.predictions_table,
                "snapshot_id": self.predictions_snapshot,
                "examples_table": self.examples_table,
                "examples_snapshot_id": self.examples_snapshot,
                "features": list(self.features), "cutoff": self.cutoff.isoformat(),
                "train_rows": self.train_rows, "validation_rows": self.validation_rows,
                "offsets": self.offsets}


class TrainingSetBuilder:
    """Builds a model's training set from the lake (see the module).

    Args:
        catalog: The lake catalog.
        namespace: Its namespace.
        model: The model whose predictions are read.
        predictions_table, examples_table: The tables (the lake sink's names by default).
        features: The served features to keep (default: every numeric ``feature__`` column).
        validation_fraction: Share of the labelled rows, the latest, that validate.
        batch_rows: Most rows per Arrow batch yielded.
    """

    def __init__(self, catalog: Catalog, namespace: str, model: str, *,
                 predictions_table: str = PREDICTIONS_TABLE,
                 examples_table: str = EXAMPLES_TABLE,
                 features: Sequence[str] | None = None, validation_fraction: float = 0.2,
                 batch_rows: int = 10_000) -> None:
        self.catalog, self.namespace, self.model = catalog, namespace, model
        self.predictions_table, self.examples_table = predictions_table, examples_table
        self._features = tuple(features) if features is not None else None
        self.validation_fraction = validation_fraction
        self.batch_rows = batch_rows

    def _table(self, name: str) -> Table:
        from refluent.lake.catalog import load_table

        return load_table(self.catalog, name, self.namespace)

    def _scan(self, table: Table, snapshot_id: int, columns: Sequence[str]) -> Any:
        expressions: Any = require("pyiceberg.expressions", "iceberg")
        return table.scan(row_filter=expressions.EqualTo("model_name", self.model),
                          selected_fields=tuple(columns), snapshot_id=snapshot_id)

    def labels(self, snapshot_id: int) -> dict[str, Any]:
        """Prediction id -> label of the model's examples at ``snapshot_id``."""
        out: dict[str, Any] = {}
        reader = self._scan(self._table(self.examples_table), snapshot_id,
                            ("prediction_id", "payload")).to_arrow_batch_reader()
        for batch in reader:
            for pid, payload in zip(batch.column("prediction_id").to_pylist(),
                                    batch.column("payload").to_pylist(), strict=True):
                if pid is not None and payload:
                    out.setdefault(pid, orjson.loads(payload)["label"])
        return out

    def pin(self, predictions_snapshot: int | None = None,
            examples_snapshot: int | None = None) -> TrainingSet:
        """The training set at these snapshots (default: the tables' current ones).

        Raises:
            TrainingSetError: a table has no snapshot, a feature is not served, or no
                prediction of the model has a label.
        """
        preds, examples = self._table(self.predictions_table), self._table(self.examples_table)
        p_snap = predictions_snapshot or _current(preds, self.model)
        e_snap = examples_snapshot or _current(examples, self.model)
        served = [f.name.removeprefix(FEATURE_PREFIX) for f in preds.schema().fields
                  if f.name.startswith(FEATURE_PREFIX) and _numeric(f.field_type)]
        features = self._features or tuple(sorted(served))
        columns = {f.name for f in preds.schema().fields if _numeric(f.field_type)}
        missing = [f for f in features if feature_column(f) not in columns]
        if missing or not features:
            raise TrainingSetError(self.model, f"no numeric served feature {missing or ''}; "
                                   f"served: {', '.join(sorted(served)) or 'none'}")
        labels = self.labels(e_snap)
        times = sorted(
            t for batch in self._scan(preds, p_snap, ("prediction_id", "event_time"))
            .to_arrow_batch_reader()
            for pid, t in zip(batch.column("prediction_id").to_pylist(),
                              batch.column("event_time").to_pylist(), strict=True)
            if pid in labels)
        if not times:
            raise TrainingSetError(self.model, "no prediction of it has a label yet")
        n_val = round(len(times) * self.validation_fraction)
        cutoff = times[len(times) - n_val] if n_val else times[-1].replace(year=9999)
        from refluent.lake.offsets import read_offsets

        offsets = {t.name()[-1]: {f"{topic}:{p}": o for (topic, p), o in
                                  sorted(read_offsets(t, snap).items())}
                   for t, snap in ((preds, p_snap), (examples, e_snap))}
        return TrainingSet(self.model, self.predictions_table, p_snap, self.examples_table,
                           e_snap, features, cutoff, len(times) - n_val, n_val, offsets)

    def batches(self, ts: TrainingSet, split: Split | None = None) -> Iterator[Any]:
        """The rows of ``ts`` (of one split) as Arrow record batches: ``prediction_id``,
        ``event_time``, the features (float64, null when not served) and ``label``."""
        pa: Any = require("pyarrow", "iceberg")
        pc: Any = require("pyarrow.compute", "iceberg")
        labels = self.labels(ts.examples_snapshot)
        known = pa.array(list(labels), type=pa.string())
        columns = ("prediction_id", "event_time",
                   *(feature_column(f) for f in ts.features))
        reader = self._scan(self._table(ts.predictions_table), ts.predictions_snapshot,
                            columns).to_arrow_batch_reader()
        names = ["prediction_id", "event_time", *ts.features, "label"]
        for batch in reader:
            keep = pc.is_in(batch.column("prediction_id"), value_set=known)
            if split is not None:
                late = pc.greater_equal(batch.column("event_time"),
                                        pa.scalar(ts.cutoff, batch.schema.field(
                                            "event_time").type))
                keep = pc.and_(keep, late if split == "validation" else pc.invert(late))
            rows = batch.filter(keep)
            if rows.num_rows == 0:
                continue
            ids = rows.column("prediction_id")
            arrays = [ids, rows.column("event_time"),
                      *(rows.column(feature_column(f)).cast(pa.float64())
                        for f in ts.features),
                      _label_array(pa, [labels[i] for i in ids.to_pylist()])]
            out = pa.RecordBatch.from_arrays(arrays, names=names)
            for offset in range(0, out.num_rows, self.batch_rows):
                yield out.slice(offset, self.batch_rows)


def feature_column(feature: str) -> str:
    """The ``predictions`` column of a served feature (dots, Iceberg's path separator, are
    written as ``_``).

    Examples:
        >>> feature_column("customer_orders.spend_1h")
        'feature__customer_orders_spend_1h'
    """
    from refluent.lake.schema import column_name

    return column_name(FEATURE_PREFIX + feature, ())


def _label_array(pa: Any, values: list[Any]) -> Any:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed kinds of labels: as text
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def _current(table: Table, model: str) -> int:
    snap = table.current_snapshot()
    if snap is None:
        raise TrainingSetError(model, f"table {table.name()} has no snapshot yet")
    return int(snap.snapshot_id)


def _numeric(field_type: Any) -> bool:
    from pyiceberg.types import DoubleType, FloatType, IntegerType, LongType

    return isinstance(field_type, DoubleType | FloatType | IntegerType | LongType)


__all__ = ["TrainingSet", "TrainingSetBuilder", "TrainingSetError"]
