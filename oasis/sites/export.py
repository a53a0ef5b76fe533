"""The control plane's export: the one bundle a site needs to join (TripleO's `overcloud export`).

`EndpointMap` (where the API, identity, object store and engine callback are), `HostsEntry` (host lines for the
control plane's names), `GlobalConfig` (framework defaults), `AllNodesConfig` (every site's hosts, for name
resolution across sites) and `secrets` (the join token, generated once per control plane). A site's own
credentials (Site.secrets) are never read here: they cannot end up in a bundle.

Every export is a new version kept in the database: a site not yet updated still needs the one it was
deployed with."""
from __future__ import annotations

import ipaddress
import os
import secrets as random_secrets
import socket
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from oasis.db.models import ControlPlaneSecret, Export, Host, Site

DNS_DOMAIN = "oasis.local"
JOIN_TOKEN = "join_token"
BUNDLE_KEYS = ("EndpointMap", "HostsEntry", "GlobalConfig", "AllNodesConfig", "secrets")
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
    from oasis.plugins import registry

    return {
        "dns_domain": DNS_DOMAIN,
        "time_server": os.environ.get("OASIS_TIME_SERVER") or settings_host,
        "plugins": {p.name: {"versions": list(p.versions())} for p in registry().values()},
    }


def build_bundle(session: Session, api_url: str, object_store: str | None, settings_host: str) -> dict[str, Any]:
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
        "secrets": {JOIN_TOKEN: join_token(session)},
    }


def create_export(session: Session, api_url: str, object_store: str | None, settings_host: str) -> Export:
    row = Export(bundle=build_bundle(session, api_url, object_store, settings_host))
    session.add(row)
    session.flush()
    return row


def get_export(session: Session, version: int | None = None) -> Export:
    """A version, or the latest when `version` is None."""
    if version is None:
        latest = session.scalar(select(func.max(Export.version)))
        if latest is None:
            raise ExportError("the control plane has no export yet: run `oasis export` first")
        version = latest
    row = session.get(Export, int(version))
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
