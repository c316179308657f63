"""One delivery attempt against real local HTTP receivers: the signature verifies with the
Standard Webhooks library and with the specification's formula computed here, and each kind of
answer gives the retry decision the specification asks for."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import standardwebhooks

from refluent.config import WebhookSettings
from refluent.webhooks.base import Subscriber, new_secret
from refluent.webhooks.delivery import WebhookSender, backoff_s
from refluent.webhooks.events import message
from refluent.webhooks.receiver import WebhookReceiver

pytestmark = pytest.mark.integration

LOOPBACK = WebhookSettings(allow_networks=["127.0.0.0/8"], timeout_s=2,
                           max_response_bytes=1000)
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def msg(i: int = 1) -> Any:
    return message(f"alert-{i}", "drift.detected", NOW, {"model_name": "churn", "i": i})


@pytest.fixture()
def sender() -> Iterator[WebhookSender]:
    s = WebhookSender(LOOPBACK)
    yield s
    s.close()


class Canned(BaseHTTPRequestHandler):
    """Answers every POST with the class's status, headers and body."""

    status = 200
    headers_out: dict[str, str] = {}  # noqa: RUF012 - set per test server
    body_out = b""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(self.status)
        for k, v in self.headers_out.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(self.body_out)))
        self.end_headers()
        self.wfile.write(self.body_out)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return


