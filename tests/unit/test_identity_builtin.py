"""The builtin identity backend: password hashes, tokens, roles; and the Keystone v3 shim over it."""
from __future__ import annotations

from datetime import timedelta

import pytest

from oasis.db.models import Token
from oasis.identity import builtin
from oasis.identity.policy import Forbidden, authorize
from oasis.identity.principal import Principal

from tests.unit.conftest import PASSWORD, World


def test_password_hash_is_salted_and_verifies() -> None:
    a, b = builtin.hash_password("pw"), builtin.hash_password("pw")
    assert a != b and "pw" not in a
    assert builtin.verify_password("pw", a) and builtin.verify_password("pw", b)
    assert not builtin.verify_password("pW", a)
    assert not builtin.verify_password("pw", "garbage")
    assert not builtin.verify_password("pw", builtin.UNUSABLE)


def test_tokens_store_only_a_hash_and_expire(world: World) -> None:
    with world.db.session() as s:
        project = builtin.ensure_project(s, "p9")
        assert builtin.ensure_project(s, "p9").id == project.id
        user = builtin.ensure_user(s, "dave", None)  # no password: cannot log in
        assert builtin.authenticate(s, "dave", None, "") is None
        builtin.assign_role(s, user, project, "member")
        builtin.assign_role(s, user, project, "member")  # idempotent
        with pytest.raises(ValueError):
            builtin.assign_role(s, user, project, "superuser")
        token = builtin.issue_token(s, user, project, 1)
        assert s.get(Token, token) is None  # the token itself is not a key in the table
        p = builtin.check_token(s, token)
        assert p is not None and (p.user_name, p.project_name, p.roles, p.is_admin) == ("dave", "p9", ["member"], False)
        row = s.query(Token).filter(Token.user_id == user.id).one()
        row.expires_at -= timedelta(hours=2)
        s.flush()
        assert builtin.check_token(s, token) is None
        assert builtin.check_token(s, "") is None


def test_policy() -> None:
    reader = Principal("u", "u", "p", "p", ["reader"])
    member = Principal("u", "u", "p", "p", ["member"])
    authorize(reader, "cluster:get")
    authorize(member, "cluster:create")
    with pytest.raises(Forbidden):
        authorize(reader, "cluster:create")
    with pytest.raises(Forbidden):
        authorize(member, "plugin:update")


def _password_auth(user: str, password: str, project: dict | None = None) -> dict:
    body: dict = {"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": user, "password": password, "domain": {"name": "Default"}}}}}}
    if project is not None:
        body["auth"]["scope"] = {"project": project}
    return body


def test_keystone_password_token_and_catalog(world: World) -> None:
    assert world.client.get("/v3").json()["version"]["links"][0]["href"] == "http://testserver/v3/"
    r = world.client.post("/v3/auth/tokens", json=_password_auth("alice", PASSWORD,
                                                                 {"name": "p1", "domain": {"name": "Default"}}))
    assert r.status_code == 201
    token = r.headers["X-Subject-Token"]
    body = r.json()["token"]
    assert body["project"]["id"] == world.projects["p1"] and body["user"]["name"] == "alice"
    assert [role["name"] for role in body["roles"]] == ["member"]
    assert body["expires_at"].endswith("Z")
    sahara = next(c for c in body["catalog"] if c["type"] == "data-processing")
    assert {e["interface"] for e in sahara["endpoints"]} == {"public", "internal", "admin"}
    assert sahara["endpoints"][0]["url"] == "http://testserver/v2"
    assert PASSWORD not in r.text
    # The token works on the data-processing API.
    assert world.client.get("/v2/clusters", headers={"X-Auth-Token": token}).status_code == 200
    # Scoped by project id, and re-scoped with the token method.
    r2 = world.client.post("/v3/auth/tokens", json={"auth": {"identity": {"methods": ["token"], "token": {"id": token}},
                                                             "scope": {"project": {"id": world.projects["p1"]}}}})
    assert r2.status_code == 201 and r2.headers["X-Subject-Token"] != token
    # Validation.
    v = world.client.get("/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": r2.headers["X-Subject-Token"]})
    assert v.status_code == 200 and v.json()["token"]["user"]["name"] == "alice"
    missing = world.client.get("/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": "nope"})
    assert missing.status_code == 404
    # Revocation.
    assert world.client.delete("/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}).status_code == 204
    assert world.client.get("/v2/clusters", headers={"X-Auth-Token": token}).status_code == 401


def test_keystone_refusals(world: World) -> None:
    assert world.client.post("/v3/auth/tokens", json=_password_auth("alice", "wrong")).status_code == 401
    assert world.client.post("/v3/auth/tokens", json=_password_auth("nobody", PASSWORD)).status_code == 401
    # alice has no role on p2
    r = world.client.post("/v3/auth/tokens", json=_password_auth("alice", PASSWORD, {"name": "p2"}))
    assert r.status_code == 401 and r.json()["error"]["code"] == 401
    assert world.client.post("/v3/auth/tokens", json={"auth": {}}).status_code == 401
    assert world.client.post("/v3/auth/tokens", content=b"{{").status_code == 400
    assert world.client.post("/v3/auth/tokens", json=[1]).status_code == 401
    # Unscoped: the user's only project.
    r = world.client.post("/v3/auth/tokens", json=_password_auth("bob", PASSWORD))
    assert r.status_code == 201 and r.json()["token"]["project"]["name"] == "p2"
