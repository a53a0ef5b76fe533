"""Sites and their hosts (an oasis extension): an administrator registers a site manifest, such as the one
`oasis lab up` writes; anyone may look at sites, their hosts and free capacity. Credentials are never shown.

Site operations (deploy, scale, update, delete) are desired state: the API checks them, writes the operation on
the site with a new generation and answers 202; the engine's site operations do the work host by host.
Exports (`/exports`) are the control plane's versioned bundle for sites (admin only)."""
from __future__ import annotations

from sqlalchemy import func, or_, select

from oasis import tls
from oasis.api.errors import ApiError, bad
from oasis.api.routing import Ctx, Reply, Routes
from oasis.db.capacity import free_capacity, site_usage
from oasis.db.health import host_health, site_health
from oasis.db.models import Cluster, Export, Host, Instance, Site, SiteEvent
from oasis.db.states import SiteOp, SiteStatus
from oasis.runtime import local_runtime
from oasis.sites import export as site_export
from oasis.sites import manifest as site_manifest

REGISTER_SCHEMA = {
    "type": "object",
    "properties": {
        "manifest": {"type": "object"},
        "private_key": {"type": "string", "minLength": 1},
        "runtime": {"type": "object"},
    },
    "required": ["manifest", "private_key"],
    "additionalProperties": False,
}


def single_user(host: Host) -> bool:
    """Whether the host runs every instance as its agent's own user, not as the instance's project's: an SSH
    user other than root cannot switch users, nor can an unprivileged oasis on the `local` site."""
    spec = host.spec or {}
    if "single_user" in spec:
        return bool(spec["single_user"])
    return host.access != "local" and spec.get("ssh_user", "root") != "root"


def _host_view(host: Host, free: dict[str, tuple[float, float, float]]) -> dict:
    vcpus, ram, disk = free.get(host.id, (0, 0, 0))
    return {"id": host.id, "name": host.name, "access": host.access, "address": host.address,
            "addresses": (host.spec or {}).get("addresses", {"local": host.address}),
            "floating_address": (host.spec or {}).get("floating_address"),
            "host_key": (host.spec or {}).get("host_key"), "status": host.status,
            "capacity": {"vcpus": host.vcpus, "ram_mb": host.ram_mb, "disk_gb": host.disk_gb},
            "measured": (host.spec or {}).get("measured"),
            "free": {"vcpus": vcpus, "ram_mb": ram, "disk_gb": disk}, "health": host_health(host),
            "single_user": single_user(host)}


def site_view(s, site: Site, detail: bool, admin: bool = False, project_id: str | None = None) -> dict:
    """`admin`: the viewer is an administrator, who alone sees the site's proxy command (a command line of the
    controller, which may name internal addresses and namespaces) and every project's clusters there; anyone
    else sees the clusters of `project_id`, their own project, only."""
    spec = site.spec or {}
    view = {"id": site.id, "name": site.name, "status": site.status, "access": spec.get("access", "local"),
            "use_floating_ips": bool(spec.get("use_floating_ips")),
            "management_network": spec.get("management_network") or spec.get("default_network"),
            "cpu_allocation_ratio": site.cpu_allocation_ratio, "ram_allocation_ratio": site.ram_allocation_ratio,
            "status_description": site.status_description or "", "generation": site.generation or 0,
            "bundle_version": site.bundle_version, "operation": site.op, "operation_step": site.op_step}
    if admin:
        view["proxy_command"] = spec.get("proxy_command")
    hosts = list(s.scalars(select(Host).where(Host.site_id == site.id).order_by(Host.name)))
    view["hosts_count"] = len(hosts)
    view["health"] = site_health(hosts)
    view["single_user"] = any(single_user(h) for h in hosts)  # some instances run as the agent's user
    if detail:
        view["quotas"] = dict(spec.get("quotas") or {})  # absent: unlimited
        view["shares"] = list(spec.get("shares") or [])  # where file:// data of its jobs may lie
        view["usage"] = site_usage(s, site.id)
        free = {f.host.id: (f.vcpus, f.ram_mb, f.disk_gb) for f in free_capacity(s, site.id)}
        view["hosts"] = [_host_view(h, free) for h in hosts]
        view["free"] = {k: sum(v[i] for v in free.values()) for i, k in enumerate(("vcpus", "ram_mb", "disk_gb"))}
        clusters = select(Cluster).where(Cluster.site_id == site.id)
        if not admin:
            clusters = clusters.where(Cluster.project_id == project_id)
        view["clusters"] = [{"id": c.id, "name": c.name, "status": c.status} for c in s.scalars(clusters)]
        events = s.scalars(select(SiteEvent).where(SiteEvent.site_id == site.id)
                           .order_by(SiteEvent.created_at.desc(), SiteEvent.id).limit(50))
        view["events"] = [{"generation": e.generation, "step": e.step, "host": e.host_name, "info": e.info,
                           "successful": e.successful, "created_at": e.created_at.isoformat()}
                          for e in reversed(list(events))]
    return view


