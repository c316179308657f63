"""A small webhook receiver that verifies what it gets: the demo prints the alerts it
receives, and users can point a subscriber at it to see a delivery end to end.

It checks each request as a receiver in any language would, with the ``standardwebhooks``
library (signature over ``id.timestamp.body`` with the shared secret, timestamp within five
minutes), answers 400 to what fails, and treats ``webhook-id`` as its idempotency key: a repeated
delivery is answered 200 and not handled twice.

Examples:
    >>> from refluent.webhooks.base import new_secret
    >>> receiver = WebhookReceiver(new_secret())
    >>> receiver.start().url.startswith("http://127.0.0.1:")
    True
    >>> receiver.stop()
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from refluent.errors import require


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a sender opening more connections at once
    # would see SYNs dropped and retransmitted a second later.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a sender that went away between requests (it retries)
        super().handle_error(request, client_address)


@dataclass(frozen=True)
class Received:
    """One request that passed verification."""

    id: str
    headers: dict[str, str]
    body: bytes
    payload: Any
    repeat: bool
    """True when this webhook-id was handled before."""


@dataclass
class WebhookReceiver:
    """A verifying receiver on ``host:port`` (0: a free port), served from a thread.

    Args:
        secret: The subscriber's signing secret.
        on_event: Called with each payload the first time its id arrives.
        answer: Called with each verified delivery's id before it is handled; returns the HTTP
            status to answer (a status other than 2xx means: not taken, send it again).
    """

    secret: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 0
    on_event: Callable[[Any], None] | None = None
    answer: Callable[[str], int] | None = None
    received: list[Received] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    """Why each refused request failed verification."""
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/webhooks"

    @property
    def handled(self) -> dict[str, Any]:
        """Payload per webhook-id, each handled once."""
        with self._lock:
            return {r.id: r.payload for r in self.received if not r.repeat}

    def start(self) -> WebhookReceiver:
        webhooks: Any = require("standardwebhooks", "webhooks")
        verifier = webhooks.Webhook(self.secret)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: a sender reuses its connections

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("content-length") or 0)
                try:
                    body = self.rfile.read(length)
                except (ConnectionError, TimeoutError):
                    body = b""
                if len(body) < length:  # the sender went away mid-request: nothing to judge
                    self.close_connection = True
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = verifier.verify(body, headers)
                except webhooks.WebhookVerificationError as exc:
                    with receiver._lock:
                        receiver.rejected.append(str(exc))
                    self._reply(400, b"signature does not verify")
                    return
                msg_id = headers["webhook-id"]
                status = receiver.answer(msg_id) if receiver.answer else 200
                if 200 <= status < 300:
                    with receiver._lock:
                        repeat = any(r.id == msg_id for r in receiver.received)
                        receiver.received.append(Received(msg_id, headers, body, payload, repeat))
                    if not repeat and receiver.on_event is not None:
                        receiver.on_event(payload)
                self._reply(status, b"")

            def _reply(self, status: int, text: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("content-length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender went away (it retries with the same webhook-id)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return  # quiet: the caller decides what to print

        self._server = _Server((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="webhook-receiver",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop answering (the port is closed: deliveries fail until :meth:`start`)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


__all__ = ["Received", "WebhookReceiver"]
