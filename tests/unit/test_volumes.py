"""Block storage at the API and in placement: volumes only where a site has a volume backend (a clear 400
elsewhere), of a type it offers, with a mount prefix oasis can use, within the backend's size and the site's
quotas; the manifest's `volumes` validated."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from oasis.db.capacity import Demand, PlacementError, check_fits, choose_host, free_capacity
from oasis.db.models import Cluster, Host, Site
from oasis.db.session import Database
from oasis.sites.manifest import ManifestError, check_volumes
from tests.unit.conftest import World
from tests.world import cluster_body

LOOP = {"backend": "loop", "dir": "/srv/volumes", "size_gb": 20, "types": ["fast"]}


def _body(**volumes: Any) -> dict[str, Any]:
    body = cluster_body("c1", plugin="dask", workers=2)
    body["node_groups"][1].update(volumes)
    return body


def _backend(world: World, backend: dict[str, Any] | None = LOOP, **quotas: int) -> None:
    with world.db.session() as s:
        for h in s.scalars(select(Host)):
            h.spec = {**(h.spec or {}), "volumes": backend}
        if quotas:
            site = s.get(Site, world.site_id)
            site.spec = {**site.spec, "quotas": quotas}


def _error(r) -> str:  # noqa: ANN001
    assert r.status_code == 400, r.text
    return r.json()["error_message"]


def test_volumes_on_a_site_without_a_backend_are_a_400(world: World) -> None:
    message = _error(world.post("/v2/clusters", _body(volumes_per_node=1, volumes_size=1)))
    assert "Availability zone 'local' has no volume backend" in message
    # the same through a node group template
    ngt = world.post("/v2/node-group-templates", {
        "name": "w", "plugin_name": "dask", "plugin_version": _body()["plugin_version"], "flavor_id": "2",
        "node_processes": ["worker"], "volumes_per_node": 2, "volumes_size": 1})
    assert ngt.status_code == 202, ngt.text
    body = _body()
    body["node_groups"][1] = {"name": "worker", "count": 1,
                              "node_group_template_id": ngt.json()["node_group_template"]["id"]}
    assert "has no volume backend" in _error(world.post("/v2/clusters", body))
    # no volumes asked: nothing changes
    assert world.post("/v2/clusters", _body(volumes_per_node=0, volumes_size=10)).status_code == 202


def test_a_site_with_a_backend_takes_volumes_and_echoes_them(world: World) -> None:
    _backend(world)
    r = world.post("/v2/clusters", _body(volumes_per_node=2, volumes_size=5, volume_type="fast",
                                         volume_local_to_instance=True))
    assert r.status_code == 202, r.text
    (worker,) = [ng for ng in r.json()["cluster"]["node_groups"] if ng["name"] == "worker"]
    assert (worker["volumes_per_node"], worker["volumes_size"], worker["volume_type"],
            worker["volume_mount_prefix"]) == (2, 5, "fast", "/volumes/disk")


@pytest.mark.parametrize(("volumes", "expected"), [
    ({"volume_type": "slow"}, "Volume type 'slow' is not offered in availability zone 'local' (offered: fast)"),
    ({"volumes_size": 6}, "GB of volumes"),  # 2 workers x 2 x 6 GB > the backend's 20 GB
    ({"volumes_size": 0}, "volumes_size must be at least 1"),
    ({"volume_mount_prefix": "/proc/disk"}, "'proc' is oasis's own"),
    ({"volume_mount_prefix": "/a/../../etc"}, "must be an absolute path of plain names"),
    ({"volume_mount_prefix": "relative"}, "must be an absolute path of plain names"),
    ({"volumes_availability_zone": "edge"}, "volumes are made on the instance's own host"),
])
def test_volumes_the_site_cannot_give_are_a_400(world: World, volumes: dict[str, Any], expected: str) -> None:
    _backend(world)
    assert expected in _error(world.post("/v2/clusters", _body(**{"volumes_per_node": 2, "volumes_size": 5,
                                                                   **volumes})))


def test_quotas_count_volumes(world: World) -> None:
    _backend(world, volume_gb=15)
    message = _error(world.post("/v2/clusters", _body(volumes_per_node=2, volumes_size=4)))
    assert "volume_gb: requested 16, used 0, limit 15" in message
    _backend(world, volumes=3)
    assert "volumes: requested 4, used 0, limit 3" in _error(
        world.post("/v2/clusters", _body(volumes_per_node=2, volumes_size=1)))


def test_scale_counts_the_volumes_of_new_instances(world: World) -> None:
    _backend(world)
    r = world.post("/v2/clusters", _body(volumes_per_node=2, volumes_size=5))
    cid = r.json()["cluster"]["id"]
    with world.db.session() as s:  # as if the engine had made it Active (no instance rows: nothing used yet)
        c = s.get(Cluster, cid)
        c.status, c.op, c.secrets = "Active", None, {"auth_secret": "made-by-configure"}
    r = world.put(f"/v2/clusters/{cid}", {"resize_node_groups": [{"name": "worker", "count": 5}]})
    assert "GB of volumes" in _error(r)  # three more workers: 30 GB, of the backend's 20
    r = world.put(f"/v2/clusters/{cid}", {"resize_node_groups": [{"name": "worker", "count": 3}]})
    assert r.status_code == 202, r.text  # one more: 10 GB


# --- placement ---------------------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(f"sqlite:///{tmp_path / 'p.db'}")
    d.migrate()
    return d


def _site(db: Database, *backends: dict[str, Any] | None) -> str:
    with db.session() as s:
        site = Site(name="s")
        s.add(site)
        s.flush()
        for i, backend in enumerate(backends):
            s.add(Host(site_id=site.id, name=f"h{i}", address=f"10.0.0.{i}", vcpus=64, ram_mb=65536, disk_gb=1000,
                       base_dir="/tmp", spec={"volumes": backend}))
        return site.id


def test_placement_never_overcommits_a_backend(db: Database) -> None:
    site = _site(db, {**LOOP, "size_gb": 10}, None)
    with db.session() as s:
        check_fits(s, site, [Demand(1, 512, 1, 2, 10)])
        with pytest.raises(PlacementError, match="20 GB of volumes"):
            check_fits(s, site, [Demand(1, 512, 1, 2, 10)] * 2)  # the second host has no backend
        free = free_capacity(s, site)
        assert choose_host(free, 1, 512, 1, volumes=1, volume_gb=4).host.name == "h0"
        assert choose_host(free, 1, 512, 1, volumes=1, volume_gb=6).host.name == "h0"
        with pytest.raises(PlacementError, match="a volume backend with 1 GB"):
            choose_host(free, 1, 512, 1, volumes=1, volume_gb=1)  # 10 GB handed out already
        assert choose_host(free, 1, 512, 1).host.name in ("h0", "h1")  # no volumes: any host


def test_placement_matches_volume_types(db: Database) -> None:
    site = _site(db, {**LOOP, "types": []}, {**LOOP, "types": ["fast"]})
    with db.session() as s:
        free = free_capacity(s, site)
        for _ in range(2):
            assert choose_host(free, 1, 512, 1, volumes=1, volume_gb=1, volume_type="fast").host.name == "h1"
        with pytest.raises(PlacementError, match="of type 'ssd'"):
            choose_host(free, 1, 512, 1, volumes=1, volume_gb=1, volume_type="ssd")


# --- the manifest ------------------------------------------------------------------------------------------


def test_manifest_volumes_are_validated() -> None:
    assert check_volumes(None, "s") is None
    assert check_volumes({"backend": "loop", "dir": "/srv/v", "size_gb": 5}, "s") == {
        "backend": "loop", "dir": "/srv/v", "size_gb": 5, "types": []}
    for bad, message in [({"backend": "lvm", "dir": "/v", "size_gb": 1}, "backend: must be one of loop"),
                         ({"backend": "loop", "dir": "v", "size_gb": 1}, "dir: must be an absolute"),
                         ({"backend": "loop", "dir": "/v/../etc", "size_gb": 1}, "dir: must be an absolute"),
                         ({"backend": "loop", "dir": "/v", "size_gb": 0}, "size_gb: must be a positive"),
                         ({"backend": "loop", "dir": "/v", "size_gb": 1, "types": "fast"}, "types: must be a list"),
                         ({"backend": "loop", "dir": "/v", "size_gb": 1, "vg": "x"}, "unknown key(s) vg")]:
        with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)")):
            check_volumes(bad, "sites[0]")
