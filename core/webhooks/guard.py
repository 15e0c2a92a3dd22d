"""Outbound guard for webhooks: only http(s), the host resolved once and every address checked
(no private, loopback, link-local, multicast, reserved or unspecified targets unless the operator
sets VERITY_WEBHOOK_ALLOW_PRIVATE=true), the connection made to the address that was checked (no
DNS rebinding between check and connect), redirects followed only to targets that pass the same
check, and timeouts on connect and read."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from core import defaults


class OutboundRefused(Exception):
    """The target is not allowed; the message says why. Not retried usefully, but recorded."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str


def _forbidden(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
            or ip.is_unspecified or not ip.is_global)


def _split(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an allowed URL; raises OutboundRefused."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise OutboundRefused(f"scheme {parts.scheme!r} is not allowed (http or https only)")
    host = parts.hostname
    if not host:
        raise OutboundRefused("the URL has no host")
    if parts.username or parts.password:
        raise OutboundRefused("credentials in the URL are not allowed")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise OutboundRefused("the URL's port is not valid") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port, path


def _check_addresses(host: str, addresses: list[str], *, allow_private: bool) -> None:
    if not allow_private:
        bad = [a for a in addresses if _forbidden(ipaddress.ip_address(a.split("%")[0]))]
        if bad:
            raise OutboundRefused(f"{host} resolves to a non-public address ({bad[0]}); "
                                  "set VERITY_WEBHOOK_ALLOW_PRIVATE=true to allow it")


def resolve(url: str, *, allow_private: bool) -> Target:
    scheme, host, port, path = _split(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise OutboundRefused(f"cannot resolve {host}: {e}") from None
    addresses = [info[4][0] for info in infos]
    _check_addresses(host, addresses, allow_private=allow_private)
    return Target(scheme, host, port, path, addresses[0])


def check_destination(url: str, *, allow_private: bool) -> None:
    """The same rules, applied when a webhook URL is configured (`verity key create`, the admin
    keys page), so the operator hears at once why every delivery would be refused. A host that
    does not resolve yet is accepted: each delivery attempt resolves and checks it again."""
    _, host, port, _ = _split(url)
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return
    _check_addresses(host, [info[4][0] for info in infos], allow_private=False)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self._address = target.address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


@dataclass(frozen=True)
class Response:
    status: int
    url: str
    latency_ms: float


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float, allow_private: bool,
         max_redirects: int = defaults.WEBHOOK_MAX_REDIRECTS) -> Response:
    """POST `body` to `url` through the guard; returns the final status. Raises OutboundRefused or
    an OSError/HTTPException for network failures. A redirect re-sends the same signed body (307/308
    semantics) to a target that must pass the guard too."""
    t0 = time.perf_counter()
    for _ in range(max_redirects + 1):
        target = resolve(url, allow_private=allow_private)
        cls = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
        conn = cls(target, timeout)
        try:
            conn.request("POST", target.path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read(64 * 1024)  # drain a little; the body is not used
            status, location = resp.status, resp.getheader("Location")
        finally:
            conn.close()
        if status in (301, 302, 303, 307, 308) and location:
            url = urljoin(url, location)
            continue
        return Response(status, url, (time.perf_counter() - t0) * 1000.0)
    raise OutboundRefused(f"more than {max_redirects} redirects")
