"""Placement by capacity with overcommit, anti-affinity, and ports that never collide."""
from __future__ import annotations

from pathlib import Path

import pytest

from oasis.compute.placement import allocate_ports
from oasis.db.capacity import PlacementError, check_fits, choose_host, free_capacity
from oasis.db.models import Host, HostPort, Site
from oasis.db.session import Database


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(f"sqlite:///{tmp_path / 'p.db'}")
    d.migrate()
    return d


def site_with_hosts(db: Database, *rams: int) -> str:
    with db.session() as s:
        site = Site(name="s", cpu_allocation_ratio=2.0, ram_allocation_ratio=1.5)
        s.add(site)
        s.flush()
        for i, ram in enumerate(rams):
            s.add(Host(site_id=site.id, name=f"h{i}", address=f"10.0.0.{i}", vcpus=2, ram_mb=ram, disk_gb=100,
                       base_dir="/tmp", port_min=30000, port_max=30004))
        return site.id


def test_overcommit_ratios_decide_what_fits(db: Database) -> None:
    site = site_with_hosts(db, 4096)
    with db.session() as s:
        check_fits(s, site, [(1, 2048, 20)] * 3)  # 6144 MB = 4096 * 1.5
        with pytest.raises(PlacementError, match="not enough capacity"):
            check_fits(s, site, [(1, 2048, 20)] * 4)
        with pytest.raises(PlacementError):
            check_fits(s, site, [(5, 512, 1)])  # 5 vCPUs > 2 * 2


def test_spread_and_anti_affinity(db: Database) -> None:
    site = site_with_hosts(db, 4096, 4096)
    with db.session() as s:
        free = free_capacity(s, site)
        first = choose_host(free, 1, 1024, 1)
        second = choose_host(free, 1, 1024, 1)
        assert first.host.id != second.host.id  # the emptier host wins
        third = choose_host(free, 1, 512, 1, avoid={first.host.id})
        assert third.host.id != first.host.id


def test_ports_are_unique_per_host_and_bounded(db: Database) -> None:
    site_with_hosts(db, 4096)
    with db.session() as s:
        host = s.query(Host).one()
        a = allocate_ports(s, host, "i1", ["x", "y"])
        b = allocate_ports(s, host, "i2", ["x", "y", "z"])
        assert set(a.values()).isdisjoint(b.values())
        assert s.query(HostPort).count() == 5
        with pytest.raises(PlacementError, match="no free port"):
            allocate_ports(s, host, "i3", ["x"])
