"""Site operations against the API and the site machine without the lab: validation, refusals, and a deploy that
resumes at its recorded step (the `local` site's host, reached without SSH)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import yaml
from sqlalchemy import select

from oasis.db.models import Cluster, Host, Instance, NodeGroup, Site, SiteEvent
from oasis.engine.sites import site_machine
from oasis.remote.hosts import Remotes
from tests.unit.conftest import World


def test_operations_are_admin_only_and_validated(world: World) -> None:
    assert world.post("/v2/sites/local/update", {"bundle_version": 1}).status_code == 403
    assert world.delete("/v2/sites/local").status_code == 403
    r = world.post("/v2/sites/local/update", {"bundle_version": 7}, who="admin")
    assert r.status_code == 400 and "not found" in r.text
    r = world.post("/v2/sites/edge-9/deploy", {"manifest": {"sites": []}, "private_key": "k"}, who="admin")
    assert r.status_code == 400 and "edge-9" in r.text
    assert world.patch("/v2/sites/local", {}, who="admin").status_code == 400


def test_scale_refuses_a_host_with_instances(world: World) -> None:
    world.post("/v2/exports", {}, who="admin")
    with world.db.session() as s:
        host = s.scalars(select(Host).where(Host.site_id == world.site_id)).first()
        c = Cluster(project_id="p", name="busy", plugin_name="dask", plugin_version="x", site_id=world.site_id)
        s.add(c)
        s.flush()
        ng = NodeGroup(cluster_id=c.id, name="w", count=1)
        s.add(ng)
        s.flush()
        s.add(Instance(cluster_id=c.id, node_group_id=ng.id, host_id=host.id, index=0, name="busy-w-0",
                       internal_ip="127.0.0.1", management_ip="127.0.0.1", workdir="/tmp/x", vcpus=1, ram_mb=1,
                       disk_gb=1))
    r = world.patch("/v2/sites/local", {"remove_hosts": ["h1"]}, who="admin")
    assert r.status_code == 400 and "h1" in r.text and "instance" in r.text, r.text
    r = world.delete("/v2/sites/local", who="admin")
    assert r.status_code == 400 and "busy" in r.text
    with world.db.session() as s:
        site = s.get(Site, world.site_id)
        assert site.op is None and site.generation == 0


def test_deploy_resumes_at_its_recorded_step(world: World, tmp_path: Path) -> None:
    version = world.post("/v2/exports", {}, who="admin").json()["export"]["version"]
    with world.db.session() as s:
        site = s.get(Site, world.site_id)
        site.secrets = {"ssh_private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n"}
        # as an engine that died after connect and runtime left it
        site.op, site.op_step, site.generation, site.status = "deploy", "files", 1, "Deploying"
        site.op_target = {"bundle_version": version, "hosts": ["h1"]}
        base = s.scalars(select(Host.base_dir).where(Host.site_id == site.id)).first()

    asyncio.run(site_machine(world.db, Remotes())(world.site_id))

    with world.db.session() as s:
        site = s.get(Site, world.site_id)
        assert (site.status, site.op, site.bundle_version) == ("Active", None, version)
        steps = [e.step for e in s.scalars(select(SiteEvent).where(SiteEvent.site_id == site.id))]
    assert "connect" not in steps and "runtime" not in steps
    assert {"files", "capacity", "deploy"} <= set(steps)
    config = yaml.safe_load((Path(base) / "oasis-site" / "global.yaml").read_text())
    assert config["bundle_version"] == version and config["site"] == "local"
    shown = world.get("/v2/sites/local").json()["site"]
    assert shown["generation"] == 1 and shown["events"] and "secret" not in json.dumps(shown)
    assert shown["hosts"][0]["measured"]["vcpus"] >= 1
