"""Event-time windows for feature views: tumbling, hopping and sliding.

A window spec is declared with :class:`~datetime.timedelta` sizes and works internally in integer
epoch milliseconds, the unit of Kafka timestamps and Debezium's ``ts_ms``. Windows are half-open,
``[start_ms, end_ms)``, and tumbling and hopping windows are aligned to the epoch (a 1 h window
starts on the hour in UTC), so every engine and every replay cuts the same windows.

* :class:`Tumbling` windows do not overlap: each event falls in exactly one.
* :class:`Hopping` windows of ``size`` start every ``hop``: each event falls in ``size / hop``.
* :class:`Sliding` windows end at each event: the one for an event at ``ts`` covers
  ``(ts - size, ts]``, that is ``[ts - size + 1, ts + 1)``.

A window *closes* ``grace`` after its end (:meth:`WindowSpec.closes_at`): once an entity's
watermark has reached that time, events for the window are late and the window is no longer kept.

Specs can be written as text for TOML/YAML declarations: ``"tumbling:1h"``, ``"hopping:1h/5m"``
(size 1 h, a new window every 5 min), ``"sliding:10m"``, optionally followed by ``" grace=5m"``
(see :func:`parse_window`), or as a mapping (see :func:`window_from_spec`).

Examples:
    >>> w = parse_window("hopping:1h/20m", grace="5m")
    >>> w
    Hopping(size=datetime.timedelta(seconds=3600), hop=datetime.timedelta(seconds=1200), \
grace=datetime.timedelta(seconds=300))
    >>> [tuple(b) for b in w.assign(4_000_000)]
    [(1200000, 4800000), (2400000, 6000000), (3600000, 7200000)]
    >>> tuple(w.current(4_000_000)), w.closes_at(w.current(4_000_000))
    ((1200000, 4800000), 5100000)
    >>> str(w)
    'hopping:1h/20m grace=5m'
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, NamedTuple

from refluent.processors.errors import WindowSpecError

__all__ = [
    "Hopping",
    "Sliding",
    "Tumbling",
    "WindowBounds",
    "WindowSpec",
    "format_duration",
    "ms_to_datetime",
    "parse_duration",
    "parse_window",
    "window_from_spec",
]

_MS = timedelta(milliseconds=1)
_UNITS_MS = {"w": 604_800_000, "d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_duration(text: str | timedelta) -> timedelta:
    """Parse a duration such as ``"30s"``, ``"5m"``, ``"1h30m"``, ``"1d"`` or ``"250ms"``.

    Units: ``ms``, ``s``, ``m`` (minutes), ``h``, ``d``, ``w``; parts are whole numbers, largest
    unit first. ``"0"`` is zero. A :class:`~datetime.timedelta` is returned as it is.

    Raises:
        WindowSpecError: The text is not a duration.

    Examples:
        >>> parse_duration("1h30m")
        datetime.timedelta(seconds=5400)
        >>> parse_duration("250ms").total_seconds()
        0.25
    """
    if isinstance(text, timedelta):
        return text
    if not isinstance(text, str):
        raise WindowSpecError(
            repr(text),
            f"a duration must be text like '5m' or a timedelta, not {type(text).__name__}",
        )
    compact = text.strip().replace(" ", "")
    if compact == "0":
        return timedelta(0)
    pos, total, last_unit = 0, 0, None
    for match in _DURATION_PART.finditer(compact):
        unit_ms = _UNITS_MS[match.group(2)]
        if match.start() != pos or (last_unit is not None and unit_ms >= last_unit):
            break
        total += int(match.group(1)) * unit_ms
        pos, last_unit = match.end(), unit_ms
    if pos == 0 or pos != len(compact):
        raise WindowSpecError(
            repr(text), "not a duration; write whole numbers with units, largest first, "
            "e.g. '30s', '5m', '1h30m', '1d', '250ms'"
        )
    return timedelta(milliseconds=total)


def format_duration(value: timedelta) -> str:
    """Write a duration the way :func:`parse_duration` reads it (``"1h30m"``, ``"0s"``).

    Examples:
        >>> format_duration(timedelta(hours=26, milliseconds=5))
        '1d2h5ms'
    """
    ms = value // _MS
    if ms == 0:
        return "0s"
    sign, ms = ("-", -ms) if ms < 0 else ("", ms)
    parts = []
    for unit, unit_ms in _UNITS_MS.items():
        if unit == "w":
            continue  # days read better than weeks in specs ("14d", not "2w")
        count, ms = divmod(ms, unit_ms)
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)


def ms_to_datetime(ms: int) -> datetime:
    """Epoch milliseconds to a timezone-aware UTC datetime.

    Examples:
        >>> ms_to_datetime(1_700_000_000_000).isoformat()
        '2023-11-14T22:13:20+00:00'
    """
    return _EPOCH + timedelta(milliseconds=ms)


class WindowBounds(NamedTuple):
    """A half-open window ``[start_ms, end_ms)`` in epoch milliseconds.

    It is a tuple, so it compares equal to ``(start_ms, end_ms)``.

    Examples:
        >>> b = WindowBounds(0, 60_000)
        >>> b.contains(59_999), b.contains(60_000), b == (0, 60_000)
        (True, False, True)
    """

    start_ms: int
    end_ms: int

    def contains(self, ts_ms: int) -> bool:
        """Whether an event at ``ts_ms`` falls in the window."""
        return self.start_ms <= ts_ms < self.end_ms

    @property
    def duration_ms(self) -> int:
        """``end_ms - start_ms``."""
        return self.end_ms - self.start_ms

    def to_datetimes(self) -> tuple[datetime, datetime]:
        """The bounds as UTC datetimes, as :class:`~refluent.streams.contracts.FeatureUpdate`
        carries them."""
        return ms_to_datetime(self.start_ms), ms_to_datetime(self.end_ms)


def _whole_ms(value: object, what: str, spec: str) -> int:
    if not isinstance(value, timedelta):
        raise WindowSpecError(
            spec, f"{what} must be a datetime.timedelta, not {type(value).__name__} {value!r} "
            "(parse_window() and window_from_spec() read text like '5m')"
        )
    ms, rest = divmod(value, _MS)
    if rest:
        raise WindowSpecError(spec, f"{what} {value} is not a whole number of milliseconds")
    return int(ms)


def _set_sizes(window: Any, spec: str, hop_ms: int | None) -> None:
    """Validate a one-size window's ``size`` and ``grace`` and set its ``*_ms`` fields
    (``hop_ms`` None: the size itself, as for tumbling windows)."""
    size_ms = _whole_ms(window.size, "size", spec)
    grace_ms = _whole_ms(window.grace, "grace", spec)
    if size_ms <= 0:
        raise WindowSpecError(spec, "size must be positive")
    if grace_ms < 0:
        raise WindowSpecError(spec, "grace must not be negative")
    object.__setattr__(window, "size_ms", size_ms)
    object.__setattr__(window, "hop_ms", size_ms if hop_ms is None else hop_ms)
    object.__setattr__(window, "grace_ms", grace_ms)


class WindowSpec(ABC):
    """What tumbling, hopping and sliding windows have in common.

    Attributes:
        size_ms: Window length in milliseconds.
        hop_ms: Distance between consecutive window starts (``size_ms`` for tumbling windows,
            1 ms for sliding ones, whose windows end at each event).
        grace_ms: How long after its end a window still takes late events.
    """

    __slots__ = ()
    kind: ClassVar[str]
    size: timedelta
    grace: timedelta
    size_ms: int
    hop_ms: int
    grace_ms: int

    @abstractmethod
    def assign(self, ts_ms: int) -> list[WindowBounds]:
        """Every window that contains an event at ``ts_ms``, by increasing start."""

    @abstractmethod
    def current(self, ts_ms: int) -> WindowBounds:
        """The window whose value is served online as of ``ts_ms``."""

    def closes_at(self, bounds: WindowBounds | tuple[int, int]) -> int:
        """When the window closes: its end plus the grace period (epoch milliseconds).

        An entity whose watermark has reached this time takes no more events for the window.
        """
        return bounds[1] + self.grace_ms

    def to_spec(self) -> dict[str, str]:
        """A mapping :func:`window_from_spec` turns back into this window (for TOML/YAML)."""
        spec = {"type": self.kind, "size": format_duration(self.size)}
        if self.kind == "hopping":
            spec["hop"] = format_duration(timedelta(milliseconds=self.hop_ms))
        spec["grace"] = format_duration(self.grace)
        return spec

    def _text(self) -> str:
        return f"{self.kind}:{format_duration(self.size)}"

    def __str__(self) -> str:
        text = self._text()
        return f"{text} grace={format_duration(self.grace)}" if self.grace_ms else text


@dataclass(frozen=True, slots=True)
class Tumbling(WindowSpec):
    """Fixed, non-overlapping windows of ``size``, aligned to the epoch.

    Args:
        size: Window length (positive, whole milliseconds).
        grace: How long after a window's end late events are still taken (>= 0).

    Raises:
        WindowSpecError: A size or grace that cannot work.

    Examples:
        >>> w = Tumbling(timedelta(minutes=1))
        >>> w.assign(90_000), w.current(90_000)
        ([WindowBounds(start_ms=60000, end_ms=120000)], WindowBounds(start_ms=60000, end_ms=120000))
    """

    kind: ClassVar[str] = "tumbling"
    size: timedelta
    grace: timedelta = timedelta(0)
    size_ms: int = field(init=False, repr=False, compare=False)
    hop_ms: int = field(init=False, repr=False, compare=False)
    grace_ms: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _set_sizes(self, f"tumbling size={self.size!r}", hop_ms=None)

    def assign(self, ts_ms: int) -> list[WindowBounds]:
        """The one window containing ``ts_ms``."""
        return [self.current(ts_ms)]

    def current(self, ts_ms: int) -> WindowBounds:
        """The window containing ``ts_ms``."""
        start = ts_ms - ts_ms % self.size_ms
        return WindowBounds(start, start + self.size_ms)


@dataclass(frozen=True, slots=True)
class Hopping(WindowSpec):
    """Overlapping windows of ``size`` starting every ``hop``, aligned to the epoch.

    Args:
        size: Window length (positive, whole milliseconds, a multiple of ``hop``).
        hop: Distance between window starts (positive, at most ``size``).
        grace: How long after a window's end late events are still taken (>= 0).

    Raises:
        WindowSpecError: A size, hop or grace that cannot work.

    Examples:
        >>> w = Hopping(timedelta(minutes=3), timedelta(minutes=1))
        >>> [tuple(b) for b in w.assign(150_000)]
        [(0, 180000), (60000, 240000), (120000, 300000)]
        >>> tuple(w.current(150_000))  # the containing window that ends first
        (0, 180000)
    """

    kind: ClassVar[str] = "hopping"
    size: timedelta
    hop: timedelta
    grace: timedelta = timedelta(0)
    size_ms: int = field(init=False, repr=False, compare=False)
    hop_ms: int = field(init=False, repr=False, compare=False)
    grace_ms: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        spec = f"hopping size={self.size!r} hop={self.hop!r}"
        size_ms = _whole_ms(self.size, "size", spec)
        hop_ms = _whole_ms(self.hop, "hop", spec)
        grace_ms = _whole_ms(self.grace, "grace", spec)
        if size_ms <= 0 or hop_ms <= 0:
            raise WindowSpecError(spec, "size and hop must be positive")
        if hop_ms > size_ms:
            raise WindowSpecError(spec, "hop must not exceed size (windows would leave gaps)")
        if size_ms % hop_ms:
            raise WindowSpecError(spec, "size must be a whole multiple of hop")
        if grace_ms < 0:
            raise WindowSpecError(spec, "grace must not be negative")
        object.__setattr__(self, "size_ms", size_ms)
        object.__setattr__(self, "hop_ms", hop_ms)
        object.__setattr__(self, "grace_ms", grace_ms)

    @property
    def windows_per_event(self) -> int:
        """How many windows each event falls in: ``size / hop``."""
        return self.size_ms // self.hop_ms

    def assign(self, ts_ms: int) -> list[WindowBounds]:
        """The ``size / hop`` windows containing ``ts_ms``, by increasing start."""
        size, hop = self.size_ms, self.hop_ms
        last = ts_ms - ts_ms % hop
        return [WindowBounds(s, s + size) for s in range(last - size + hop, last + 1, hop)]

    def current(self, ts_ms: int) -> WindowBounds:
        """The containing window with the smallest end: the one covering most of the recent
        past (the last ``size`` before the next hop boundary)."""
        start = ts_ms - ts_ms % self.hop_ms - self.size_ms + self.hop_ms
        return WindowBounds(start, start + self.size_ms)

    def _text(self) -> str:
        return f"hopping:{format_duration(self.size)}/{format_duration(self.hop)}"


@dataclass(frozen=True, slots=True)
class Sliding(WindowSpec):
    """A window that ends at each event: ``(ts - size, ts]`` for an event at ``ts``.

    Sliding windows are not aligned to the epoch: an aggregation over them keeps the events of
    the last ``size + grace`` and computes each window from them.

    Args:
        size: Window length (positive, whole milliseconds).
        grace: How long after a window's end late events are still taken (>= 0).

    Raises:
        WindowSpecError: A size or grace that cannot work.

    Examples:
        >>> Sliding(timedelta(seconds=10)).current(25_000)
        WindowBounds(start_ms=15001, end_ms=25001)
    """

    kind: ClassVar[str] = "sliding"
    size: timedelta
    grace: timedelta = timedelta(0)
    size_ms: int = field(init=False, repr=False, compare=False)
    hop_ms: int = field(init=False, repr=False, compare=False)
    grace_ms: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _set_sizes(self, f"sliding size={self.size!r}", hop_ms=1)

    def assign(self, ts_ms: int) -> list[WindowBounds]:
        """The one window that ends at ``ts_ms``: ``[ts - size + 1, ts + 1)``."""
        return [self.current(ts_ms)]

    def current(self, ts_ms: int) -> WindowBounds:
        """``(ts - size, ts]`` as ``[ts - size + 1, ts + 1)``."""
        return WindowBounds(ts_ms - self.size_ms + 1, ts_ms + 1)


_TEXT = re.compile(
    r"^\s*(?P<kind>tumbling|hopping|sliding)\s*:\s*(?P<size>[0-9a-z]+)"
    r"(?:\s*/\s*(?P<hop>[0-9a-z]+))?(?:\s+grace\s*=\s*(?P<grace>[0-9a-z]+))?\s*$"
)


def parse_window(text: str, grace: str | timedelta | None = None) -> WindowSpec:
    """Read a window written as text: ``"tumbling:1h"``, ``"hopping:1h/5m"``, ``"sliding:10m"``.

    A hopping window is ``size/hop``. A grace period is given as ``grace=`` or as a
    ``" grace=5m"`` suffix (what ``str(window)`` writes), not both.

    Raises:
        WindowSpecError: The text is not a window, or its sizes cannot work.

    Examples:
        >>> parse_window("tumbling:1h", grace="5m")
        Tumbling(size=datetime.timedelta(seconds=3600), grace=datetime.timedelta(seconds=300))
        >>> w = parse_window("sliding:10m grace=1m")
        >>> w == Sliding(timedelta(minutes=10), grace=timedelta(minutes=1))
        True
    """
    match = _TEXT.match(text) if isinstance(text, str) else None
    if match is None:
        raise WindowSpecError(
            repr(text), "not a window; write 'tumbling:<size>', 'hopping:<size>/<hop>' or "
            "'sliding:<size>', e.g. 'hopping:1h/5m', optionally followed by ' grace=<duration>'"
        )
    kind, hop_text = match.group("kind"), match.group("hop")
    if (hop_text is None) == (kind == "hopping"):
        raise WindowSpecError(
            repr(text), "a hopping window needs 'size/hop' (e.g. 'hopping:1h/5m') and only a "
            "hopping window takes a hop"
        )
    if grace is not None and match.group("grace") is not None:
        raise WindowSpecError(repr(text), "grace is given twice")
    grace_td = parse_duration(grace if grace is not None else match.group("grace") or "0")
    size = parse_duration(match.group("size"))
    if kind == "tumbling":
        return Tumbling(size, grace_td)
    if kind == "sliding":
        return Sliding(size, grace_td)
    return Hopping(size, parse_duration(hop_text), grace_td)


_SPEC_KEYS = {"type", "size", "hop", "grace"}


def window_from_spec(spec: Mapping[str, Any] | str | WindowSpec) -> WindowSpec:
    """Build a window from a declaration: a mapping, the text :func:`parse_window` reads, or a
    window (returned as it is).

    The mapping has ``type`` (``tumbling``, ``hopping`` or ``sliding``), ``size``, ``hop`` (hopping
    only) and optionally ``grace``; durations are text (``"5m"``) or timedeltas.
    :meth:`WindowSpec.to_spec` writes this mapping.

    Raises:
        WindowSpecError: An unknown type or key, or sizes that cannot work.

    Examples:
        >>> window_from_spec({"type": "hopping", "size": "1d", "hop": "1h", "grace": "10m"})
        Hopping(size=datetime.timedelta(days=1), hop=datetime.timedelta(seconds=3600), \
grace=datetime.timedelta(seconds=600))
        >>> w = Sliding(timedelta(minutes=10))
        >>> window_from_spec(w.to_spec()) == w
        True
    """
    if isinstance(spec, WindowSpec):
        return spec
    if isinstance(spec, str):
        return parse_window(spec)
    if not isinstance(spec, Mapping):
        raise WindowSpecError(repr(spec), "a window spec is a mapping or text like 'tumbling:1h'")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise WindowSpecError(
            dict(spec), f"unknown key(s) {sorted(unknown)}; known: {sorted(_SPEC_KEYS)}"
        )
    kind = spec.get("type")
    if kind not in ("tumbling", "hopping", "sliding"):
        raise WindowSpecError(dict(spec), "type must be 'tumbling', 'hopping' or 'sliding'")
    if "size" not in spec:
        raise WindowSpecError(dict(spec), "size is missing")
    if ("hop" in spec) != (kind == "hopping"):
        raise WindowSpecError(dict(spec), "a hopping window needs a hop and only it takes one")
    size = parse_duration(spec["size"])
    grace = parse_duration(spec.get("grace", "0"))
    if kind == "tumbling":
        return Tumbling(size, grace)
    if kind == "sliding":
        return Sliding(size, grace)
    return Hopping(size, parse_duration(spec["hop"]), grace)
