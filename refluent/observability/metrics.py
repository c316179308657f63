"""Prometheus metrics shared by every Refluent process.

Each process serves them with :func:`serve_metrics`; names follow Prometheus conventions
(``_total`` counters, base units).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECORDS_IN = Counter(
    "refluent_records_in_total", "Records consumed.", ["topic", "group"]
)
RECORDS_PROCESSED = Counter(
    "refluent_records_processed_total", "Records processed successfully.", ["group"]
)
RECORDS_DEAD_LETTERED = Counter(
    "refluent_records_dead_lettered_total",
    "Records sent to a dead-letter topic.",
    ["topic", "step", "reason"],
)
RECORDS_PRODUCED = Counter(
    "refluent_records_produced_total", "Records handed to the producer.", ["topic"]
)
DELIVERY_FAILURES = Counter(
    "refluent_delivery_failures_total", "Records the broker did not accept.", ["topic"]
)
CONSUMER_LAG = Gauge(
    "refluent_consumer_lag", "Records behind the high watermark.", ["topic", "partition", "group"]
)
BATCH_SECONDS = Histogram(
    "refluent_batch_processing_seconds",
    "Time to process one consumed batch, commit excluded.",
    ["group"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def serve_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread."""
    start_http_server(port, addr=addr)

FEATURE_FRESHNESS = Histogram(
    "refluent_feature_freshness_seconds",
    "Event time of a feature update to the moment it was written to the online store.",
    ["view"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
ONLINE_UPDATES_APPLIED = Counter(
    "refluent_online_updates_applied_total",
    "Feature updates applied to the online store (newer than what it held).",
    ["view"],
)
ONLINE_UPDATES_STALE = Counter(
    "refluent_online_updates_stale_total",
    "Feature updates the online store ignored: not newer than what it held (replays, late).",
    ["view"],
)
LAKE_COMMIT_SECONDS = Histogram(
    "refluent_lake_commit_seconds",
    "Time to write and commit one micro-batch to a lake table (data files and catalog commit).",
    ["table"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LAKE_ROWS_WRITTEN = Counter(
    "refluent_lake_rows_written_total", "Rows appended to lake tables.", ["table"]
)
LAKE_RECORDS_SKIPPED = Counter(
    "refluent_lake_records_skipped_total",
    "Records the lake sink did not write: already in the table (replayed), tombstones, or "
    "rejected by the row mapping and handed to the bad-record callback.",
    ["table", "reason"],
)
LAKE_COMMIT_CONFLICTS = Counter(
    "refluent_lake_commit_conflicts_total",
    "Lake commits retried because another commit landed first.",
    ["table"],
)
FEATURE_UPDATES = Counter(
    "refluent_feature_updates_total", "Feature updates published by the engine.", ["view"]
)
ALERTS_RAISED = Counter(
    "refluent_alerts_raised_total", "Drift alerts the monitor raised.", ["model", "kind"]
)
WEBHOOK_DELIVERIES = Counter(
    "refluent_webhook_deliveries_total",
    "Webhook delivery attempts by outcome (delivered, retried, dead).",
    ["outcome"],
)
ENGINE_RECORD_SECONDS = Histogram(
    "refluent_engine_record_seconds",
    "Time the engine spends applying one record to a view (state load, aggregate, publish); "
    "the native engine observes the mean of each micro-batch.",
    ["view"],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25),
)
