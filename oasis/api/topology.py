"""Checks shared by templates, clusters and scaling: plugin and version, processes, flavors, images, sites, node
groups merged over their templates, and the plugin's topology rules."""
from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from oasis.api.errors import bad
from oasis.api.query import get_visible
from oasis.config import MAX_INSTANCES
from oasis.db import volumes
from oasis.db.capacity import Demand, PlacementError, check_fits, site_usage
from oasis.db.models import Flavor, Host, Image, NodeGroupTemplate, Site
from oasis.db.states import SiteOp, SiteStatus
from oasis.identity.principal import Principal
from oasis.plugins import get_plugin
from oasis.plugins.base import NodeGroupShape, Plugin, PluginError

MAX_HOSTNAME = 64
DEFAULT_SITE = "local"


def plugin_for(name: str, version: str) -> Plugin:
    plugin = get_plugin(name)
    if plugin is None:
        raise bad("INVALID_REFERENCE", f"Sahara doesn't contain plugin with name '{name}'")
    if version not in plugin.versions():
        raise bad("INVALID_REFERENCE", f"Requested plugin '{name}' doesn't support version '{version}'")
    return plugin


def check_processes(plugin: Plugin, version: str, processes: list[str]) -> None:
    unknown = sorted(set(processes) - plugin.all_processes(version))
    if unknown:
        raise bad("INVALID_REFERENCE", f"Plugin doesn't support the following node processes: {', '.join(unknown)}")


def flavor(s: Session, value: str | int) -> Flavor:
    """Nova's flavors by id ("2") or name ("m1.small")."""
    key = str(value)
    row = s.get(Flavor, key) or s.scalars(select(Flavor).where(Flavor.name == key)).first()
    if row is None:
        raise bad("NOT_FOUND", f"Requested flavor '{key}' not found")
    return row


def image(s: Session, image_id: str, site: Site | None = None, tags: list[str] | None = None) -> Image:
    row = s.get(Image, image_id)
    if row is None or not row.registered:
        raise bad("INVALID_REFERENCE", f"Requested image '{image_id}' is not registered")
    if site is not None and row.site_id != site.id:
        raise bad("INVALID_REFERENCE", f"Requested image '{image_id}' is not available in availability zone "
                                       f"'{site.name}'")
    missing = sorted(set(tags or []) - set(row.tags or []))
    if missing:
        raise bad("INVALID_REFERENCE", f"Requested image '{image_id}' doesn't contain required tags: {missing}")
    return row


def default_image(s: Session, site: Site, tags: list[str]) -> Image:
    for row in s.scalars(select(Image).where(Image.site_id == site.id, Image.registered.is_(True))
                         .order_by(Image.name, Image.id)):
        if set(tags) <= set(row.tags or []):
            return row
    raise bad("INVALID_REFERENCE", f"No registered image in availability zone '{site.name}' carries the tags "
                                   f"{tags}; give default_image_id")


def site_named(s: Session, name: str) -> Site:
    row = s.scalars(select(Site).where(Site.name == name)).first()
    if row is None:
        raise bad("NOT_FOUND", f"Availability zone '{name}' not found")
    return row


def resolve_site(s: Session, names: list[str | None]) -> Site:
    """The one site (= availability zone) a cluster lives in: the one its node groups name, else `local`, else
    the first site. Placement never crosses sites, so naming two is refused."""
    named = sorted({n for n in names if n})
    if len(named) > 1:
        raise bad("INVALID_DATA", f"A cluster lives in one availability zone; node groups name {named}")
    if named:
        return site_named(s, named[0])
    row = s.scalars(select(Site).where(Site.name == DEFAULT_SITE)).first() \
        or s.scalars(select(Site).order_by(Site.created_at, Site.name)).first()
    if row is None:
        raise bad("NOT_FOUND", "No availability zone (site) is configured")
    return row


def merge_configs(base: dict[str, Any] | None, over: dict[str, Any] | None) -> dict[str, Any]:
    """`{target: {name: value}}` merged per target, `over` winning."""
    out = copy.deepcopy(base or {})
    for target, values in (over or {}).items():
        if isinstance(values, dict) and isinstance(out.get(target), dict):
            out[target].update(values)
        else:
            out[target] = copy.deepcopy(values)
    return out


