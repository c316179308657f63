"""Progressive-validation metrics of one model version, and the lake table that records them.

:class:`ProgressiveMetrics` keeps River's metrics twice, over every label seen
(``cumulative``) and over the last ``window`` labels (``rolling``, River's ``utils.Rolling``):

- classification: ``accuracy`` (of the predicted class), ``log_loss`` and ``roc_auc`` (of the
  positive class's probability) for a binary model; a model with more classes gets
  ``log_loss`` as River's ``CrossEntropy`` and no ``roc_auc``. Which applies is fixed by the
  first answer with probabilities: binary when the label is a boolean or the answer names at
  most two classes.
- regression: ``mae`` and ``rmse``.

An answer without a prediction (an untrained classifier that knows no class yet) updates
nothing, as in ``river.evaluate.progressive_val_score``. The state round-trips through
:meth:`ProgressiveMetrics.state` (pickle, base64), which a checkpoint stores.

:class:`ModelMetricsTable` is the lake table ``model_metrics``: one row per model version per
checkpoint (see :mod:`refluent.online_learning.learner`).

Examples:
    >>> from refluent.models.base import Scored
    >>> m = ProgressiveMetrics("classification", window=2)
    >>> for y, p in [(True, 0.9), (False, 0.6), (True, 0.8)]:
    ...     _ = m.update(y, Scored(p, p > 0.5, {"False": 1 - p, "True": p}))
    >>> round(m.get("accuracy"), 4), m.get("accuracy", "rolling")
    (0.6667, 0.5)
    >>> ProgressiveMetrics.from_state(m.state()).values() == m.values()
    True
"""

from __future__ import annotations

import base64
import pickle  # noqa: S403 - metric states are written and read back by Refluent itself
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from refluent.errors import require
from refluent.lake.mappings import ColumnSpec, TableMapping
from refluent.lake.schema import to_json
from refluent.models.base import Scored, Task, positive_class

if TYPE_CHECKING:
    from refluent.sinks.base import SinkRecord

Window = Literal["cumulative", "rolling"]
WINDOWS: tuple[Window, ...] = ("cumulative", "rolling")

CLASSIFICATION_METRICS = ("accuracy", "log_loss", "roc_auc")
"""Metric names of a classifier."""
REGRESSION_METRICS = ("mae", "rmse")
"""Metric names of a regressor."""
PRIMARY_METRIC: dict[str, tuple[str, bool]] = {"classification": ("accuracy", True),
                                               "regression": ("mae", False)}
"""Task -> (the metric promotion compares, whether bigger is better)."""

STATE_FORMAT = 1


def _river_metrics() -> Any:
    return require("river.metrics", "river")


def _rolling(cls: Any, window: int) -> Any:
    utils = require("river.utils", "river")
    return utils.Rolling(cls, window_size=window)  # type: ignore[attr-defined]


