"""`oasis site deploy --standalone`: the join endpoint's token checks and idempotence (fast, against the unit
`world`), then the whole thing on the real lab: a bundle exported from a running oasis, the standalone deploy run
as a separate process with only the bundle and a site manifest, the site deployed in the API, a Dask cluster on it
going Active with the control plane's own key, and the site deleted."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from oasis.db.models import ControlPlaneSecret, Export, Host, Site, SiteEvent
from oasis.sites.export import SITE_KEY
from oasis.cli.standalone import KEY_MARK, StandaloneError, load_bundle
from tests.integration import workflow as wf
from tests.integration.services import Oasis, wait_until
from tests.lab_fixture import site_of
from tests.unit.conftest import World

pytestmark = pytest.mark.service(lab=True, register=False)

JOIN = "/v2/sites/join"
HEADER = "X-Oasis-Join-Token"


# --- fast: the join endpoint ------------------------------------------------------------------------------------


def export(world: World) -> dict:
    r = world.post("/v2/exports", {}, who="admin")
    assert r.status_code == 202, r.text
    return r.json()["export"]


def site_entry(name: str = "edge-7", hosts: tuple[str, ...] = ("e7-h1", "e7-h2")) -> dict:
    return {"name": name, "access": "direct", "management_network": "e7-net",
            "networks": [{"name": "e7-net", "cidr": "10.77.0.0/24"}],
            "hosts": [{"name": h, "addresses": {"e7-net": f"10.77.0.{11 + i}"}, "ssh_user": "root", "ssh_port": 22,
                       "host_key": f"ssh-ed25519 AAAA{h}", "base_dir": f"/srv/{h}",
                       "authorized_keys": f"/srv/{h}/.ssh/authorized_keys",
                       "capacity": {"vcpus": 2, "ram_mb": 2048, "disk_gb": 10}} for i, h in enumerate(hosts)]}


def join_body(version: int, entry: dict) -> dict:
    return {"bundle_version": version, "site": entry, "runtime": {"python": "/usr/bin/python3"},
            "hosts": {h["name"]: {"host_key": h["host_key"], "measured": {"vcpus": 4, "ram_mb": 3000},
                                  "runtime": "distributed 1, pyspark 3, java 17"} for h in entry["hosts"]},
            "events": [{"step": "connect", "host": h["name"], "info": "connected", "successful": True}
                       for h in entry["hosts"]]}


def join(world: World, body: dict, token: str | None):
    return world.client.post(JOIN, json=body, headers={HEADER: token} if token is not None else {})


def test_join_token_checks(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    v1, v2 = export(world), export(world)
    t1, t2 = v1["bundle"]["secrets"]["join_token"], v2["bundle"]["secrets"]["join_token"]
    assert t1 != t2 and len(t1) >= 32
    body = join_body(v2["version"], site_entry())
    for token, status in ((None, 401), ("", 401), ("x" * 43, 401), (t1, 401)):  # t1: another version's token
        r = join(world, body, token)
        assert r.status_code == status, r.text
        err = r.json()
        assert err["error_code"] == status and err["error_name"] == "UNAUTHORIZED", err
        assert "token" in err["error_message"]
    r = join(world, {**body, "bundle_version": 99}, t2)
    assert r.status_code == 401, r.text
    with world.db.session() as s:
        assert s.scalars(select(Site).where(Site.name == "edge-7")).first() is None, "nothing recorded"
    # expired: the export is older than the token's lifetime
    with world.db.session() as s:
        row = s.get(Export, v2["version"])
        row.created_at = row.created_at - timedelta(days=30)
    r = join(world, body, t2)
    assert r.status_code == 403 and r.json()["error_name"] == "FORBIDDEN" and "expired" in r.text, r.text
    assert "export a new bundle" in r.json()["error_message"]
    for token in (t1, t2):
        assert token not in caplog.text
        assert token not in r.text


def test_join_is_idempotent_and_applies_a_changed_manifest(world: World) -> None:
    v = export(world)
    token = v["bundle"]["secrets"]["join_token"]
    entry = site_entry()
    r = join(world, join_body(v["version"], entry), token)
    assert r.status_code == 200, r.text
    site = r.json()["site"]
    assert site["status"] == "Active" and site["bundle_version"] == v["version"] and site["generation"] == 1
    assert {h["name"]: h["host_key"] for h in site["hosts"]} == {"e7-h1": "ssh-ed25519 AAAAe7-h1",
                                                                 "e7-h2": "ssh-ed25519 AAAAe7-h2"}
    assert all(h["status"] == "up" and h["measured"] == {"vcpus": 4, "ram_mb": 3000} for h in site["hosts"])
    joined = [e for e in site["events"] if e["step"] == "join"]
    assert len(joined) == 1 and "standalone" in joined[0]["info"]
    assert {e["host"] for e in site["events"] if e["step"] == "connect"} == {"e7-h1", "e7-h2"}
    assert "PRIVATE KEY" not in r.text
    # the control plane reaches the hosts with its own key, whose public half is in the bundle
    with world.db.session() as s:
        row = s.scalars(select(Site).where(Site.name == "edge-7")).one()
        assert row.secrets["ssh_private_key"] == s.get(ControlPlaneSecret, SITE_KEY).value
        assert row.spec["deployed"] == "standalone"
    assert "oasis-control-plane" in v["bundle"]["ControlPlaneAccess"]["ssh_public_key"]

    # the same join again: the same site and hosts, no duplicates
    r = join(world, join_body(v["version"], entry), token)
    assert r.status_code == 200, r.text
    again = r.json()["site"]
    assert again["id"] == site["id"] and again["generation"] == 2 and again["hosts_count"] == 2
    listed = [s for s in world.get("/v2/sites").json()["sites"] if s["name"] == "edge-7"]
    assert len(listed) == 1 and listed[0]["status"] == "Active"
    with world.db.session() as s:
        assert len(list(s.scalars(select(Host).where(Host.site_id == site["id"])))) == 2

    # a changed manifest: one host gone, one new; capacity changed
    changed = site_entry(hosts=("e7-h2", "e7-h3"))
    changed["hosts"][0]["capacity"]["vcpus"] = 8
    r = join(world, join_body(v["version"], changed), token)
    assert r.status_code == 200, r.text
    site = r.json()["site"]
    assert {h["name"] for h in site["hosts"]} == {"e7-h2", "e7-h3"}
    assert next(h for h in site["hosts"] if h["name"] == "e7-h2")["capacity"]["vcpus"] == 8
    assert "removed e7-h1" in [e for e in site["events"] if e["step"] == "join"][-1]["info"]

    # then it is a site like any other: an admin operation on it goes through the engine
    assert world.post("/v2/sites/edge-7/update", {"bundle_version": v["version"]}, who="admin").status_code == 202


def test_join_refuses_bad_input(world: World) -> None:
    v = export(world)
    token = v["bundle"]["secrets"]["join_token"]
    # a site that exists and was not deployed standalone is not taken over
    r = join(world, join_body(v["version"], site_entry(name="edge")), token)
    assert r.status_code == 409, r.text
    err = r.json()
    assert err["error_name"] == "SITE_EXISTS" and "not deployed standalone" in err["error_message"]
    with world.db.session() as s:
        assert s.scalars(select(Site).where(Site.name == "edge")).one().spec == {"default_network": "edge-net"}
    # a host enrolled with another key than the manifest pins
    body = join_body(v["version"], site_entry())
    body["hosts"]["e7-h1"]["host_key"] = "ssh-ed25519 AAAAother"
    r = join(world, body, token)
    assert r.status_code == 400 and "host key" in r.text, r.text
    # a malformed body is a clear 400, not a 500
    r = join(world, {"bundle_version": v["version"], "site": {"name": "x"}}, token)
    assert r.status_code == 400 and r.json()["error_name"], r.text
    r = world.client.post(JOIN, content=b"not json", headers={HEADER: token})
    assert r.status_code == 400 and r.json()["error_name"] == "MALFORMED_REQUEST_BODY"
    # a version beyond what the database holds (found by schemathesis as a 500)
    r = join(world, join_body(2**70, site_entry()), token)
    assert r.status_code == 400 and r.json()["error_name"] == "VALIDATION_ERROR", r.text
    r = world.post("/v2/sites/edge/update", {"bundle_version": 2**70}, who="admin")
    assert r.status_code == 400 and r.json()["error_name"] == "VALIDATION_ERROR", r.text
    with world.db.session() as s:
        assert not list(s.scalars(select(SiteEvent).where(SiteEvent.step == "join")))


def test_bundle_checks(tmp_path: Path) -> None:
    path = tmp_path / "bundle.yaml"
    old = {"version": 1, "EndpointMap": {}, "HostsEntry": [], "GlobalConfig": {}, "AllNodesConfig": {},
           "secrets": {"join_token": "t"}}
    path.write_text(yaml.safe_dump(old))
    with pytest.raises(StandaloneError, match="no ControlPlaneAccess .*older control plane"):
        load_bundle(path)
    path.write_text(yaml.safe_dump({"version": 1, "EndpointMap": {}}))
    with pytest.raises(StandaloneError, match="not a complete bundle, missing HostsEntry"):
        load_bundle(path)
    path.write_text(yaml.safe_dump({**old, "ControlPlaneAccess": {"ssh_public_key": "k"}, "secrets": {}}))
    with pytest.raises(StandaloneError, match="no join token"):
        load_bundle(path)
    path.write_text("- a list")
    with pytest.raises(StandaloneError, match="not a bundle"):
        load_bundle(path)


# --- the real lab -----------------------------------------------------------------------------------------------


def standalone(bundle: Path, manifest: Path, cwd: Path) -> subprocess.CompletedProcess:
    """The command as run at the site: its own directory, no control-plane state dir, login or database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OASIS_") and not k.startswith("OS_")}
    env["HOME"] = str(cwd)
    return subprocess.run([sys.executable, "-m", "oasis.cli.main", "site", "deploy", "--standalone",
                           "--bundle", str(bundle), "--manifest", str(manifest), "--wait"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def at_site(service: Oasis, lab: dict, tmp_path: Path, name: str) -> tuple[dict, Path, Path]:
    """(export, bundle file, site manifest file): all the site gets, in a directory of its own."""
    exp = wf.ok(service.client.post("/exports", json={}), 202)["export"]
    d = tmp_path / f"at-{name}"
    d.mkdir()
    bundle = d / "bundle.yaml"
    bundle.write_text(yaml.safe_dump({"version": exp["version"], **exp["bundle"]}))
    manifest = d / "site.yaml"
    manifest.write_text(yaml.safe_dump({"version": 1, "controller": lab["manifest"]["controller"],
                                        "sites": [site_of(lab, name)]}))
    return exp, bundle, manifest


def drop_site_key(lab: dict, authorized_keys: list[str]) -> None:
    """The site's own key off the hosts: from now on only the control plane's key lets anyone in."""
    site_pub = lab["manifest"]["controller"]["public_key"]
    for path in map(Path, authorized_keys):
        lines = path.read_text().splitlines()
        path.write_text("".join(line + "\n" for line in lines if site_pub not in line))
        assert KEY_MARK in path.read_text()


def test_standalone_deploy_on_the_lab(service: Oasis, lab: dict, tmp_path: Path) -> None:
    client = service.client
    exp, bundle, manifest = at_site(service, lab, tmp_path, "central")
    central = site_of(lab, "central")
    assert client.get("/sites/central").status_code == 404

    r = standalone(bundle, manifest, bundle.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "central" in r.stdout and "Active" in r.stdout
    assert exp["bundle"]["secrets"]["join_token"] not in r.stdout + r.stderr
    assert set(bundle.parent.iterdir()) == {bundle, manifest}, "nothing left at the site but its two files"

    site = wf.ok(client.get("/sites/central"))["site"]
    assert site["status"] == "Active" and site["bundle_version"] == exp["version"], site
    assert {h["name"]: h["host_key"] for h in site["hosts"]} == {h["name"]: h["host_key"] for h in central["hosts"]}
    assert all(h["status"] == "up" and h["measured"]["vcpus"] >= 1 for h in site["hosts"])
    assert any(e["step"] == "join" and "standalone" in e["info"] for e in site["events"])
    steps = {(e["step"], e["host"]) for e in site["events"] if e["successful"]}
    for h in central["hosts"]:
        assert {(s, h["name"]) for s in ("connect", "runtime", "files", "capacity", "authorize")} <= steps
        config = yaml.safe_load((Path(h["base_dir"]) / "oasis-site" / "global.yaml").read_text())
        assert config["bundle_version"] == exp["version"] and config["site"] == "central"
        assert KEY_MARK in Path(h["authorized_keys"]).read_text()
    assert "central" in {s["name"] for s in wf.ok(client.get("/sites"))["sites"]}

    # again: the same site and hosts, nothing doubled on the hosts either
    r = standalone(bundle, manifest, bundle.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    again = wf.ok(client.get("/sites/central"))["site"]
    assert again["id"] == site["id"] and again["hosts_count"] == len(central["hosts"])
    assert again["generation"] == site["generation"] + 1
    for h in central["hosts"]:
        assert Path(h["authorized_keys"]).read_text().count(KEY_MARK) == 1

    # from now on the control plane has its own key only: the site's key is taken off the hosts, and a cluster
    # still comes up (the engine installs the cluster's key with the control plane's)
    drop_site_key(lab, [h["authorized_keys"] for h in central["hosts"]])
    cid = wf.create_cluster(client, "dask", "after-join", workers=1, flavor="1", availability_zone="central")
    c = wf.wait_cluster(client, cid)
    assert c["status"] == "Active"
    wf.ok(client.delete(f"/clusters/{cid}"), 204)
    wf.wait_gone(client, cid)

    wf.ok(client.delete("/sites/central"), 202)
    wait_until(lambda: client.get("/sites/central").status_code == 404, 60, "central to be deleted", 0.2)
    for h in central["hosts"]:
        assert not (Path(h["base_dir"]) / "oasis-site").exists()


def test_standalone_site_behind_a_gateway(service: Oasis, lab: dict, tmp_path: Path) -> None:
    """edge-1 is reached through its gateway host: the control plane's key is authorized there too, and the
    control plane runs an update on the site through the gateway with its own key alone."""
    client = service.client
    _, bundle, manifest = at_site(service, lab, tmp_path, "edge-1")
    edge = site_of(lab, "edge-1")
    r = standalone(bundle, manifest, bundle.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    site = wf.ok(client.get("/sites/edge-1"))["site"]
    assert site["status"] == "Active" and site["access"] == "gateway", site
    assert any(e["step"] == "authorize" and e["host"] == edge["gateway"]["name"] for e in site["events"])
    drop_site_key(lab, [h["authorized_keys"] for h in edge["hosts"]] + [edge["gateway"]["authorized_keys"]])

    newer = wf.ok(client.post("/exports", json={}), 202)["export"]["version"]
    wf.ok(client.post("/sites/edge-1/update", json={"bundle_version": newer}), 202)

    def settled() -> dict | None:
        s = wf.ok(client.get("/sites/edge-1"))["site"]
        return s if s["operation"] is None else None
    site = wait_until(settled, 90, "edge-1's update", 0.2)
    assert site["status"] == "Active" and site["bundle_version"] == newer, site["status_description"]
    for h in edge["hosts"]:
        config = yaml.safe_load((Path(h["base_dir"]) / "oasis-site" / "global.yaml").read_text())
        assert config["bundle_version"] == newer
