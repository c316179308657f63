"""Which webhook URLs are refused, and that the error says why."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from refluent.webhooks.errors import WebhookUrlError
from refluent.webhooks.urls import check_url

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("url", "problem"), [
    ("file:///etc/passwd", "scheme 'file' is not allowed; only http and https"),
    ("ftp://example.com/x", "scheme 'ftp' is not allowed"),
    ("gopher://127.0.0.1:6379/_FLUSHALL", "scheme 'gopher' is not allowed"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254, a cloud metadata address"),
    ("http://[fd00:ec2::254]/latest/", "fd00:ec2::254, a cloud metadata address"),
    ("http://100.100.100.200/latest/", "100.100.100.200, a cloud metadata address"),
    ("http://metadata.google.internal/computeMetadata/v1/", "a cloud metadata endpoint"),
    ("http://127.0.0.1:8080/hook", "127.0.0.1, a loopback address"),
    ("http://[::1]/hook", "::1, a loopback address"),
    ("http://[::ffff:10.0.0.1]/hook", "a private address"),
    ("http://10.1.2.3/hook", "10.1.2.3, a private address"),
    ("http://192.168.1.1/hook", "a private address"),
    ("http://0.0.0.0/hook", "0.0.0.0, "),
    ("https://user:pw@example.com/hook", "credentials in the URL are refused"),
    ("http:///nohost", "no host"),
])
def test_check_url__refuses_with_the_reason(url: str, problem: str) -> None:
    with pytest.raises(WebhookUrlError) as err:
        check_url(url)
    assert problem in err.value.problem
    assert url in str(err.value)


def test_check_url__a_name_that_resolves_to_a_private_address_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The resolver is the system's; this name is made to answer a private address, as a
    # rebinding or internal DNS name would.
    real = socket.getaddrinfo

    def resolve(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "hooks.internal.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.20.30.40", 443))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(WebhookUrlError, match=r"hooks.internal.example resolves to 10.20.30.40, "
                                              r"a private address \(fix: allow its network"):
        check_url("https://hooks.internal.example/alerts")
    assert check_url("https://hooks.internal.example/alerts", ["10.20.0.0/16"])


def test_check_url__localhost_and_numeric_forms_of_loopback_are_refused() -> None:
    for url in ("http://localhost:9000/hook", "http://2130706433/hook", "http://127.1/hook"):
        with pytest.raises(WebhookUrlError, match="a loopback address"):
            check_url(url)


def test_check_url__allowed_networks_let_loopback_through_and_bad_ones_are_named() -> None:
    assert check_url("http://127.0.0.1:9/h", ["127.0.0.0/8"]) == "http://127.0.0.1:9/h"
    with pytest.raises(WebhookUrlError, match="127.0.0.1, a loopback address"):
        check_url("http://127.0.0.1:9/h", ["10.0.0.0/8"])
    with pytest.raises(WebhookUrlError, match="webhooks.allow_networks holds 'loopback'"):
        check_url("http://127.0.0.1:9/h", ["loopback"])


def test_check_url__public_addresses_pass() -> None:
    assert check_url("https://93.184.215.14:8443/x") == "https://93.184.215.14:8443/x"
    assert check_url("http://[2606:4700:4700::1111]/x")
