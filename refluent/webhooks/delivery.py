"""One delivery attempt over HTTP, signed as the Standard Webhooks specification says, and the
retry policy that follows from its answer.

Each attempt is signed anew (``webhook-timestamp`` is the attempt's time, so receivers that
refuse old timestamps accept a retry), with the message's stable id as ``webhook-id``. The
signature is made by the ``standardwebhooks`` package, so receivers verify it with the spec's
own libraries in any language.

What an answer means:

- 2xx: delivered;
- 410 Gone: the receiver asks not to be called again: the subscriber is disabled and the
  delivery goes to the dead letters (``refluent webhooks enable`` and ``replay`` resume);
- 429 / 503 with ``Retry-After`` (seconds or an HTTP date): retried then, capped by
  ``webhooks.backoff_max_s``;
- anything else, a timeout or a refused connection: retried after an exponential backoff with
  jitter, until ``webhooks.max_attempts``; then a dead letter.

The URL is checked again before each attempt (a name can resolve elsewhere since it was added),
connections go only to addresses checked when they are made (:func:`pinned_transport`), no
proxy from the environment is used, redirects are not followed, and at most
``webhooks.max_response_bytes`` of an answer are read.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from refluent.config import WebhookSettings
from refluent.errors import require
from refluent.webhooks.base import Subscriber
from refluent.webhooks.errors import WebhookUrlError
from refluent.webhooks.events import WebhookMessage
from refluent.webhooks.urls import check_url, parse_networks, pinned_address

USER_AGENT = "refluent-webhooks"


@dataclass(frozen=True)
class Attempt:
    """How one attempt went."""

    ok: bool
    status: int | None = None
    """HTTP status (None when no answer came)."""
    error: str = ""
    """Why it failed (status and the start of the answer, or the client's error)."""
    retry_after_s: float | None = None
    """What the receiver asked to wait (``Retry-After``)."""
    gone: bool = False
    """410 Gone: stop calling this subscriber."""


def signed_headers(subscriber: Subscriber, message: WebhookMessage, now: datetime
                   ) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt of ``message`` to ``subscriber``."""
    webhooks: Any = require("standardwebhooks", "webhooks")
    signature = webhooks.Webhook(subscriber.secret).sign(message.id, now, message.body)
    return {"content-type": "application/json", "user-agent": USER_AGENT,
            "webhook-id": message.id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature}


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` header asks for (None when absent or unreadable).

        >>> retry_after("30", datetime(2026, 1, 1, tzinfo=UTC))
        30.0
        >>> retry_after("Thu, 01 Jan 2026 00:01:00 GMT", datetime(2026, 1, 1, tzinfo=UTC))
        60.0
    """
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def backoff_s(attempts: int, settings: WebhookSettings, rnd: random.Random) -> float:
    """Wait after the ``attempts``-th failed attempt: between half and all of an exponential
    cap (jitter spreads the retries of many deliveries that failed together).

        >>> s = WebhookSettings(backoff_initial_s=1, backoff_max_s=60)
        >>> all(0 <= backoff_s(n, s, random.Random(n)) <= min(60, 2 ** (n - 1))
        ...     for n in range(1, 12))
        True
    """
    cap = min(settings.backoff_max_s, settings.backoff_initial_s * 2 ** max(attempts - 1, 0))
    return rnd.uniform(cap / 2, cap)


class WebhookSender:
    """Sends attempts over one pooled HTTP client (thread-safe).

    Args:
        settings: Webhook settings (timeouts, bounded reads, allowed networks).
        client: An ``httpx2.Client`` to use instead of a new one.
    """

    def __init__(self, settings: WebhookSettings, client: Any | None = None) -> None:
        httpx: Any = require("httpx2", "webhooks")
        self.settings = settings
        self._httpx = httpx
        self._client = client or httpx.Client(
            timeout=settings.timeout_s, follow_redirects=False,
            transport=pinned_transport(settings))

    def close(self) -> None:
        self._client.close()

    def send(self, subscriber: Subscriber, message: WebhookMessage,
             now: datetime | None = None) -> Attempt:
        """One attempt of ``message`` to ``subscriber``."""
        now = now or datetime.now(UTC)
        try:
            check_url(subscriber.url, self.settings.allow_networks)
        except WebhookUrlError as exc:
            return Attempt(False, error=str(exc))
        headers = signed_headers(subscriber, message, now)
        try:
            with self._client.stream("POST", subscriber.url, content=message.body,
                                     headers=headers) as resp:
                answer = self._read_bounded(resp)
                status = resp.status_code
                wait = retry_after(resp.headers.get("retry-after"), now)
        except self._httpx.HTTPError as exc:
            return Attempt(False, error=f"{type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            return Attempt(True, status)
        error = f"HTTP {status}: {answer[:200].decode(errors='replace')}".rstrip(": ")
        return Attempt(False, status, error, wait if status in (429, 503) else None,
                       gone=status == 410)

    def _read_bounded(self, resp: Any) -> bytes:
        limit = self.settings.max_response_bytes
        got = bytearray()
        for chunk in resp.iter_raw():
            got += chunk[: limit - len(got)]
            if len(got) >= limit:
                break
        return bytes(got)


def pinned_transport(settings: WebhookSettings) -> Any:
    """An ``httpx2`` transport whose connections resolve the host themselves, check every
    address it resolves to against the URL policy (:func:`~refluent.webhooks.urls.pinned_address`)
    and connect to one they checked; TLS still verifies the certificate against the host name.
    A refused address fails the connection (``ConnectError`` naming the address and why)."""
    httpx: Any = require("httpx2", "webhooks")
    httpcore: Any = require("httpcore2", "webhooks")
    allowed = parse_networks(settings.allow_networks)

    class PinnedBackend(httpcore.SyncBackend):
        def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                        local_address: str | None = None,
                        socket_options: Any = None) -> Any:
            try:
                ip = pinned_address(host, port, allowed)
            except WebhookUrlError as exc:
                raise httpcore.ConnectError(str(exc)) from exc
            return super().connect_tcp(str(ip), port, timeout, local_address, socket_options)

    connections = settings.concurrency * 2
    transport = httpx.HTTPTransport(trust_env=False)
    # The transport's own pool, but connecting through the pinned backend.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(), max_connections=connections,
        max_keepalive_connections=connections, keepalive_expiry=5.0,
        network_backend=PinnedBackend())
    return transport


__all__ = ["Attempt", "WebhookSender", "backoff_s", "pinned_transport", "retry_after",
           "signed_headers"]
