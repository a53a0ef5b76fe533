"""Warm pools (an oasis extension at `/v2/pools`): a project keeps `size` ready clusters of one of its cluster
templates on a site, and a `POST /v2/clusters` that matches the pool takes one of them, Active at once
(oasis/db/pools.py says what matches; the claim is in oasis/api/clusters.py). The API validates the pool as it
would a create from the template and keeps what it validated on the pool; the engine's refill
(oasis/engine/pools.py) writes the pool's clusters from it, each an ordinary cluster of the project (its own
credentials, Unix user, placement and event log), counted in the project's quota and hidden from its cluster
lists until claimed."""
from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy.orm import Session

from oasis.api import clusters, keystone, schemas
from oasis.api.errors import bad
from oasis.api.query import check_delete_allowed, check_update_allowed, ensure_unique_name, get_visible, listing, page
from oasis.api.routing import Ctx, Reply, Routes
from oasis.api.views import ts
from oasis.db import lifecycle, pools
from oasis.db.models import ClusterPool, ClusterTemplate, Site
from oasis.identity.base import IdentityError

log = logging.getLogger(__name__)

KIND = "Pool"
MAX_SIZE = 100
# A pooled cluster is named `pool-<pool>-<n>`, its instances `<that>-<node group>-<index>`: the pool's name is
# kept short enough for the hostnames, with room for a six-digit n.
_NAME = {**schemas.hostname_name, "maxLength": 40}
_SIZE = {"type": "integer", "minimum": 0, "maximum": MAX_SIZE, "description": "Ready clusters the pool keeps"}
_MAX_AGE = {"type": ["integer", "string", "null"], "maxLength": 32, "minimum": 1, "maximum": lifecycle.MAX_SECONDS,
            "description": "Seconds (or '2h', '1d') a pooled cluster waits before it is replaced; null: forever"}
POOL_CREATE = {
    "type": "object", "additionalProperties": False, "required": ["pool"],
    "properties": {"pool": {
        "type": "object", "additionalProperties": False, "required": ["name", "cluster_template_id", "size"],
        "properties": {"name": _NAME, "cluster_template_id": schemas.object_id, "size": _SIZE,
                       "availability_zone": {"type": ["string", "null"], "maxLength": 64}, "max_age": _MAX_AGE}}},
}
POOL_UPDATE = {
    "type": "object", "additionalProperties": False, "required": ["pool"],
    "properties": {"pool": {"type": "object", "additionalProperties": False, "minProperties": 1,
                            "properties": {"size": _SIZE, "max_age": _MAX_AGE}}},
}
PROBLEMS = ("Waiting", "Error")  # what the refill reports; otherwise the counts say Ready or Filling


