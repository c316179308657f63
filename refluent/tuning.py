"""Process-wide tuning of the long-running stream commands (``refluent process``, ``refluent
sink lake|online``).

CPython's cycle collector runs a young-generation pass every 700 new container objects and
walks every object still alive in its full passes. A stream process creates and drops a few
objects per record (decoded events, rows, updates) while holding many long-lived ones (modules,
schemas, entity states), so with the defaults it spends a large share of its time in the
collector (about a third of the lake sink's batch step, as measured). :func:`for_streaming`
moves everything start-up made out of the collector's way (``gc.freeze``) and lets the young
generation grow larger before a pass; memory held by actual cycles is still reclaimed.

Examples:
    >>> import gc
    >>> before = gc.get_threshold()
    >>> for_streaming(young=50_000)
    >>> gc.get_threshold()[0]
    50000
    >>> gc.unfreeze(); gc.set_threshold(*before)
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
"""New container objects between two young-generation passes (CPython's default is 700)."""


def for_streaming(young: int = YOUNG_THRESHOLD) -> None:
    """Freeze what exists now (start-up) out of the cycle collector and collect young objects
    every ``young`` allocations instead of 700; call once, after start-up, in a process whose
    work is records in, records out."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)
