"""Nothing from outside reaches into the controller: a join cannot bring a proxy command (which the controller
would run), members never see one, and credentials cannot point the controller at its own services, loopback,
link-local or metadata addresses unless the deployment allowlists them."""
from __future__ import annotations

import socket

import pytest
from sqlalchemy import select

from oasis.db.models import Site
from oasis.storage import StoreError, store_for
from oasis.storage.endpoints import EndpointPolicy, EndpointRefused, set_policy
from tests.unit.conftest import World

JOIN = "/v2/sites/join"
HEADER = "X-Oasis-Join-Token"
MARKER_COMMAND = "sh -c 'touch /tmp/oasis-marker; exec nc {host} {port}'"


def _export(world: World) -> tuple[int, str]:
    r = world.post("/v2/exports", {}, who="admin")
    assert r.status_code == 202, r.text
    export = r.json()["export"]
    return export["version"], export["bundle"]["secrets"]["join_token"]


def _entry(name: str = "edge-9", **access: object) -> dict:
    return {"name": name, "access": "direct", "management_network": "e9-net", **access,
            "networks": [{"name": "e9-net", "cidr": "10.79.0.0/24"}],
            "hosts": [{"name": "e9-h1", "addresses": {"e9-net": "10.79.0.11"}, "host_key": "ssh-ed25519 AAAAe9",
                       "base_dir": "/srv/e9", "capacity": {"vcpus": 2, "ram_mb": 2048, "disk_gb": 10}}]}


def _join(world: World, version: int, token: str, entry: dict):  # noqa: ANN202
    body = {"bundle_version": version, "site": entry, "runtime": {"python": "/usr/bin/python3"},
            "hosts": {h["name"]: {"host_key": h["host_key"]} for h in entry["hosts"]}}
    return world.client.post(JOIN, json=body, headers={HEADER: token})


@pytest.mark.parametrize("access", [{"access": "proxy_command", "proxy_command": MARKER_COMMAND},
                                    {"proxy_command": MARKER_COMMAND}])
def test_a_join_carrying_a_proxy_command_is_403(world: World, access: dict) -> None:
    version, token = _export(world)
    r = _join(world, version, token, _entry(**access))
    assert r.status_code == 403, r.text
    assert "a proxy command can only be set by an admin registering the site's manifest" in r.json()["error_message"]
    with world.db.session() as s:
        assert s.scalars(select(Site).where(Site.name == "edge-9")).first() is None


def test_a_rejoin_cannot_swap_in_a_proxy_command(world: World) -> None:
    version, token = _export(world)
    assert _join(world, version, token, _entry()).status_code == 200
    r = _join(world, version, token, _entry(access="proxy_command", proxy_command=MARKER_COMMAND))
    assert r.status_code == 403, r.text
    with world.db.session() as s:
        spec = s.scalars(select(Site).where(Site.name == "edge-9")).one().spec
    assert spec["access"] == "direct" and spec["proxy_command"] is None


def test_only_admins_see_a_sites_proxy_command(world: World) -> None:
    manifest = {"sites": [_entry("edge-p", access="proxy_command", proxy_command="nc {host} {port}")]}
    r = world.post("/v2/sites", {"manifest": manifest, "private_key": "k"}, who="admin")
    assert r.status_code == 202, r.text
    assert r.json()["sites"][0]["proxy_command"] == "nc {host} {port}"
    assert world.post("/v2/sites", {"manifest": manifest, "private_key": "k"}).status_code == 403
    for path in ("/v2/sites", "/v2/sites/edge-p"):
        member = world.get(path).json()
        views = member.get("sites") or [member["site"]]
        assert all("proxy_command" not in v for v in views) and "nc {host}" not in str(member), member
        assert "nc {host} {port}" in str(world.get(path, who="admin").json())


ATTACKS = ["http://169.254.169.254/latest/meta-data/", "http://[fe80::1]:8080", "http://127.0.0.1:8386/v3",
           "http://[::1]:8080", "https://0.0.0.0", "http://[::ffff:127.0.0.1]:80", "169.254.169.254:80"]


