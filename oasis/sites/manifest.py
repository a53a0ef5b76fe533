"""Registering a site from its manifest: the site's access (direct, gateway, floating addresses, proxy
command), its networks, and its hosts with their addresses, capacity and pinned host keys.

The manifest is what `oasis lab up` writes (format version 1); a real site's manifest has the same shape."""
from __future__ import annotations

import posixpath
import string
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from oasis.db import volumes
from oasis.db.models import Host, Image, Site
from oasis.edp.shares import parse_share
from oasis.plugins import image_tags

ACCESS_MODES = ("direct", "gateway", "proxy_command")
QUOTA_KEYS = ("instances", "vcpus", "ram_mb", "volumes", "volume_gb")
PROXY_PLACEHOLDERS = {"host", "port", "tenant_id", "network_id", "site"}


PROXY_COMMAND_REFUSED = "a proxy command can only be set by an admin registering the site's manifest"


class ManifestError(ValueError):
    """The manifest is wrong; the message names the field."""


class ProxyCommandRefused(ManifestError):
    """A manifest from someone other than an admin (a site joining with its bundle) names a proxy command: the
    controller would run it on every connection to the site, so whoever holds a bundle would run code on the
    control plane."""


def refuse_proxy_command(entry: Any, where: str) -> None:
    """Only `direct` or `gateway` access from a manifest that is not an admin's; a `proxy_command` key is refused
    whatever the access it comes with, rather than kept for later."""
    if isinstance(entry, dict) and (entry.get("access") == "proxy_command" or entry.get("proxy_command")
                                    not in (None, "")):
        raise ProxyCommandRefused(f"{where}: {PROXY_COMMAND_REFUSED}")


def check_proxy_command(template: str, where: str) -> None:
    """Every placeholder must be one oasis fills in: an unknown one is a configuration error, named now rather
    than at the first connection."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise ManifestError(f"{where}: proxy_command is not a valid template: {e}") from None
    unknown = sorted(fields - PROXY_PLACEHOLDERS)
    if unknown:
        raise ManifestError(f"{where}: proxy_command has unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)};"
                            f" known: {', '.join('{' + p + '}' for p in sorted(PROXY_PLACEHOLDERS))}")


def check_quotas(value: Any, where: str) -> dict[str, int]:
    """A site's `quotas: {instances, vcpus, ram_mb, volumes, volume_gb}` (volumes: how many block storage volumes,
    volume_gb: their total size, as Cinder's `volumes` and `gigabytes`): each optional (absent: unlimited), a
    non-negative integer."""
    if value is None:
        return {}
    _check_keys(value, QUOTA_KEYS, f"{where}.quotas", "quota(s)")
    out = {}
    for key, limit in value.items():
        if limit is None:
            continue
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ManifestError(f"{where}.quotas.{key}: must be a non-negative integer, not {limit!r}")
        out[key] = limit
    return out


def check_shares(value: Any, where: str) -> list[dict[str, Any]]:
    """A site's `shares: [{path, access_level: rw|ro, id}]`: directories every host of the site mounts, where
    file:// data sources of its jobs may lie (see oasis.edp.shares)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestError(f"{where}.shares: must be a list of {{path, access_level}}")
    try:
        return [parse_share(entry, f"{where}.shares[{i}]") for i, entry in enumerate(value)]
    except ValueError as e:
        raise ManifestError(str(e)) from None


VOLUME_KEYS = ("backend", "dir", "size_gb", "types")


def check_volumes(value: Any, where: str) -> dict[str, Any] | None:
    """A site's or host's `volumes: {backend: loop, dir: PATH, size_gb: N, types: [NAME, ...]}`: where the host
    keeps its volumes' image files, how many GB of volumes placement may hand out on the host, and the volume
    types it offers (optional; a node group's `volume_type` must be one of them). Absent: no block storage."""
    if value is None:
        return None
    _check_keys(value, VOLUME_KEYS, f"{where}.volumes", "key(s)")
    backend = value.get("backend")
    if backend not in volumes.BACKENDS:
        raise ManifestError(f"{where}.volumes.backend: must be one of {', '.join(volumes.BACKENDS)}, not {backend!r}")
    d = value.get("dir")
    if not isinstance(d, str) or not d.startswith("/") or posixpath.normpath(d) != d or "\n" in d:
        raise ManifestError(f"{where}.volumes.dir: must be an absolute, normalized path on the host, not {d!r}")
    size = value.get("size_gb")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ManifestError(f"{where}.volumes.size_gb: must be a positive integer, not {size!r}")
    types = value.get("types") or []
    if not isinstance(types, list) or not all(isinstance(t, str) and t.strip() for t in types):
        raise ManifestError(f"{where}.volumes.types: must be a list of volume type names")
    return {"backend": backend, "dir": d, "size_gb": size, "types": list(types)}


