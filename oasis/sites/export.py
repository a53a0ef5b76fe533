"""The control plane's export: the one bundle a site needs to join (TripleO's `overcloud export`).

`EndpointMap` (where the API, identity, object store and engine callback are), `HostsEntry` (host lines for the
control plane's names), `GlobalConfig` (framework defaults), `AllNodesConfig` (every site's hosts, for name
resolution across sites), `ControlPlaneAccess` (the public key the control plane reaches standalone-deployed
sites' hosts with), `Transport` (how a site talks to the control plane: the API's scheme and URL, the CA that
signed its certificate, whether the join and the callbacks use TLS: the seed's messaging-SSL overrides, as data
a site reads; `check_transport` is how a site reads it) and `secrets` (the bundle version's join token,
derived from a secret generated once per control plane). A site's own credentials (Site.secrets) are never read here: they cannot end up in a bundle.

Every export is a new version kept in the database: a site not yet updated still needs the one it was
deployed with."""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets as random_secrets
import socket
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from oasis.db.models import ControlPlaneSecret, Export, Host, Site, utcnow
from oasis.keys import generate_keypair, public_key_line
from oasis.plugins import registry

MAX_VERSION = 2**31 - 1  # a bundle version fits the database's INTEGER column
BUNDLE_VERSION_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}

DNS_DOMAIN = "oasis.local"
JOIN_TOKEN = "join_token"
SITE_KEY = "site_ssh_private_key"  # ControlPlaneSecret: the control plane's own key to the sites' hosts
CONTROL_PLANE_KEY_COMMENT = "oasis-control-plane"
TRANSPORT = "Transport"
BUNDLE_KEYS = ("EndpointMap", "HostsEntry", "GlobalConfig", "AllNodesConfig", "ControlPlaneAccess", TRANSPORT,
               "secrets")
# the EndpointMap entries a site reaches the control plane at: all of them on the API's own scheme and address
_CONTROL_PLANE_ENDPOINTS = ("api", "data_processing", "identity", "engine_callback")
# How long a bundle's join token is accepted after its export (seconds); a later export makes a new token.
JOIN_TOKEN_TTL = float(os.environ.get("OASIS_JOIN_TOKEN_TTL") or 7 * 24 * 3600)
# Query parameters of a store URL that only say where, never who.
_STORE_WHERE = ("container", "bucket", "region", "prefix")


class ExportError(LookupError):
    pass


def object_store_description(url: str | None) -> dict[str, Any]:
    """Where the deployment's object store is, without its credentials (user, key, secret)."""
    if not url:
        return {"type": "file"}
    parts = urlsplit(url)
    kind, _, transport = parts.scheme.partition("+")
    desc: dict[str, Any] = {"type": kind or parts.scheme}
    if parts.hostname:
        netloc = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        if parts.port:
            netloc += f":{parts.port}"
        desc["endpoint"] = f"{transport or 'http'}://{netloc}{parts.path}"
    query = parse_qs(parts.query)
    for key in _STORE_WHERE:
        if key in query:
            desc[key] = query[key][0]
    return desc


def join_token(session: Session) -> str:
    """The control plane's join token: made by the first export, the same ever after."""
    row = session.get(ControlPlaneSecret, JOIN_TOKEN)
    if row is not None:
        return row.value
    try:
        with session.begin_nested():
            session.add(ControlPlaneSecret(name=JOIN_TOKEN, value=random_secrets.token_urlsafe(32)))
    except IntegrityError:  # another API replica made it first: theirs is the one
        pass
    return session.get(ControlPlaneSecret, JOIN_TOKEN).value


