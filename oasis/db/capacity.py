"""What a site's hosts can still take: free capacity with overcommit (Nova's defaults: CPU 16, RAM 1.5), what
its instances use, and whether new instances would fit. Read-only queries and pure arithmetic, shared by the
API (quotas and capacity checked before a create is accepted) and the engine's placement (which host takes an
instance), so that both judge a site by the same rule."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from oasis.db import volumes
from oasis.db.models import Host, Instance, NodeGroup, Site


class PlacementError(Exception):
    """Not enough capacity: the message says what is missing."""


class Demand(NamedTuple):
    """What one instance takes: its flavor's share, and its node group's volumes (`volumes` of `volume_gb` in
    all, of `volume_type`), which only a host whose volume backend offers that type and has the room can give."""

    vcpus: int
    ram_mb: int
    disk_gb: int
    volumes: int = 0
    volume_gb: int = 0
    volume_type: str | None = None
    volume_zone: str | None = None  # the node group's `volumes_availability_zone`, if it names one

    @classmethod
    def of(cls, vcpus: int, ram_mb: int, disk_gb: int, node_group: dict[str, Any] | None = None) -> "Demand":
        ng = node_group or {}
        v = volumes.of_node_group(ng)
        return cls(vcpus, ram_mb, disk_gb, v.count, v.total_gb, v.type,
                   (ng.get("volumes_availability_zone") or None) if v.count else None)


@dataclass
class Free:
    host: Host
    vcpus: float
    ram_mb: float
    disk_gb: float
    volume_gb: float = 0  # what the host's volume backend can still give (0: it has none)

    def fits(self, d: Demand) -> bool:
        if d.volumes and not (volumes.offers(volumes.backend_of(self.host.spec), d.volume_type)
                              and self.volume_gb >= d.volume_gb):
            return False
        return self.vcpus >= d.vcpus and self.ram_mb >= d.ram_mb and self.disk_gb >= d.disk_gb

    def take(self, d: Demand) -> None:
        self.vcpus -= d.vcpus
        self.ram_mb -= d.ram_mb
        self.disk_gb -= d.disk_gb
        self.volume_gb -= d.volume_gb


def volume_use(session: Session, host_ids: list[str] | None = None) -> dict[str, tuple[int, int]]:
    """(volumes, GB) that the instances on each host hold, from their node groups (an instance's volumes are
    its node group's: `volumes_per_node` of `volumes_size` GB)."""
    # only the node groups that have volumes (the API keeps `volumes_per_node` an integer): most have none, and
    # each row read here is a node group's spec decoded
    query = select(Instance.host_id, NodeGroup.spec).join(NodeGroup, NodeGroup.id == Instance.node_group_id).where(
        NodeGroup.spec["volumes_per_node"].as_integer() > 0)
    if host_ids is not None:
        query = query.where(Instance.host_id.in_(host_ids))
    out: dict[str, tuple[int, int]] = {}
    for host_id, spec in session.execute(query):
        v = volumes.of_node_group(spec or {})
        if v.count:
            n, gb = out.get(host_id, (0, 0))
            out[host_id] = (n + v.count, gb + v.total_gb)
    return out


def free_capacity(session: Session, site_id: str) -> list[Free]:
    site = session.get(Site, site_id)
    if site is None:
        raise PlacementError(f"site {site_id} does not exist")
    hosts = list(session.scalars(select(Host).where(Host.site_id == site_id, Host.status == "up")
                                 .order_by(Host.name)))
    # what the instances of this site's hosts use (not every site's: placement costs the site, not the cloud)
    used = {row.host_id: row for row in session.execute(
        select(Instance.host_id, func.sum(Instance.vcpus).label("vcpus"), func.sum(Instance.ram_mb).label("ram"),
               func.sum(Instance.disk_gb).label("disk")).join(Host, Host.id == Instance.host_id)
        .where(Host.site_id == site_id, Host.status == "up").group_by(Instance.host_id))}
    volume_used = volume_use(session, [h.id for h in hosts])
    out = []
    for host in hosts:
        u = used.get(host.id)
        out.append(Free(host, host.vcpus * site.cpu_allocation_ratio - (u.vcpus if u else 0),
                        host.ram_mb * site.ram_allocation_ratio - (u.ram if u else 0),
                        host.disk_gb - (u.disk if u else 0),
                        volumes.capacity_gb(volumes.backend_of(host.spec)) - volume_used.get(host.id, (0, 0))[1]))
    return out


def site_usage(session: Session, site_id: str) -> dict[str, int]:
    """What the site's instances take now: how many, their vCPUs and RAM, their volumes and the volumes' GB (what
    per-site quotas count)."""
    row = session.execute(
        select(func.count(Instance.id), func.coalesce(func.sum(Instance.vcpus), 0),
               func.coalesce(func.sum(Instance.ram_mb), 0))
        .join(Host, Host.id == Instance.host_id).where(Host.site_id == site_id)).one()
    hosts = list(session.scalars(select(Host.id).where(Host.site_id == site_id)))
    held = volume_use(session, hosts).values()
    return {"instances": int(row[0]), "vcpus": int(row[1]), "ram_mb": int(row[2]),
            "volumes": sum(n for n, _ in held), "volume_gb": sum(gb for _, gb in held)}


def _needs(d: Demand) -> str:
    text = f"{d.vcpus} vCPUs, {d.ram_mb} MB RAM and {d.disk_gb} GB disk"
    if d.volumes:
        kind = f" of type {d.volume_type!r}" if d.volume_type else ""
        text += f" free, and a volume backend with {d.volume_gb} GB{kind}"
    return text


def choose_host(free: list[Free], vcpus: int, ram_mb: int, disk_gb: int, avoid: set[str] = frozenset(),
                volumes: int = 0, volume_gb: int = 0, volume_type: str | None = None) -> Free:
    """The host with the most free RAM that fits the instance (its flavor's share and its volumes); hosts in
    `avoid` (anti-affinity) only as a last resort when the site has no other. Takes the instance's share from
    that host's `Free` (in memory only)."""
    d = Demand(vcpus, ram_mb, disk_gb, volumes, volume_gb, volume_type)
    fitting = [f for f in free if f.fits(d)]
    preferred = [f for f in fitting if f.host.id not in avoid] or fitting
    if not preferred:
        raise PlacementError(f"no host has {_needs(d)}" + ("" if d.volumes else " free"))
    best = max(preferred, key=lambda f: (f.ram_mb, f.vcpus))
    best.take(d)
    return best


def check_fits(session: Session, site_id: str, demands: list[tuple]) -> None:
    """Would these instances (Demands, or (vcpus, ram_mb, disk_gb)) fit on the site now? Raises PlacementError
    if not."""
    free = free_capacity(session, site_id)
    if not free:
        raise PlacementError("the site has no host that is up")
    wanted = [Demand(*d) for d in demands]
    # the largest first; volumes first among equals (None sorts as "")
    for i, d in enumerate(sorted(wanted, key=lambda d: (d.vcpus, d.ram_mb, d.disk_gb, d.volume_gb,
                                                       d.volume_type or ""), reverse=True)):
        try:
            choose_host(free, d.vcpus, d.ram_mb, d.disk_gb, frozenset(), d.volumes, d.volume_gb, d.volume_type)
        except PlacementError:
            total = (sum(d.vcpus for d in wanted), sum(d.ram_mb for d in wanted), sum(d.disk_gb for d in wanted))
            gb = sum(d.volume_gb for d in wanted)
            raise PlacementError(
                f"not enough capacity on the site for {len(wanted)} instances "
                f"({total[0]} vCPUs, {total[1]} MB RAM, {total[2]} GB disk"
                f"{f', {gb} GB of volumes' if gb else ''}); instance {i + 1} does not fit") from None
