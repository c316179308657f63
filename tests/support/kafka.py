"""A consumed record without a broker: the methods of ``confluent_kafka.Message`` that
Refluent's consumers call, for tests that drive them in-process."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeMessage:
    """One consumed record (no error)."""

    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None
    _key: bytes | None = None
    _headers: list[tuple[str, bytes]] | None = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def error(self) -> None:
        return None
