"""A lake with a model's predictions and labels in it, written by the lake sink's mappings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from refluent.embedded.services import lake_catalog
from refluent.sinks.base import SinkRecord
from refluent.sinks.iceberg import IcebergSink


def catalog(tmp_path: Path) -> Any:
    """A SQLite catalog with its warehouse under ``tmp_path``."""
    (tmp_path / "warehouse").mkdir(exist_ok=True)
    return lake_catalog(f"sqlite:///{tmp_path / 'catalog.db'}",
                        (tmp_path / "warehouse").as_uri())


def write(catalog: Any, table: str, mapping: Any, events: list[Any], start: int,
          namespace: str = "lab") -> None:
    """``events`` into ``table`` in one commit, as records ``start``, ``start + 1``, ... of
    partition 0 of a topic named as the table."""
    sink = IcebergSink(catalog, mapping, table, namespace=namespace, max_records=10**6,
                       max_seconds=3600)
    sink.setup()
    sink.write([SinkRecord(table, 0, start + i, b"e", e, timestamp_ms=None)
                for i, e in enumerate(events)])
    sink.flush()
