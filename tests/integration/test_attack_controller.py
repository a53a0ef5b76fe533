"""Attacks on the controller from outside, against a real `oasis up`: a bundle holder tries to make it run a
command (a join, then a rejoin, declaring a proxy command), and a user points data sources and binaries at its own
API, loopback and the metadata address. Each is refused, the marker file of the command never appears although the
engine's health checks run, and the database file holds no secret in the clear."""
from __future__ import annotations

import stat
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import assert_no_secret_in_database
from tests.integration import workflow as wf
from tests.integration.services import Oasis, free_port, wait_until

pytestmark = pytest.mark.service(clean_log=True)

HEADER = "X-Oasis-Join-Token"


def _entry(name: str, ssh_port: int, **access: object) -> dict:
    # The hosts are on loopback, at a port nothing listens on: the health checks stay on this machine.
    return {"name": name, "access": "direct", "management_network": "net", **access,
            "networks": [{"name": "net", "cidr": "127.0.0.0/8"}],
            "hosts": [{"name": f"{name}-h1", "addresses": {"net": "127.0.0.1"}, "ssh_port": ssh_port,
                       "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAttackAttackAttackAttackAttackAttackAtt",
                       "base_dir": "/nonexistent", "capacity": {"vcpus": 1, "ram_mb": 512, "disk_gb": 1}}]}


def _join(service: Oasis, version: int, token: str, entry: dict) -> httpx.Response:
    body = {"bundle_version": version, "site": entry, "runtime": {"python": "/usr/bin/python3"},
            "hosts": {h["name"]: {"host_key": h["host_key"]} for h in entry["hosts"]}}
    return httpx.post(f"{service.url}/v2/sites/join", json=body, headers={HEADER: token}, timeout=30)


def _checked_at(service: Oasis, name: str) -> str | None:
    return wf.ok(service.client.get(f"/sites/{name}"))["site"]["health"]["checked_at"]


def test_a_bundle_holder_cannot_run_a_command_on_the_controller(service: Oasis, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    command = f"sh -c 'touch {marker}; exec nc {{host}} {{port}}'"
    export = wf.ok(service.client.post("/exports", json={}), 202)["export"]
    version, token = export["version"], export["bundle"]["secrets"]["join_token"]
    name = f"edge-{uuid.uuid4().hex[:6]}"
    port = free_port()

    r = _join(service, version, token, _entry(name, port, access="proxy_command", proxy_command=command))
    assert r.status_code == 403, r.text
    assert "a proxy command can only be set by an admin registering the site's manifest" in r.text
    # a direct site joins; its rejoin cannot swap a command in, not even beside `direct`
    assert _join(service, version, token, _entry(name, port)).status_code == 200
    for swap in ({"access": "proxy_command", "proxy_command": command}, {"proxy_command": command}):
        r = _join(service, version, token, _entry(name, port, **swap))
        assert r.status_code == 403, r.text

    # The engine checks the site's hosts every period: two checks after the refused joins, and no marker.
    first = wait_until(lambda: _checked_at(service, name), 60, "the joined site's first health check", 0.5)
    wait_until(lambda: (_checked_at(service, name) or "") > first, 60, "a second health check", 0.5)
    assert not marker.exists(), "the controller ran a command a bundle holder declared"
    shown = wf.ok(service.client.get(f"/sites/{name}"))["site"]
    assert shown["access"] == "direct" and shown["proxy_command"] is None
    assert_no_secret_in_database(service.state_dir, [token])


def test_data_sources_and_binaries_cannot_point_at_the_controller(service: Oasis) -> None:
    api_port = service.url.rsplit(":", 1)[1]
    for endpoint in ("http://169.254.169.254/latest/meta-data/", f"http://127.0.0.1:{api_port}/v3",
                     f"http://localhost:{api_port}", "http://[::1]:80", "http://[fe80::a9fe:a9fe]/"):
        r = service.client.post("/data-sources", json={
            "name": f"ssrf-{uuid.uuid4().hex[:6]}", "type": "s3", "url": "s3://b/k",
            "credentials": {"accesskey": "a", "secretkey": "s", "endpoint": endpoint}})
        assert r.status_code == 400 and "credentials.endpoint" in r.text, (endpoint, r.text)
        r = service.client.post("/data-sources", json={
            "name": f"ssrf-{uuid.uuid4().hex[:6]}", "type": "swift", "url": "swift://c/o",
            "credentials": {"user": "u", "password": "p", "auth_url": endpoint}})
        assert r.status_code == 400 and "credentials.auth_url" in r.text, (endpoint, r.text)
        r = service.client.post("/job-binaries", json={
            "name": f"ssrf-{uuid.uuid4().hex[:6]}.py", "url": "s3://b/main.py",
            "extra": {"accesskey": "a", "secretkey": "s", "endpoint": endpoint}})
        assert r.status_code == 400 and "extra.endpoint" in r.text, (endpoint, r.text)


def test_the_state_dir_is_private(service: Oasis) -> None:
    assert stat.S_IMODE(service.state_dir.stat().st_mode) == 0o700
    for path in service.state_dir.iterdir():
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