class ProgressiveMetrics:
    """Cumulative and rolling metrics of one model version (see the module docstring).

    Args:
        task: The model's task.
        window: Labels in the rolling window.
    """

    def __init__(self, task: Task, window: int) -> None:
        self.task = task
        self.window = window
        self.labels = 0
        """Labels that updated at least one metric."""
        self.binary: bool | None = None
        self._pairs: dict[str, tuple[Any, Any]] = {}
        metrics = _river_metrics()
        if task == "regression":
            self._add("mae", metrics.MAE)
            self._add("rmse", metrics.RMSE)
        else:
            self._add("accuracy", metrics.Accuracy)

    def _add(self, name: str, cls: Any) -> None:
        self._pairs[name] = (cls(), _rolling(cls, self.window))

    def _update(self, name: str, y_true: Any, y_pred: Any) -> None:
        cumulative, rolling = self._pairs[name]
        cumulative.update(y_true, y_pred)
        rolling.update(y_true, y_pred)

    def update(self, y: float | int | bool | str, answer: Scored) -> bool:
        """Score ``answer`` (what the model predicted before it knew ``y``) against ``y``.

        Returns:
            Whether any metric was updated.
        """
        # Called once per label and model: the River updates are inlined.
        pairs = self._pairs
        if self.task == "regression":
            score = answer.score
            if score is None:
                return False
            for name in ("mae", "rmse"):
                cumulative, rolling = pairs[name]
                cumulative.update(y, score)
                rolling.update(y, score)
            self.labels += 1
            return True
        updated = False
        label = answer.label
        if label is not None:
            cumulative, rolling = pairs["accuracy"]
            cumulative.update(y, label)
            rolling.update(y, label)
            updated = True
        probabilities = answer.probabilities
        if probabilities:
            updated = self._update_probabilities(y, probabilities) or updated
        if updated:
            self.labels += 1
        return updated

    def _update_probabilities(self, y: Any, probabilities: dict[str, float]) -> bool:
        binary = self.binary
        if binary is None:
            binary = self.binary = isinstance(y, bool) or len(probabilities) <= 2
            metrics = _river_metrics()
            if binary:
                self._add("log_loss", metrics.LogLoss)
                self._add("roc_auc", metrics.ROCAUC)
            else:
                self._add("log_loss", metrics.CrossEntropy)
        if binary:
            if isinstance(y, bool):
                positive = "True"
                y_true = y
            else:
                key = _positive_key(y, list(probabilities))
                if key is None:
                    return False
                positive, y_true = key, str(y) == key
            # As River's binary metrics read a probability dict: p(positive), 0 when absent.
            p = probabilities.get(positive, 0.0)
            pairs = self._pairs
            for name in ("log_loss", "roc_auc"):
                cumulative, rolling = pairs[name]
                cumulative.update(y_true, p)
                rolling.update(y_true, p)
            return True
        text = str(y)
        self._update("log_loss", y, {(y if k == text else k): v for k, v in probabilities.items()})
        return True

    def names(self) -> list[str]:
        """The metrics kept so far."""
        return list(self._pairs)

    def get(self, name: str, window: Window = "cumulative") -> float | None:
        """A metric's value (None when it is not kept or has seen nothing)."""
        pair = self._pairs.get(name)
        if pair is None or self.labels == 0:
            return None
        return float(pair[0 if window == "cumulative" else 1].get())

    def values(self) -> dict[tuple[str, Window], float]:
        """(metric, window) -> value, for every metric kept."""
        out: dict[tuple[str, Window], float] = {}
        for name in self._pairs:
            for window in WINDOWS:
                value = self.get(name, window)
                if value is not None:
                    out[(name, window)] = value
        return out

    def state(self) -> str:
        """The whole state, for a checkpoint (pickled River metrics, base64)."""
        data = {"format": STATE_FORMAT, "task": self.task, "window": self.window,
                "labels": self.labels, "binary": self.binary, "pairs": self._pairs}
        return base64.b64encode(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)).decode()

    @classmethod
    def from_state(cls, state: str) -> ProgressiveMetrics:
        """Rebuild from :meth:`state` (written by Refluent: it unpickles).

        Raises:
            ValueError: the state is not one :meth:`state` wrote.
        """
        try:
            data = pickle.loads(base64.b64decode(state))  # noqa: S301 - Refluent's own state
        except Exception as exc:  # any failure means a foreign or damaged state
            raise ValueError(f"not a metrics state: {type(exc).__name__}: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise ValueError("not a metrics state of format 1")
        out = cls(data["task"], data["window"])
        out.labels = data["labels"]
        out.binary = data["binary"]
        out._pairs = data["pairs"]
        return out


def _positive_key(y: Any, classes: list[str]) -> str | None:
    """The probability key of the positive class for label ``y``."""
    if isinstance(y, bool):
        return "True"
    if len(classes) == 2:
        return str(positive_class(classes))
    for key in ("True", "1", "true"):
        if key in classes:
            return key
    return None


# ---------------------------------------------------------------------------------------------
# lake table
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsRow:
    """One model version's metrics at one checkpoint: a row of ``model_metrics``."""

    model: str
    version: int
    seq: int
    roles: tuple[str, ...]
    task: str
    examples: int
    labels: int
    event_time: datetime
    created_at: datetime
    offsets: dict[str, dict[int, int]]
    values: dict[tuple[str, str], float]

    def coordinates(self) -> tuple[str, int, int]:
        """The row's ``(topic, partition, offset)`` for the lake sink's exactly-once offsets:
        ``model_metrics:<model>:<version>``, 0, the checkpoint sequence."""
        return f"model_metrics:{self.model}:{self.version}", 0, self.seq


METRIC_COLUMNS = [f"{m}{'' if w == 'cumulative' else '_rolling'}"
                  for m in CLASSIFICATION_METRICS + REGRESSION_METRICS for w in WINDOWS]
"""The metric columns of ``model_metrics``: ``accuracy``, ``accuracy_rolling``, ..."""


class ModelMetricsTable(TableMapping):
    """``model_metrics``: one row per model version per checkpoint, partitioned by the day of
    the stream's event time at the checkpoint. Records carry :class:`MetricsRow` values."""

    kind: ClassVar[str] = "model_metrics"

    def columns(self) -> list[ColumnSpec]:
        """model, version, seq, roles, task, examples, labels, event_time, created_at,
        offsets, then the metric columns."""
        from pyiceberg.types import (
            DoubleType,
            IntegerType,
            LongType,
            StringType,
            TimestamptzType,
        )

        return [
            ColumnSpec("model", StringType(), True, "Model name"),
            ColumnSpec("version", IntegerType(), True, "Model version"),
            ColumnSpec("seq", LongType(), True, "Checkpoint sequence of the version"),
            ColumnSpec("roles", StringType(), False, "Aliases the version held (comma-separated)"),
            ColumnSpec("task", StringType(), False, "classification or regression"),
            ColumnSpec("examples", LongType(), True, "Examples the version had learned"),
            ColumnSpec("labels", LongType(), True, "Labels its metrics had scored"),
            ColumnSpec("event_time", TimestamptzType(), True,
                       "Event time of the stream at the checkpoint"),
            ColumnSpec("created_at", TimestamptzType(), True, "When the row was written"),
            ColumnSpec("offsets", StringType(), False,
                       "Next input offsets at the checkpoint (JSON topic -> partition -> offset)"),
            *[ColumnSpec(c, DoubleType(), False, f"{c.replace('_rolling', '')} over "
                         f"{'the rolling window' if c.endswith('_rolling') else 'every label'}")
              for c in METRIC_COLUMNS],
        ]

    def to_row(self, record: SinkRecord[Any], ingest_time: datetime) -> dict[str, Any] | None:
        """The row of a record whose value is a :class:`MetricsRow`."""
        row = record.value
        if not isinstance(row, MetricsRow):
            raise TypeError(f"model_metrics rows are MetricsRow values, not {type(row).__name__}")
        out: dict[str, Any] = {
            "model": row.model, "version": row.version, "seq": row.seq,
            "roles": ",".join(row.roles), "task": row.task, "examples": row.examples,
            "labels": row.labels, "event_time": row.event_time, "created_at": row.created_at,
            "offsets": to_json({t: {str(p): o for p, o in parts.items()}
                                for t, parts in row.offsets.items()}),
        }
        for column in METRIC_COLUMNS:
            out[column] = None
        for (metric, window), value in row.values.items():
            out[metric if window == "cumulative" else f"{metric}_rolling"] = value
        return out
