"""Placement between engines on PostgreSQL: many clusters placed at the same moment from several threads (each as
an engine would, in its own transaction) never overcommit a host, and every instance that fits is placed."""
from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from oasis.compute.placement import PlacementError, place
from oasis.db.models import Cluster, Flavor, Host, Instance, NodeGroup, Site
from oasis.db.session import Database
from tests.integration.services import Postgres

pytestmark = pytest.mark.postgres
HOSTS, VCPUS, CLUSTERS, PLACERS = 3, 4, 30, 6  # 12 vCPUs for 30 one-vCPU instances: most must be refused


def _world(db: Database) -> list[str]:
    with db.session() as s:
        s.add(Flavor(id="1", name="m1.tiny", vcpus=1, ram_mb=512, disk_gb=1))
        site = Site(name="race", spec={}, cpu_allocation_ratio=1.0, ram_allocation_ratio=1.0)
        s.add(site)
        s.flush()
        for i in range(HOSTS):
            s.add(Host(site_id=site.id, name=f"h{i}", address=f"127.0.0.{i + 1}", vcpus=VCPUS, ram_mb=65536,
                       disk_gb=1000, base_dir="/srv"))
        ids = []
        for i in range(CLUSTERS):
            c = Cluster(project_id="p", name=f"c{i}", plugin_name="dask", plugin_version="1", site_id=site.id)
            s.add(c)
            s.flush()
            s.add(NodeGroup(cluster_id=c.id, name="w", count=1, spec={"flavor_id": "1", "node_processes": ["worker"]}))
            ids.append(c.id)
        return ids


def test_concurrent_placement_never_overcommits_a_host(postgres: Postgres) -> None:
    db = Database(postgres.create_database("oasis_" + uuid.uuid4().hex[:12]))
    db.migrate()
    clusters = _world(db)
    start = threading.Barrier(PLACERS)

    def placer(mine: list[str]) -> tuple[int, int]:
        placed = refused = 0
        start.wait()
        for cid in mine:
            try:
                with db.session() as s:
                    place(s, s.get(Cluster, cid), lambda process: ["worker"], "active", lambda host: host.address)
                placed += 1
            except PlacementError:
                refused += 1
        return placed, refused

    with ThreadPoolExecutor(PLACERS) as pool:
        outcomes = list(pool.map(placer, [clusters[i::PLACERS] for i in range(PLACERS)]))

    with db.session() as s:
        used = dict(s.execute(select(Instance.host_id, func.sum(Instance.vcpus)).group_by(Instance.host_id)).all())
        capacity = {h.id: h.vcpus for h in s.scalars(select(Host))}
    assert all(used[h] <= capacity[h] for h in used), f"a host is overcommitted: {used} of {capacity}"
    assert sum(p for p, _ in outcomes) == HOSTS * VCPUS == sum(used.values()), outcomes
    assert sum(r for _, r in outcomes) == CLUSTERS - HOSTS * VCPUS
    db.engine.dispose()
