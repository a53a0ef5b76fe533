"""The rows of a new cluster (the cluster, its node groups, its own key pair), written the same way by the API's
create (oasis/api/clusters.py) and by the engine's pool refill (oasis/engine/pools.py), which writes a pool's
clusters from what the API validated when the pool was made."""
from __future__ import annotations

import copy
from typing import Any

from sqlalchemy.orm import Session

from oasis.db.capacity import Demand
from oasis.db.models import Cluster, Flavor, NodeGroup
from oasis.db.states import ClusterOp, ClusterStatus
from oasis.keys import generate_keypair

# Request fields kept in the cluster's `spec` (the rest are columns or node groups).
SPEC_FIELDS = ("description", "default_image_id", "neutron_management_network", "user_keypair_id",
               "cluster_configs", "anti_affinity", "use_autoconfig", "shares", "domain_name", "availability_zone",
               "lifecycle", "autoscaling")
# Node group fields that are not kept in a node group's `spec`.
_NG_NOT_SPEC = {"name", "count", "description", "is_public", "is_protected"}


def spec_of(data: dict[str, Any]) -> dict[str, Any]:
    """The cluster's `spec` from a validated create request (over its template)."""
    return {k: copy.deepcopy(data[k]) for k in SPEC_FIELDS if data.get(k) is not None}


def demands(s: Session, groups: list[tuple[dict[str, Any], int]]) -> list[Demand]:
    """What each instance takes (its flavor's share and its volumes), for (node group, instance count) pairs."""
    out: list[Demand] = []
    for ng, count in groups:
        f = s.get(Flavor, ng["flavor_id"])
        out += [Demand.of(f.vcpus, f.ram_mb, f.disk_gb, ng)] * max(count, 0)
    return out


def node_group_row(ng: dict[str, Any], count: int | None = None) -> NodeGroup:
    spec = {k: v for k, v in ng.items() if k not in _NG_NOT_SPEC}
    spec.setdefault("node_group_template_id", None)
    return NodeGroup(name=ng["name"], count=ng["count"] if count is None else count, spec=spec)


def write_cluster(s: Session, project_id: str, name: str, data: dict[str, Any], site_id: str,
                  groups: list[dict[str, Any]], trust_id: str | None = None, pool_id: str | None = None) -> Cluster:
    """A cluster to create (op CREATE, for an engine), from a request already validated."""
    private, public = generate_keypair(f"oasis-{name}")
    cluster = Cluster(project_id=project_id, name=name, plugin_name=data["plugin_name"],
                      plugin_version=data["plugin_version"], site_id=site_id,
                      cluster_template_id=data.get("cluster_template_id"), status=ClusterStatus.VALIDATING,
                      status_description="", is_transient=bool(data.get("is_transient", False)),
                      is_public=bool(data.get("is_public", False)), is_protected=bool(data.get("is_protected", False)),
                      spec=spec_of(data), info={}, management_public_key=public, management_private_key=private,
                      trust_id=trust_id, pool_id=pool_id, op=ClusterOp.CREATE, op_step=None, op_target={})
    s.add(cluster)
    s.flush()
    for g in groups:
        row = node_group_row(copy.deepcopy(g))
        row.cluster_id = cluster.id
        s.add(row)
    return cluster
