"""The control plane's export: contents, versions, admin only, no site credential ever in it; and `oasis export`
writing the bundle mode 0600, never over an existing file without --force."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from oasis.cli import common
from oasis.cli.main import app
from oasis.db.models import Host, Site
from oasis.sites.export import (
    BUNDLE_KEYS,
    build_bundle,
    hosts_file,
    object_store_description,
)
from tests.unit.conftest import World

SITE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA-site-secret\n-----END OPENSSH PRIVATE KEY-----\n"


@pytest.fixture
def edge(world: World) -> World:
    with world.db.session() as s:
        site = s.query(Site).filter_by(name="edge").one()
        site.secrets = {"ssh_private_key": SITE_KEY}
        s.add(Host(site_id=site.id, name="edge-h1", access="ssh", address="10.9.0.11", vcpus=2, ram_mb=1024,
                   disk_gb=10, base_dir="/srv/edge-h1", spec={"addresses": {"edge-net": "10.9.0.11"},
                                                             "host_key": "ssh-ed25519 AAAAhostkey"}))
    return world


def test_bundle_contents_without_site_secrets(edge: World) -> None:
    with edge.db.session() as s:
        bundle = build_bundle(s, "http://10.0.0.1:8386", "swift+http://tester:testing@10.0.0.5:8080/auth/v1.0"
                                                         "?container=oasis", "10.0.0.1", 1)
    assert set(bundle) == set(BUNDLE_KEYS)
    em = bundle["EndpointMap"]
    assert em["api"] == em["engine_callback"] == "http://10.0.0.1:8386"
    assert em["identity"] == "http://10.0.0.1:8386/v3"
    assert em["object_store"] == {"type": "swift", "endpoint": "http://10.0.0.5:8080/auth/v1.0", "container": "oasis"}
    assert bundle["GlobalConfig"]["dns_domain"] == "oasis.local"
    assert {"dask", "spark"} <= set(bundle["GlobalConfig"]["plugins"])
    assert bundle["GlobalConfig"]["time_server"]
    assert any("oasis-api" in line for line in bundle["HostsEntry"])
    sites = bundle["AllNodesConfig"]["sites"]
    assert {"local", "edge"} <= set(sites)
    assert sites["edge"]["hosts"][0] == {"name": "edge-h1", "fqdn": "edge-h1.edge.oasis.local",
                                         "address": "10.9.0.11", "addresses": {"edge-net": "10.9.0.11"}}
    assert "10.9.0.11 edge-h1.edge.oasis.local edge-h1" in hosts_file(bundle)
    text = yaml.safe_dump(bundle)
    for secret in ("site-secret", "PRIVATE KEY", "testing", "tester", "ssh_private_key"):
        assert secret not in text
    assert len(bundle["secrets"]["join_token"]) >= 32


def test_object_store_description_drops_credentials() -> None:
    assert object_store_description(None) == {"type": "file"}
    d = object_store_description("s3+https://AKIAX:topsecret@s3.example:9000?bucket=b&secret=x")
    assert d == {"type": "s3", "endpoint": "https://s3.example:9000", "bucket": "b"}


def test_export_versions_admin_only(edge: World) -> None:
    assert edge.post("/v2/exports", {}).status_code == 403  # alice is a member
    assert edge.get("/v2/exports").status_code == 403
    r1 = edge.post("/v2/exports", {}, who="admin")
    r2 = edge.post("/v2/exports", {}, who="admin")
    assert r1.status_code == r2.status_code == 202, r1.text
    v1, v2 = r1.json()["export"], r2.json()["export"]
    assert v2["version"] == v1["version"] + 1
    assert v1["bundle"]["secrets"] != v2["bundle"]["secrets"], "a join token per bundle version"
    assert v1["bundle"]["ControlPlaneAccess"] == v2["bundle"]["ControlPlaneAccess"], "one key per control plane"
    assert SITE_KEY.splitlines()[1] not in r1.text
    listed = edge.get("/v2/exports", who="admin").json()["exports"]
    assert [e["version"] for e in listed] == [v1["version"], v2["version"]] and "bundle" not in listed[0]
    old = edge.get(f"/v2/exports/{v1['version']}", who="admin").json()["export"]
    assert old["bundle"] == v1["bundle"]
    assert edge.get("/v2/exports/999", who="admin").status_code == 404
    assert edge.get("/v2/exports/x", who="admin").status_code == 404


@pytest.fixture
def cli(edge: World, monkeypatch: pytest.MonkeyPatch):
    def forward(request: httpx.Request) -> httpx.Response:
        r = edge.client.request(request.method, request.url.raw_path.decode(), content=request.content,
                                headers={k: v for k, v in request.headers.items() if k.lower() != "host"})
        return httpx.Response(r.status_code, headers=r.headers, content=r.content)

    monkeypatch.setattr(common, "TRANSPORT", httpx.MockTransport(forward))
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, ["--url", "http://testserver/v2", "--token", edge.tokens["admin"], *args])
    return run


def test_cli_export_file_mode_and_force(cli, tmp_path: Path) -> None:
    out = tmp_path / "control-plane-export.yaml"
    r = cli("export", "--output", str(out))
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    first = yaml.safe_load(out.read_text())
    assert set(BUNDLE_KEYS) <= set(first) and first["version"] >= 1
    assert "PRIVATE KEY" not in out.read_text()

    r = cli("export", "--output", str(out))
    assert r.exit_code == 1 and "exists" in r.output and "--force" in r.output
    assert yaml.safe_load(out.read_text())["version"] == first["version"], "not overwritten"

    os.chmod(out, 0o644)
    r = cli("export", "--output", str(out), "--force")
    assert r.exit_code == 0, r.output
    second = yaml.safe_load(out.read_text())
    assert second["version"] == first["version"] + 1
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600

    old = tmp_path / "old.yaml"
    r = cli("export", "--output", str(old), "--version", str(first["version"]))
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(old.read_text()) == first
