"""POST /v2/sites/join: a site deployed standalone (`oasis site deploy --standalone`) joins the control plane.

Authenticated by the join token of the bundle version the site was deployed with (header X-Oasis-Join-Token,
the route's `join_token` auth), not by a Keystone token: the site has the bundle and nothing else. The token is
compared in constant time, is good for its own bundle version only and expires
(oasis.sites.export.check_join_token); it is never logged.

The site did the enrollment itself; the control plane records the result: the site from its manifest entry with
the control plane's own key as the way in (the site authorized its public half), hosts up with their measured
capacity, the site deployed at that bundle version, and the site's events followed by a `join` event. Joining
again is idempotent (same site, same hosts) and applies a changed manifest (hosts gone from it are removed when
nothing runs on them). A site that exists but was not deployed standalone is not taken over (409)."""
from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, func, select

from oasis.api.errors import ApiError, bad
from oasis.api.routing import Ctx, Deps, Reply, Routes
from oasis.api.sites import require_idle, site_view
from oasis.db.models import Host, HostPort, Instance, Site, SiteEvent
from oasis.db.states import SiteStatus
from oasis.sites import export as site_export
from oasis.sites import manifest as site_manifest

log = logging.getLogger(__name__)

JOIN_HEADER = "x-oasis-join-token"
STANDALONE = "standalone"  # Site.spec["deployed"]: how the site was deployed
MAX_BODY = 4 * 1024 * 1024
MAX_EVENTS = 2000

JOIN_SCHEMA = {
    "type": "object",
    "properties": {
        "bundle_version": site_export.BUNDLE_VERSION_SCHEMA,
        "site": {"type": "object", "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 64},
                                                  "hosts": {"type": "array", "minItems": 1}},
                 "required": ["name", "hosts"]},
        "runtime": {"type": "object"},
        "hosts": {"type": "object", "additionalProperties": {
            "type": "object",
            "properties": {"host_key": {"type": "string", "minLength": 1},
                           "measured": {"type": ["object", "null"]}, "runtime": {"type": "string"}},
            "required": ["host_key"]}},
        "events": {"type": "array", "maxItems": MAX_EVENTS, "items": {
            "type": "object",
            "properties": {"step": {"type": "string", "maxLength": 32}, "host": {"type": ["string", "null"]},
                           "info": {"type": "string"}, "successful": {"type": "boolean"}},
            "required": ["step"]}},
    },
    "required": ["bundle_version", "site", "runtime", "hosts"],
    "additionalProperties": False,
}


def join_site(ctx: Ctx) -> Reply:
    """A site deployed standalone joins the control plane (oasis site deploy --standalone)"""
    site = _join(ctx.deps, ctx.request.headers[JOIN_HEADER], ctx.body)
    ctx.notify()
    return Reply(200, {"site": site})


def _join(deps: Deps, token: str, body: dict[str, Any]) -> dict[str, Any]:
    entry, reported = body["site"], body["hosts"]
    name = entry["name"]
    try:
        with deps.db.session() as s:
            try:
                export = site_export.check_join_token(s, body["bundle_version"], token)
            except site_export.JoinRefused as e:
                raise ApiError(e.status, "UNAUTHORIZED" if e.status == 401 else "FORBIDDEN", str(e)) from None
            existing = s.scalars(select(Site).where(Site.name == name)).first()
            if existing is not None:
                if (existing.spec or {}).get("deployed") != STANDALONE:
                    raise ApiError(409, "SITE_EXISTS",
                                   f"Site {name} exists and was not deployed standalone: it is managed from the "
                                   f"control plane (`oasis site deploy`); give the standalone site another name "
                                   f"or delete {name} first")
                require_idle(existing, "a standalone join")
            try:
                site_manifest.refuse_proxy_command(entry, "site")
            except site_manifest.ProxyCommandRefused as e:
                raise ApiError(403, "FORBIDDEN", str(e)) from None
            _check_hosts(entry, reported)
            private_key, _ = site_export.control_plane_key(s)
            site, = site_manifest.register(s, {"sites": [entry]}, private_key, body["runtime"])
            site.spec = {**site.spec, "deployed": STANDALONE}
            removed = _drop_hosts_not_in(s, site, {h["name"] for h in entry["hosts"]})
            for h in s.scalars(select(Host).where(Host.site_id == site.id)):
                h.status = "up"
                measured = (reported.get(h.name) or {}).get("measured")
                if measured:
                    h.spec = {**(h.spec or {}), "measured": dict(measured)}
            site.generation = (site.generation or 0) + 1
            site.status, site.status_description = SiteStatus.ACTIVE, ""
            site.op, site.op_step, site.op_target = None, None, {}
            site.bundle_version = export.version
            s.flush()
            for e in body.get("events") or []:
                s.add(SiteEvent(site_id=site.id, generation=site.generation, step=e["step"], host_name=e.get("host"),
                                info=str(e.get("info") or "")[:4000], successful=bool(e.get("successful", True))))
            info = (f"joined standalone at bundle version {export.version}: {len(entry['hosts'])} host(s) enrolled "
                    f"at the site")
            if removed:
                info += f"; removed {', '.join(removed)} (no longer in the manifest)"
            s.add(SiteEvent(site_id=site.id, generation=site.generation, step="join", host_name=None, info=info))
            s.flush()
            log.info("site %s joined standalone at bundle version %s", name, export.version)
            return site_view(s, site, True)
    except site_manifest.ManifestError as e:
        raise bad("INVALID_DATA", str(e)) from None
    except (KeyError, TypeError, ValueError) as e:
        raise bad("INVALID_DATA", f"site: malformed site entry ({e!r})") from None


def _check_hosts(entry: dict[str, Any], reported: dict[str, dict]) -> None:
    """Every host of the entry was enrolled at the site with the key the entry pins, and no other."""
    names = []
    for j, h in enumerate(entry["hosts"]):
        if not isinstance(h, dict) or not h.get("name"):
            raise bad("INVALID_DATA", f"site.hosts[{j}]: 'name' is required")
        names.append(h["name"])
        got = reported.get(h["name"])
        if got is None:
            raise bad("INVALID_DATA", f"hosts: no enrollment result for host {h['name']}")
        if got["host_key"] != h.get("host_key"):
            raise bad("INVALID_DATA", f"hosts: {h['name']} was enrolled with another host key than the manifest pins")
    extra = sorted(set(reported) - set(names))
    if extra:
        raise bad("INVALID_DATA", f"hosts: {', '.join(extra)} not in the site entry")


def _drop_hosts_not_in(s, site: Site, names: set[str]) -> list[str]:
    gone = [h for h in s.scalars(select(Host).where(Host.site_id == site.id)) if h.name not in names]
    for h in gone:
        busy = s.scalar(select(func.count(Instance.id)).where(Instance.host_id == h.id))
        if busy:
            raise ApiError(409, "HOST_IN_USE", f"Host {h.name} is not in the manifest any more but holds {busy} "
                                               f"instance(s); delete or scale down their clusters first")
    for h in gone:
        s.execute(delete(HostPort).where(HostPort.host_id == h.id))
        s.delete(h)
    return sorted(h.name for h in gone)


def register(routes: Routes) -> None:
    routes.add("POST", "/sites/join", join_site, "site:join", auth="join_token", schema=JOIN_SCHEMA,
               max_body=MAX_BODY, json_suffix=False, status=200, returns="site", errors=(409,))
