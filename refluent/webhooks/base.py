"""Subscribers and the durable outbox every webhook backend implements.

Delivery guarantee: at least once. An alert read from the ``alerts`` topic is first written to
the outbox as one pending delivery per subscriber that wants its event; only then is its offset
committed. A pending delivery leaves the outbox when the receiver answered 2xx, or moves to the
dead letters after the last attempt (or a 410 Gone), from where ``replay`` puts it back. A
dispatcher holds the deliveries it took under a lease; when it dies, another one takes them once
the lease ends. A crash between a receiver's 2xx and the outbox's record of it repeats that
delivery, with the same ``webhook-id``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from refluent.webhooks.errors import SecretError
from refluent.webhooks.events import ALL_EVENTS, WebhookMessage


def subscriber_id(url: str) -> str:
    """The stable id of the subscriber at ``url`` (adding the same URL again updates it).

        >>> subscriber_id("https://example.com/hook")
        'wh_19f1352238b91533'
    """
    return "wh_" + hashlib.sha256(url.encode()).hexdigest()[:16]


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def check_secret(secret: str) -> str:
    """``secret`` when it is a Standard Webhooks secret.

    Raises:
        SecretError: no ``whsec_`` prefix, not base64, or too short or long.
    """
    if not secret.startswith("whsec_"):
        raise SecretError("it does not start with whsec_")
    try:
        raw = base64.b64decode(secret[len("whsec_"):], validate=True)
    except ValueError as exc:
        raise SecretError("what follows whsec_ is not base64") from exc
    if not 24 <= len(raw) <= 64:
        raise SecretError(f"it holds {len(raw)} bytes")
    return secret


@dataclass(frozen=True)
class Subscriber:
    """One webhook endpoint and the events it receives."""

    id: str
    url: str
    events: tuple[str, ...]
    secret: str = field(repr=False)
    origin: str = "cli"
    """Where it was declared: ``cli`` (kept in the outbox) or ``settings``."""
    disabled: str | None = None
    """Why deliveries to it stopped (a 410 Gone), None while it is active."""

    def wants(self, event: str) -> bool:
        return ALL_EVENTS in self.events or event in self.events


@dataclass(frozen=True)
class Delivery:
    """A pending delivery a dispatcher took: one message to one subscriber."""

    subscriber_id: str
    message: WebhookMessage
    attempts: int
    """Attempts made before this one."""


@dataclass(frozen=True)
class DeadLetter:
    """A delivery that failed its last attempt (or met a 410 Gone)."""

    subscriber_id: str
    message_id: str
    message_type: str
    attempts: int
    error: str
    at: datetime


class Outbox(ABC):
    """Durable per-subscriber delivery state (see the module for the guarantee)."""

    # -- subscribers ------------------------------------------------------------------------

    @abstractmethod
    def put_subscriber(self, subscriber: Subscriber) -> None:
        """Add ``subscriber`` or replace the one with its id."""

    @abstractmethod
    def remove_subscriber(self, subscriber_id: str) -> bool:
        """Remove a subscriber and its pending deliveries; False when there was none."""

    @abstractmethod
    def stored_subscribers(self) -> list[Subscriber]:
        """The subscribers kept here (not those of the settings)."""

    @abstractmethod
    def disable(self, subscriber_id: str, reason: str) -> None:
        """Stop deliveries to a subscriber (its new alerts wait in the dead letters)."""

    @abstractmethod
    def disabled(self) -> dict[str, str]:
        """Disabled subscriber ids and why."""

    @abstractmethod
    def enable(self, subscriber_id: str) -> bool:
        """Deliver to a disabled subscriber again; whether it was disabled."""

    # -- deliveries -------------------------------------------------------------------------

    @abstractmethod
    def enqueue(self, message: WebhookMessage, subscriber_ids: Sequence[str], now: datetime
                ) -> int:
        """Make ``message`` pending for each subscriber, due at ``now``; idempotent (a
        delivery already pending, done or dead is left as it is). The number added."""

    @abstractmethod
    def claim(self, now: datetime, limit: int, lease_s: float) -> list[Delivery]:
        """Take up to ``limit`` deliveries due at ``now`` for ``lease_s`` seconds."""

    @abstractmethod
    def delivered(self, delivery: Delivery, now: datetime) -> None:
        """The receiver took ``delivery`` (2xx)."""

    @abstractmethod
    def retry(self, delivery: Delivery, at: datetime, error: str) -> None:
        """``delivery`` failed; try again at ``at``."""

    @abstractmethod
    def release(self, delivery: Delivery, at: datetime) -> None:
        """Give back a delivery taken but not attempted; due again at ``at`` (no attempt
        counted)."""

    @abstractmethod
    def dead(self, delivery: Delivery, error: str, now: datetime) -> None:
        """``delivery`` failed for good: keep it in the dead letters."""

    @abstractmethod
    def dead_letters(self, subscriber_id: str | None = None) -> list[DeadLetter]:
        """The dead letters (of one subscriber)."""

    @abstractmethod
    def replay(self, now: datetime, subscriber_id: str | None = None,
               message_ids: Iterable[str] | None = None) -> int:
        """Make dead letters pending again, due at ``now``; the number replayed."""

    @abstractmethod
    def pending(self, subscriber_id: str | None = None) -> int:
        """Deliveries not done yet (leased ones included)."""

    @abstractmethod
    def prune(self, before: datetime) -> int:
        """Forget done deliveries and unreferenced messages older than ``before``."""

    def close(self) -> None:  # noqa: B027 - a backend without connections has nothing to do
        """Release connections."""


__all__ = ["DeadLetter", "Delivery", "Outbox", "Subscriber", "check_secret", "new_secret",
           "subscriber_id"]
