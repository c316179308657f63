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
