"""Placement: which host of a site takes an instance (by the capacity rules of oasis/db/capacity.py, the API's
too, the GB of its volumes against the host's volume backend included), and which ports it gets. Placement
never crosses sites, and is safe between engines: `place` locks the site's hosts before it reads their free
capacity, so two engines placing at once never overcommit a host."""
from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from oasis.db import volumes
from oasis.db.capacity import PlacementError, choose_host, free_capacity
from oasis.db.models import Cluster, Flavor, Host, HostPort, Instance, NodeGroup


def allocate_ports(session: Session, host: Host, instance_id: str, names: list[str]) -> dict[str, int]:
    """Reserve one port per name on the host. The (host, port) primary key settles races between engines:
    a port another engine took first fails the insert, and the next free one is tried."""
    taken = set(session.scalars(select(HostPort.port).where(HostPort.host_id == host.id)))
    ports: dict[str, int] = {}
    candidate = host.port_min
    for name in names:
        while True:
            while candidate in taken:
                candidate += 1
            if candidate > host.port_max:
                raise PlacementError(f"host {host.name} has no free port left in {host.port_min}-{host.port_max}")
            try:
                with session.begin_nested():
                    session.add(HostPort(host_id=host.id, port=candidate, instance_id=instance_id))
                ports[name] = candidate
                taken.add(candidate)
                break
            except IntegrityError:
                taken.add(candidate)
    return ports


def lock_site(session: Session, site_id: str) -> None:
    """Hold the site's hosts until the session commits: a no-op UPDATE of their rows, which on PostgreSQL locks
    them (another engine placing on the site waits here) and on SQLite takes the database's write lock at once
    (an immediate transaction). The capacity read after it is then what the commit will find."""
    session.execute(update(Host).where(Host.site_id == site_id).values(name=Host.name, updated_at=Host.updated_at))


def place(session: Session, cluster: Cluster, ports_of: Callable[[str], list[str]], state: str,
          address_of: Callable[[Host], str]) -> None:
    """Create the instance rows that the cluster's node groups' counts call for and do not have yet, each on a
    host with room, with its ports. `ports_of(process)` names the ports a process needs; `address_of(host)` is
    the host's management address for the cluster."""
    lock_site(session, cluster.site_id)
    free = free_capacity(session, cluster.site_id)
    anti = set(cluster.spec.get("anti_affinity") or [])
    groups = session.scalars(select(NodeGroup).where(NodeGroup.cluster_id == cluster.id).order_by(NodeGroup.created_at))
    for ng in groups:
        have = {i.index: i for i in session.scalars(select(Instance).where(Instance.node_group_id == ng.id))}
        flavor = session.get(Flavor, str(ng.spec.get("flavor_id")))
        if flavor is None:
            raise PlacementError(f"node group {ng.name}: flavor {ng.spec.get('flavor_id')} does not exist")
        avoid = {i.host_id for i in have.values()} if anti & set(ng.spec["node_processes"]) else set()
        # an instance's volumes are made on its own host (`volume_local_to_instance` always holds): only a host
        # whose backend offers the type and still has the room takes it
        v = volumes.of_node_group(ng.spec)
        # New instances take indexes after the highest one: a removed instance's name is not reused.
        first = max(have, default=0) + 1
        for index in range(first, first + max(0, ng.count - len(have))):
            f = choose_host(free, flavor.vcpus, flavor.ram_mb, flavor.disk_gb, avoid, v.count, v.total_gb, v.type)
            avoid.add(f.host.id)
            name = f"{cluster.name}-{ng.name}-{index:03d}".lower()
            inst = Instance(cluster_id=cluster.id, node_group_id=ng.id, host_id=f.host.id, index=index, name=name,
                            internal_ip=f.host.address, management_ip=address_of(f.host),
                            workdir=f"{f.host.base_dir}/{cluster.id}/{name}", vcpus=flavor.vcpus,
                            ram_mb=flavor.ram_mb, disk_gb=flavor.disk_gb, state=state)
            session.add(inst)
            session.flush()
            names = [f"{p}:{port}" for p in ng.spec["node_processes"] for port in ports_of(p)]
            inst.ports = {k.split(":", 1)[1]: v for k, v in allocate_ports(session, f.host, inst.id, names).items()}
