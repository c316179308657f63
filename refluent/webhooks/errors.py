"""Errors of webhook subscribers and deliveries."""

from __future__ import annotations

from refluent.errors import RefluentError


class WebhookError(RefluentError):
    """Root of the webhook errors."""


class WebhookUrlError(WebhookError):
    """A subscriber's URL is refused (scheme, credentials, or an address that is not public)."""

    def __init__(self, url: str, problem: str, fix: str | None = None) -> None:
        self.url = url
        self.problem = problem
        message = f"webhook URL {url!r}: {problem}"
        if fix:
            message += f" (fix: {fix})"
        super().__init__(message)


class UnknownEventError(WebhookError):
    """A subscription names an event type that does not exist."""

    def __init__(self, event: str, known: tuple[str, ...]) -> None:
        self.event = event
        super().__init__(f"unknown webhook event {event!r}; known: {', '.join(known)} "
                         "(or * for all)")


class UnknownSubscriberError(WebhookError):
    """No subscriber has this id."""

    def __init__(self, subscriber_id: str) -> None:
        self.subscriber_id = subscriber_id
        super().__init__(f"no webhook subscriber {subscriber_id!r} (see: refluent webhooks list)")


class SecretError(WebhookError):
    """A signing secret is not a Standard Webhooks secret."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"webhook secret: {problem} (expected whsec_ followed by base64 of "
                         "24 to 64 random bytes)")
