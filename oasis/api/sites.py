"""Sites and their hosts (an oasis extension): an administrator registers a site manifest, such as the one
`oasis lab up` writes; anyone may look at sites, their hosts and free capacity. Credentials are never shown."""
from __future__ import annotations

from sqlalchemy import or_, select

from oasis.api.errors import ApiError, bad
from oasis.api.routing import Ctx, Reply, Routes
from oasis.bootstrap import local_runtime
from oasis.compute.placement import free_capacity
from oasis.db.models import Cluster, Host, Site
from oasis.plugins import registry
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


def _host_view(host: Host, free: dict[str, tuple[float, float, float]]) -> dict:
    vcpus, ram, disk = free.get(host.id, (0, 0, 0))
    return {"id": host.id, "name": host.name, "access": host.access, "address": host.address,
            "addresses": (host.spec or {}).get("addresses", {"local": host.address}),
            "floating_address": (host.spec or {}).get("floating_address"),
            "host_key": (host.spec or {}).get("host_key"), "status": host.status,
            "capacity": {"vcpus": host.vcpus, "ram_mb": host.ram_mb, "disk_gb": host.disk_gb},
            "free": {"vcpus": vcpus, "ram_mb": ram, "disk_gb": disk}}


def _site_view(s, site: Site, detail: bool) -> dict:
    spec = site.spec or {}
    view = {"id": site.id, "name": site.name, "status": site.status, "access": spec.get("access", "local"),
            "proxy_command": spec.get("proxy_command"), "use_floating_ips": bool(spec.get("use_floating_ips")),
            "management_network": spec.get("management_network") or spec.get("default_network"),
            "cpu_allocation_ratio": site.cpu_allocation_ratio, "ram_allocation_ratio": site.ram_allocation_ratio}
    hosts = list(s.scalars(select(Host).where(Host.site_id == site.id).order_by(Host.name)))
    view["hosts_count"] = len(hosts)
    if detail:
        free = {f.host.id: (f.vcpus, f.ram_mb, f.disk_gb) for f in free_capacity(s, site.id)}
        view["hosts"] = [_host_view(h, free) for h in hosts]
        view["clusters"] = [{"id": c.id, "name": c.name, "status": c.status}
                            for c in s.scalars(select(Cluster).where(Cluster.site_id == site.id))]
    return view


def list_sites(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        return Reply(200, {"sites": [_site_view(s, site, False)
                                     for site in s.scalars(select(Site).order_by(Site.name))]})


def show_site(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        site = s.scalars(select(Site).where(or_(Site.id == ctx.path["id"], Site.name == ctx.path["id"]))).first()
        if site is None:
            raise ApiError(404, "NOT_FOUND", f"Site id or name {ctx.path['id']} not found")
        return Reply(200, {"site": _site_view(s, site, True)})


def register_sites(ctx: Ctx) -> Reply:
    if not ctx.principal.is_admin:
        raise ApiError(403, "FORBIDDEN", "Registering sites requires the admin role")
    tags = [t for p in registry().values() for v in p.versions() for t in (p.name, v)]
    try:
        with ctx.db.session() as s:
            sites = site_manifest.register(s, ctx.body["manifest"], ctx.body["private_key"],
                             ctx.body.get("runtime") or local_runtime(), tags)
            s.flush()
            return Reply(202, {"sites": [_site_view(s, site, True) for site in sites]})
    except site_manifest.ManifestError as e:
        raise bad("INVALID_DATA", str(e)) from None


def register(routes: Routes) -> None:
    routes.add("GET", "/sites", list_sites, "site:list")
    routes.add("POST", "/sites", register_sites, "site:register", schema=REGISTER_SCHEMA)
    routes.add("GET", "/sites/{id}", show_site, "site:get")