def _need(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d or d[key] in (None, ""):
        raise ManifestError(f"{where}: '{key}' is required")
    return d[key]


def register(session: Session, manifest: dict[str, Any], private_key: str, runtime: dict[str, Any],
             admin: bool = False) -> list[Site]:
    """Create or update every site of the manifest and its hosts. Idempotent: registering the same manifest
    twice changes nothing. `runtime` describes what the hosts provide (their image). `admin`: the manifest
    comes from an administrator (the API checked the role), the only source a proxy command may come from."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("sites"), list):
        raise ManifestError("manifest: 'sites' must be a list")
    out = []
    for i, entry in enumerate(manifest["sites"]):
        if not admin:
            refuse_proxy_command(entry, f"sites[{i}]")
        out.append(_register_site(session, entry, f"sites[{i}]", private_key, runtime))
    return out


def _register_site(session: Session, entry: dict[str, Any], where: str, private_key: str,
                   runtime: dict[str, Any]) -> Site:
    name = _need(entry, "name", where)
    access = _need(entry, "access", where)
    if access not in ACCESS_MODES:
        raise ManifestError(f"{where}.access: must be one of {', '.join(ACCESS_MODES)}, not {access!r}")
    if access == "proxy_command":
        check_proxy_command(_need(entry, "proxy_command", where), where)
    gateway = entry.get("gateway") or None
    if access == "gateway" and not gateway:
        raise ManifestError(f"{where}.gateway: required when access is 'gateway'")
    network = _need(entry, "management_network", where)
    spec = {
        "access": access,
        # kept only where it is the way in: a site with another access never carries a command
        "proxy_command": entry.get("proxy_command") if access == "proxy_command" else None,
        "gateway": {k: gateway[k] for k in ("name", "address", "ssh_user", "ssh_port", "host_key")} if gateway else None,
        "floating_range": entry.get("floating_range"),
        "use_floating_ips": bool(entry.get("use_floating_ips", bool(entry.get("floating_range")))),
        "management_network": network,
        "default_network": network,
        "networks": {n["name"]: n.get("cidr") for n in entry.get("networks") or []} or {network: None},
        "shares": check_shares(entry.get("shares"), where),
        "quotas": check_quotas(entry.get("quotas"), where),
        # the default of its hosts; a host's own `volumes` replaces it
        "volumes": check_volumes(entry.get("volumes"), where),
    }
    site = session.scalars(select(Site).where(Site.name == name)).first()
    if site is None:
        site = Site(name=name)
        session.add(site)
    site.spec, site.secrets = spec, {"ssh_private_key": private_key}
    session.flush()

    for j, h in enumerate(_need(entry, "hosts", where)):
        _register_host(session, site, h, f"{where}.hosts[{j}]", network)
    _register_image(session, site, runtime)
    return site


def _register_host(session: Session, site: Site, h: dict[str, Any], where: str, network: str) -> Host:
    addresses = _need(h, "addresses", where)
    if network not in addresses:
        raise ManifestError(f"{where}.addresses: no address on the management network {network!r}")
    capacity = _need(h, "capacity", where)
    host = session.scalars(select(Host).where(Host.site_id == site.id, Host.name == _need(h, "name", where))).first()
    if host is None:
        host = Host(site_id=site.id, name=h["name"])
        session.add(host)
    host.access = "ssh"
    host.address = addresses[network]
    host.vcpus, host.ram_mb, host.disk_gb = (int(capacity[k]) for k in ("vcpus", "ram_mb", "disk_gb"))
    host.base_dir = _need(h, "base_dir", where)
    host.spec = {"addresses": addresses, "floating_address": h.get("floating_address"),
                 "ssh_user": h.get("ssh_user", "root"), "ssh_port": int(h.get("ssh_port", 22)),
                 "host_key": _need(h, "host_key", where),
                 # where the host's sshd looks for keys: clusters' own keys are added there and removed with them
                 "authorized_keys": h.get("authorized_keys") or "~/.ssh/authorized_keys",
                 # the host's own volume backend, else its site's
                 "volumes": check_volumes(h["volumes"], where) if "volumes" in h
                 else (site.spec or {}).get("volumes")}
    return host


def _register_image(session: Session, site: Site, runtime: dict[str, Any]) -> None:
    image = session.scalars(select(Image).where(Image.site_id == site.id, Image.name == "site-runtime")).first()
    if image is None:
        image = Image(site_id=site.id, name="site-runtime", description=f"The runtime the hosts of {site.name} provide")
        session.add(image)
    image.runtime, image.tags = dict(runtime), image_tags()


def _check_keys(value: Any, known: tuple[str, ...], where: str, what: str) -> None:
    """A mapping whose keys are all among `known`."""
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: must be a mapping of {', '.join(known)}")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ManifestError(f"{where}: unknown {what} {', '.join(map(str, unknown))}; known: {', '.join(known)}")