def version_token(session: Session, version: int) -> str:
    """The join token of one bundle version: derived from the control plane's join secret and the version, so a
    bundle's token is worth nothing for any other version, and no table of tokens needs keeping."""
    mac = hmac.new(join_token(session).encode(), f"oasis-join:{int(version)}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def check_join_token(session: Session, version: int, token: str, now: datetime | None = None) -> Export:
    """The export a join names, if `token` is its token and has not expired; JoinRefused otherwise. The
    comparison is in constant time; the token itself is never put in a message."""
    row = session.get(Export, version) if isinstance(version, int) and 0 < version <= MAX_VERSION else None
    expected = version_token(session, row.version) if row is not None else version_token(session, 0)
    # compared even for an unknown version, so that the answer's timing does not tell versions apart
    good = hmac.compare_digest(expected.encode(), (token or "").encode())
    if row is None or not good:
        raise JoinRefused(401, "the join token is not valid for this bundle version (was the bundle exported by "
                               "this control plane?)")
    age = ((now or utcnow()) - row.created_at).total_seconds()
    if age > JOIN_TOKEN_TTL:
        raise JoinRefused(403, f"the join token of bundle version {row.version} expired "
                               f"{timedelta(seconds=int(age - JOIN_TOKEN_TTL))} ago: export a new bundle")
    return row


class JoinRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def control_plane_key(session: Session) -> tuple[str, str]:
    """(private, public) OpenSSH key the control plane reaches the hosts of standalone-deployed sites with: made
    once. Only the public half leaves the control plane (in the bundle); a standalone deploy authorizes it."""
    row = session.get(ControlPlaneSecret, SITE_KEY)
    if row is None:
        private, _ = generate_keypair(CONTROL_PLANE_KEY_COMMENT)
        try:
            with session.begin_nested():
                session.add(ControlPlaneSecret(name=SITE_KEY, value=private))
        except IntegrityError:  # another API replica made it first
            pass
        row = session.get(ControlPlaneSecret, SITE_KEY)
    return row.value, public_key_line(row.value, CONTROL_PLANE_KEY_COMMENT)


def _fqdn(name: str, site: str | None = None) -> str:
    return f"{name}.{site}.{DNS_DOMAIN}" if site else f"{name}.{DNS_DOMAIN}"


def control_plane_hosts(api_url: str) -> list[str]:
    """/etc/hosts lines naming the control plane: its API address under the service names."""
    host = urlsplit(api_url).hostname or "127.0.0.1"
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        try:
            address = socket.gethostbyname(host)
        except OSError:
            address = host
    names = ["oasis-api", _fqdn("oasis-api"), "oasis-control-plane", _fqdn("oasis-control-plane")]
    return [f"{address} {' '.join(names)}"]


def all_nodes(session: Session) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for site in session.scalars(select(Site).order_by(Site.name)):
        hosts = []
        for h in session.scalars(select(Host).where(Host.site_id == site.id).order_by(Host.name)):
            addresses = (h.spec or {}).get("addresses") or {"management": h.address}
            hosts.append({"name": h.name, "fqdn": _fqdn(h.name, site.name), "address": h.address,
                          "addresses": dict(addresses)})
        out[site.name] = {"availability_zone": site.name, "hosts": hosts}
    return {"dns_domain": DNS_DOMAIN, "sites": out}


def global_config(settings_host: str) -> dict[str, Any]:
    return {
        "dns_domain": DNS_DOMAIN,
        "time_server": os.environ.get("OASIS_TIME_SERVER") or settings_host,
        "plugins": {p.name: {"versions": list(p.versions())} for p in registry().values()},
    }


def transport(api_url: str, ca_pem: str | None) -> dict[str, Any]:
    """The bundle's `Transport`: what the control plane serves on, and the CA a site verifies it with (None: a
    certificate from a CA the sites' systems already trust)."""
    scheme = urlsplit(api_url).scheme
    tls = scheme == "https"
    if ca_pem is not None and "PRIVATE KEY" in ca_pem:
        raise ValueError("the control plane's CA file holds a private key: it must never go into a bundle")
    return {"scheme": scheme, "api_url": api_url, "ca_cert": ca_pem if tls else None,
            "join_use_tls": tls, "callbacks_use_tls": tls}


class BundleError(ValueError):
    """A bundle a site cannot use; the message names the field."""


def check_transport(bundle: dict[str, Any]) -> dict[str, Any]:
    """The bundle's `Transport`, checked: a known scheme, an API URL on it, the join and the callbacks on TLS
    exactly when the API is (a TLS control plane serves nothing plain), a CA that parses as certificates and holds
    no private key, and the EndpointMap's control-plane entries on the same scheme and address."""
    t = bundle.get(TRANSPORT)
    if not isinstance(t, dict):
        raise BundleError(f"{TRANSPORT}: not a mapping")
    scheme, api_url = t.get("scheme"), t.get("api_url")
    if scheme not in ("http", "https"):
        raise BundleError(f"{TRANSPORT}.scheme: {scheme!r} is neither http nor https")
    if not isinstance(api_url, str) or urlsplit(api_url).scheme != scheme or not urlsplit(api_url).hostname:
        raise BundleError(f"{TRANSPORT}.api_url: {api_url!r} is not an {scheme}:// URL")
    tls = scheme == "https"
    for key in ("join_use_tls", "callbacks_use_tls"):
        if t.get(key) is not tls:
            raise BundleError(f"{TRANSPORT}.{key}: must be {str(tls).lower()} for an {scheme} control plane")
    ca = t.get("ca_cert")
    if ca is not None:
        if not tls:
            raise BundleError(f"{TRANSPORT}.ca_cert: an http control plane has no certificate to verify")
        if not isinstance(ca, str) or "PRIVATE KEY" in ca:
            raise BundleError(f"{TRANSPORT}.ca_cert: must be the CA's certificate (PEM) and nothing else")
        try:
            x509.load_pem_x509_certificates(ca.encode())
        except ValueError:
            raise BundleError(f"{TRANSPORT}.ca_cert: not a PEM certificate") from None
    endpoints = bundle.get("EndpointMap")
    if not isinstance(endpoints, dict):
        raise BundleError("EndpointMap: not a mapping")
    base = api_url.rstrip("/")
    for key in _CONTROL_PLANE_ENDPOINTS:
        url = endpoints.get(key)
        if not isinstance(url, str) or not (url.rstrip("/") == base or url.startswith(base + "/")):
            raise BundleError(f"EndpointMap.{key}: {url!r} is not on the control plane's {TRANSPORT}.api_url "
                              f"{api_url}")
    return t


def build_bundle(session: Session, api_url: str, object_store: str | None, settings_host: str,
                 version: int, ca_pem: str | None = None) -> dict[str, Any]:
    """`ca_pem`: the CA that signed the API's certificate (oasis.tls.ca_pem), for a TLS control plane."""
    api_url = api_url.rstrip("/")
    return {
        "EndpointMap": {
            "api": api_url,
            "data_processing": f"{api_url}/v2",
            "identity": f"{api_url}/v3",
            "object_store": object_store_description(object_store),
            "engine_callback": api_url,
        },
        "HostsEntry": control_plane_hosts(api_url),
        "GlobalConfig": global_config(settings_host),
        "AllNodesConfig": all_nodes(session),
        "ControlPlaneAccess": {"ssh_public_key": control_plane_key(session)[1]},
        TRANSPORT: transport(api_url, ca_pem),
        "secrets": {JOIN_TOKEN: version_token(session, version)},
    }


def create_export(session: Session, api_url: str, object_store: str | None, settings_host: str,
                  ca_pem: str | None = None) -> Export:
    row = Export(bundle={})
    session.add(row)
    session.flush()  # the version first: the bundle's join token is that version's
    row.bundle = build_bundle(session, api_url, object_store, settings_host, row.version, ca_pem)
    session.flush()
    return row


def get_export(session: Session, version: int | None = None) -> Export:
    """A version, or the latest when `version` is None."""
    if version is None:
        latest = session.scalar(select(func.max(Export.version)))
        if latest is None:
            raise ExportError("the control plane has no export yet: run `oasis export` first")
        version = latest
    row = session.get(Export, int(version)) if 0 < int(version) <= MAX_VERSION else None
    if row is None:
        raise ExportError(f"export version {version} not found")
    return row


def hosts_file(bundle: dict[str, Any]) -> str:
    """The `hosts` file a site's host gets: the control plane's names, then every site's hosts."""
    lines = ["# written by oasis: the control plane, then every host of every site", *bundle["HostsEntry"]]
    for site, entry in sorted(bundle["AllNodesConfig"]["sites"].items()):
        for h in entry["hosts"]:
            lines.append(f"{h['address']} {h['fqdn']} {h['name']}")
    return "\n".join(lines) + "\n"
