"""``refluent webhooks``: add, list, test, remove, dead letters and replay, as a user runs them
(the answers checked against a verifying receiver and the outbox)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from refluent.cli.app import app
from refluent.config import Settings
from refluent.webhooks.base import new_secret, subscriber_id
from refluent.webhooks.events import message
from refluent.webhooks.receiver import WebhookReceiver
from refluent.webhooks.redis import RedisOutbox

pytestmark = pytest.mark.integration


@pytest.fixture()
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    prefix = f"c{uuid.uuid4().hex[:8]}"
    values = {"REFLUENT_REDIS__URL": settings.redis.url or "",
              "REFLUENT_REDIS__KEY_PREFIX": prefix,
              "REFLUENT_WEBHOOKS__ALLOW_NETWORKS": '["127.0.0.0/8"]', "COLUMNS": "250"}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output + repr(result.exception)
    return result.output


def test_add_list_test_remove(env: dict[str, str]) -> None:
    secret = new_secret()
    receiver = WebhookReceiver(secret).start()
    try:
        out = run("webhooks", "add", receiver.url, "--event", "drift.detected",
                  "--secret", secret)
        sid = subscriber_id(receiver.url)
        assert f"added {sid} -> {receiver.url} (drift.detected)" in out
        assert secret not in out  # a secret the user gave is never printed
        listed = run("webhooks", "list")
        assert sid in listed and "drift.detected" in listed and "active" in listed
        assert secret not in listed and secret[6:20] not in listed
        out = run("webhooks", "test", sid)
        assert f"{sid}: delivered test_" in out and "(HTTP 200)" in out
        (got,) = receiver.received  # verified by the receiver with the subscriber's secret
        assert got.payload["type"] == "webhook.test"
        assert got.payload["data"] == {"subscriber": sid}
    finally:
        receiver.stop()
    assert "failed: ConnectError" in run("webhooks", "test", sid, code=1)
    assert f"{sid} was not disabled" in run("webhooks", "enable", sid)
    assert f"removed {sid}" in run("webhooks", "remove", sid)
    assert sid not in run("webhooks", "list")


def test_add__refuses_bad_input_with_the_reason(env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["webhooks", "add", "http://169.254.169.254/latest"])
    assert result.exit_code != 0
    assert "a cloud metadata address" in str(result.exception) + result.output
    result = CliRunner().invoke(app, ["webhooks", "add", "http://127.0.0.1:9/h", "--event",
                                      "drift.detcted"])
    assert "unknown webhook event 'drift.detcted'" in str(result.exception) + result.output
    result = CliRunner().invoke(app, ["webhooks", "add", "http://127.0.0.1:9/h", "--secret",
                                      "hunter2"])
    assert "does not start with whsec_" in str(result.exception) + result.output
    for command in ("remove", "enable", "test"):
        result = CliRunner().invoke(app, ["webhooks", command, "wh_nope"])
        assert "no webhook subscriber 'wh_nope'" in str(result.exception) + result.output


def test_add__generates_a_secret_and_shows_it_once(env: dict[str, str],
                                                   settings: Settings) -> None:
    out = run("webhooks", "add", "http://127.0.0.1:9/gen")
    line = next(x for x in out.splitlines() if "signing secret" in x)
    secret = line.rsplit(" ", 1)[1]
    outbox = RedisOutbox(settings.redis.url or "", key_prefix=env["REFLUENT_REDIS__KEY_PREFIX"])
    try:
        (sub,) = outbox.stored_subscribers()
        assert sub.secret == secret and sub.events == ("*",)
        # Dead letters are listed and replayed from the command line.
        now = datetime.now(UTC)
        outbox.enqueue(message("m1", "drift.detected", now, {}), [sub.id], now)
        (d,) = outbox.claim(now, 10, 30)
        outbox.dead(d, "HTTP 500: boom", now)
        listed = run("webhooks", "dead-letters")
        assert sub.id in listed and "m1" in listed and "HTTP 500: boom" in listed
        assert "replaying 1 deliveries" in run("webhooks", "replay", "--subscriber", sub.id)
        assert outbox.pending(sub.id) == 1 and outbox.dead_letters() == []
    finally:
        outbox.clear()
        outbox.close()
    assert secret not in run("webhooks", "list")


def test_config_show__masks_subscriber_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = new_secret()
    monkeypatch.setenv("REFLUENT_WEBHOOKS__SUBSCRIBERS",
                       json.dumps([{"url": "https://example.com/h", "secret": secret}]))
    out = run("config", "show", "--json")
    assert secret not in out
    assert json.loads(out)["webhooks"]["subscribers"][0]["secret"] == "**********"