# Fields of a node group template that are not node group fields.
_NGT_ONLY = {"description", "is_public", "is_protected"}


def merge_node_group(s: Session, principal: Principal, ng: dict[str, Any], plugin_name: str,
                     version: str) -> dict[str, Any]:
    """A node group of a request merged over its node group template (template first, request wins,
    node_configs deep-merged), as Sahara's conductor does."""
    ng = copy.deepcopy(ng)
    tid = ng.get("node_group_template_id")
    if not tid:
        return ng
    tmpl = get_visible(s, NodeGroupTemplate, tid, principal, "Node group template", status=400)
    if (tmpl.plugin_name, tmpl.plugin_version) != (plugin_name, version):
        raise bad("INVALID_REFERENCE", f"Node group template '{tid}' is for plugin {tmpl.plugin_name} "
                                       f"{tmpl.plugin_version}, not {plugin_name} {version}")
    base = {k: v for k, v in copy.deepcopy(tmpl.spec).items() if k not in _NGT_ONLY}
    merged = {**base, **ng}
    merged["node_configs"] = merge_configs(base.get("node_configs"), ng.get("node_configs"))
    return merged


def check_node_group(s: Session, plugin: Plugin, version: str, ng: dict[str, Any]) -> dict[str, Any]:
    """A complete node group: flavor known (stored by id), processes known, image registered if given."""
    if "flavor_id" not in ng or not ng.get("node_processes"):
        raise bad("INVALID_DATA", f"Node group '{ng.get('name')}' needs flavor_id and node_processes, directly or "
                                  "from its node group template")
    ng = dict(ng)
    ng["flavor_id"] = flavor(s, ng["flavor_id"]).id
    check_processes(plugin, version, ng["node_processes"])
    if ng.get("image_id"):
        image(s, ng["image_id"])
    check_volume_fields(ng)
    return ng


def check_volume_fields(ng: dict[str, Any]) -> None:
    """What a node group's volumes need whatever the site: a size, and a mount prefix oasis can use."""
    problem = volumes.prefix_problem(ng.get("volume_mount_prefix"))
    if problem:
        raise bad("INVALID_DATA", f"Node group '{ng.get('name')}': {problem}")
    if (ng.get("volumes_per_node") or 0) > 0 and (ng.get("volumes_size") or 0) < 1:
        raise bad("INVALID_DATA", f"Node group '{ng.get('name')}' asks for {ng['volumes_per_node']} volume(s) per "
                                  "node: volumes_size must be at least 1 (GB)")


def check_volumes(s: Session, site: Site, demands: list[Demand]) -> None:
    """Volumes only where the site has a volume backend on some host, of a type one offers, in this zone (the
    site is the zone of its volumes too). Whether they fit is placement's question (check_fits)."""
    asking = [d for d in demands if d.volumes]
    if not asking:
        return
    backends = [b for b in (volumes.backend_of(spec) for spec in s.scalars(select(Host.spec).where(
        Host.site_id == site.id))) if b]
    if not backends:
        raise bad("INVALID_DATA", f"Availability zone '{site.name}' has no volume backend: its hosts offer no block "
                                  f"storage, so node groups there cannot ask for volumes (volumes_per_node)")
    for d in asking:
        if d.volume_zone and d.volume_zone != site.name:
            raise bad("INVALID_DATA", f"volumes_availability_zone '{d.volume_zone}': volumes are made on the "
                                      f"instance's own host, in availability zone '{site.name}'")
        if not any(volumes.offers(b, d.volume_type) for b in backends):
            offered = sorted({t for b in backends for t in b.get("types") or []})
            raise bad("INVALID_DATA", f"Volume type '{d.volume_type}' is not offered in availability zone "
                                      f"'{site.name}' (offered: {', '.join(offered) or 'none but the default'})")


def unique_group_names(groups: list[dict[str, Any]]) -> None:
    names = [g["name"] for g in groups]
    if len(names) != len(set(names)):
        raise bad("INVALID_DATA", "Duplicates in node group names are detected")


