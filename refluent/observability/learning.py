"""Prometheus metrics of the feedback join and the online learners.

``refluent_model_metric`` is the progressive-validation value of each model version
(``metric``: accuracy, log_loss, roc_auc, mae, rmse; ``window``: cumulative or rolling), set as
the learners score labels; the rest count what the join and the learners did.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

MODEL_METRIC = Gauge(
    "refluent_model_metric",
    "Progressive-validation metric of a model version (score before learning each label).",
    ["model", "version", "metric", "window"],
)
MODEL_LABELS = Gauge(
    "refluent_model_labels", "Labels the metrics of a model version have scored.",
    ["model", "version"],
)
EXAMPLES_LEARNED = Counter(
    "refluent_examples_learned_total", "Examples a model version learned online.",
    ["model", "version"],
)
LEARNER_ERRORS = Counter(
    "refluent_learner_errors_total",
    "Questions a model version could not answer or examples it could not learn (bad features).",
    ["model", "version", "step"],
)
CHECKPOINTS = Counter(
    "refluent_model_checkpoints_total", "Checkpoints saved of a model version.",
    ["model", "version"],
)
DP_UPDATES = Counter(
    "refluent_dp_updates_total",
    "DP updates of a champion: charged to the privacy ledger and trained, or refused by the "
    "budget.", ["model", "version", "outcome"],
)
LINEAGE_EPSILON = Gauge(
    "refluent_lineage_epsilon",
    "A model lineage's epsilon after its latest DP update (composed by the accountant).",
    ["model"],
)
PROMOTIONS = Counter(
    "refluent_model_promotions_total", "Challengers promoted to champion by the learner.",
    ["model"],
)
FEEDBACK_JOINED = Counter(
    "refluent_feedback_joined_total", "Labels joined to their prediction.", ["model"],
)
FEEDBACK_REJECTED = Counter(
    "refluent_feedback_rejected_total", "Labels dead-lettered by the join.", ["reason"],
)
FEEDBACK_WAITING = Counter(
    "refluent_feedback_waiting_total", "Labels that arrived before their prediction and waited.",
)
PREDICTIONS_SEEN = Counter(
    "refluent_feedback_predictions_total",
    "Predictions the join saw: kept as pending, or repeated (an id already held, skipped).",
    ["outcome"],
)
REORDER_BUFFERED = Gauge(
    "refluent_feedback_reorder_buffered",
    "Events held by the event-time merge until no partition can precede them.",
)
JOIN_CLOCK = Gauge(
    "refluent_feedback_clock_seconds",
    "The join's clock: the largest event time processed (seconds since the epoch).",
)
