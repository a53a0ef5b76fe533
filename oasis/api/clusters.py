"""Clusters: create (one or `count`), list, show, update, scale, delete. Each write only records the desired
state (`op`, `op_target`) for an engine to carry out, and answers at once."""
from __future__ import annotations

import copy
import socket
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from oasis import tls
from oasis.api import autoscaling, keypairs, keystone, quotas, schemas, topology, views
from oasis.api.errors import ApiError, bad, not_found
from oasis.api.plugins import require_enabled
from oasis.api.query import (check_delete_allowed, check_update_allowed, ensure_unique_name, get_visible, listing,
                             page)
from oasis.api.routing import Ctx, Reply, Routes
from oasis.api.templates import check_cluster_groups
from oasis.config import Settings
from oasis.db import clusterrows, lifecycle, pools
from oasis.db.capacity import Demand
from oasis.db.models import Cluster, ClusterTemplate, Instance, NodeGroup, Site, new_id, utcnow
from oasis.db.states import ClusterOp, ClusterStatus
from oasis.identity.principal import Principal
from oasis.plugins import get_plugin
from oasis.plugins.base import NodeGroupShape, Plugin

KIND = "Cluster"
ACTIVE, DELETING, VALIDATING = ClusterStatus.ACTIVE, ClusterStatus.DELETING, ClusterStatus.VALIDATING
# What a cluster inherits from its cluster template when the request does not say.
_FROM_TEMPLATE = ("description", "node_groups", "anti_affinity", "default_image_id", "neutron_management_network",
                  "use_autoconfig", "shares", "domain_name")
# Columns no view shows, left unread by the reads that only show clusters: decrypting them was a third of a list
# page's time (bench/api_load.py).
UNSHOWN = (defer(Cluster.management_private_key), defer(Cluster.secrets))


# --- create ---------------------------------------------------------------------------------------------------


def _with_template(s: Session, principal: Principal, data: dict[str, Any]) -> dict[str, Any]:
    """The request over its cluster template: template values first, the request's win, configs deep-merged."""
    tid = data.get("cluster_template_id")
    if not tid:
        return data
    tmpl = get_visible(s, ClusterTemplate, tid, principal, "Cluster template", status=400)
    if (tmpl.plugin_name, tmpl.plugin_version) != (data["plugin_name"], data["plugin_version"]):
        raise bad("INVALID_REFERENCE", f"Cluster template '{tid}' is for plugin {tmpl.plugin_name} "
                                       f"{tmpl.plugin_version}, not {data['plugin_name']} {data['plugin_version']}")
    merged = {k: copy.deepcopy(tmpl.spec[k]) for k in _FROM_TEMPLATE if tmpl.spec.get(k) is not None}
    # An empty list in the request does not erase the template's node groups (Sahara: `values or template`).
    merged.update({k: v for k, v in data.items() if v is not None and not (k == "node_groups" and not v)})
    merged["cluster_configs"] = topology.merge_configs(tmpl.spec.get("cluster_configs"), data.get("cluster_configs"))
    return merged


