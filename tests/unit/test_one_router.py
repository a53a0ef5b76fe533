"""One route table for the whole server: Sahara's resources, the version documents, the site join and Keystone's
identity subset are all RouteSpecs, served by the one wrapper (authentication, validation, error envelopes, the
database-conflict and unhandled-error paths) and published by the OpenAPI document generated from the table."""
from __future__ import annotations

import logging

import pytest
from sqlalchemy.exc import IntegrityError
from starlette.routing import Route

from oasis.api import keystone
from oasis.api.dispatch import Dispatch
from oasis.identity import admin
from tests.unit.conftest import PASSWORD, World


def test_every_route_comes_from_the_table(world: World) -> None:
    app = world.client.app
    names = {spec.handler.__name__ for spec in app.state.api_routes.specs}
    served = [r for top in app.routes if isinstance(top, Dispatch) for r in top.routes if isinstance(r, Route)]
    assert served and all(r.endpoint.__name__ in names for r in served)
    table = {(spec.method, spec.path_in(v)) for spec in app.state.api_routes.specs for v in spec.versions or ("",)}
    for probe in [("GET", "/"), ("GET", "/v2"), ("GET", "/v3"), ("POST", "/v3/auth/tokens"),
                  ("GET", "/v3/auth/tokens"), ("DELETE", "/v3/auth/tokens"), ("POST", "/v3/projects"),
                  ("PATCH", "/v3/users/{user_id}"), ("HEAD", "/v3/projects/{project_id}/users/{user_id}/roles/{role_id}"),
                  ("POST", "/v2/sites/join")]:
        assert probe in table, probe


def test_openapi_is_generated_for_identity_and_the_join(world: World) -> None:
    doc = world.client.get("/openapi.json").json()
    ops = {(m.upper(), p): op for p, item in doc["paths"].items() for m, op in item.items()}
    for spec in world.client.app.state.api_routes.specs:
        for version in spec.versions or ("",):
            assert (spec.method, spec.path_in(version)) in ops, (spec.method, spec.path, version)
    issue = ops[("POST", "/v3/auth/tokens")]
    assert issue["security"] == [] and "201" in issue["responses"]
    assert issue["requestBody"]["content"]["application/json"]["schema"]["required"] == ["auth"]
    assert issue["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/KeystoneError")
    create = ops[("POST", "/v3/users")]
    assert "security" not in create and {"201", "409"} <= set(create["responses"])
    assert create["requestBody"]["content"]["application/json"]["schema"]["required"] == ["user"]
    assert ops[("GET", "/v3/auth/tokens")]["parameters"][0]["name"] == "X-Subject-Token"
    join = ops[("POST", "/v2/sites/join")]
    assert join["security"] == [{"join_token": []}] and {"200", "401", "409"} <= set(join["responses"])
    assert join["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    assert ops[("GET", "/")]["security"] == [] and "300" in ops[("GET", "/")]["responses"]


def test_identity_errors_are_in_keystone_shape(world: World) -> None:
    r = world.client.get("/v3/projects")
    assert r.status_code == 401 and r.json()["error"]["title"] == "Unauthorized"
    r = world.get("/v3/projects")  # alice: a member, not an admin
    assert r.status_code == 403 and r.json()["error"] == {"code": 403, "title": "Forbidden",
                                                          "message": r.json()["error"]["message"]}
    r = world.post("/v3/projects", {"project": {"name": "bad name!"}}, who="admin")
    assert r.status_code == 400 and r.json()["error"]["code"] == 400 and "project.name" in r.text
    r = world.get("/v3/users/nobody", who="admin")
    assert r.status_code == 404 and r.json()["error"]["message"] == "Could not find user: nobody."
    # the data-processing API keeps Sahara's envelope
    assert world.client.get("/v2/clusters").json()["error_name"] == "UNAUTHORIZED"


def test_a_lost_race_is_a_conflict_and_a_bug_a_logged_500(world: World, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    def lost_race(s, name):  # noqa: ANN001, ANN202
        raise IntegrityError("INSERT INTO projects", {}, Exception("UNIQUE constraint failed: projects.name"))

    monkeypatch.setattr(admin, "create_project", lost_race)
    r = world.post("/v3/projects", {"project": {"name": "p9"}}, who="admin")
    assert r.status_code == 409 and r.json()["error"]["title"] == "Conflict"

    def bug(s, name=None):  # noqa: ANN001, ANN202
        raise RuntimeError("a bug")

    monkeypatch.setattr(admin, "projects", bug)
    with caplog.at_level(logging.ERROR, logger="oasis.api"):
        r = world.get("/v3/projects", who="admin")
    assert r.status_code == 500 and r.json()["error"]["code"] == 500 and "a bug" not in r.text
    assert "unhandled error on GET /v3/projects" in caplog.text and "a bug" in caplog.text


def test_tokens_are_the_callers_own_business(world: World) -> None:
    login = world.client.post("/v3/auth/tokens", json={"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": "carol", "password": PASSWORD, "domain": {"name": "Default"}}}}}})
    assert login.status_code == 201
    token = login.headers["X-Subject-Token"]
    both = {"X-Auth-Token": token, "X-Subject-Token": token}
    head = world.client.head("/v3/auth/tokens", headers=both)
    assert head.status_code == 200 and head.headers["X-Subject-Token"] == token and not head.content
    # carol is a reader: she may still log out
    assert world.client.delete("/v3/auth/tokens", headers=both).status_code == 204
    assert world.client.get("/v2/clusters", headers={"X-Auth-Token": token}).status_code == 401


def test_the_grant_check_answers_head(world: World) -> None:
    with world.db.session() as s:
        alice = admin.find_user(s, "alice").id
    path = f"/v3/projects/{world.projects['p1']}/users/{alice}/roles"
    assert world.client.head(f"{path}/member", headers=world.h("admin")).status_code == 204
    assert world.client.head(f"{path}/reader", headers=world.h("admin")).status_code == 404
    assert world.client.head(f"{path}/superuser", headers=world.h("admin")).status_code == 404
    roles = world.get(path, who="admin").json()["roles"]
    assert roles == [{"id": "member", "name": "member"}]
    assert keystone.DOMAIN["id"] == world.get(f"/v3/users/{alice}", who="admin").json()["user"]["domain_id"]
