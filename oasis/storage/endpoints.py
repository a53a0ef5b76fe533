"""Which addresses the controller may fetch on a user's behalf (the `endpoint`, `auth_url` and `storage_url` of a
data source's or a binary's credentials): not the machine's own services nor the cloud's metadata service.

Refused unless allowlisted: loopback, link-local (169.254.0.0/16, fe80::/10, where metadata services live),
known metadata addresses, unspecified and multicast addresses, and the controller's own addresses (its listen
address; every address of the machine when it listens on all). Host names are resolved first and every address
they resolve to is judged, at the API and again by the engine just before it connects (a name that resolved to
a public address at the API may resolve to loopback later). The deployment's own object store is always
allowed, and `OASIS_ALLOWED_ENDPOINTS` (comma-separated `host`, `host:port` or CIDRs) lets a deployment allow
more, e.g. a Swift on the controller's loopback."""
from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psutil

from oasis.config import Settings

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
# Metadata services outside the link-local ranges (AWS's IPv6 one, Alibaba's, Oracle's).
METADATA = {ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200", "192.0.0.192")}
# The credential fields that name a place the controller connects to (Sahara's names and Swift's).
URL_FIELDS = ("endpoint", "auth_url", "storage_url")
ALL_ADDRESSES = ("0.0.0.0", "::", "")


class EndpointRefused(ValueError):
    """The message says which field, which address and why; it never holds a credential."""


@dataclass(frozen=True)
class Allowed:
    host: str | None = None  # a host name or address, lowercased
    port: int | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    @classmethod
    def parse(cls, text: str) -> "Allowed":
        text = text.strip()
        if "/" in text:
            return cls(network=ipaddress.ip_network(text, strict=False))
        if "://" in text:
            parts = urlsplit(text)
            return cls(host=(parts.hostname or "").lower(), port=parts.port)
        host, port = _split_host_port(text)
        return cls(host=host.lower(), port=port)

    def admits(self, host: str, port: int | None, address: IP) -> bool:
        if self.network is not None:
            return _plain(address) in self.network
        if self.port is not None and self.port != port:
            return False
        return self.host == host.lower() or self.host == str(_plain(address))


def _split_host_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):  # [v6]:port
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:] else None
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port) if port else None
    return text, None


def _plain(address: IP) -> IP:
    """::ffff:127.0.0.1 is 127.0.0.1: judged as the address it reaches."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def why_refused(address: IP, own: frozenset[IP]) -> str | None:
    a = _plain(address)
    if a in METADATA or a == ipaddress.ip_address("169.254.169.254"):
        return "a cloud metadata address"
    if a.is_loopback:
        return "a loopback address"
    if a.is_link_local:
        return "a link-local address"
    if a.is_unspecified:
        return "the unspecified address"
    if a.is_multicast:
        return "a multicast address"
    if a in own:
        return "an address of the controller itself"
    return None


def _machine_addresses() -> frozenset[IP]:
    out: set[IP] = set()
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    out.add(ipaddress.ip_address(a.address.split("%", 1)[0]))
                except ValueError:
                    pass
    return frozenset(out)


def _resolve(host: str, port: int | None) -> list[IP]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return sorted({ipaddress.ip_address(i[4][0].split("%", 1)[0]) for i in infos}, key=str)


def _target(value: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, or of Sahara's bare `host[:port]` endpoint."""
    text = value.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        raise EndpointRefused("has an invalid port") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise EndpointRefused(f"must be an http:// or https:// URL, not {parts.scheme}://")
    if not parts.hostname:
        raise EndpointRefused("names no host")
    return parts.scheme.lower(), parts.hostname, port or (443 if parts.scheme.lower() == "https" else 80)


@dataclass(frozen=True)
class EndpointPolicy:
    allowed: tuple[Allowed, ...] = ()
    own: frozenset[IP] = frozenset()

    @classmethod
    def build(cls, allowed: Iterable[str] = (), listen_host: str | None = None,
              trusted_urls: Iterable[str | None] = ()) -> "EndpointPolicy":
        """`allowed`: the deployment's allowlist; `listen_host`: the API's listen address (all the machine's
        when it listens on all); `trusted_urls`: the deployment's own object store endpoints."""
        entries = [Allowed.parse(a) for a in allowed if a and a.strip()]
        for url in trusted_urls:
            if url:
                _, host, port = _target(url)
                entries.append(Allowed(host=host.lower(), port=port))
        own: set[IP] = set()
        if listen_host is not None:
            if listen_host in ALL_ADDRESSES:
                own |= _machine_addresses()
            else:
                own |= set(_resolve(listen_host, None))
        return cls(tuple(entries), frozenset(own))

    def check_url(self, value: str, field: str) -> None:
        try:
            _, host, port = _target(value)
        except EndpointRefused as e:
            raise EndpointRefused(f"{field}: {e}") from None
        addresses = _resolve(host, port)
        if not addresses:
            raise EndpointRefused(f"{field}: the host {host} does not resolve to any address")
        for address in addresses:
            reason = why_refused(address, self.own)
            if reason and not any(a.admits(host, port, address) for a in self.allowed):
                shown = host if host == str(address) else f"{host} ({address})"
                raise EndpointRefused(f"{field}: {shown} is {reason}; the controller does not connect there on "
                                      f"a user's behalf (an administrator may allow it in OASIS_ALLOWED_ENDPOINTS)")

    def check_credentials(self, credentials: dict[str, Any] | None, where: str) -> None:
        for name, value in (credentials or {}).items():
            if name in URL_FIELDS and isinstance(value, str) and value.strip():
                self.check_url(value, f"{where}.{name}")


def allowed_from_env() -> tuple[str, ...]:
    return tuple(a.strip() for a in os.environ.get("OASIS_ALLOWED_ENDPOINTS", "").split(",") if a.strip())


def deployment_policy(settings: Settings, store: Any = None) -> EndpointPolicy:
    """The policy of a deployment: its allowlist, its listen address, and its own object store (`store`: the
    store oasis.storage.open_store made, whose `endpoints` say where it is)."""
    own = getattr(store, "endpoints", None)
    return EndpointPolicy.build(settings.allowed_endpoints, settings.host,
                                (getattr(own, "swift_auth_url", None), getattr(own, "s3_endpoint", None)))


_policy: EndpointPolicy | None = None


def set_policy(policy: EndpointPolicy | None) -> None:
    """Set once at start (oasis.server) from the settings: what the engine checks again before it connects."""
    global _policy
    _policy = policy


def current_policy() -> EndpointPolicy:
    """The process's policy; before any is set (tools, tests), the environment's allowlist and no own address."""
    return _policy if _policy is not None else EndpointPolicy.build(allowed_from_env())