@pytest.mark.parametrize("endpoint", ATTACKS)
def test_data_sources_and_binaries_may_not_point_at_the_controller(world: World, endpoint: str) -> None:
    r = world.post("/v2/data-sources", {"name": "ds", "type": "s3", "url": "s3://b/k",
                                        "credentials": {"accesskey": "a", "secretkey": "s", "endpoint": endpoint}})
    assert r.status_code == 400, r.text
    message = r.json()["error_message"]
    assert "credentials.endpoint" in message and ("loopback" in message or "link-local" in message or
                                                  "metadata" in message or "unspecified" in message), message
    r = world.post("/v2/data-sources", {"name": "ds", "type": "swift", "url": "swift://c/o",
                                        "credentials": {"user": "u", "password": "p", "auth_url": endpoint}})
    assert r.status_code == 400 and "credentials.auth_url" in r.text, r.text
    r = world.post("/v2/job-binaries", {"name": "b.py", "url": "s3://b/b.py",
                                        "extra": {"accesskey": "a", "secretkey": "s", "endpoint": endpoint}})
    assert r.status_code == 400 and "extra.endpoint" in r.text, r.text
    r = world.post("/v2/job-binaries", {"name": "b.py", "url": "swift://c/b.py",
                                        "extra": {"user": "u", "password": "p", "storage_url": endpoint}})
    assert r.status_code == 400 and "extra.storage_url" in r.text, r.text


def test_a_name_that_resolves_to_loopback_is_refused(world: World) -> None:
    assert socket.gethostbyname("localhost").startswith("127.")
    r = world.post("/v2/data-sources", {"name": "ds", "type": "s3", "url": "s3://b/k", "credentials": {
        "accesskey": "a", "secretkey": "s", "endpoint": "http://localhost:9000"}})
    assert r.status_code == 400 and "localhost (127." in r.text and "loopback" in r.text, r.text


def test_updates_are_checked_too(world: World) -> None:
    r = world.post("/v2/data-sources", {"name": "ds", "type": "s3", "url": "s3://b/k", "credentials": {
        "accesskey": "a", "secretkey": "s", "endpoint": "http://192.0.2.10:9000"}})
    assert r.status_code == 202, r.text
    ds = r.json()["data_source"]["id"]
    r = world.patch(f"/v2/data-sources/{ds}", {"credentials": {"accesskey": "a", "secretkey": "s",
                                                               "endpoint": "http://169.254.169.254"}})
    assert r.status_code == 400 and "metadata" in r.text, r.text


def test_the_controllers_own_address_is_refused() -> None:
    policy = EndpointPolicy.build([], listen_host="192.0.2.77")
    with pytest.raises(EndpointRefused, match="controller itself"):
        policy.check_url("http://192.0.2.77:9999", "endpoint")
    policy.check_url("http://192.0.2.78:9999", "endpoint")  # another machine


def test_an_allowlisted_endpoint_is_accepted(world: World) -> None:
    world.settings.allowed_endpoints = ["127.0.0.1:9000", "169.254.10.0/24"]
    for endpoint in ("http://127.0.0.1:9000", "http://169.254.10.5"):
        r = world.post("/v2/data-sources", {"name": f"ds-{len(endpoint)}", "type": "s3", "url": "s3://b/k",
                                            "credentials": {"accesskey": "a", "secretkey": "s", "endpoint": endpoint}})
        assert r.status_code == 202, r.text
    r = world.post("/v2/data-sources", {"name": "other-port", "type": "s3", "url": "s3://b/k", "credentials": {
        "accesskey": "a", "secretkey": "s", "endpoint": "http://127.0.0.1:9001"}})
    assert r.status_code == 400, r.text  # the allowlist names a port: only that one


def test_the_deployments_own_store_is_always_allowed() -> None:
    policy = EndpointPolicy.build([], listen_host="127.0.0.1", trusted_urls=["http://127.0.0.1:8080/auth/v1.0"])
    policy.check_url("http://127.0.0.1:8080/auth/v1.0", "auth_url")
    with pytest.raises(EndpointRefused):
        policy.check_url("http://127.0.0.1:8081", "auth_url")


def test_the_engine_checks_again_before_it_connects() -> None:
    """A name checked at the API may resolve to loopback by the time the engine connects (DNS rebinding): the
    store the engine opens for a user's credentials refuses it then, before any request."""
    set_policy(EndpointPolicy.build([]))
    try:
        with pytest.raises(StoreError, match="loopback"):
            store_for("s3://b/k", {"accesskey": "a", "secretkey": "s", "endpoint": "http://localhost:1"})
        with pytest.raises(StoreError, match="metadata"):
            store_for("swift://c/k", {"user": "u", "password": "p", "auth_url": "http://169.254.169.254/v1"})
    finally:
        set_policy(None)