def _canonical(plugin: Plugin, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sahara's process names (`slave`) become the plugin's (`worker`)."""
    return [{**ng, "node_processes": [plugin.canonical(p) for p in ng["node_processes"]]} for ng in groups]


def _shapes(groups: list[dict[str, Any]]) -> list[NodeGroupShape]:
    return [NodeGroupShape(ng["name"], list(ng["node_processes"]), int(ng["count"])) for ng in groups]


def _demands(s: Session, groups: list[tuple[dict[str, Any], int]]) -> list[Demand]:
    """What each instance takes (its flavor's share and its volumes), for (node group, instance count) pairs."""
    return clusterrows.demands(s, groups)


def _multiple_names(name: str, count: int | None) -> list[str]:
    """Sahara's names for `count` clusters: name-1..name-N, zero-padded to the width of N."""
    if count is None:
        return [name]
    width = len(str(count))
    return [f"{name}-{i:0{width}d}" for i in range(1, count + 1)]


def create_cluster(ctx: Ctx) -> Reply:
    with keystone.trusts_undone_on_failure(ctx) as made:
        return _create_cluster(ctx, made)


@dataclass
class Resolved:
    """A create request checked and completed: over its template, node groups canonical, site, image and network
    chosen. What a cluster is made of; a pool keeps it to make its clusters (oasis/api/pools.py)."""

    plugin: Plugin
    data: dict[str, Any]
    groups: list[dict[str, Any]]
    site: Site


def resolve(s: Session, principal: Principal, body: dict[str, Any], names: list[str]) -> Resolved:
    """Every check of a create but the capacity and the quota (a claim from a pool needs neither), or a 400."""
    plugin = topology.plugin_for(body["plugin_name"], body["plugin_version"])
    version = body["plugin_version"]
    require_enabled(s, plugin.name, version)
    limits = lifecycle.merged({}, _lifecycle(body.get("lifecycle")))
    data = {**_with_template(s, principal, body), "lifecycle": limits or None}
    if data.get("user_keypair_id"):  # Sahara checked Nova; oasis has its own registry (api/keypairs.py)
        keypairs.require(s, principal.project_id, data["user_keypair_id"])
    groups = check_cluster_groups(s, principal, plugin.name, version, data.get("node_groups") or [])
    if not groups:
        raise bad("INVALID_DATA", "A cluster needs node groups, directly or from its cluster template")
    groups = _canonical(plugin, groups)
    topology.validate_topology(plugin, version, _shapes(groups))
    topology.check_configs(plugin, data.get("cluster_configs"))
    if data.get("autoscaling") is not None:
        data["autoscaling"] = autoscaling.check(plugin, {g["name"]: (g["node_processes"], g["count"])
                                                         for g in groups}, data["autoscaling"])

    site = topology.resolve_site(s, [data.get("availability_zone"), *(g.get("availability_zone") for g in groups)])
    for g in groups:
        if g.get("image_id"):
            topology.image(s, g["image_id"], site, plugin.required_image_tags(version))
    tags = plugin.required_image_tags(version)
    if data.get("default_image_id"):
        topology.image(s, data["default_image_id"], site, tags)
    else:
        data["default_image_id"] = topology.default_image(s, site, tags).id
    default_net = site.spec.get("default_network") or "local"
    network = data.get("neutron_management_network") or default_net
    known = set(site.spec.get("networks") or {}) | {default_net}
    if network not in known:
        raise bad("NOT_FOUND", f"Network {network} not found in availability zone '{site.name}'")
    data["neutron_management_network"] = network

    for name in names:
        topology.check_hostnames(name, [(g["name"], g["count"]) for g in groups], data.get("domain_name"))
    topology.check_instances(sum(g["count"] for g in groups) * len(names))
    return Resolved(plugin, data, groups, site)


def _create_cluster(ctx: Ctx, made: list[str]) -> Reply:
    body = ctx.body
    principal = ctx.principal
    with ctx.db.session() as s:
        names = _multiple_names(body["name"], body.get("count"))
        topology.plugin_for(body["plugin_name"], body["plugin_version"])
        require_enabled(s, body["plugin_name"], body["plugin_version"])
        for name in names:  # Sahara checks the name first
            ensure_unique_name(s, Cluster, principal.project_id, name, KIND)
        r = resolve(s, principal, body, names)
        data, groups, site = r.data, r.groups, r.site
        # A single create that a warm pool of the project matches takes one of its Active clusters (no new
        # capacity or quota: the pooled cluster holds them already); the pool refills in the background.
        pool = pools.matching(s, principal.project_id, data, groups, site.id) if body.get("count") is None else None
        if pool is not None:
            made.append(keystone.trust_for_work(ctx))
            claimed = pools.claim(s, pool, names[0], data, made[0])
            if claimed is not None:
                out = views.clusters(s, [claimed], limits=_limits(ctx))
                ctx.notify()  # the pool is one short: its refill may start now
                return Reply(202, {"cluster": out[0]})
            # none of its clusters is ready: an ordinary create, on the trust just made
        topology.check_capacity(s, site, _demands(s, [(g, g["count"]) for g in groups]) * len(names))

        # Every cluster gets its creator's trust (as Sahara's do): its scale, its deletion (a transient one's,
        # by the engine) and its periodic work may come after the creator's token expired.
        while len(made) < len(names):
            made.append(keystone.trust_for_work(ctx))
        # last before the rows: it holds the project's quota lock until they are committed (oasis/db/quotas.py)
        quotas.check_clusters(ctx, s, _demands(s, [(g, g["count"]) for g in groups]) * len(names), len(names))
        rows = [_write_cluster(s, principal, name, data, site, groups, trust_id)
                for name, trust_id in zip(names, made)]
        s.flush()
        out = views.clusters(s, rows, limits=_limits(ctx))
    ctx.notify()
    if ctx.version != "v2" and body.get("count") is not None:  # v1.x `/clusters/multiple`: just the ids
        return Reply(202, {"clusters": [c["id"] for c in out]})
    if body.get("count") is not None:
        return Reply(202, {"clusters": [{"cluster": c} for c in out]})
    return Reply(202, {"cluster": out[0]})


def _write_cluster(s: Session, principal: Principal, name: str, data: dict[str, Any], site: Site,
                   groups: list[dict[str, Any]], trust_id: str | None = None) -> Cluster:
    return clusterrows.write_cluster(s, principal.project_id, name, data, site.id, groups, trust_id)


# --- read -----------------------------------------------------------------------------------------------------


def list_clusters(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        rows, markers = page(ctx, s, Cluster, KIND, load=UNSHOWN,
                             filters={"plugin_name": Cluster.plugin_name, "plugin_version": Cluster.plugin_version,
                                      "name": Cluster.name},
                             sorts={"id": Cluster.id, "name": Cluster.name, "plugin_name": Cluster.plugin_name,
                                    "plugin_version": Cluster.plugin_version, "hadoop_version": Cluster.plugin_version,
                                    "status": Cluster.status, "created_at": Cluster.created_at,
                                    "updated_at": Cluster.updated_at})
        return Reply(200, listing("clusters", views.clusters(s, rows, limits=_limits(ctx)), markers))


def show_cluster(ctx: Ctx) -> Reply:
    ctx.check_params({"show_progress"})
    show_progress = str(ctx.query.get("show_progress", "false")).lower() == "true"
    with ctx.db.session() as s:
        row = get_visible(s, Cluster, ctx.path["id"], ctx.principal, KIND, load=UNSHOWN)
        return Reply(200, {"cluster": views.cluster(s, row, show_progress, limits=_limits(ctx))})


def spark_connect(settings: Settings, cluster_name: str) -> dict[str, str | None]:
    """How the stock Spark Connect client reaches a cluster through the deployment's gateway (oasis.gateway), less
    the caller's token, which the client adds (`;token=`): over TLS with the deployment's CA (`ca`) when the
    service has it on; else with gRPC's local credentials, which the client uses for `localhost` only."""
    if settings.tls_on:
        host = settings.host if settings.host not in ("", "0.0.0.0", "::") else socket.gethostname()
        host = f"[{host}]" if ":" in host else host
        return {"url": f"sc://{host}:{settings.connect_port}/;use_ssl=true;x-oasis-cluster={cluster_name}",
                "ca": tls.ca_pem(settings)}
    return {"url": f"sc://localhost:{settings.connect_port}/;x-oasis-cluster={cluster_name}", "ca": None}


def client_config(ctx: Ctx) -> Reply:
    """The credentials and addresses a member of the owning project needs to reach the cluster's framework
    from outside it (an oasis extension). Only the owning project's members get them: every other caller,
    an administrator of another project or a reader of a public cluster included, gets the 404 of a cluster
    it cannot see."""
    with ctx.db.session() as s:
        row = s.get(Cluster, ctx.path["id"])
        if row is None or row.project_id != ctx.principal.project_id or row.pool_id is not None:
            raise not_found(KIND, ctx.path["id"])
        if row.status != ACTIVE or not row.secrets:
            raise ApiError(409, "CLUSTER_NOT_ACTIVE", f"Cluster '{row.name}' is {row.status}: its client "
                                                      "configuration is available once it is Active")
        body = get_plugin(row.plugin_name).client_config(dict(row.info or {}), dict(row.secrets))
        if "Spark Connect" in ((row.info or {}).get("Spark") or {}) and ctx.deps.settings.connect_port:
            body["spark_connect"] = spark_connect(ctx.deps.settings, row.name)
    return Reply(200, {"client_config": {"cluster_id": row.id, "cluster_name": row.name, **body}},
                 headers={"Cache-Control": "no-store"})


# --- update ---------------------------------------------------------------------------------------------------


def update_cluster(ctx: Ctx) -> Reply:
    data = ctx.body
    with ctx.db.session() as s:
        row = get_visible(s, Cluster, ctx.path["id"], ctx.principal, KIND)
        check_update_allowed(row, data, ctx.principal, KIND, {**row.spec, "name": row.name})
        if row.status == DELETING:
            raise bad("UPDATE_FAILED", f"Cluster {row.id} is being deleted")
        if "verification" in data:
            if len(data) > 1:
                raise bad("INVALID_DATA", "Verification update should be the only key in the request")
            _verify(s, row)
            s.flush()
            out = views.cluster(s, row, limits=_limits(ctx))
            ctx.notify()
            return Reply(202, {"cluster": out})
        if data.get("update_keypair"):
            _update_keypair(s, row)
        if "name" in data and data["name"] != row.name:
            ensure_unique_name(s, Cluster, row.project_id, data["name"], KIND, exclude_id=row.id)
            row.name = data["name"]
        for key in ("is_public", "is_protected"):
            if key in data:
                setattr(row, key, data[key])
        spec = dict(row.spec)
        for key in ("description", "shares"):
            if key in data:
                spec[key] = data[key]
        if "lifecycle" in data:  # null: back to the deployment's defaults
            spec["lifecycle"] = lifecycle.merged(spec.get("lifecycle") if data["lifecycle"] is not None else {},
                                                 _lifecycle(data["lifecycle"]))
        if "autoscaling" in data:
            spec.pop("autoscaling", None)
            if data["autoscaling"] is not None:
                groups = {ng.name: (list(ng.spec["node_processes"]), ng.count)
                          for ng in s.scalars(select(NodeGroup).where(NodeGroup.cluster_id == row.id))}
                spec["autoscaling"] = autoscaling.check(get_plugin(row.plugin_name), groups, data["autoscaling"])
        row.spec = spec
        s.flush()
        out = views.cluster(s, row, limits=_limits(ctx))
    if data.get("update_keypair"):
        ctx.notify()
    return Reply(202, {"cluster": out})


def _lifecycle(body: dict[str, Any] | None) -> dict[str, Any]:
    """The request's lifecycle limits, checked (positive seconds or '2h', a future time), or a 400."""
    try:
        return lifecycle.parse(body, utcnow())
    except lifecycle.LimitError as e:
        raise bad("INVALID_DATA", str(e)) from None


def _limits(ctx: Ctx) -> tuple[float, float]:
    """The deployment's lifecycle defaults that a cluster's view shows beside its own limits."""
    return ctx.deps.settings.idle_delete_after_seconds, ctx.deps.settings.error_cluster_grace_seconds


# The operations an Active cluster runs while it stays Active; a scale waits for them to end.
ACTIVE_OPS = (ClusterOp.UPDATE_KEYPAIR, ClusterOp.START_CONNECT)


def _update_keypair(s: Session, cluster: Cluster) -> None:
    """Sahara's update_keypair: put the keypair's current public key on every node, as an engine operation.
    The cluster stays Active meanwhile (as in Sahara); the answer is 202 at once."""
    ref = cluster.spec.get("user_keypair_id")
    if not ref:
        raise bad("INVALID_DATA", f"Cluster {cluster.id} has no user keypair (user_keypair_id) to update")
    if cluster.status != ACTIVE:
        raise bad("INVALID_DATA", f"Cluster {cluster.id} is not in 'Active' status, its keypair can't be updated "
                                  f"(status: {cluster.status})")
    if cluster.op is not None and cluster.op != ClusterOp.UPDATE_KEYPAIR:
        raise bad("INVALID_DATA", f"Cluster {cluster.id} is busy with another operation ({cluster.op})")
    keypairs.require(s, cluster.project_id, ref)
    cluster.op, cluster.op_step, cluster.op_target = ClusterOp.UPDATE_KEYPAIR, None, {}


def _verify(s: Session, cluster: Cluster) -> None:
    """Sahara's on-demand verification: ask for one (CHECKING); an engine checks the framework and the hosts
    (oasis/engine/verification.py) and writes GREEN, YELLOW or RED with a reason per check."""
    if cluster.status != ACTIVE:
        raise bad("INVALID_DATA", f"Cluster {cluster.id} is not in 'Active' status, verification can't be started")
    if (cluster.spec.get("verification") or {}).get("status") == "CHECKING":
        raise bad("INVALID_DATA", "Verification is already running for this cluster")
    now = views.ts(utcnow())
    cluster.spec = {**cluster.spec, "verification": {"id": new_id(), "cluster_id": cluster.id, "status": "CHECKING",
                                                     "checks": [], "created_at": now, "updated_at": now}}


# --- scale ----------------------------------------------------------------------------------------------------


def _victims(s: Session, cluster: Cluster, ng: NodeGroup, wanted: list[str], shrink: int) -> list[str]:
    """The instances a shrink removes, named by id or name; they must belong to the node group."""
    if len(wanted) != shrink:
        raise bad("INVALID_DATA", f"Number of specific instances ({len(wanted)}) to delete must equal the count "
                                  f"difference ({shrink}) of node group '{ng.name}'")
    members = list(s.scalars(select(Instance).where(Instance.cluster_id == cluster.id,
                                                    Instance.node_group_id == ng.id)))
    by_key = {i.id: i.id for i in members} | {i.name: i.id for i in members}
    chosen = []
    for key in wanted:
        if key not in by_key:
            raise bad("INVALID_REFERENCE", f"Instance '{key}' is not a member of node group '{ng.name}'")
        chosen.append(by_key[key])
    if len(set(chosen)) != len(chosen):
        raise bad("INVALID_DATA", f"Instances to delete from node group '{ng.name}' are named twice")
    return chosen


def scale_cluster(ctx: Ctx) -> Reply:
    data = ctx.body
    with ctx.db.session() as s:
        cluster = get_visible(s, Cluster, ctx.path["id"], ctx.principal, KIND)
        check_update_allowed(cluster, data, ctx.principal, KIND)
        if cluster.status != ACTIVE:
            raise bad("INVALID_DATA", f"Cluster cannot be scaled not in 'Active' status. Cluster status: "
                                      f"{cluster.status}")
        if cluster.op in ACTIVE_OPS:  # Active meanwhile, but its nodes are being worked on
            raise bad("INVALID_DATA", f"Cluster {cluster.id} is busy with another operation ({cluster.op}); scale "
                                      "it once that is done")
        if not cluster.secrets:  # an Active cluster made by an oasis from before clusters had credentials
            raise bad("INVALID_DATA", f"Cluster {cluster.name} was created before clusters had credentials of "
                                      "their own (TLS, authentication): its new nodes could not join it; re-create "
                                      "the cluster to scale it")
        plugin = topology.plugin_for(cluster.plugin_name, cluster.plugin_version)
        version = cluster.plugin_version
        require_enabled(s, plugin.name, version)
        existing = {ng.name: ng for ng in s.scalars(select(NodeGroup).where(NodeGroup.cluster_id == cluster.id))}

        resize: dict[str, int] = {}
        remove: list[str] = []
        grow: list[tuple[dict[str, Any], int]] = []
        for item in data.get("resize_node_groups") or []:
            ng = existing.get(item["name"])
            if ng is None:
                raise bad("INVALID_REFERENCE", f"Cluster doesn't contain node group with name '{item['name']}'")
            if item["name"] in resize:
                raise bad("INVALID_DATA", f"Node group '{item['name']}' is resized twice")
            resize[ng.name] = item["count"]
            if "instances" in item:
                remove += _victims(s, cluster, ng, item["instances"], ng.count - item["count"])
            if item["count"] > ng.count:
                grow.append((ng.spec, item["count"] - ng.count))

        added = check_cluster_groups(s, ctx.principal, cluster.plugin_name, version,
                                     data.get("add_node_groups") or [])
        added = _canonical(plugin, added)
        site = s.get(Site, cluster.site_id)
        for g in added:
            if g["name"] in existing:
                raise bad("INVALID_DATA", f"Can't add new nodegroup. Cluster already has nodegroup with name "
                                          f"'{g['name']}'")
            if g.get("availability_zone") and g["availability_zone"] != site.name:
                raise bad("INVALID_DATA", f"Node group '{g['name']}' names availability zone "
                                          f"'{g['availability_zone']}', but the cluster is in '{site.name}'")
            if g.get("image_id"):
                topology.image(s, g["image_id"], site, plugin.required_image_tags(version))
            grow.append((g, g["count"]))

        shapes = [NodeGroupShape(ng.name, list(ng.spec["node_processes"]), resize.get(ng.name, ng.count))
                  for ng in existing.values()] + _shapes(added)
        topology.validate_topology(plugin, version, shapes)
        topology.check_hostnames(cluster.name, [(sh.name, sh.count) for sh in shapes], cluster.spec.get("domain_name"))
        topology.check_instances(sum(sh.count for sh in shapes))
        topology.check_capacity(s, site, _demands(s, grow))
        quotas.check_clusters(ctx, s, _demands(s, grow))  # holds the project's quota lock until the commit

        for g in added:
            row = clusterrows.node_group_row(g, count=0)  # the engine raises it to its target as instances come up
            row.cluster_id = cluster.id
            s.add(row)
        cluster.status = VALIDATING
        cluster.status_description = ""
        cluster.op, cluster.op_step = ClusterOp.SCALE, None
        cluster.op_target = {"resize": resize, "add": {g["name"]: g["count"] for g in added}, "remove": remove}
        s.flush()
        out = views.cluster(s, cluster, limits=_limits(ctx))
    ctx.notify()
    return Reply(202, {"cluster": out})


# --- delete ---------------------------------------------------------------------------------------------------


def delete_cluster(ctx: Ctx) -> Reply:
    force = bool((ctx.body or {}).get("force", False))
    with ctx.db.session() as s:
        row = get_visible(s, Cluster, ctx.path["id"], ctx.principal, KIND)
        check_delete_allowed(row, ctx.principal, KIND)
        row.status, row.status_description = DELETING, ""
        # A delete replaces whatever was in flight (a stuck create included). The lease stays: the engine
        # driving the old operation stops it and lets go, so the two never overlap; a dead engine's lease expires.
        row.op, row.op_step, row.op_target = ClusterOp.DELETE, None, {"force": force}
        stack_name = f"{row.name}{row.id[:8]}"
    ctx.notify()
    if force:
        return Reply(200, {"stack_name": stack_name})
    return Reply(204)


def register(routes: Routes) -> None:
    every, v1 = ("v1.0", "v1.1", "v2"), ("v1.0", "v1.1")
    routes.add("GET", "/clusters", list_clusters, "cluster:list", versions=every, returns="clusters[]")
    routes.add("POST", "/clusters", create_cluster, "cluster:create", schema=schemas.CLUSTER_CREATE,
               returns="cluster")
    routes.add("POST", "/clusters", create_cluster, "cluster:create", schema=schemas.CLUSTER_CREATE_V1,
               versions=v1, returns="cluster")
    routes.add("POST", "/clusters/multiple", create_cluster, "cluster:create", schema=schemas.CLUSTER_CREATE_MULTIPLE,
               versions=v1, returns="cluster-ids")
    routes.add("GET", "/clusters/{id}", show_cluster, "cluster:get", versions=every, returns="cluster")
    # ":execute": the credentials run code on the cluster, so a reader does not get them
    routes.add("GET", "/clusters/{id}/client-config", client_config, "cluster:client-config:execute",
               returns="client_config", errors=(404, 409), json_suffix=False)
    routes.add("PATCH", "/clusters/{id}", update_cluster, "cluster:update", schema=schemas.CLUSTER_UPDATE,
               versions=every, returns="cluster")
    routes.add("PUT", "/clusters/{id}", scale_cluster, "cluster:scale", schema=schemas.CLUSTER_SCALE, versions=every,
               returns="cluster")
    routes.add("DELETE", "/clusters/{id}", delete_cluster, "cluster:delete", schema=schemas.CLUSTER_DELETE,
               extra_status=(200,))
    routes.add("DELETE", "/clusters/{id}", delete_cluster, "cluster:delete", versions=v1,
               schema=schemas.CLUSTER_DELETE_V1)
