"""What the engine hands a plugin: a ClusterView built from the rows, with a Remote per instance."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from oasis.db.models import Cluster, Host, Image, Instance, NodeGroup
from oasis.plugins.base import ClusterView, InstanceView
from oasis.remote.hosts import Remotes


def cluster_runtime(session: Session, cluster: Cluster) -> dict:
    image = session.get(Image, cluster.spec.get("default_image_id") or "")
    if image is None:
        image = session.scalars(select(Image).where(Image.site_id == cluster.site_id)).first()
    if image is None:
        raise LookupError(f"cluster {cluster.name}: its site has no image")
    return dict(image.runtime)


def build_view(session: Session, remotes: Remotes, cluster: Cluster, states: tuple[str, ...] = ("active", "new")
               ) -> ClusterView:
    runtime = cluster_runtime(session, cluster)
    groups = {ng.id: ng for ng in session.scalars(select(NodeGroup).where(NodeGroup.cluster_id == cluster.id))}
    view = ClusterView(cluster.id, cluster.name, cluster.plugin_version, cluster.spec.get("cluster_configs") or {},
                       runtime)
    rows = session.scalars(select(Instance).where(Instance.cluster_id == cluster.id, Instance.state.in_(states))
                           .order_by(Instance.name))
    for inst in rows:
        host = session.get(Host, inst.host_id)
        ng = groups[inst.node_group_id]
        view.instances.append(instance_view(inst, ng, host, remotes, runtime["python"]))
    return view


def instance_view(inst: Instance, ng: NodeGroup, host: Host, remotes: Remotes, python: str) -> InstanceView:
    return InstanceView(id=inst.id, name=inst.name, node_group=ng.name, processes=list(ng.spec["node_processes"]),
                        address=inst.internal_ip, workdir=inst.workdir, ports=dict(inst.ports), vcpus=inst.vcpus,
                        ram_mb=inst.ram_mb, remote=remotes.for_host(host), agent=remotes.agent(host, python))
