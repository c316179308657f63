"""One monitor per served model version: its error stream and its inputs, turned into alerts.

Pure: a :class:`ModelMonitors` takes decoded examples and predictions and returns the
``DriftAlert`` s they raise; the service (:mod:`refluent.monitoring.service`) reads and writes
Kafka around it.

- a ``LabeledExample`` gives the version's error: 1/0 when the model predicted a class, the
  absolute error of the score otherwise; :class:`~refluent.monitoring.concept.ErrorDriftMonitor`
  watches it and a rise is an ``error`` alert;
- a ``Prediction`` gives the features the version saw and its score;
  :class:`~refluent.monitoring.data.DataDriftMonitor` compares them with the version's first
  requests and a shift is a ``feature`` (or ``score``) alert.

An alert's id is derived from the model, version, detector, feature and the record that raised
it (topic, partition, offset), so the same record raising it again after a restart gives the
same id, which the webhook outbox takes only once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from refluent.config import MonitorSettings
from refluent.monitoring.concept import ErrorDriftMonitor
from refluent.monitoring.data import DataDriftMonitor
from refluent.streams.contracts import DriftAlert, LabeledExample, Prediction
from refluent.streams.origin import Origin

SCORE = "__score__"
"""Name under which the score is watched beside the features."""


def example_error(example: LabeledExample) -> float | None:
    """The model's error on one example (None when it cannot be told).

        >>> from datetime import UTC, datetime
        >>> t = datetime(2026, 1, 1, tzinfo=UTC)
        >>> ex = LabeledExample(prediction_id="p", entity_id="e", model_name="m",
        ...                     model_version="1", features={}, label=True, predicted_label=False,
        ...                     prediction_time=t, label_time=t)
        >>> example_error(ex)
        1.0
    """
    if example.predicted_label is not None:
        return float(str(example.predicted_label).lower() != str(example.label).lower())
    if example.score is not None and isinstance(example.label, (int, float)):
        return abs(float(example.score) - float(example.label))
    return None


def alert_id(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


@dataclass
class _Version:
    errors: ErrorDriftMonitor
    data: DataDriftMonitor


@dataclass
class ModelMonitors:
    """The monitors of every model version seen (created on its first record)."""

    settings: MonitorSettings = field(default_factory=MonitorSettings)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    _versions: dict[tuple[str, str], _Version] = field(default_factory=dict)

    def _version(self, model: str, version: str) -> _Version:
        key = (model, version)
        mon = self._versions.get(key)
        if mon is None:
            s = self.settings
            mon = self._versions[key] = _Version(
                ErrorDriftMonitor(s.detector, warmup=s.warmup, min_samples=s.min_samples,
                                  cooldown=s.cooldown),
                DataDriftMonitor(s.reference_size, s.window_size, s.psi_threshold,
                                 s.js_threshold))
        return mon

    def on_example(self, example: LabeledExample, origin: Origin) -> list[DriftAlert]:
        """Watch one example's error; the alert when it rose."""
        error = example_error(example)
        if error is None:
            return []
        mon = self._version(example.model_name, example.model_version)
        found = mon.errors.update(error)
        if found is None:
            return []
        return [DriftAlert(
            alert_id=alert_id(example.model_name, example.model_version, found.detector,
                              "error", origin.topic, origin.partition, origin.offset),
            model_name=example.model_name, model_version=example.model_version,
            detector=found.detector, kind="error", statistic=found.error_recent,
            threshold=found.error_before, severity="critical", detected_at=example.label_time,
            window={"examples": found.index - found.since + 1, "since_example": found.since,
                    "last_example": found.index, "recent": mon.errors.recent,
                    "topic": origin.topic, "partition": origin.partition,
                    "offset": origin.offset})]

    def on_prediction(self, prediction: Prediction, origin: Origin) -> list[DriftAlert]:
        """Watch one request's features and score; the alerts of the windows it closed."""
        mon = self._version(prediction.model_name, prediction.model_version)
        row: dict[str, object] = {k: v for k, v in prediction.features.items()
                                  if not isinstance(v, list)}  # vectors are not watched
        if prediction.score is not None:
            row[SCORE] = prediction.score
        out = []
        for d in mon.data.update(row):
            is_score = d.feature == SCORE
            out.append(DriftAlert(
                alert_id=alert_id(prediction.model_name, prediction.model_version, d.test,
                                  d.feature, origin.topic, origin.partition, origin.offset),
                model_name=prediction.model_name, model_version=prediction.model_version,
                detector=d.test, kind="score" if is_score else "feature",
                feature=None if is_score else d.feature, statistic=d.statistic,
                threshold=d.threshold, detected_at=prediction.ts,
                window={"requests": d.window_end - d.window_start + 1,
                        "first_request": d.window_start, "last_request": d.window_end,
                        "reference": mon.data.reference_size, "topic": origin.topic,
                        "partition": origin.partition, "offset": origin.offset,
                        **{k: round(v, 6) for k, v in d.statistics.items()}}))
        return out


__all__ = ["SCORE", "ModelMonitors", "alert_id", "example_error"]