def canned(status: int, headers: dict[str, str] | None = None, body: bytes = b""
           ) -> tuple[ThreadingHTTPServer, str]:
    handler = type("H", (Canned,), {"status": status, "headers_out": headers or {},
                                    "body_out": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/hook"


def sub(url: str, secret: str | None = None) -> Subscriber:
    return Subscriber("wh_test", url, ("*",), secret or new_secret())


def test_send__signature_verifies_by_the_library_and_by_the_spec_formula(
        sender: WebhookSender) -> None:
    secret = new_secret()
    receiver = WebhookReceiver(secret).start()
    try:
        now = datetime.now(UTC)
        attempt = sender.send(sub(receiver.url, secret), msg(), now)
        assert attempt.ok and attempt.status == 200
        (got,) = receiver.received
    finally:
        receiver.stop()
    assert got.id == "alert-1" and got.payload["type"] == "drift.detected"
    assert got.payload["data"] == {"model_name": "churn", "i": 1}
    # The specification's signature, computed here without the library.
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{got.id}.{got.headers['webhook-timestamp']}.".encode() + got.body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert got.headers["webhook-signature"] == expected
    assert got.headers["webhook-timestamp"] == str(int(now.timestamp()))
    verifier = standardwebhooks.Webhook(secret)
    # A tampered body, another secret, or a timestamp older than five minutes fail.
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        verifier.verify(got.body.replace(b"churn", b"chorn"), got.headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(new_secret()).verify(got.body, got.headers)
    old = int((now - timedelta(minutes=6)).timestamp())
    resigned = standardwebhooks.Webhook(secret).sign(got.id, datetime.fromtimestamp(old, UTC),
                                                     got.body)
    with pytest.raises(standardwebhooks.WebhookVerificationError, match="too old"):
        verifier.verify(got.body, {**got.headers, "webhook-timestamp": str(old),
                                   "webhook-signature": resigned})


def test_send__the_receiver_refuses_a_tampered_request(sender: WebhookSender) -> None:
    secret = new_secret()
    receiver = WebhookReceiver(secret).start()
    try:
        attempt = sender.send(sub(receiver.url, new_secret()), msg())  # signed with another key
        assert (attempt.ok, attempt.status) == (False, 400)
        assert receiver.received == [] and receiver.rejected == ["No matching signature found"]
    finally:
        receiver.stop()


@pytest.mark.parametrize(("status", "headers", "retry_after", "gone"), [
    (503, {"Retry-After": "120"}, 120.0, False),
    (429, {"Retry-After": "Mon, 07 Dec 2026 12:00:30 GMT"}, 30.0, False),
    (500, {"Retry-After": "120"}, None, False),  # only 429 and 503 carry a wish to wait
    (410, {}, None, True),
    (404, {}, None, False),
])
def test_send__answers_map_to_the_retry_decision(
        sender: WebhookSender, status: int, headers: dict[str, str], retry_after: float | None,
        gone: bool) -> None:
    server, url = canned(status, headers, b"nope")
    try:
        attempt = sender.send(sub(url), msg(), NOW)
    finally:
        server.shutdown()
        server.server_close()
    assert (attempt.ok, attempt.status, attempt.retry_after_s, attempt.gone) == (
        False, status, retry_after, gone)
    assert attempt.error == f"HTTP {status}: nope"


def test_send__redirects_are_not_followed_and_answers_are_read_bounded(
        sender: WebhookSender) -> None:
    server, url = canned(307, {"Location": "http://169.254.169.254/latest"})
    big, big_url = canned(500, body=b"x" * 1_000_000)
    try:
        moved = sender.send(sub(url), msg(), NOW)
        huge = sender.send(sub(big_url), msg(), NOW)
    finally:
        for s in (server, big):
            s.shutdown()
            s.server_close()
    assert (moved.ok, moved.status) == (False, 307)
    assert (huge.ok, huge.status) == (False, 500)
    assert len(huge.error) < 300  # the answer was cut at max_response_bytes, then shortened


def test_send__a_closed_port_and_a_refused_url_are_failed_attempts(
        sender: WebhookSender) -> None:
    server, url = canned(200)
    server.shutdown()
    server.server_close()
    down = sender.send(sub(url), msg(), NOW)
    assert not down.ok and down.status is None and "ConnectError" in down.error
    refused = WebhookSender(WebhookSettings()).send(sub(url), msg(), NOW)  # loopback not allowed
    assert not refused.ok and "a loopback address" in refused.error


def test_send__connects_only_to_the_addresses_it_checked_when_connecting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A name the system cannot resolve, answered by a resolver the test controls: delivered
    when it resolves to allowed loopback (so the sender connected to the address it checked
    itself), refused with no request made when it turns into loopback after the check passed
    on a public address (DNS rebinding)."""
    from refluent.webhooks import urls

    server, _ = canned(200)
    port = server.server_address[1]
    hook = f"http://hooks.rebind.invalid:{port}/hook"
    answers: list[str] = []

    def resolve(host: str, p: int) -> list[Any]:
        assert host == "hooks.rebind.invalid"
        return [ipaddress.ip_address(answers.pop(0) if len(answers) > 1 else answers[0])]

    monkeypatch.setattr(urls, "resolve", resolve)
    handler = server.RequestHandlerClass  # this server's own class
    seen: list[str] = []
    original = handler.do_POST

    def counting(self: Any) -> None:
        seen.append(self.headers.get("host"))
        original(self)

    monkeypatch.setattr(handler, "do_POST", counting)
    answers[:] = ["127.0.0.1"]
    ok = WebhookSender(LOOPBACK).send(sub(hook), msg(), NOW)
    assert ok.ok and seen == [f"hooks.rebind.invalid:{port}"]

    strict = WebhookSender(WebhookSettings(timeout_s=2))
    answers[:] = ["93.184.215.14", "127.0.0.1"]  # the check, then the connection
    rebound = strict.send(sub(hook), msg(), NOW)
    assert not rebound.ok and rebound.status is None
    assert "ConnectError" in rebound.error and "resolves to 127.0.0.1, a loopback address" \
        in rebound.error
    assert len(seen) == 1  # nothing reached the receiver
    strict.close()
    server.shutdown()
    server.server_close()


def test_backoff__grows_to_the_cap_with_jitter_in_the_upper_half() -> None:
    s = WebhookSettings(backoff_initial_s=1, backoff_max_s=60)
    rnd = random.Random(7)
    for n in range(1, 15):
        cap = min(60.0, 2.0 ** (n - 1))
        waits = [backoff_s(n, s, rnd) for _ in range(200)]
        assert all(cap / 2 <= w <= cap for w in waits)
        assert max(waits) - min(waits) > cap / 4  # jittered, not one value
