"""file:// data sources on a site's shares: directories every host of a site mounts, declared in the site's manifest
(`shares: [{path: /srv/oasis-share, access_level: rw|ro, id: optional}]`, as Sahara's shares were).

A job on a cluster of a multi-host site may name a file:// data source only under one of the site's shares: a path
elsewhere exists on one host and not on the others, so the job would read or write a different directory on each.
Reading needs any share; writing (a job's output, and data sources referenced in its arguments, which may be
written) needs an `rw` one. The embedded `local` site (one host, reached directly) keeps any local path.

Sahara's cluster `shares` field names Manila shares by id. Here a site share may carry an `id`; when a cluster
names shares, its jobs may use only the site shares it names (a cluster's `access_level: ro` narrows an rw share),
and an id that names no share of the site is not usable (there is nothing to mount: oasis mounts nothing itself).
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from oasis.db.models import Host, Site
from oasis.edp.access import AccessError
from oasis.storage.urls import parse

ACCESS_LEVELS = ("rw", "ro")


class ShareError(AccessError):
    """A file:// data source lies outside the shares its cluster's site declares (or on a read-only one)."""


@dataclass(frozen=True)
class Share:
    path: str
    access_level: str = "rw"
    id: str | None = None

    def holds(self, path: str) -> bool:
        return path == self.path or path.startswith(self.path.rstrip("/") + "/")


def parse_share(entry: Any, where: str) -> dict[str, Any]:
    """One manifest share, normalized; raises ValueError naming the field."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be a mapping with 'path' and 'access_level'")
    unknown = sorted(set(entry) - {"path", "access_level", "id"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: path, access_level, id")
    path = entry.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"{where}.path: must be an absolute path, not {path!r}")
    level = entry.get("access_level") or "rw"
    if level not in ACCESS_LEVELS:
        raise ValueError(f"{where}.access_level: must be rw or ro, not {level!r}")
    share_id = entry.get("id")
    if share_id is not None and not isinstance(share_id, str):
        raise ValueError(f"{where}.id: must be a string")
    out = {"path": posixpath.normpath(path), "access_level": level}
    if share_id:
        out["id"] = share_id
    return out


def usable_shares(site_shares: list[dict[str, Any]], cluster_shares: list[dict[str, Any]] | None) -> list[Share]:
    """The shares a cluster's jobs may use: the site's, narrowed to those the cluster names when it names any."""
    shares = [Share(s["path"], s.get("access_level") or "rw", s.get("id")) for s in site_shares or []]
    if not cluster_shares:
        return shares
    out = []
    for wanted in cluster_shares:
        for share in shares:
            if wanted.get("id") not in (share.id, share.path):
                continue
            if wanted.get("path") and posixpath.normpath(wanted["path"]) != share.path:
                continue  # Sahara would mount it at that path; oasis mounts nothing, the site's path is the path
            level = "ro" if "ro" in (share.access_level, wanted.get("access_level")) else "rw"
            out.append(Share(share.path, level, share.id))
    return out


def check_file_sources(sources: list[tuple[str, str]], shares: list[Share] | None, site_name: str) -> None:
    """`sources`: (URL, mode "r"|"rw") of a job's data sources; `shares`: None where any local path goes (the
    embedded single-host site). Raises ShareError naming the path and the shares that would do."""
    if shares is None:
        return
    for url, mode in sources:
        loc = parse(url)
        if loc.scheme != "file":
            continue
        path = posixpath.normpath("/" + loc.key.lstrip("/"))
        holding = [s for s in shares if s.holds(path)]
        declared = ", ".join(f"{s.path} ({s.access_level})" for s in shares) or "none"
        if not holding:
            raise ShareError(f"{url} is not on a share of site '{site_name}': a file:// data source of a job on a "
                             f"multi-host site must lie under one of the shares its manifest declares "
                             f"(shares: {declared})")
        if "w" in mode and not any(s.access_level == "rw" for s in holding):
            raise ShareError(f"{url} is on a read-only share of site '{site_name}': a job's output (or a data "
                             f"source named in its arguments) needs an rw share (shares: {declared})")


def shares_for_cluster(session: Any, cluster: Any) -> tuple[list[Share] | None, str]:
    """The shares a cluster's jobs may use (None: any local path, on a site whose hosts are all this machine),
    and its site's name."""
    site = session.get(Site, cluster.site_id)
    if site is None:
        return None, ""
    remote = session.scalars(select(Host.id).where(Host.site_id == site.id, Host.access != "local")).first()
    if remote is None:
        return None, site.name
    return usable_shares((site.spec or {}).get("shares") or [], (cluster.spec or {}).get("shares")), site.name
