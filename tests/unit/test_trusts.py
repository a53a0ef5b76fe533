"""Trusts of the builtin identity (Keystone's OS-TRUST routes, trust-scoped tokens, expiry, a trustor losing the
role) and the trusts the API makes for work that outlives a token."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from oasis.api import clusters as cluster_api
from oasis.db.models import Cluster, Job, JobTemplate, Project, Token, Trust, User, utcnow
from oasis.identity import builtin, trusts
from oasis.identity.base import IdentityError
from oasis.identity.builtin import BuiltinIdentity
from tests.world import PASSWORD, World, cluster_body


def uid(world: World, name: str) -> str:
    with world.db.session() as s:
        return s.scalars(select(User.id).where(User.name == name)).one()


def trust_body(world: World, trustor: str = "alice", trustee: str = "bob", **extra) -> dict:
    return {"trust": {"trustor_user_id": uid(world, trustor), "trustee_user_id": uid(world, trustee),
                      "project_id": world.projects["p1"], "impersonation": True, "roles": [{"name": "member"}],
                      **extra}}


def make(world: World, **extra) -> dict:
    r = world.post("/v3/OS-TRUST/trusts", trust_body(world, **extra))
    assert r.status_code == 201, r.text
    return r.json()["trust"]


def trust_token(world: World, trust_id: str, user: str = "bob") -> tuple[int, dict, str | None]:
    r = world.client.post("/v3/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {"user": {"name": user, "password": PASSWORD,
                                                                    "domain": {"id": "default"}}}},
        "scope": {"OS-TRUST:trust": {"id": trust_id}}}})
    return r.status_code, r.json(), r.headers.get("X-Subject-Token")


# --- the OS-TRUST routes ------------------------------------------------------------------------------------


def test_a_trust_is_created_shown_listed_and_deleted_as_keystone_does(world: World) -> None:
    trust = make(world)
    assert trust["trustor_user_id"] == uid(world, "alice") and trust["trustee_user_id"] == uid(world, "bob")
    assert trust["project_id"] == world.projects["p1"] and trust["impersonation"] is True
    assert [r["name"] for r in trust["roles"]] == ["member"] and trust["expires_at"] is None
    path = f"/v3/OS-TRUST/trusts/{trust['id']}"
    for who in ("alice", "bob", "admin"):  # the trustor, the trustee, an admin
        assert world.get(path, who=who).json()["trust"]["id"] == trust["id"]
    assert world.get(path, who="carol").status_code == 403  # no relation to it
    mine = world.get("/v3/OS-TRUST/trusts", params={"trustor_user_id": uid(world, "alice")})
    assert [t["id"] for t in mine.json()["trusts"]] == [trust["id"]] and "roles" not in mine.json()["trusts"][0]
    theirs = world.get("/v3/OS-TRUST/trusts", who="bob", params={"trustee_user_id": uid(world, "bob")})
    assert [t["id"] for t in theirs.json()["trusts"]] == [trust["id"]]
    assert [t["id"] for t in world.get("/v3/OS-TRUST/trusts", who="admin").json()["trusts"]] == [trust["id"]]

    assert world.delete(path, who="bob").status_code == 403  # the trustee may not delete it
    assert world.delete(path).status_code == 204
    r = world.get(path)
    assert r.status_code == 404 and r.json()["error"]["message"] == f"Could not find trust: {trust['id']}."
    assert world.delete(path).status_code == 404


@pytest.mark.parametrize("change, status, words", [
    ({"trustor_user_id": "bob"}, 403, "should match the trustor"),
    ({"trustee_user_id": "nobody"}, 404, "Could not find user: nobody."),
    ({"project_id": "p2"}, 403, "project of the token"),
    ({"roles": []}, 403, "At least one role"),
    ({"roles": [{"name": "admin"}]}, 403, "does not have role admin"),
    ({"roles": [{"name": "wizard"}]}, 404, "Could not find role: wizard."),
    ({"expires_at": "2001-01-01T00:00:00.000000Z"}, 400, "in the past"),
    ({"expires_at": "soon"}, 400, "ISO 8601"),
    ({"allow_redelegation": True}, 400, ""),
    ({"impersonation": None}, 400, ""),
])
def test_a_trust_keystone_would_refuse_is_refused_with_its_code(world: World, change: dict, status: int,
                                                                 words: str) -> None:
    body = trust_body(world)
    for key, value in change.items():
        if key == "trustor_user_id":
            value = uid(world, value)
        if key == "project_id":
            value = world.projects[value]
        body["trust"][key] = value
    r = world.post("/v3/OS-TRUST/trusts", body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"]
    with world.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Trust)) == 0


def test_listing_others_trusts_is_for_admins(world: World) -> None:
    make(world)
    assert world.get("/v3/OS-TRUST/trusts", who="bob").status_code == 403
    assert world.get("/v3/OS-TRUST/trusts", who="bob", params={"trustor_user_id": uid(world, "alice")}
                     ).status_code == 403
    r = world.get("/v3/OS-TRUST/trusts", who="admin", params={"trustor_user_id": uid(world, "alice")})
    assert len(r.json()["trusts"]) == 1


# --- trust-scoped tokens ----------------------------------------------------------------------------------------


def test_a_trust_scoped_token_stands_for_the_trustor_with_the_trusts_roles(world: World) -> None:
    trust = make(world)
    status, body, token = trust_token(world, trust["id"])
    assert status == 201, body
    t = body["token"]
    assert t["user"]["name"] == "alice" and t["project"]["id"] == world.projects["p1"]
    assert [r["name"] for r in t["roles"]] == ["member"]
    assert t["OS-TRUST:trust"] == {"id": trust["id"], "impersonation": True,
                                   "trustor_user": {"id": uid(world, "alice")},
                                   "trustee_user": {"id": uid(world, "bob")}}
    # It works as alice's on p1's rows, and its validation says it is trust-scoped.
    assert world.client.get("/v2/clusters", headers={"X-Auth-Token": token}).status_code == 200
    shown = world.client.get("/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token})
    assert shown.json()["token"]["OS-TRUST:trust"]["id"] == trust["id"]


def test_without_impersonation_the_token_is_the_trustees(world: World) -> None:
    trust = make(world, impersonation=False)
    status, body, _ = trust_token(world, trust["id"])
    assert status == 201 and body["token"]["user"]["name"] == "bob"
    assert body["token"]["project"]["id"] == world.projects["p1"]


def test_only_the_trustee_gets_a_token_of_an_existing_trust(world: World) -> None:
    trust = make(world)
    status, body, _ = trust_token(world, trust["id"], user="carol")
    assert status == 403 and body["error"]["message"] == "User is not a trustee."
    status, body, _ = trust_token(world, "no-such-trust")
    assert status == 404 and body["error"]["message"] == "Could not find trust: no-such-trust."


def test_a_trust_scoped_token_can_neither_be_rescoped_nor_make_trusts(world: World) -> None:
    trust = make(world)
    _, _, token = trust_token(world, trust["id"])
    r = world.client.post("/v3/auth/tokens", json={"auth": {"identity": {"methods": ["token"],
                                                                         "token": {"id": token}}}})
    assert r.status_code == 403
    r = world.client.post("/v3/OS-TRUST/trusts", json=trust_body(world), headers={"X-Auth-Token": token})
    assert r.status_code == 403 and "Redelegation" in r.json()["error"]["message"]


def test_a_trust_dies_when_it_expires(world: World) -> None:
    later = (utcnow() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    trust = make(world, expires_at=later)
    assert trust["expires_at"] == later
    _, body, token = trust_token(world, trust["id"])
    assert body["token"]["expires_at"] <= later  # a trust-scoped token never outlives its trust
    with world.db.session() as s:
        s.execute(update(Trust).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert world.client.get("/v2/clusters", headers={"X-Auth-Token": token}).status_code == 401
    assert trust_token(world, trust["id"])[0] == 404
    assert world.get(f"/v3/OS-TRUST/trusts/{trust['id']}").status_code == 404
    assert BuiltinIdentity(world.db).trust_principal(trust["id"]) is None


def test_a_trust_dies_when_its_trustor_loses_the_role(world: World) -> None:
    trust = make(world)
    _, _, token = trust_token(world, trust["id"])
    with world.db.session() as s:
        alice, p1 = s.get(User, uid(world, "alice")), s.get(Project, world.projects["p1"])
        builtin.unassign_role(s, alice, p1, "member")
        builtin.assign_role(s, alice, p1, "reader")  # still on the project, not with the delegated role
    assert world.client.get("/v2/clusters", headers={"X-Auth-Token": token}).status_code == 401
    status, body, _ = trust_token(world, trust["id"])
    assert status == 403 and body["error"]["message"] == "Trustee has no delegated roles."
    assert BuiltinIdentity(world.db).trust_principal(trust["id"]) is None


def test_deleting_a_trust_ends_its_tokens(world: World) -> None:
    trust = make(world)
    _, _, token = trust_token(world, trust["id"])
    assert world.delete(f"/v3/OS-TRUST/trusts/{trust['id']}").status_code == 204
    assert world.client.get("/v2/clusters", headers={"X-Auth-Token": token}).status_code == 401
    with world.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Token).where(Token.trust_id == trust["id"])) == 0


# --- the Identity protocol, as the engine uses it ----------------------------------------------------------------


def test_the_builtin_identity_makes_acts_on_and_deletes_trusts(world: World) -> None:
    identity = BuiltinIdentity(world.db)
    alice = identity.authenticate_token(world.tokens["alice"])
    trust_id = identity.create_trust(world.tokens["alice"], alice)
    with world.db.session() as s:
        trust = s.get(Trust, trust_id)
        trustee = s.get(User, trust.trustee_user_id)
        assert trustee.name == builtin.SERVICE_USER and trustee.password_hash == builtin.UNUSABLE
        assert trust.roles == ["member"] and trust.impersonation
    acting = trusts.act_on(identity, trust_id, "test")
    assert (acting.user_id, acting.project_id, acting.roles, acting.trust_id) == (
        alice.user_id, alice.project_id, ["member"], trust_id)
    with pytest.raises(IdentityError):  # another user's token does not make alice's trust
        identity.create_trust(world.tokens["bob"], alice)
    with pytest.raises(IdentityError):
        identity.create_trust(world.tokens["alice"], alice, roles=["admin"])
    identity.delete_trust(trust_id)
    identity.delete_trust(trust_id)  # gone already: no error
    with pytest.raises(trusts.TrustGone, match="gone"):
        trusts.act_on(identity, trust_id, "scale the cluster")
    assert trusts.act_on(identity, None, "a row from before trusts") is None


def test_nobody_logs_in_as_the_service_user(world: World) -> None:
    with world.db.session() as s:
        service = builtin.ensure_service_user(s)
        assert builtin.authenticate(s, service.name, None, "") is None
        assert builtin.authenticate(s, service.name, None, builtin.UNUSABLE) is None


# --- the trusts the API makes --------------------------------------------------------------------------------------


def test_every_cluster_gets_its_creators_trust(world: World) -> None:
    r = world.post("/v2/clusters", cluster_body("c1", workers=1, count=2))
    assert r.status_code == 202, r.text
    ids = [c["cluster"]["trust_id"] for c in r.json()["clusters"]]
    assert all(ids) and len(set(ids)) == 2
    with world.db.session() as s:
        for trust_id in ids:
            trust = s.get(Trust, trust_id)
            assert trust.trustor_user_id == uid(world, "alice") and trust.project_id == world.projects["p1"]
            assert s.get(User, trust.trustee_user_id).name == builtin.SERVICE_USER
    shown = world.get(f"/v2/clusters/{r.json()['clusters'][0]['cluster']['id']}").json()["cluster"]
    assert shown["trust_id"] == ids[0]


def _active(world: World, transient: bool) -> str:
    r = world.post("/v2/clusters", cluster_body("c-t" if transient else "c-k", plugin="dask", is_transient=transient))
    assert r.status_code == 202, r.text
    cid = r.json()["cluster"]["id"]
    with world.db.session() as s:
        s.execute(update(Cluster).where(Cluster.id == cid).values(status="Active", op=None))
    return cid


def _template(world: World) -> str:
    with world.db.session() as s:
        t = JobTemplate(project_id=world.projects["p1"], name="t", type="Shell", mains=[], libs=[], interface=[])
        s.add(t)
        s.flush()
        return t.id


def test_a_job_on_a_transient_cluster_gets_a_trust_and_others_none(world: World) -> None:
    template = _template(world)
    for transient in (True, False):
        cid = _active(world, transient)
        r = world.post("/v2/jobs", {"job_template_id": template, "cluster_id": cid})
        assert r.status_code == 202, r.text
        assert "trust_id" not in r.json()["job"]  # Sahara does not show a job's trusts
        with world.db.session() as s:
            job = s.get(Job, r.json()["job"]["id"])
            assert (job.trust_id is not None) is transient
            if transient:
                assert s.get(Trust, job.trust_id).trustor_user_id == uid(world, "alice")


def test_a_refused_trust_is_a_clear_4xx_and_nothing_is_written(world: World, monkeypatch) -> None:  # noqa: ANN001
    identity = world.client.app.state.deps.identity

    def refuse(*_a, **_k) -> str:
        raise IdentityError("the identity service said no")

    monkeypatch.setattr(identity, "create_trust", refuse)
    r = world.post("/v2/clusters", cluster_body("refused"))
    assert r.status_code == 403, r.text
    assert "the identity service said no" in r.json()["error_message"]
    with world.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Cluster)) == 0


def test_a_trust_scoped_caller_gets_a_4xx_for_work_that_needs_a_trust(world: World) -> None:
    """The builtin identity does not redelegate: a trust's own token cannot make the cluster's trust."""
    _, _, token = trust_token(world, make(world)["id"])
    r = world.client.post("/v2/clusters", json=cluster_body("redelegated"), headers={"X-Auth-Token": token})
    assert r.status_code == 403 and "trust" in r.json()["error_message"]
    with world.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Cluster)) == 0
        assert s.scalar(select(func.count()).select_from(Trust)) == 1  # only the one made above


def test_a_request_that_fails_after_its_trust_was_made_leaves_no_trust(world: World, monkeypatch) -> None:  # noqa: ANN001
    def broken(*_a, **_k):  # noqa: ANN202
        raise RuntimeError("the database went away")

    monkeypatch.setattr(cluster_api, "_write_cluster", broken)
    assert world.post("/v2/clusters", cluster_body("broken")).status_code == 500
    with world.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Trust)) == 0