def validate_topology(plugin: Plugin, version: str, shapes: list[NodeGroupShape]) -> None:
    try:
        plugin.validate(version, shapes)
    except PluginError as e:
        raise bad("INVALID_DATA", str(e)) from None


def check_configs(plugin: Plugin, cluster_configs: Any) -> None:
    problem = plugin.configs_problem(cluster_configs) if isinstance(cluster_configs, dict) else None
    if problem:
        raise bad("INVALID_DATA", problem)


def check_hostnames(cluster_name: str, groups: list[tuple[str, int]], domain: str | None = None) -> None:
    """`<cluster>-<ng>-<index>[.<domain>]` must stay within a hostname's 64 characters."""
    for name, count in groups:
        host = f"{cluster_name}-{name}-{max(count, 1)}".lower()
        fqdn = f"{host}.{domain}" if domain else host
        if len(fqdn) > MAX_HOSTNAME:
            raise bad("INVALID_DATA", f"Composed hostname {fqdn} must not exceed {MAX_HOSTNAME} symbols")


def check_instances(total: int) -> None:
    """All the instances one request asks for (every node group of every cluster it makes, or a cluster after a
    scale), refused before anything is computed per instance."""
    if total > MAX_INSTANCES:
        raise bad("INVALID_DATA", f"The request asks for {total} instances; at most {MAX_INSTANCES} are allowed "
                                  f"in one request (OASIS_MAX_INSTANCES)")


def check_site_open(site: Site) -> None:
    """Clusters are not created or grown on a site that failed its last operation or is being deleted."""
    if site.status == SiteStatus.ERROR or site.op == SiteOp.DELETE or site.status == SiteStatus.DELETING:
        why = f": {site.status_description}" if site.status == SiteStatus.ERROR and site.status_description else ""
        raise bad("SITE_UNAVAILABLE", f"Availability zone '{site.name}' is {site.status}"
                                      f"{' (being deleted)' if site.op == SiteOp.DELETE else ''}{why}; clusters cannot "
                                      f"be created or scaled there until it is Active again"[:2000])


def check_quota(s: Session, site: Site, demands: list[tuple]) -> None:
    """The site's quotas (manifest `quotas`: instances, vcpus, ram_mb, volumes, volume_gb; absent: unlimited)
    against what its instances use now plus the new ones (Demands, or (vcpus, ram_mb, disk_gb))."""
    quotas = (site.spec or {}).get("quotas") or {}
    if not quotas or not demands:
        return
    used = site_usage(s, site.id)
    wanted = [Demand(*d) for d in demands]
    requested = {"instances": len(wanted), "vcpus": sum(d.vcpus for d in wanted),
                 "ram_mb": sum(d.ram_mb for d in wanted), "volumes": sum(d.volumes for d in wanted),
                 "volume_gb": sum(d.volume_gb for d in wanted)}
    over = [f"{key}: requested {requested[key]}, used {used[key]}, limit {limit}"
            for key, limit in quotas.items() if key in requested and used[key] + requested[key] > limit]
    if over:
        raise bad("QUOTA_ERROR", f"Quota exceeded for availability zone '{site.name}': {'; '.join(over)}")


def check_capacity(s: Session, site: Site, demands: list[tuple]) -> None:
    """Can the site take the new instances (Demands, or (vcpus, ram_mb, disk_gb)) now: is it open, does it offer
    their volumes, are they within its quotas, and do they fit on its hosts?"""
    check_site_open(site)
    check_volumes(s, site, [Demand(*d) for d in demands])
    check_quota(s, site, demands)
    if not demands:
        return
    try:
        check_fits(s, site.id, demands)
    except PlacementError as e:
        raise bad("QUOTA_ERROR", f"Quota exceeded for availability zone '{site.name}': {e}") from None


__all__ = ["plugin_for", "check_processes", "flavor", "image", "default_image", "resolve_site", "merge_configs",
           "merge_node_group", "check_node_group", "unique_group_names", "validate_topology", "check_hostnames",
           "check_capacity", "check_site_open", "check_quota", "check_instances", "check_volume_fields",
           "check_volumes"]