def _max_age(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return lifecycle.duration("max_age", value, allow_zero=False)
    except lifecycle.LimitError as e:
        raise bad("INVALID_DATA", str(e).replace("lifecycle.max_age", "pool.max_age")) from None


def pool_view(s: Session, row: ClusterPool) -> dict[str, Any]:
    members = pools.members(s, row.id)
    n = pools.counts(members)
    site = s.get(Site, row.site_id)
    status = row.status if row.status in PROBLEMS else ("Ready" if n["ready"] >= row.size else "Filling")
    return {"id": row.id, "name": row.name, "project_id": row.project_id,
            "cluster_template_id": row.cluster_template_id, "availability_zone": site.name if site else None,
            "plugin_name": row.spec["data"]["plugin_name"], "plugin_version": row.spec["data"]["plugin_version"],
            "size": row.size, "max_age": row.max_age, **n, "status": status,
            "status_description": row.status_description,
            "clusters": [{"id": c.id, "name": c.name, "status": c.status} for c in members],
            "created_at": ts(row.created_at), "updated_at": ts(row.updated_at)}


def create_pool(ctx: Ctx) -> Reply:
    """Make a pool: validated as a create from its template would be; the engine fills it."""
    data = ctx.body["pool"]
    principal = ctx.principal
    with keystone.trusts_undone_on_failure(ctx) as made:
        with ctx.db.session() as s:
            ensure_unique_name(s, ClusterPool, principal.project_id, data["name"], KIND)
            tmpl = get_visible(s, ClusterTemplate, data["cluster_template_id"], principal, "Cluster template",
                               status=400)
            max_age = _max_age(data.get("max_age"))
            body = {"name": f"pool-{data['name']}-999999", "plugin_name": tmpl.plugin_name,
                    "plugin_version": tmpl.plugin_version, "cluster_template_id": tmpl.id,
                    "availability_zone": data.get("availability_zone")}
            r = clusters.resolve(s, principal, body, [body["name"]])
            prototype = json.loads(json.dumps({"data": {**r.data, "name": None}, "groups": r.groups}, default=str))
            # The refill acts for the pool's creator long after its token expired: on its trust, as a cluster's
            # work does (a trust that is gone stops the refill, oasis/engine/pools.py).
            made.append(keystone.trust_for_work(ctx))
            row = ClusterPool(project_id=principal.project_id, name=data["name"], cluster_template_id=tmpl.id,
                              site_id=r.site.id, size=data["size"], max_age=max_age, trust_id=made[0],
                              status="Filling", status_description="", serial=0,
                              spec={**prototype, "match": pools.match_key(r.data, r.groups)})
            s.add(row)
            s.flush()
            out = pool_view(s, row)
    ctx.notify()
    return Reply(202, {"pool": out})


def list_pools(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        rows, markers = page(ctx, s, ClusterPool, KIND, filters={"name": ClusterPool.name},
                             sorts={"id": ClusterPool.id, "name": ClusterPool.name,
                                    "created_at": ClusterPool.created_at})
        return Reply(200, listing("pools", [pool_view(s, r) for r in rows], markers))


def show_pool(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        return Reply(200, {"pool": pool_view(s, get_visible(s, ClusterPool, ctx.path["id"], ctx.principal, KIND))})


def update_pool(ctx: Ctx) -> Reply:
    """A new size (the refill makes or removes clusters to reach it) or max_age (for clusters made from now)."""
    data = ctx.body["pool"]
    with ctx.db.session() as s:
        row = get_visible(s, ClusterPool, ctx.path["id"], ctx.principal, KIND)
        check_update_allowed(row, data, ctx.principal, KIND)
        if "size" in data:
            row.size = data["size"]
        if "max_age" in data:
            row.max_age = _max_age(data["max_age"])
        s.flush()
        out = pool_view(s, row)
    ctx.notify()
    return Reply(202, {"pool": out})


def delete_pool(ctx: Ctx) -> Reply:
    """The pool and its unclaimed clusters go (each deleted as any cluster is); claimed clusters stay."""
    with ctx.db.session() as s:
        row = get_visible(s, ClusterPool, ctx.path["id"], ctx.principal, KIND)
        check_delete_allowed(row, ctx.principal, KIND)
        for c in pools.members(s, row.id):
            pools.release(s, row.id, c.id, f"Its warm pool {row.name} was deleted")
        trust_id = row.trust_id
        s.delete(row)
    ctx.notify()
    if trust_id:  # after the commit: the refill no longer acts on it
        try:
            ctx.deps.identity.delete_trust(trust_id)
        except IdentityError as e:  # it expires unused
            log.warning("could not delete the trust of pool %s: %s", ctx.path["id"], e)
    return Reply(204)


def register(routes: Routes) -> None:
    routes.add("GET", "/pools", list_pools, "pool:list", returns="pools[]")
    routes.add("POST", "/pools", create_pool, "pool:create", schema=POOL_CREATE, returns="pool")
    routes.add("GET", "/pools/{id}", show_pool, "pool:get", returns="pool")
    routes.add("PATCH", "/pools/{id}", update_pool, "pool:update", schema=POOL_UPDATE, returns="pool")
    routes.add("DELETE", "/pools/{id}", delete_pool, "pool:delete")
