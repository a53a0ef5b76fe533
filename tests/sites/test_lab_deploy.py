"""Site operations on the real lab (root only): two sites deployed at the same time, a host whose sshd is down
failing its own site only, and a site delete refused while a cluster lives there."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml

from oasis.db.models import Cluster, Site
from oasis.db.session import Database
from oasis.procs import wait_until
from tests.integration.services import Oasis
from tests.lab_fixture import site_of

pytestmark = pytest.mark.service(lab=True, register=False)

BUSY = ("Deploying", "Scaling", "Updating", "Deleting")


def deploy(service: Oasis, lab: dict, names: list[str], version: int) -> dict[str, dict]:
    key = Path(lab["manifest"]["controller"]["private_key"]).read_text()
    for name in names:
        r = service.client.post(f"/sites/{name}/deploy", json={"manifest": lab["manifest"], "private_key": key,
                                                                 "bundle_version": version})
        assert r.status_code == 202, r.text
        assert r.json()["site"]["status"] == "Deploying"
        assert "BEGIN OPENSSH" not in r.text
    return wait_sites(service, names)


def wait_sites(service: Oasis, names: list[str], timeout: float = 90) -> dict[str, dict]:
    def done() -> dict[str, dict] | None:
        sites = {n: service.client.get(f"/sites/{n}").json()["site"] for n in names}
        return sites if all(s["status"] not in BUSY and s["operation"] is None for s in sites.values()) else None
    return wait_until(done, timeout, f"sites {names} to settle", 0.2)


def export(service: Oasis) -> int:
    r = service.client.post("/exports", json={})
    assert r.status_code == 202, r.text
    return r.json()["export"]["version"]


def test_deploy_two_sites_at_once(service: Oasis, lab: dict) -> None:
    # the sites are known first (registered, not yet deployed), so that the export names their hosts
    key = Path(lab["manifest"]["controller"]["private_key"]).read_text()
    manifest = {**lab["manifest"], "sites": [site_of(lab, "central"), site_of(lab, "edge-1")]}
    r = service.client.post("/sites", json={"manifest": manifest, "private_key": key})
    assert r.status_code == 202, r.text
    version = export(service)
    sites = deploy(service, lab, ["edge-1", "central"], version)
    for name, site in sites.items():
        assert site["status"] == "Active", (name, site["status_description"], site["events"])
        assert site["generation"] == 1 and site["bundle_version"] == version
        hosts = site_of(lab, name)["hosts"]
        assert {h["name"] for h in site["hosts"]} == {h["name"] for h in hosts}
        for h in site["hosts"]:
            assert h["status"] == "up" and h["measured"]["vcpus"] >= 1 and h["measured"]["ram_mb"] > 0
        steps = {(e["step"], e["host"]) for e in site["events"] if e["successful"]}
        for h in hosts:
            assert {(s, h["name"]) for s in ("connect", "runtime", "files", "capacity")} <= steps
            d = Path(h["base_dir"]) / "oasis-site"
            text = (d / "hosts").read_text()
            assert "oasis-api" in text
            # cross-site name resolution: every deployed host of both sites is in every host's file
            for other in site_of(lab, "central")["hosts"] + site_of(lab, "edge-1")["hosts"]:
                assert f" {other['name']}.{'central' if other in site_of(lab, 'central')['hosts'] else 'edge-1'}" \
                       f".oasis.local {other['name']}" in text
            config = yaml.safe_load((d / "global.yaml").read_text())
            assert config["bundle_version"] == version and config["dns_domain"] == "oasis.local"
            assert config["site"] == name
            assert "join_token" not in (d / "global.yaml").read_text()

    # update: a new bundle version rewrites the files of that site only
    v2 = export(service)
    r = service.client.post("/sites/edge-1/update", json={"bundle_version": v2})
    assert r.status_code == 202, r.text
    edge = wait_sites(service, ["edge-1"])["edge-1"]
    assert edge["status"] == "Active" and edge["generation"] == 2 and edge["bundle_version"] == v2
    for h in site_of(lab, "edge-1")["hosts"]:
        assert yaml.safe_load((Path(h["base_dir"]) / "oasis-site/global.yaml").read_text())["bundle_version"] == v2
    for h in site_of(lab, "central")["hosts"]:
        assert yaml.safe_load((Path(h["base_dir"]) / "oasis-site/global.yaml").read_text())["bundle_version"] == version
    central = service.client.get("/sites/central").json()["site"]
    assert central["generation"] == 1 and central["bundle_version"] == version


def test_scale_removes_and_adds_a_host(service: Oasis, lab: dict) -> None:
    host = site_of(lab, "edge-1")["hosts"][-1]
    before = service.client.get("/sites/edge-1").json()["site"]
    r = service.client.patch("/sites/edge-1", json={"remove_hosts": [host["name"]]})
    assert r.status_code == 202, r.text
    edge = wait_sites(service, ["edge-1"])["edge-1"]
    assert edge["status"] == "Active" and edge["generation"] == before["generation"] + 1, edge["status_description"]
    assert host["name"] not in {h["name"] for h in edge["hosts"]}
    assert not (Path(host["base_dir"]) / "oasis-site").exists()

    r = service.client.patch("/sites/edge-1", json={"add_hosts": [host]})
    assert r.status_code == 202, r.text
    edge = wait_sites(service, ["edge-1"])["edge-1"]
    assert edge["status"] == "Active" and edge["generation"] == before["generation"] + 2, edge["status_description"]
    added = next(h for h in edge["hosts"] if h["name"] == host["name"])
    assert added["status"] == "up" and added["measured"]
    assert (Path(host["base_dir"]) / "oasis-site" / "global.yaml").exists()
    assert {e["host"] for e in edge["events"] if e["generation"] == edge["generation"]} >= {host["name"]}


def test_cli_deploy_wait_and_show(service: Oasis, lab: dict, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from oasis.cli.main import app

    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump(lab["manifest"]))
    auth = ["--url", f"{service.url}/v2", "--token", service.client.headers["X-Auth-Token"]]
    runner = CliRunner()
    r = runner.invoke(app, [*auth, "site", "deploy", str(manifest), "--site", "edge-2", "--wait"])
    assert r.exit_code == 0, r.output
    assert "edge-2" in r.output and "Active" in r.output
    r = runner.invoke(app, [*auth, "site", "show", "edge-2"])
    assert r.exit_code == 0, r.output
    for word in ("generation", "bundle_version", "Active", "capacity", site_of(lab, "edge-2")["hosts"][0]["name"]):
        assert word in r.output
    assert "PRIVATE KEY" not in r.output


def test_host_down_fails_only_its_site(service: Oasis, lab: dict) -> None:
    victim = site_of(lab, "central")["hosts"][0]
    from oasis.lab import net

    pids = net.netns_pids(victim["namespace"])
    assert pids, "the host's sshd should be running"
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_until(lambda: not net.netns_pids(victim["namespace"]), 10, "the host's processes to end")
    try:
        version = export(service)
        sites = deploy(service, lab, ["central", "edge-1"], version)
        central, edge = sites["central"], sites["edge-1"]
        assert central["status"] == "Error", central
        assert victim["name"] in central["status_description"]
        failed = [e for e in central["events"] if not e["successful"]]
        assert failed and all(e["host"] in (victim["name"], None) for e in failed)
        assert edge["status"] == "Active" and edge["bundle_version"] == version, edge["status_description"]
    finally:
        lab["labmod"].up(lab["spec"], lab["state_dir"])  # sshd back
    # the failed site is deployed again, now that its host is back
    central = deploy(service, lab, ["central"], version)["central"]
    assert central["status"] == "Active", central["status_description"]
    assert central["bundle_version"] == version


def test_delete_refused_while_a_cluster_lives_there(service: Oasis, lab: dict) -> None:
    db = Database(f"sqlite:///{service.state_dir / 'oasis.db'}")
    with db.session() as s:
        site = s.query(Site).filter_by(name="central").one()
        cluster = Cluster(project_id="p", name="lives-on-central", plugin_name="dask", plugin_version="x",
                          site_id=site.id, status="Active")
        s.add(cluster)
        s.flush()
        cluster_id = cluster.id
    r = service.client.delete("/sites/central")
    assert r.status_code == 400 and "lives-on-central" in r.text, r.text
    assert service.client.get("/sites/central").json()["site"]["status"] == "Active"
    with db.session() as s:
        s.delete(s.get(Cluster, cluster_id))
    r = service.client.delete("/sites/central")
    assert r.status_code == 202, r.text

    def gone() -> bool:
        return service.client.get("/sites/central").status_code == 404
    wait_until(gone, 60, "central to be deleted", 0.2)
    for h in site_of(lab, "central")["hosts"]:
        assert not (Path(h["base_dir"]) / "oasis-site").exists()
    assert service.client.get("/sites/edge-1").json()["site"]["status"] == "Active"
