"""Webhook event types and the message an alert becomes.

A message follows the Standard Webhooks payload shape: ``{"type", "timestamp", "data"}``, with
the alert itself as ``data``. Its id is the alert's id, so every delivery of one alert, to any
subscriber and on any attempt, carries the same ``webhook-id``: receivers use it as their
idempotency key.

Examples:
    >>> from datetime import UTC, datetime
    >>> from refluent.streams.contracts import AlertEvent, DriftAlert
    >>> alert = DriftAlert(alert_id="a1", model_name="churn", model_version="3", detector="adwin",
    ...                    kind="error", statistic=0.31, threshold=0.2,
    ...                    detected_at=datetime(2026, 5, 1, tzinfo=UTC))
    >>> msg = message_for(alert)
    >>> msg.id, msg.type, msg.body[:40]
    ('a1', 'drift.detected', b'{"type":"drift.detected","timestamp":"20')
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import get_args

import orjson

from refluent.streams.contracts import AlertEvent, DriftAlert
from refluent.webhooks.errors import UnknownEventError

EVENT_TYPES: tuple[str, ...] = get_args(AlertEvent)
"""Event types a subscriber can ask for."""
ALL_EVENTS = "*"
TEST_EVENT = "webhook.test"
"""What ``refluent webhooks test`` sends (to one subscriber, whatever its events)."""


def check_events(events: Iterable[str]) -> tuple[str, ...]:
    """``events`` as a tuple, each a known type or ``*``.

    Raises:
        UnknownEventError: one is neither.
    """
    out = tuple(dict.fromkeys(events))
    for event in out:
        if event != ALL_EVENTS and event not in EVENT_TYPES:
            raise UnknownEventError(event, EVENT_TYPES)
    return out or (ALL_EVENTS,)


@dataclass(frozen=True)
class WebhookMessage:
    """What is delivered: the same id, type and body to every subscriber and on every attempt
    (the signature and its timestamp are made per attempt)."""

    id: str
    type: str
    timestamp: datetime
    body: bytes

    def to_json(self, **extra: object) -> bytes:
        return orjson.dumps({"id": self.id, "type": self.type,
                             "timestamp": self.timestamp.isoformat(),
                             "body": self.body.decode(), **extra})

    @classmethod
    def from_json(cls, raw: bytes | str) -> WebhookMessage:
        d = orjson.loads(raw)
        return cls(d["id"], d["type"], datetime.fromisoformat(d["timestamp"]),
                   d["body"].encode())


def message(msg_id: str, type_: str, timestamp: datetime, data: dict[str, object]
            ) -> WebhookMessage:
    """A message of ``type_`` carrying ``data``."""
    body = orjson.dumps({"type": type_, "timestamp": timestamp.isoformat().replace("+00:00", "Z"),
                         "data": data})
    return WebhookMessage(msg_id, type_, timestamp, body)


def message_for(alert: DriftAlert) -> WebhookMessage:
    """The message ``alert`` is delivered as (its id is the alert's)."""
    return message(alert.alert_id, alert.event, alert.detected_at,
                   alert.model_dump(mode="json"))


__all__ = ["ALL_EVENTS", "EVENT_TYPES", "TEST_EVENT", "WebhookMessage", "check_events",
           "message", "message_for"]
