"""The Keystone backend against a real Keystone 30 (tests/keystone_service.py): the app in-process on the world's
database, its `KeystoneIdentity` asking Keystone for each token, on a clock the test moves (so the cache bound is
checked without waiting for it, and without asserting any timing)."""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import update

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from oasis.api.app import create_app
from oasis.config import KeystoneAuth, Settings
from oasis.db.models import Host
from oasis.db.session import Database
from oasis.identity.keystone import KeystoneIdentity
from oasis.storage.filesystem import FilesystemStore
from tests.keystone_service import SERVICE_PROJECT, SERVICE_USER, KeystoneServer
from tests.world import Template, cluster_body

BOUND = 5.0  # the cache bound of these tests, in seconds of the test's own clock


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class KsWorld:
    client: TestClient
    identity: KeystoneIdentity
    clock: Clock
    keystone: KeystoneServer

    def h(self, token: str) -> dict[str, str]:
        return {"X-Auth-Token": token}


def auth_of(keystone: KeystoneServer, cache_time: float = BOUND) -> KeystoneAuth:
    return KeystoneAuth(auth_url=keystone.url, username=SERVICE_USER, password=keystone.service_password,
                        project_name=SERVICE_PROJECT, token_cache_time=cache_time,
                        www_authenticate_uri=keystone.url)


@pytest.fixture
def ks_world(keystone: KeystoneServer, tmp_path: Path, world_template: Template) -> Iterator[KsWorld]:
    settings = Settings(state_dir=tmp_path / "state", identity_backend="keystone", keystone=auth_of(keystone))
    world_template.copy_to(settings.database_url)
    db = Database(settings.database_url)
    with db.session() as s:
        s.execute(update(Host).values(base_dir=str(tmp_path / "hosts")))
    app = create_app(settings, db, FilesystemStore(settings.objects_dir))
    identity = app.state.deps.identity
    assert isinstance(identity, KeystoneIdentity)
    clock = Clock()
    identity._clock = clock
    with TestClient(app, raise_server_exceptions=False) as client:
        yield KsWorld(client, identity, clock, keystone)
    db.engine.dispose()


def test_a_keystone_token_maps_onto_its_project_and_roles(ks_world: KsWorld) -> None:
    ks = ks_world.keystone
    p = ks_world.identity.authenticate_token(ks.token("alice"))
    assert p is not None and (p.user_name, p.project_name, p.project_id) == ("alice", "alpha", ks.projects["alpha"])
    assert "member" in p.roles and not p.is_admin and p.expires_at is not None and p.issued_at is not None
    reader = ks_world.identity.authenticate_token(ks.token("rita"))
    assert reader is not None and reader.roles == ["reader"]
    admin = ks_world.identity.authenticate_token(ks.token("admin"))
    assert admin is not None and admin.is_admin
    assert ks_world.identity.authenticate_token("not-a-token") is None


def test_a_revoked_token_is_refused_once_the_cache_bound_has_passed(ks_world: KsWorld) -> None:
    token = ks_world.keystone.token("alice")
    start = ks_world.identity.validations
    assert ks_world.client.get("/v2/clusters", headers=ks_world.h(token)).status_code == 200
    assert ks_world.client.get("/v2/clusters", headers=ks_world.h(token)).status_code == 200
    assert ks_world.identity.validations == start + 1  # the second answer came from the cache
    ks_world.keystone.revoke(token)
    ks_world.clock.now += BOUND - 0.5
    # within the bound the cached answer stands (what the bound allows, and what it saves)
    assert ks_world.client.get("/v2/clusters", headers=ks_world.h(token)).status_code == 200
    assert ks_world.identity.validations == start + 1
    ks_world.clock.now += 1.0  # past the bound: Keystone is asked again, and says no
    r = ks_world.client.get("/v2/clusters", headers=ks_world.h(token))
    assert r.status_code == 401
    assert ks_world.identity.validations == start + 2


def test_with_no_cache_every_request_asks_keystone(keystone: KeystoneServer) -> None:
    identity = KeystoneIdentity(auth_of(keystone, cache_time=0))
    token = keystone.token("bob")
    for _ in range(3):
        assert identity.authenticate_token(token) is not None
    assert identity.validations == 3
    keystone.revoke(token)
    assert identity.authenticate_token(token) is None


def test_401_tells_where_to_authenticate(ks_world: KsWorld) -> None:
    expected = f'Keystone uri="{ks_world.keystone.url}"'
    for headers in ({}, {"X-Auth-Token": "bogus"}):
        for path in ("/v2/clusters", "/v1.1/whatever/clusters"):
            r = ks_world.client.get(path, headers=headers)
            assert r.status_code == 401 and r.headers["WWW-Authenticate"] == expected, (path, r.text)
    # the builtin /v3 shim issues no tokens: they are Keystone's
    r = ks_world.client.post("/v3/auth/tokens", json={"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": "alice", "password": "x", "domain": {"id": "default"}}}}}})
    assert r.status_code == 404 and ks_world.keystone.url in r.text


def test_a_member_of_one_project_cannot_see_the_cluster_of_another(ks_world: KsWorld) -> None:
    ks = ks_world.keystone
    alice, bob = ks.token("alice"), ks.token("bob")
    r = ks_world.client.post("/v2/clusters", json=cluster_body("ks-alpha"), headers=ks_world.h(alice))
    assert r.status_code == 202, r.text
    cluster = r.json()["cluster"]
    assert cluster["project_id"] == ks.projects["alpha"]
    assert ks_world.client.get(f"/v2/clusters/{cluster['id']}", headers=ks_world.h(alice)).status_code == 200
    assert ks_world.client.get(f"/v2/clusters/{cluster['id']}", headers=ks_world.h(bob)).status_code == 404
    assert ks_world.client.get("/v2/clusters", headers=ks_world.h(bob)).json()["clusters"] == []
    assert ks_world.client.delete(f"/v2/clusters/{cluster['id']}", headers=ks_world.h(bob)).status_code == 404
    # the project segment of v1.1 is the token's project
    r = ks_world.client.get(f"/v1.1/{ks.projects['alpha']}/clusters", headers=ks_world.h(bob))
    assert r.status_code == 401


def test_a_reader_may_look_but_not_create(ks_world: KsWorld) -> None:
    rita = ks_world.keystone.token("rita")
    assert ks_world.client.get("/v2/clusters", headers=ks_world.h(rita)).status_code == 200
    r = ks_world.client.post("/v2/clusters", json=cluster_body("ks-reader"), headers=ks_world.h(rita))
    assert r.status_code == 403, r.text


def test_trusts_on_keystone(keystone: KeystoneServer) -> None:
    identity = KeystoneIdentity(auth_of(keystone))
    token = keystone.token("alice")
    alice = identity.authenticate_token(token)
    assert alice is not None
    trust_id = identity.create_trust(token, alice, roles=["member"])
    acting = identity.trust_principal(trust_id)
    # impersonation: the trust-scoped token stands for alice, on her project, with the delegated role
    assert acting is not None and (acting.user_id, acting.project_id) == (alice.user_id, alice.project_id)
    assert "member" in acting.roles
    identity.delete_trust(trust_id)  # the service user may: it has the admin role on its project
    assert identity.trust_principal(trust_id) is None
    identity.delete_trust(trust_id)  # already gone: no error
