"""Warm pools: which pool a create matches, the atomic claim of one of its ready clusters, and what a pool holds.
Shared by the API (the claim in `POST /v2/clusters`, the pool routes) and the engine (the refill).

A create matches a pool when what it would build is what the pool builds: the same cluster template, site and
plugin, and, once the request is laid over the template and checked (oasis/api/clusters.py `resolve`), the same
node groups, configs, image, network, keypair and the other fields that shape the cluster. Only what a cluster
may change about itself without touching its nodes may differ: its name, description, `is_transient`,
`is_public`, `is_protected`, `lifecycle` and `autoscaling`. A create asking for a user keypair never matches
(the pooled cluster's nodes do not have its key), and neither does `count` (a multiple create)."""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from oasis.db.clusterrows import spec_of
from oasis.db.models import Cluster, ClusterPool, ProvisionEvent, ProvisionStep, utcnow
from oasis.db.states import ClusterOp, ClusterStatus

# What a claimed cluster takes from the request that claims it; everything else must equal the pool's.
PERSONAL = ("name", "description", "is_transient", "is_public", "is_protected", "lifecycle", "autoscaling", "count")
STEP_TYPE = "Engine: warm pool"
CANDIDATES = 20  # ready clusters a claim tries, in age order, before it gives up (each try is one UPDATE)


def match_key(data: dict[str, Any], groups: list[dict[str, Any]]) -> dict[str, Any]:
    """What must be equal for a create to take a pooled cluster, in JSON's own form (as stored on the pool)."""
    shape = {k: v for k, v in data.items() if k not in PERSONAL and k != "availability_zone" and v is not None}
    return json.loads(json.dumps({"cluster": shape, "node_groups": groups}, sort_keys=True, default=str))


def matching(s: Session, project_id: str, data: dict[str, Any], groups: list[dict[str, Any]],
             site_id: str) -> ClusterPool | None:
    """The project's pool a create (validated, over its template) may claim from, if any."""
    if not data.get("cluster_template_id") or data.get("user_keypair_id"):
        return None
    key = match_key(data, groups)
    for pool in s.scalars(select(ClusterPool).where(ClusterPool.project_id == project_id,
                                                    ClusterPool.cluster_template_id == data["cluster_template_id"],
                                                    ClusterPool.site_id == site_id)
                          .order_by(ClusterPool.created_at)):
        if (pool.spec or {}).get("match") == key:
            return pool
    return None


def claim(s: Session, pool: ClusterPool, name: str, data: dict[str, Any], trust_id: str | None) -> Cluster | None:
    """Make one Active cluster of the pool the request's cluster, or None when the pool has none ready. Each try
    is one conditional UPDATE (`pool_id = :pool AND status = 'Active' AND op IS NULL`): of two concurrent claims
    one changes the row and the other changes nothing and tries the next, on SQLite (one writer at a time) and
    PostgreSQL (the second UPDATE re-reads the row once the first commits) alike."""
    now = utcnow()
    ready = list(s.scalars(select(Cluster.id).where(Cluster.pool_id == pool.id, Cluster.status == ClusterStatus.ACTIVE,
                                                    Cluster.op.is_(None))
                           .order_by(Cluster.created_at).limit(CANDIDATES)))
    for cluster_id in ready:
        # The cluster becomes the request's: its name, spec, flags and trust; its age counts from now (max_age).
        res = s.execute(update(Cluster).where(Cluster.id == cluster_id, Cluster.pool_id == pool.id,
                                              Cluster.status == ClusterStatus.ACTIVE, Cluster.op.is_(None))
                        .values(pool_id=None, name=name, spec=spec_of(data), trust_id=trust_id,
                                is_transient=bool(data.get("is_transient", False)),
                                is_public=bool(data.get("is_public", False)),
                                is_protected=bool(data.get("is_protected", False)),
                                status_description="", created_at=now, updated_at=now)
                        .execution_options(synchronize_session=False))
        if res.rowcount == 1:
            row = s.get(Cluster, cluster_id, populate_existing=True)
            note(s, row, f"From pool {pool.name}", f"Taken from warm pool {pool.name} ({pool.id}), Active already")
            return row
    return None


def note(s: Session, cluster: Cluster, step_name: str, message: str, successful: bool = True) -> None:
    """One finished step with one event on the cluster's event log (what the pool did with it)."""
    step = ProvisionStep(cluster_id=cluster.id, project_id=cluster.project_id, step_name=step_name[:128],
                         step_type=STEP_TYPE, total=1, successful=successful, duration=0.0)
    s.add(step)
    s.flush()
    s.add(ProvisionEvent(step_id=step.id, event_info=message[:4000], successful=successful))


def members(s: Session, pool_id: str) -> list[Cluster]:
    """The pool's clusters not being deleted, oldest first."""
    return list(s.scalars(select(Cluster).where(Cluster.pool_id == pool_id, Cluster.status != ClusterStatus.DELETING)
                          .order_by(Cluster.created_at, Cluster.id)))


def counts(rows: list[Cluster]) -> dict[str, int]:
    ready = sum(1 for c in rows if c.status == ClusterStatus.ACTIVE and c.op is None)
    failed = sum(1 for c in rows if c.status == ClusterStatus.ERROR)
    return {"ready": ready, "starting": len(rows) - ready - failed, "failed": failed}


def release(s: Session, pool_id: str, cluster_id: str, why: str) -> bool:
    """Ask for the deletion of one of the pool's clusters, if it is still the pool's (not claimed meanwhile)."""
    res = s.execute(update(Cluster).where(Cluster.id == cluster_id, Cluster.pool_id == pool_id,
                                          Cluster.status != ClusterStatus.DELETING)
                    .values(status=ClusterStatus.DELETING, status_description=why[:2000], op=ClusterOp.DELETE,
                            op_step=None, op_target={"force": False})
                    .execution_options(synchronize_session=False))
    return res.rowcount == 1
