"""Fast JSON serde for the event contracts (pydantic-core's JSON parser, no intermediate dicts).

Examples:
    >>> from refluent.streams.contracts import Feedback
    >>> serde = JsonSerde(Feedback)
    >>> fb = serde.decode(b'{"prediction_id": "p1", "label": 1, '
    ...                   b'"event_time": "2026-01-01T00:00:00+01:00"}')
    >>> fb.event_time.isoformat()
    '2025-12-31T23:00:00+00:00'
    >>> serde.decode(serde.encode(fb)) == fb
    True
"""

from __future__ import annotations

from typing import Generic, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from refluent.streams.errors import DecodeError, RecordTooLargeError

M = TypeVar("M", bound=BaseModel)

DEFAULT_MAX_RECORD_BYTES = 1_048_576


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """One line naming each failing field and what was wrong, e.g. ``op: Input should be ...``."""
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "<record>"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


class JsonSerde(Generic[M]):
    """Encodes a contract to JSON bytes and decodes bytes back, with a clear error on bad input.

    Args:
        model: The contract class.
        max_record_bytes: Records larger than this are rejected before parsing.
        allow_tombstones: Decode a null value as ``None`` (CDC topics) instead of failing.
    """

    def __init__(
        self,
        model: type[M],
        *,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        allow_tombstones: bool = False,
    ) -> None:
        self.model = model
        self.name = model.__name__
        self.max_record_bytes = max_record_bytes
        self.allow_tombstones = allow_tombstones
        self._validate_json = model.model_validate_json
        self._to_json = model.__pydantic_serializer__.to_json
        # Contracts with a wire wrapper (Debezium's schema/payload) expose unwrap_wire.
        self._unwrap = getattr(model, "unwrap_wire", None)

    def encode(self, event: M) -> bytes:
        """JSON bytes of ``event``."""
        return self._to_json(event)

    def decode(self, data: bytes | None) -> M | None:
        """Parse and validate ``data``.

        Returns:
            The event, or ``None`` for a tombstone on a topic that allows them.

        Raises:
            DecodeError: the record is null, too large, not UTF-8, not JSON or not valid.
        """
        if data is None:
            if self.allow_tombstones:
                return None
            raise DecodeError(self.name, "null_value", "record has no value")
        if len(data) > self.max_record_bytes:
            raise RecordTooLargeError(self.name, len(data), self.max_record_bytes)
        try:
            if self._unwrap is not None and b'"payload"' in data:
                return self._decode_wrapped(data)
            return self._validate_json(data)
        except ValidationError as exc:
            raise self._classify(data, exc) from exc

    def _decode_wrapped(self, data: bytes) -> M:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as uexc:
                raise DecodeError(self.name, "utf8", f"not UTF-8 at byte {uexc.start}") from exc
            raise DecodeError(self.name, "json", str(exc)) from exc
        assert self._unwrap is not None  # noqa: S101 - checked by the caller
        try:
            unwrapped = self._unwrap(obj)
        except ValueError as exc:
            raise DecodeError(self.name, "validation", str(exc)) from exc
        return self.model.model_validate(unwrapped)

    def _classify(self, data: bytes, exc: ValidationError) -> DecodeError:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as uexc:
                return DecodeError(self.name, "utf8", f"not UTF-8 at byte {uexc.start}")
            return DecodeError(self.name, "json", str(first["msg"]))
        return DecodeError(self.name, "validation", describe_validation_error(exc))
