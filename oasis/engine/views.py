"""What the engine hands a plugin: a ClusterView built from the rows, with a Remote per instance."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from oasis.db import volumes
from oasis.db.models import Cluster, Host, Image, Instance, NodeGroup, Site
from oasis.engine.machine import OperationError
from oasis.plugins.base import ClusterView, InstanceView
from oasis.remote.base import Remote
from oasis.remote.hosts import Context, Remotes


def cluster_runtime(session: Session, cluster: Cluster) -> dict:
    image = session.get(Image, cluster.spec.get("default_image_id") or "")
    if image is None:
        image = session.scalars(select(Image).where(Image.site_id == cluster.site_id)).first()
    if image is None:
        raise OperationError(f"cluster {cluster.name}: its site has no image")
    return dict(image.runtime)


def host_remotes(session: Session, remotes: Remotes, cluster: Cluster, hosts: list[Host],
                 groups: dict[str, NodeGroup], as_cluster: bool = True) -> dict[str, Remote]:
    """The Remote of each host the cluster uses. With a proxy gateway node group, the gateway's host is reached
    as its site says and every other host through it. `as_cluster`: with the cluster's own key (what instance
    work uses), else with the site's (to install and remove the cluster's key)."""
    key = cluster.management_private_key if as_cluster else None
    site = session.get(Site, cluster.site_id)
    context = Context(cluster.project_id, str(cluster.spec.get("neutron_management_network") or ""))
    gateway_ngs = [ng.id for ng in groups.values() if ng.spec.get("is_proxy_gateway")]
    out: dict[str, Remote] = {}
    via = None
    if gateway_ngs:
        gw = session.scalars(select(Instance).where(Instance.node_group_id.in_(gateway_ngs))
                             .order_by(Instance.index)).first()
        if gw is not None:
            via = out[gw.host_id] = remotes.for_host(session.get(Host, gw.host_id), site, context=context,
                                                     client_key=key)
    for host in hosts:
        if host.id not in out:
            out[host.id] = remotes.for_host(host, site, via=via, context=context, client_key=key)
    return out


def cluster_hosts(session: Session, cluster: Cluster, states: tuple[str, ...]) -> list[Host]:
    ids = set(session.scalars(select(Instance.host_id).where(Instance.cluster_id == cluster.id,
                                                             Instance.state.in_(states))))
    return [session.get(Host, i) for i in sorted(ids)]


def build_view(session: Session, remotes: Remotes, cluster: Cluster, states: tuple[str, ...] = ("active", "new")
               ) -> ClusterView:
    runtime = cluster_runtime(session, cluster)
    groups = {ng.id: ng for ng in session.scalars(select(NodeGroup).where(NodeGroup.cluster_id == cluster.id))}
    view = ClusterView(cluster.id, cluster.name, cluster.plugin_version, cluster.spec.get("cluster_configs") or {},
                       runtime)
    rows = list(session.scalars(select(Instance).where(Instance.cluster_id == cluster.id,
                                                       Instance.state.in_(states)).order_by(Instance.name)))
    hosts = {h.id: h for h in cluster_hosts(session, cluster, states)}
    # One limited remote per host, shared by the instances there (work per host is deduplicated by remote).
    reach = {hid: remotes.limited(r, cluster.id)
             for hid, r in host_remotes(session, remotes, cluster, list(hosts.values()), groups).items()}
    for inst in rows:
        host, ng = hosts[inst.host_id], groups[inst.node_group_id]
        remote = reach[host.id]
        view.instances.append(InstanceView(
            id=inst.id, name=inst.name, node_group=ng.name, processes=list(ng.spec["node_processes"]),
            address=inst.internal_ip, workdir=inst.workdir, ports=dict(inst.ports), vcpus=inst.vcpus,
            ram_mb=inst.ram_mb, remote=remote, owner=inst.owner,
            # none where the host has no backend: a node group accepted before the site had one has none
            volumes=volumes.of_node_group(ng.spec).mounts(inst.workdir) if volumes.backend_of(host.spec) else [],
            agent=remotes.agent(remote, host, runtime["python"], inst.owner, inst.workdir)))
    return view
