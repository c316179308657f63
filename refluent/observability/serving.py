"""Prometheus metrics of the prediction service.

Latency has two views: per request (``refluent_serving_request_seconds``: request time, or
receipt when the request carries none, to the moment its prediction is handed to the producer)
and per batch, split by stage (``refluent_serving_stage_seconds``: ``fetch`` of the online
features, ``model`` scoring, ``produce`` queueing the answers; ``ack`` is each wait for the
broker's acknowledgements before a commit, off the request path).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1, 2.5)

REQUEST_SECONDS = Histogram(
    "refluent_serving_request_seconds",
    "Request (its own time, else its receipt) to prediction.",
    ["model", "source"],
    buckets=_LATENCY_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "refluent_serving_stage_seconds",
    "Time one batch spends in a stage: fetch (online features), model (scoring), produce "
    "(answers queued); ack: a wait for the broker's acknowledgements before a commit.",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "refluent_serving_batch_size",
    "Requests scored together.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
PREDICTIONS = Counter(
    "refluent_predictions_total", "Predictions made.", ["model", "version", "source"]
)
REJECTED = Counter(
    "refluent_serving_rejected_total",
    "Requests rejected (dead-lettered from Kafka, answered 4xx over HTTP).",
    ["model", "reason", "source"],
)
STALE_SERVED = Counter(
    "refluent_serving_stale_total",
    "Predictions made with a stale or missing view under the flag policy.",
    ["model"],
)
MODEL_VERSION = Gauge(
    "refluent_serving_model_version", "Version each served model alias now points to.",
    ["model", "alias"],
)
MODEL_CHECKPOINT = Gauge(
    "refluent_serving_model_checkpoint", "Checkpoint sequence of the served version (-1: none).",
    ["model", "alias"],
)
MODEL_SWAPS = Counter(
    "refluent_serving_model_swaps_total",
    "Times the service swapped to a new version or checkpoint of a model.",
    ["model", "alias"],
)
MODEL_REFRESH_ERRORS = Counter(
    "refluent_serving_model_refresh_errors_total",
    "Registry polls that failed (the model in hand keeps serving).",
    ["model"],
)
PUBLISH_FAILURES = Counter(
    "refluent_serving_publish_failures_total",
    "HTTP predictions the broker did not acknowledge on the predictions topic.",
)
