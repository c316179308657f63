"""Which URLs a webhook may be sent to.

A subscriber's URL is user input, and the dispatcher posts to it from inside the deployment: a
URL that resolves to a loopback, private, link-local (cloud metadata at 169.254.169.254) or
otherwise non-public address would let whoever adds a subscriber reach services that are not
theirs. Such URLs are refused unless their address lies in a network the operator allowed
(``webhooks.allow_networks``; the tests allow loopback). The check runs when a subscriber is
added and again before every delivery, since a name can resolve elsewhere later; and the
sender's connections resolve the name once more themselves and connect only to an address
:func:`pinned_address` checked (see :func:`refluent.webhooks.delivery.pinned_transport`), so a
name that changes its answer between the check and the connection (DNS rebinding) gets nowhere.

Only ``http`` and ``https`` are accepted, without credentials in the URL (they would be printed
and logged with it).

Examples:
    >>> check_url("https://93.184.215.14/hooks")
    'https://93.184.215.14/hooks'
    >>> try:
    ...     check_url("http://127.0.0.1:9/hook")
    ... except WebhookUrlError as exc:
    ...     print(exc.problem)
    it resolves to 127.0.0.1, a loopback address
    >>> check_url("http://127.0.0.1:9/hook", ["127.0.0.0/8"])
    'http://127.0.0.1:9/hook'
    >>> try:
    ...     check_url("file:///etc/passwd")
    ... except WebhookUrlError as exc:
    ...     print(exc.problem)
    scheme 'file' is not allowed; only http and https
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from refluent.webhooks.errors import WebhookUrlError

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254"))
"""Cloud instance-metadata endpoints (AWS, ECS, Alibaba, AWS IPv6)."""
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})


def parse_networks(networks: Sequence[str]) -> list[IpNetwork]:
    """``networks`` as CIDR networks.

    Raises:
        WebhookUrlError: one is not a network.
    """
    out: list[IpNetwork] = []
    for net in networks:
        try:
            out.append(ipaddress.ip_network(net, strict=False))
        except ValueError as exc:
            raise WebhookUrlError(net, f"webhooks.allow_networks holds {net!r}, which is not a "
                                  "network", "write it as CIDR, e.g. 127.0.0.0/8") from exc
    return out


def why_not_public(ip: IpAddress) -> str | None:
    """Why a delivery must not go to ``ip`` (None when it is a public address).

        >>> why_not_public(ipaddress.ip_address("10.1.2.3"))
        'a private address'
        >>> why_not_public(ipaddress.ip_address("::ffff:169.254.169.254"))
        'a cloud metadata address'
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for test, what in ((ip.is_loopback, "a loopback address"),
                       (ip.is_link_local, "a link-local address"),
                       (ip.is_private, "a private address"),
                       (ip.is_multicast, "a multicast address"),
                       (ip.is_unspecified, "an unspecified address"),
                       (ip.is_reserved, "a reserved address"),
                       (not ip.is_global, "not a public address")):
        if test:
            return what
    return None


def resolve(host: str, port: int) -> list[IpAddress]:
    """Every address ``host`` resolves to (an address literal is its own)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def check_url(url: str, allow_networks: Sequence[str] = ()) -> str:
    """``url`` when a webhook may be sent to it.

    Raises:
        WebhookUrlError: the scheme is not http(s), the URL has credentials or no host, the
            host does not resolve, or one of its addresses is not public and not in
            ``allow_networks``.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookUrlError(url, f"scheme {parts.scheme!r} is not allowed; only http and https")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlError(url, "credentials in the URL are refused (they would be logged)",
                              "let the receiver check the webhook signature instead")
    host = parts.hostname
    if not host:
        raise WebhookUrlError(url, "no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise WebhookUrlError(url, f"bad port: {exc}") from exc
    pinned_address(host, port, parse_networks(allow_networks), url)
    return url


def pinned_address(host: str, port: int, allowed: Sequence[IpNetwork], url: str | None = None
                   ) -> IpAddress:
    """The address to connect to for ``host``: the first it resolves to, once every address it
    resolves to was checked.

    Raises:
        WebhookUrlError: ``host`` is a metadata name, does not resolve, or one of its addresses
            is not public and not in ``allowed``.
    """
    where_url = url or f"//{host}:{port}"
    if host.rstrip(".").lower() in METADATA_NAMES:
        raise WebhookUrlError(where_url, f"{host} is a cloud metadata endpoint")
    try:
        addresses = resolve(host, port)
    except OSError as exc:
        raise WebhookUrlError(where_url, f"{host} does not resolve ({exc})") from exc
    for ip in addresses:
        why = why_not_public(ip)
        if why is not None and not any(ip in net for net in allowed):
            where = "it" if str(ip) == host else host
            raise WebhookUrlError(where_url, f"{where} resolves to {ip}, {why}",
                                  "allow its network in webhooks.allow_networks if it is meant")
    return addresses[0]


__all__ = ["check_url", "parse_networks", "pinned_address", "resolve", "why_not_public"]
