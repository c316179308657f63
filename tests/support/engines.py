"""What an engine member's log (``refluent process --loglevel info``) says of its life in the
consumer group, per engine, for tests that wait for a join, an assignment or a revocation."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Markers:
    """Markers of an engine member's life in its log (loglevel info)."""

    join: str
    assigned: str
    ready: str
    revoked: re.Pattern[str]  # a non-empty set


MARKERS = {
    "faust": Markers("(Re-)joining group", "Setting newly assigned partitions", "Worker ready",
                     re.compile(r"Revoking previously assigned partitions\s*\n\+")),
    "native": Markers("native engine: joining group", "native engine: assigned",
                      "native engine: ready", re.compile(r"native engine: revoked")),
}