def list_sites(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        return Reply(200, {"sites": [site_view(s, site, False, ctx.principal.is_admin)
                                     for site in s.scalars(select(Site).order_by(Site.name))]})


def show_site(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        site = s.scalars(select(Site).where(or_(Site.id == ctx.path["id"], Site.name == ctx.path["id"]))).first()
        if site is None:
            raise ApiError(404, "NOT_FOUND", f"Site id or name {ctx.path['id']} not found")
        return Reply(200, {"site": site_view(s, site, True, ctx.principal.is_admin, ctx.principal.project_id)})


def register_sites(ctx: Ctx) -> Reply:
    if not ctx.principal.is_admin:
        raise ApiError(403, "FORBIDDEN", "Registering sites requires the admin role")
    try:
        with ctx.db.session() as s:
            sites = site_manifest.register(s, ctx.body["manifest"], ctx.body["private_key"],
                                           ctx.body.get("runtime") or local_runtime(), admin=True)
            s.flush()
            return Reply(202, {"sites": [site_view(s, site, True, admin=True) for site in sites]})
    except site_manifest.ManifestError as e:
        raise bad("INVALID_DATA", str(e)) from None


# --- site operations ----------------------------------------------------------------------------------------

HOST_ENTRY = {"type": "object", "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 64}},
              "required": ["name"]}

DEPLOY_SCHEMA = {
    "type": "object",
    "properties": {
        "manifest": {"type": "object"},  # a whole manifest (`sites: [...]`) or one site's entry
        "private_key": {"type": "string", "minLength": 1},
        "bundle_version": site_export.BUNDLE_VERSION_SCHEMA,
        "runtime": {"type": "object"},
    },
    "required": ["manifest", "private_key"],
    "additionalProperties": False,
}

SCALE_SCHEMA = {
    "type": "object",
    "properties": {
        "add_hosts": {"type": "array", "items": HOST_ENTRY},
        "remove_hosts": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "bundle_version": site_export.BUNDLE_VERSION_SCHEMA,
    },
    "additionalProperties": False,
}

UPDATE_SCHEMA = {
    "type": "object",
    "properties": {"bundle_version": site_export.BUNDLE_VERSION_SCHEMA},
    "required": ["bundle_version"],
    "additionalProperties": False,
}

EXPORT_SCHEMA = {"type": "object", "properties": {}, "additionalProperties": False}


def _admin(ctx: Ctx, what: str) -> None:
    if not ctx.principal.is_admin:
        raise ApiError(403, "FORBIDDEN", f"{what} requires the admin role")


def _find_site(s, ref: str) -> Site:
    site = s.scalars(select(Site).where(or_(Site.id == ref, Site.name == ref))).first()
    if site is None:
        raise ApiError(404, "NOT_FOUND", f"Site id or name {ref} not found")
    return site


def _bundle_version(s, requested: int | None) -> int:
    try:
        return site_export.get_export(s, requested).version
    except site_export.ExportError as e:
        raise bad("INVALID_REFERENCE", str(e)) from None


def require_idle(site: Site, what: str) -> None:
    if site.op is not None:
        raise bad("SITE_BUSY", f"Site {site.name} is busy ({site.op}, status {site.status}); "
                                        f"{what} waits until it ends")


def _start(ctx: Ctx, s, site: Site, op: str, status: str, target: dict) -> Reply:
    site.generation = (site.generation or 0) + 1
    site.op, site.op_step, site.op_target = op, None, target
    site.status, site.status_description = status, ""
    s.flush()
    return Reply(202, {"site": site_view(s, site, True, ctx.principal.is_admin, ctx.principal.project_id)})


def _site_entry(manifest: dict, name: str) -> dict:
    if isinstance(manifest.get("sites"), list):
        for entry in manifest["sites"]:
            if isinstance(entry, dict) and entry.get("name") == name:
                return entry
        raise bad("INVALID_DATA", f"manifest: no site named {name!r} in it")
    if manifest.get("name") != name:
        raise bad("INVALID_DATA", f"manifest: the site entry is {manifest.get('name')!r}, not {name!r}")
    return manifest


def deploy_site(ctx: Ctx) -> Reply:
    """Deploy (or redeploy) one site from its manifest entry and a bundle version: hosts are enrolled by the engine."""
    _admin(ctx, "Deploying a site")
    name = ctx.path["id"]
    entry = _site_entry(ctx.body["manifest"], name)
    try:
        with ctx.db.session() as s:
            existing = s.scalars(select(Site).where(Site.name == name)).first()
            if existing is not None:
                require_idle(existing, "a deploy")
            known = set(s.scalars(select(Host.name).where(Host.site_id == existing.id))) if existing else set()
            version = _bundle_version(s, ctx.body.get("bundle_version"))
            site, = site_manifest.register(s, {"sites": [entry]}, ctx.body["private_key"],
                                           ctx.body.get("runtime") or local_runtime(), admin=True)
            hosts = [h["name"] for h in entry["hosts"]]
            for h in s.scalars(select(Host).where(Host.site_id == site.id, Host.name.in_(hosts))):
                if h.name not in known:
                    h.status = "enrolling"  # placed on once enrolled
            reply = _start(ctx, s, site, SiteOp.DEPLOY, SiteStatus.DEPLOYING, {"bundle_version": version, "hosts": hosts})
    except site_manifest.ManifestError as e:
        raise bad("INVALID_DATA", str(e)) from None
    except (KeyError, TypeError) as e:
        raise bad("INVALID_DATA", f"manifest: malformed site entry ({e!r})") from None
    ctx.notify()
    return reply


def scale_site(ctx: Ctx) -> Reply:
    """Add hosts (manifest host entries) to a site, or remove hosts that hold no instance."""
    _admin(ctx, "Scaling a site")
    add = ctx.body.get("add_hosts") or []
    remove = sorted(set(ctx.body.get("remove_hosts") or []))
    if not add and not remove:
        raise bad("INVALID_DATA", "nothing to do: give add_hosts and/or remove_hosts")
    try:
        with ctx.db.session() as s:
            site = _find_site(s, ctx.path["id"])
            require_idle(site, "a scale")
            by_name = {h.name: h for h in s.scalars(select(Host).where(Host.site_id == site.id))}
            for n in remove:
                host = by_name.get(n)
                if host is None:
                    raise bad("INVALID_DATA", f"remove_hosts: site {site.name} has no host {n!r}")
                busy = s.scalar(select(func.count(Instance.id)).where(Instance.host_id == host.id))
                if busy:
                    raise bad("INVALID_DATA", f"remove_hosts: host {n} still holds {busy} instance(s); delete or "
                                              f"scale down their clusters first")
            added = []
            network = (site.spec or {}).get("management_network")
            for j, h in enumerate(add):
                if h["name"] in by_name:
                    raise bad("INVALID_DATA", f"add_hosts[{j}]: site {site.name} already has a host {h['name']!r}")
                if h["name"] in remove:
                    raise bad("INVALID_DATA", f"add_hosts[{j}]: {h['name']!r} is also being removed")
                host = site_manifest._register_host(s, site, h, f"add_hosts[{j}]", network)
                host.status = "enrolling"  # placed on once enrolled
                added.append(host.name)
            for n in remove:
                by_name[n].status = "removing"  # nothing new is placed there
            version = _bundle_version(s, ctx.body.get("bundle_version") or site.bundle_version)
            reply = _start(ctx, s, site, SiteOp.SCALE, SiteStatus.SCALING,
                           {"bundle_version": version, "hosts": added, "remove": remove})
    except site_manifest.ManifestError as e:
        raise bad("INVALID_DATA", str(e)) from None
    except (KeyError, TypeError, ValueError) as e:
        raise bad("INVALID_DATA", f"add_hosts: malformed host entry ({e!r})") from None
    ctx.notify()
    return reply


def update_site(ctx: Ctx) -> Reply:
    """Apply a bundle version to one site: its hosts' files are rewritten; no other site is touched."""
    _admin(ctx, "Updating a site")
    with ctx.db.session() as s:
        site = _find_site(s, ctx.path["id"])
        require_idle(site, "an update")
        version = _bundle_version(s, ctx.body["bundle_version"])
        reply = _start(ctx, s, site, SiteOp.UPDATE, SiteStatus.UPDATING, {"bundle_version": version, "hosts": None})
    ctx.notify()
    return reply


def delete_site(ctx: Ctx) -> Reply:
    """Delete a site: refused while clusters live there."""
    _admin(ctx, "Deleting a site")
    with ctx.db.session() as s:
        site = _find_site(s, ctx.path["id"])
        clusters = sorted(s.scalars(select(Cluster.name).where(Cluster.site_id == site.id)))
        if clusters:
            raise bad("SITE_IN_USE", f"Site {site.name} still has {len(clusters)} cluster(s) "
                                            f"({', '.join(clusters[:5])}); delete them first")
        if site.op == SiteOp.DELETE:
            return Reply(202, {"site": site_view(s, site, True, admin=True)})
        reply = _start(ctx, s, site, SiteOp.DELETE, SiteStatus.DELETING, {})
    ctx.notify()
    return reply


# --- exports --------------------------------------------------------------------------------------------------


def _export_view(row: Export, with_bundle: bool) -> dict:
    view = {"version": row.version, "created_at": row.created_at.isoformat()}
    if with_bundle:
        view["bundle"] = row.bundle
    return view


def create_export(ctx: Ctx) -> Reply:
    """Export the control plane's bundle for sites as a new version (admin only)."""
    _admin(ctx, "Exporting the control plane")
    settings = ctx.deps.settings
    api_url = str(ctx.request.base_url).rstrip("/")
    with ctx.db.session() as s:
        row = site_export.create_export(s, api_url, settings.object_store, settings.host, tls.ca_pem(settings))
        return Reply(202, {"export": _export_view(row, True)})


def list_exports(ctx: Ctx) -> Reply:
    _admin(ctx, "Listing exports")
    with ctx.db.session() as s:
        return Reply(200, {"exports": [_export_view(r, False)
                                       for r in s.scalars(select(Export).order_by(Export.version))]})


def show_export(ctx: Ctx) -> Reply:
    _admin(ctx, "Reading an export")
    ref = ctx.path["version"]
    if not ref.isdigit() or len(ref) > 9:
        raise ApiError(404, "NOT_FOUND", f"Export version {ref} not found")
    with ctx.db.session() as s:
        row = s.get(Export, int(ref))
        if row is None:
            raise ApiError(404, "NOT_FOUND", f"Export version {ref} not found")
        return Reply(200, {"export": _export_view(row, True)})


def register(routes: Routes) -> None:
    routes.add("GET", "/sites", list_sites, "site:list")
    routes.add("POST", "/sites", register_sites, "site:register", schema=REGISTER_SCHEMA)
    routes.add("GET", "/sites/{id}", show_site, "site:get")
    routes.add("POST", "/sites/{id}/deploy", deploy_site, "site:register", schema=DEPLOY_SCHEMA)
    routes.add("PATCH", "/sites/{id}", scale_site, "site:scale", schema=SCALE_SCHEMA)
    routes.add("POST", "/sites/{id}/update", update_site, "site:update", schema=UPDATE_SCHEMA)
    routes.add("DELETE", "/sites/{id}", delete_site, "site:delete", status=202)
    routes.add("POST", "/exports", create_export, "export:create", schema=EXPORT_SCHEMA)
    routes.add("GET", "/exports", list_exports, "export:list")
    routes.add("GET", "/exports/{version}", show_export, "export:get")

