"""What a site's hosts can still take: free capacity with overcommit (Nova's defaults: CPU 16, RAM 1.5), what
its instances use, and whether new instances would fit. Read-only queries and pure arithmetic, shared by the
API (quotas and capacity checked before a create is accepted) and the engine's placement (which host takes an
instance), so that both judge a site by the same rule."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from oasis.db.models import Host, Instance, Site


class PlacementError(Exception):
    """Not enough capacity: the message says what is missing."""


@dataclass
class Free:
    host: Host
    vcpus: float
    ram_mb: float
    disk_gb: float

    def fits(self, vcpus: int, ram_mb: int, disk_gb: int) -> bool:
        return self.vcpus >= vcpus and self.ram_mb >= ram_mb and self.disk_gb >= disk_gb

    def take(self, vcpus: int, ram_mb: int, disk_gb: int) -> None:
        self.vcpus -= vcpus
        self.ram_mb -= ram_mb
        self.disk_gb -= disk_gb


def free_capacity(session: Session, site_id: str) -> list[Free]:
    site = session.get(Site, site_id)
    if site is None:
        raise PlacementError(f"site {site_id} does not exist")
    used = {row.host_id: row for row in session.execute(
        select(Instance.host_id, func.sum(Instance.vcpus).label("vcpus"), func.sum(Instance.ram_mb).label("ram"),
               func.sum(Instance.disk_gb).label("disk")).group_by(Instance.host_id))}
    out = []
    for host in session.scalars(select(Host).where(Host.site_id == site_id, Host.status == "up").order_by(Host.name)):
        u = used.get(host.id)
        out.append(Free(host, host.vcpus * site.cpu_allocation_ratio - (u.vcpus if u else 0),
                        host.ram_mb * site.ram_allocation_ratio - (u.ram if u else 0),
                        host.disk_gb - (u.disk if u else 0)))
    return out


def site_usage(session: Session, site_id: str) -> dict[str, int]:
    """What the site's instances take now: how many, their vCPUs and RAM (what per-site quotas count)."""
    row = session.execute(
        select(func.count(Instance.id), func.coalesce(func.sum(Instance.vcpus), 0),
               func.coalesce(func.sum(Instance.ram_mb), 0))
        .join(Host, Host.id == Instance.host_id).where(Host.site_id == site_id)).one()
    return {"instances": int(row[0]), "vcpus": int(row[1]), "ram_mb": int(row[2])}


def choose_host(free: list[Free], vcpus: int, ram_mb: int, disk_gb: int, avoid: set[str] = frozenset()) -> Free:
    """The host with the most free RAM that fits; hosts in `avoid` (anti-affinity) only as a last resort
    when the site has no other. Takes the instance's share from that host's `Free` (in memory only)."""
    fitting = [f for f in free if f.fits(vcpus, ram_mb, disk_gb)]
    preferred = [f for f in fitting if f.host.id not in avoid] or fitting
    if not preferred:
        raise PlacementError(f"no host has {vcpus} vCPUs, {ram_mb} MB RAM and {disk_gb} GB disk free")
    best = max(preferred, key=lambda f: (f.ram_mb, f.vcpus))
    best.take(vcpus, ram_mb, disk_gb)
    return best


def check_fits(session: Session, site_id: str, demands: list[tuple[int, int, int]]) -> None:
    """Would these instances (vcpus, ram_mb, disk_gb) fit on the site now? Raises PlacementError if not."""
    free = free_capacity(session, site_id)
    if not free:
        raise PlacementError("the site has no host that is up")
    for i, (vcpus, ram_mb, disk_gb) in enumerate(sorted(demands, reverse=True)):
        try:
            choose_host(free, vcpus, ram_mb, disk_gb)
        except PlacementError:
            total = (sum(d[0] for d in demands), sum(d[1] for d in demands), sum(d[2] for d in demands))
            raise PlacementError(
                f"not enough capacity on the site for {len(demands)} instances "
                f"({total[0]} vCPUs, {total[1]} MB RAM, {total[2]} GB disk); instance {i + 1} does not fit") from None
