"""Debezium changes of a ``customers`` table (id, email), as the lake tests feed them."""

from __future__ import annotations

from refluent.streams.contracts import CdcEnvelope


def customer_change(op: str, row_id: int, lsn: int, email: str | None = None,
                    before_id: int | None = None) -> CdcEnvelope:
    """A change of customer ``row_id`` at log position ``lsn`` (``before_id``: a key change)."""
    after = {"id": row_id, "email": email} if op in ("c", "u", "r") else None
    before = None
    if op in ("u", "d"):
        before = {"id": before_id if before_id is not None else row_id, "email": "old"}
    return CdcEnvelope.model_validate({
        "before": before, "after": after, "op": op, "ts_ms": 1_709_330_000_000 + lsn,
        "source": {"connector": "postgresql", "db": "shop", "table": "customers",
                   "ts_ms": 1_709_320_000_000 + lsn, "lsn": lsn},
    })
