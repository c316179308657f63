"""Where a record was read: the one type every engine, sink and service uses for it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Origin:
    """A record's topic, partition and offset.

    Examples:
        >>> origin = Origin("feedback", 2, 17)
        >>> origin.text(), Origin.parse(origin.text()) == origin
        ('feedback:2:17', True)
    """

    topic: str
    partition: int
    offset: int

    def text(self) -> str:
        """``topic:partition:offset`` (Kafka topic names cannot contain ``:``)."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str | bytes) -> Origin:
        """Inverse of :meth:`text`.

        Raises:
            ValueError: not ``topic:partition:offset``.
        """
        if isinstance(text, bytes):
            text = text.decode()
        topic, partition, offset = text.rsplit(":", 2)
        return cls(topic, int(partition), int(offset))
