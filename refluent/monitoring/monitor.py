"""One monitor per served model version: its error stream and its inputs, turned into alerts.

Pure: a :class:`ModelMonitors` takes decoded examples and predictions and returns the
``DriftAlert`` s they raise; the service (:mod:`refluent.monitoring.service`) reads and writes
Kafka around it.

- a ``LabeledExample`` gives the version's error: 1/0 when the model predicted a class, the
  absolute error of the score otherwise; :class:`~refluent.monitoring.concept.ErrorDriftMonitor`
  watches it and a rise is an ``error`` alert;
- the same error goes through :class:`~refluent.monitoring.performance.RealisedPerformance`'s
  windows, and a fall of the realised accuracy (a rise of the mean absolute error) from the
  version's first examples is a ``performance.degraded`` alert (detector ``realised``);
- a ``Prediction`` gives the features the version saw and its score;
  :class:`~refluent.monitoring.data.DataDriftMonitor` compares them with the version's first
  requests and a shift is a ``feature`` (or ``score``) alert;
- a binary classifier's prediction gives its confidence, and
  :class:`~refluent.monitoring.performance.PerformanceEstimator` (CBPE, calibrated on the
  version's first labelled examples) raises ``performance.degraded`` (detector ``cbpe``) when
  the estimated accuracy of a window falls, before its labels arrive;
- a prediction served with stale features counts towards ``features.stale``; a request the
  serving rejected (read from ``inference.requests.dlq``) towards its model's
  ``model.failing``; every dead letter towards its topic's ``deadletters.rising``; a look at a
  consumer group's lag may raise ``consumer.lagging``, and an alias change in the registry is
  a ``model.promoted`` (see :mod:`refluent.monitoring.operations`).

An alert's id is derived from the model, version, detector, feature and the record that raised
it (topic, partition, offset), so the same record raising it again after a restart gives the
same id, which the webhook outbox takes only once.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson

from refluent.config import MonitorSettings
from refluent.monitoring.concept import ErrorDriftMonitor
from refluent.monitoring.data import DataDriftMonitor
from refluent.monitoring.operations import DeadLetterRate, FractionWindow, LagWatch
from refluent.monitoring.performance import (
    Degradation,
    PerformanceEstimator,
    RealisedPerformance,
)
from refluent.monitoring.reference import References
from refluent.streams.contracts import DriftAlert, LabeledExample, Prediction, Scalar
from refluent.streams.deadletter import DeadLetter
from refluent.streams.origin import Origin

if TYPE_CHECKING:
    from refluent.registry.base import AliasEvent

SERVING_STEP = "serving"
"""Step of the dead letters the serving writes for requests it could not answer."""
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


def _binary_score(prediction: Prediction) -> float | None:
    """The positive-class score of a binary classifier's prediction (None for others)."""
    probs = prediction.probabilities
    if prediction.label is None or prediction.score is None or (probs and len(probs) != 2):
        return None
    return prediction.score if 0.0 <= prediction.score <= 1.0 else None


def _where(origin: Origin) -> dict[str, Scalar]:
    return {"topic": origin.topic, "partition": origin.partition, "offset": origin.offset}


@dataclass
class _Version:
    errors: ErrorDriftMonitor
    data: DataDriftMonitor
    cbpe: PerformanceEstimator
    realised: RealisedPerformance
    stale: FractionWindow
    stale_ages: dict[str, float] = field(default_factory=dict)


