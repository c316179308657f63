"""A real SQLite-backed Iceberg catalog in a temporary folder, and lake sinks on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from refluent.embedded.services import lake_catalog
from refluent.lake.mappings import CdcChangelogTable, RawEventsTable, TableMapping
from refluent.sinks.base import SinkRecord
from refluent.sinks.iceberg import IcebergSink
from refluent.streams.contracts import CdcEnvelope

NAMESPACE = "lab"
CDC = "cdc.customers"


@dataclass
class Lab:
    """A catalog (``uri``, ``warehouse``) and set-up sinks on its namespace ``lab``."""

    uri: str
    warehouse: str
    catalog: Any

    def sink(self, table: str = "raw", mapping: TableMapping | None = None,
             **kwargs: Any) -> IcebergSink:
        """A set-up sink on ``lab.<table>`` that commits only on ``flush()``."""
        kwargs.setdefault("max_records", 1000)
        kwargs.setdefault("max_seconds", 3600)
        sink = IcebergSink(self.catalog, mapping or RawEventsTable(), table, namespace=NAMESPACE,
                           **kwargs)
        sink.setup()
        return sink

    def cdc_sink(self, changes: list[tuple[int, int, CdcEnvelope | None]]) -> IcebergSink:
        """The changelog ``lab.cdc_customers`` holding ``changes`` (partition, offset, change)
        of the topic ``cdc.customers``."""
        sink = self.sink("cdc_customers", CdcChangelogTable())
        sink.write([SinkRecord(CDC, p, o, None, env) for p, o, env in changes])
        sink.flush()
        return sink

    @staticmethod
    def change(op: str, row_id: int, lsn: int, email: str = "", before_id: int | None = None
               ) -> CdcEnvelope:
        """A Postgres change of the row ``{"id", "email"}`` at log position ``lsn`` (the email
        defaults to ``<id>@<lsn>``; a before-row, for u and d, has the email ``old``)."""
        after = ({"id": row_id, "email": email or f"{row_id}@{lsn}"} if op in ("c", "u", "r")
                 else None)
        before = None
        if op in ("u", "d"):
            before = {"id": before_id if before_id is not None else row_id, "email": "old"}
        return CdcEnvelope.model_validate({
            "before": before, "after": after, "op": op, "ts_ms": 1_709_330_000_000 + lsn,
            "source": {"connector": "postgresql", "ts_ms": 1_709_320_000_000 + lsn, "lsn": lsn},
        })

    @staticmethod
    def rows(sink: IcebergSink, *cols: str) -> list[dict[str, Any]]:
        """The table's rows (as of now), only ``cols``, sorted by them."""
        sink.table.refresh()
        return sorted(sink.table.scan().to_arrow().select(list(cols)).to_pylist(),
                      key=lambda r: tuple(str(r[c]) for c in cols))


@pytest.fixture()
def lab(tmp_path: Path) -> Lab:
    (tmp_path / "warehouse").mkdir()
    uri = f"sqlite:///{tmp_path / 'catalog.db'}"
    warehouse = (tmp_path / "warehouse").as_uri()
    return Lab(uri, warehouse, lake_catalog(uri, warehouse))


@pytest.fixture()
def catalog(lab: Lab) -> Any:
    return lab.catalog
