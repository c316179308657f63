"""The privacy ledger as a lake table, ``privacy_ledger``: one row per DP run of any lineage.

A charge reads the lineage's rows at the table's head, plans, and appends its row in one
Iceberg commit whose base is that head: a writer that committed in between makes the commit
fail, and the loser reads again and plans against the new history (so two jobs can never spend
the same budget twice). The table survives restarts and is queryable like any lake table
(``refluent lake query``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from refluent.errors import require
from refluent.lake.catalog import OPERATION_KEY, ensure_table, identifier, retry_commit, transaction
from refluent.privacy.errors import LedgerCommitError
from refluent.privacy.ledger import Decide, LedgerEntry, PrivacyLedger, Spend

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

    from refluent.config import Settings

LEDGER_TABLE = "privacy_ledger"


def _schema() -> Any:
    from pyiceberg.schema import Schema
    from pyiceberg.types import (
        DoubleType,
        LongType,
        NestedField,
        StringType,
        TimestamptzType,
    )

    fields = [("lineage", StringType(), True, "Model lineage (the model's name)"),
              ("seq", LongType(), True, "Position in the lineage's history, from 1"),
              ("run_id", StringType(), True, "Idempotency key of the run"),
              ("kind", StringType(), True, "retrain or update"),
              ("model_version", StringType(), False, "Version the run made or updated"),
              ("noise_multiplier", DoubleType(), True, "DP-SGD noise multiplier"),
              ("sample_rate", DoubleType(), True, "Poisson sampling rate"),
              ("steps", LongType(), True, "Optimizer steps"),
              ("delta", DoubleType(), True, "Delta epsilon was composed at"),
              ("accountant", StringType(), True, "prv or rdp"),
              ("epsilon_total", DoubleType(), True, "Lineage's epsilon after this run"),
              ("at", TimestamptzType(), True, "When it was charged")]
    return Schema(*[NestedField(i, name, typ, required=req, doc=doc)
                    for i, (name, typ, req, doc) in enumerate(fields, 1)])


class IcebergPrivacyLedger(PrivacyLedger):
    """The ledger in the lake (see the module).

    Args:
        catalog: The lake catalog, or what opens it (on first use).
        namespace: Its namespace.
        budget, delta, accountant: As :class:`~refluent.privacy.ledger.PrivacyLedger`'s.
        commit_attempts: Commits tried before giving up (each after re-planning).
    """

    def __init__(self, catalog: Catalog | Callable[[], Catalog], namespace: str, *,
                 budget: float, delta: float, accountant: str = "prv",
                 commit_attempts: int = 20) -> None:
        super().__init__(budget, delta, accountant)
        self._catalog_source = catalog
        self._catalog: Catalog | None = None
        self.namespace = namespace
        self.commit_attempts = commit_attempts
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> IcebergPrivacyLedger:
        """The ledger in ``settings.lake``'s catalog and namespace, with ``settings.privacy``'s
        budget, delta and accountant."""
        from refluent.lake.catalog import open_catalog

        p = settings.privacy
        return cls(lambda: open_catalog(settings), settings.lake.namespace,
                   budget=p.epsilon_budget, delta=p.delta, accountant=p.accountant)

    @property
    def table_name(self) -> str:
        return identifier(LEDGER_TABLE, self.namespace)

    def _table(self) -> Table:
        with self._lock:
            if self._catalog is None:
                source = self._catalog_source
                self._catalog = source() if callable(source) else source
            return ensure_table(self._catalog, self.table_name, _schema())

    def _read(self, table: Table, lineage: str) -> list[LedgerEntry]:
        if table.current_snapshot() is None:
            return []
        expressions: Any = require("pyiceberg.expressions", "iceberg")
        rows = table.scan(row_filter=expressions.EqualTo("lineage", lineage)).to_arrow()
        out = [LedgerEntry(r["lineage"], r["seq"],
                           Spend(r["run_id"], r["noise_multiplier"], r["sample_rate"],
                                 r["steps"], r["kind"], r["model_version"]),
                           r["delta"], r["accountant"], r["epsilon_total"], r["at"])
               for r in rows.to_pylist()]
        return sorted(out, key=lambda e: e.seq)

    def entries(self, lineage: str) -> list[LedgerEntry]:
        return self._read(self._table(), lineage)

    def _commit(self, lineage: str, decide: Decide) -> LedgerEntry:
        pa: Any = require("pyarrow", "iceberg")

        def attempt(n: int) -> LedgerEntry:
            table = self._table()  # the head now: a commit on a stale base fails
            entry, append = decide(self._read(table, lineage))
            if not append:
                return entry
            s = entry.spend
            row = {"lineage": lineage, "seq": entry.seq, "run_id": s.run_id, "kind": s.kind,
                   "model_version": s.model_version, "noise_multiplier": s.noise_multiplier,
                   "sample_rate": s.sample_rate, "steps": s.steps, "delta": entry.delta,
                   "accountant": entry.accountant, "epsilon_total": entry.epsilon_total,
                   "at": entry.at}
            tx = transaction(table)
            tx.append(pa.Table.from_pylist([row], schema=table.schema().as_arrow()),
                      snapshot_properties={OPERATION_KEY: f"privacy:{s.kind}"})
            tx.commit_transaction()
            return entry

        return retry_commit(attempt, attempts=self.commit_attempts, on_conflict=lambda: None,
                            error=lambda n, last: LedgerCommitError(self.table_name, n, last),
                            backoff_s=0.02, max_backoff_s=0.5)


__all__ = ["LEDGER_TABLE", "IcebergPrivacyLedger"]