@dataclass
class ModelMonitors:
    """The monitors of every model version seen (created on its first record), and the
    operational watches."""

    settings: MonitorSettings = field(default_factory=MonitorSettings)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    references: References | None = None
    """Gives a new version's data-drift reference (its training window); None, or a None
    answer, keeps its first requests (see :mod:`refluent.monitoring.reference`)."""
    _versions: dict[tuple[str, str], _Version] = field(default_factory=dict)
    _failures: dict[str, FractionWindow] = field(default_factory=dict)
    _dead_letters: DeadLetterRate = field(init=False)
    _lag: LagWatch = field(init=False)

    def __post_init__(self) -> None:
        self._dead_letters = DeadLetterRate(self.settings.deadletters_per_minute)
        self._lag = LagWatch(self.settings.lag_threshold)

    def state(self) -> bytes:
        """The monitors' state, pickled, for a checkpoint (the settings and clock are not in
        it: a version restored keeps the window sizes it was made with)."""
        return pickle.dumps({"versions": self._versions, "failures": self._failures,
                             "dead_letters": self._dead_letters, "lag": self._lag},
                            protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, state: bytes) -> None:
        """Take the state :meth:`state` gave."""
        got = pickle.loads(state)  # noqa: S301 - the monitor's own checkpoint
        self._versions, self._failures = got["versions"], got["failures"]
        self._dead_letters, self._lag = got["dead_letters"], got["lag"]

    def _version(self, model: str, version: str) -> _Version:
        key = (model, version)
        mon = self._versions.get(key)
        if mon is None:
            s = self.settings
            mon = self._versions[key] = _Version(
                ErrorDriftMonitor(s.detector, warmup=s.warmup, min_samples=s.min_samples,
                                  cooldown=s.cooldown),
                DataDriftMonitor(s.reference_size, s.window_size, s.psi_threshold,
                                 s.js_threshold),
                PerformanceEstimator(s.reference_size, s.window_size, s.calibration_size,
                                     s.performance_sigmas, s.min_drop),
                RealisedPerformance(s.reference_size, s.window_size, s.performance_sigmas,
                                    s.min_drop),
                FractionWindow(s.window_size, s.stale_share))
            rows = self.references(model, version) if self.references is not None else None
            if rows:
                mon.data.set_reference(rows)
        return mon

    def on_example(self, example: LabeledExample, origin: Origin) -> list[DriftAlert]:
        """Watch one example's error and realised metric; the alerts when they worsened."""
        error = example_error(example)
        if error is None:
            return []
        mon = self._version(example.model_name, example.model_version)
        binary = example.predicted_label is not None
        if binary and example.score is not None and 0.0 <= example.score <= 1.0:
            mon.cbpe.on_label(example.score, error == 0.0)
        out = []
        worse = mon.realised.on_error(error, binary)
        if worse is not None:
            out.append(self._degraded(example.model_name, example.model_version, "realised",
                                      worse, origin, example.label_time, "examples"))
        found = mon.errors.update(error)
        if found is None:
            return out
        out.append(DriftAlert(
            alert_id=alert_id(example.model_name, example.model_version, found.detector,
                              "error", origin.topic, origin.partition, origin.offset),
            model_name=example.model_name, model_version=example.model_version,
            detector=found.detector, kind="error", statistic=found.error_recent,
            threshold=found.error_before, severity="critical", detected_at=example.label_time,
            window={"examples": found.index - found.since + 1, "since_example": found.since,
                    "last_example": found.index, "recent": mon.errors.recent,
                    **_where(origin)}))
        return out

    def _degraded(self, model: str, version: str, detector: str, worse: Degradation,
                  origin: Origin, at: datetime, unit: str) -> DriftAlert:
        return DriftAlert(
            alert_id=alert_id(model, version, detector, "performance", origin.topic,
                              origin.partition, origin.offset),
            event="performance.degraded", model_name=model, model_version=version,
            detector=detector, kind="performance", statistic=round(worse.value, 6),
            threshold=round(worse.threshold, 6), severity="critical", detected_at=at,
            window={"metric": worse.metric, unit: worse.window_end - worse.window_start + 1,
                    "first": worse.window_start, "last": worse.window_end,
                    "reference": round(worse.reference, 6), **_where(origin)})

    def on_prediction(self, prediction: Prediction, origin: Origin) -> list[DriftAlert]:
        """Watch one request's features, score, confidence and freshness; the alerts of the
        windows it closed."""
        model, version = prediction.model_name, prediction.model_version
        mon = self._version(model, version)
        out = self._failed(model, False, None, origin, prediction.ts)
        row: dict[str, object] = {k: v for k, v in prediction.features.items()
                                  if not isinstance(v, list)}  # vectors are not watched
        if prediction.score is not None:
            row[SCORE] = prediction.score
        for d in mon.data.update(row):
            is_score = d.feature == SCORE
            out.append(DriftAlert(
                alert_id=alert_id(model, version, d.test, d.feature, origin.topic,
                                  origin.partition, origin.offset),
                model_name=model, model_version=version,
                detector=d.test, kind="score" if is_score else "feature",
                feature=None if is_score else d.feature, statistic=d.statistic,
                threshold=d.threshold, detected_at=prediction.ts,
                window={"requests": d.window_end - d.window_start + 1,
                        "first_request": d.window_start, "last_request": d.window_end,
                        "reference": mon.data.reference_size, **_where(origin),
                        **{k: round(v, 6) for k, v in d.statistics.items()}}))
        score = _binary_score(prediction)
        if score is not None:
            worse = mon.cbpe.on_score(score)
            if worse is not None:
                out.append(self._degraded(model, version, "cbpe", worse, origin, prediction.ts,
                                          "requests"))
        if prediction.stale:
            for view, age in prediction.feature_ages_ms.items():
                mon.stale_ages[view] = max(age, mon.stale_ages.get(view, 0.0))
        share = mon.stale.update(prediction.stale)
        if share is None:
            if mon.stale.seen == 0:
                mon.stale_ages = {}
            return out
        ages, mon.stale_ages = mon.stale_ages, {}
        out.append(DriftAlert(
            alert_id=alert_id(model, version, "stale_share", origin.topic, origin.partition,
                              origin.offset),
            event="features.stale", model_name=model, model_version=version,
            detector="stale_share", kind="freshness", statistic=round(share, 6),
            threshold=self.settings.stale_share, detected_at=prediction.ts,
            window={"requests": mon.stale.size, **_where(origin),
                    **{f"oldest_ms.{v}": round(a, 1) for v, a in sorted(ages.items())}}))
        return out

    def _failed(self, model: str, failed: bool, reason: str | None, origin: Origin,
                at: datetime) -> list[DriftAlert]:
        window = self._failures.get(model)
        if window is None:
            s = self.settings
            window = self._failures[model] = FractionWindow(s.window_size, s.failure_share)
        share = window.update(failed, reason)
        if share is None:
            return []
        return [DriftAlert(
            alert_id=alert_id(model, "failure_share", origin.topic, origin.partition,
                              origin.offset),
            event="model.failing", model_name=model, detector="failure_share",
            kind="requests", statistic=round(share, 6), threshold=self.settings.failure_share,
            severity="critical", detected_at=at,
            window={"requests": window.size, **_where(origin),
                    **{f"reason.{r}": n for r, n in sorted(window.take_reasons().items())}})]

    def on_dead_letter(self, letter: DeadLetter, origin: Origin, timestamp_ms: int
                       ) -> list[DriftAlert]:
        """Count one dead letter; the alerts of its minute's rate and, for a rejected
        prediction request, of its model's failure share."""
        at = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
        out = []
        if letter.step == SERVING_STEP:
            model = _request_model(letter.value)
            if model is not None:
                out += self._failed(model, True, letter.reason, origin, at)
        alarm = self._dead_letters.update(origin.topic, timestamp_ms, letter.reason)
        if alarm is not None:
            out.append(DriftAlert(
                alert_id=alert_id(origin.topic, "per_minute", alarm.minute_start_ms),
                event="deadletters.rising", subject=origin.topic, detector="per_minute",
                kind="deadletters", statistic=alarm.count,
                threshold=self._dead_letters.per_minute, detected_at=at,
                window={"minute_start": datetime.fromtimestamp(
                            alarm.minute_start_ms / 1000, UTC).isoformat(),
                        "source_topic": letter.topic, **_where(origin),
                        **{f"reason.{r}": n for r, n in sorted(alarm.reasons.items())}}))
        return out

    def on_alias_event(self, event: AliasEvent) -> DriftAlert:
        """The ``model.promoted`` alert of one alias change (a promotion or a rollback); its id
        is the event's (model, alias, sequence), so reading the log again repeats no alert."""
        return DriftAlert(
            alert_id=alert_id(event.name, event.alias, event.seq, "alias"),
            event="model.promoted", model_name=event.name, model_version=str(event.version),
            detector=event.event, kind="promotion", statistic=event.version,
            threshold=event.previous_version or 0, severity="info", detected_at=event.at,
            window={"alias": event.alias, "seq": event.seq, "reason": event.reason,
                    "previous_version": event.previous_version})

    def on_lag(self, group: str, lag: int, topics: list[str]) -> list[DriftAlert]:
        """Judge one look at a group's lag; the alert when it just went above the threshold."""
        if not self._lag.update(group, lag):
            return []
        now = self.clock()
        minute = now.replace(second=0, microsecond=0).isoformat()
        return [DriftAlert(
            alert_id=alert_id(group, "lag", minute), event="consumer.lagging",
            subject=group, detector="lag", kind="lag", statistic=lag,
            threshold=self._lag.threshold, detected_at=now,
            window={"topics": ",".join(sorted(topics))})]


def _request_model(value: bytes | None) -> str | None:
    try:
        model = orjson.loads(value or b"").get("model")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return model if isinstance(model, str) else None


__all__ = ["SCORE", "ModelMonitors", "alert_id", "example_error"]
