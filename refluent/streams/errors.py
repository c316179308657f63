"""Errors of the wire: decoding, delivery, topics and brokers."""

from __future__ import annotations

from refluent.errors import RefluentError


class StreamError(RefluentError):
    """Root of the errors in :mod:`refluent.streams`."""


class DecodeError(StreamError):
    """A record could not be decoded into its topic's contract.

    ``reason`` is a short machine-readable class of problem (``json``, ``utf8``, ``validation``,
    ``too_large``, ``null_value``); the message names the contract and what was wrong.
    """

    def __init__(self, contract: str, reason: str, detail: str) -> None:
        self.contract = contract
        self.reason = reason
        self.detail = detail
        super().__init__(f"{contract}: {reason}: {detail}")


class RecordTooLargeError(DecodeError):
    """A record is larger than ``kafka.max_record_bytes``."""

    def __init__(self, contract: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(contract, "too_large", f"record of {size} bytes exceeds limit {limit}")


class UnknownTopicError(StreamError):
    """A topic is not in the catalog (and matches none of its patterns)."""

    def __init__(self, topic: str, known: list[str]) -> None:
        self.topic = topic
        super().__init__(
            f"topic {topic!r} is not in the catalog; known topics and patterns: "
            + ", ".join(known)
        )


class DeliveryError(StreamError):
    """Records could not be delivered to the broker."""

    def __init__(self, failures: list[tuple[str, int | None, str]]) -> None:
        self.failures = failures
        first = failures[0]
        super().__init__(
            f"{len(failures)} record(s) not delivered; first: topic {first[0]} "
            f"partition {first[1]}: {first[2]}"
        )


class BrokerUnavailableError(StreamError):
    """The brokers did not answer."""

    def __init__(self, bootstrap_servers: str, detail: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        super().__init__(
            f"Kafka at {bootstrap_servers} did not answer: {detail} (is it running? "
            "`refluent status` shows the embedded services; `refluent up` starts them)"
        )


class TopicAdminError(StreamError):
    """Creating or describing a topic failed."""

    def __init__(self, topic: str, detail: str) -> None:
        self.topic = topic
        super().__init__(f"topic {topic}: {detail}")


class NotCaughtUpError(StreamError):
    """A consumer group did not commit the end of its topics in time."""

    def __init__(self, what: str, group: str, topics: list[str], lag: int,
                 timeout_s: float) -> None:
        self.group = group
        self.lag = lag
        super().__init__(f"{what} did not catch up within {timeout_s:.0f}s: group {group} has "
                         f"{lag} record(s) of {', '.join(topics)} uncommitted")
