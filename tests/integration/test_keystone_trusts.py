"""Trusts with the Keystone backend, on a real `oasis up --config FILE` (`[identity] backend = keystone`) against
a real Keystone 30 whose tokens last SHORT_TOKEN_SECONDS (`keystone_short_tokens`): work that outlives alice's
token runs on her trust in Keystone (a transient cluster deleted after its job), the trust is deleted in Keystone
when the work is done, and a trust alice deleted in Keystone stops a scale asked for later, with the reason."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from oasis.config import KeystoneAuth
from oasis.identity.keystone import KeystoneIdentity
from tests.integration import workflow as wf
from tests.integration.services import Oasis, wait_until
from tests.keystone_service import SERVICE_PROJECT, SERVICE_USER, KeystoneServer, oasis_on_keystone

# Waits for a file the test makes once the tokens that made the cluster and the job have expired: the job ends
# after that, whatever the machine's speed.
WAIT_FOR_FLAG = b"""
import os, sys, time
while not os.path.exists(sys.argv[1]):
    time.sleep(0.1)
print("done")
"""


class FreshToken(httpx.Auth):
    """A new Keystone token for every request: the test's own polling must not depend on tokens that expire in
    seconds."""

    def __init__(self, keystone: KeystoneServer, user: str) -> None:
        self.keystone, self.user = keystone, user

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["X-Auth-Token"] = self.keystone.token(self.user)
        yield request


@pytest.fixture(scope="module")
def ks_oasis(keystone_short_tokens: KeystoneServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Oasis]:
    keystone = keystone_short_tokens
    # A cache bound longer than a token's life: the bound is never past a token's expiry all the same.
    with oasis_on_keystone(keystone, tmp_path_factory.mktemp("ks-trusts"), cache_time=60) as service:
        yield service


@pytest.fixture(scope="module")
def alice(ks_oasis: Oasis, keystone_short_tokens: KeystoneServer) -> Iterator[dict]:
    """alice's clients (oasis's v2 and Keystone's v3) that log in at Keystone for each request, an admin's at
    Keystone, and alice's user id."""
    ks = keystone_short_tokens
    v2 = httpx.Client(base_url=ks_oasis.url + "/v2", auth=FreshToken(ks, "alice"), timeout=30)
    v3 = httpx.Client(base_url=ks.url, auth=FreshToken(ks, "alice"), timeout=30)
    admin = httpx.Client(base_url=ks.url, auth=FreshToken(ks, "admin"), timeout=30)
    try:
        yield {"client": v2, "v3": v3, "admin": admin, "user_id": ks.user_session("alice").get_user_id()}
    finally:
        v2.close()
        v3.close()
        admin.close()


def service_user_id(admin: httpx.Client) -> str:
    users = wf.ok(admin.get("/users", params={"name": SERVICE_USER}))["users"]
    assert len(users) == 1, users
    return users[0]["id"]


def assert_keystone_knows(alice: dict, keystone: KeystoneServer, trust_id: str) -> None:
    """The trust oasis shows is Keystone's: from alice to oasis's service user on alpha, impersonating her."""
    trust = wf.ok(alice["v3"].get(f"/OS-TRUST/trusts/{trust_id}"))["trust"]
    assert trust["id"] == trust_id
    assert trust["trustor_user_id"] == alice["user_id"]
    assert trust["trustee_user_id"] == service_user_id(alice["admin"])
    assert trust["project_id"] == keystone.projects["alpha"] and trust["impersonation"] is True
    assert "member" in {r["name"] for r in trust["roles"]}


def without_trust(service: Oasis, cluster_id: str) -> bool:
    """Whether the engine logged that it deleted the cluster without its creator's trust."""
    needle = f"cluster {cluster_id}: Deleting the cluster without its creator's trust"
    return any(needle in log.read_text(errors="replace") for log in service.state_dir.glob("*.log"))


def refused_by_keystone(admin: httpx.Client, token: str) -> bool:
    return admin.get("/auth/tokens", headers={"X-Subject-Token": token}).status_code == 404


def refused_by_oasis(service: Oasis, token: str) -> bool:
    return httpx.get(service.url + "/v2/clusters", headers={"X-Auth-Token": token}, timeout=10).status_code == 401


def test_a_transient_cluster_is_deleted_through_its_keystone_trust_after_the_token_expired(
        ks_oasis: Oasis, keystone_short_tokens: KeystoneServer, alice: dict, data_dir: Path) -> None:
    ks, client, v3, admin = keystone_short_tokens, alice["client"], alice["v3"], alice["admin"]
    token = ks.token("alice")
    with httpx.Client(base_url=ks_oasis.url + "/v2", headers={"X-Auth-Token": token}, timeout=30) as short:
        made = wf.ok(short.post("/clusters", json=wf.cluster_body(short, "dask", "ks-transient", workers=1,
                                                                  is_transient=True)), 202)["cluster"]
    cid, cluster_trust = made["id"], made["trust_id"]
    assert cluster_trust, made
    assert wf.cluster(client, cid)["trust_id"] == cluster_trust
    assert_keystone_knows(alice, ks, cluster_trust)
    wf.wait_cluster(client, cid)

    flag = data_dir / "go"
    template = wf.job_template(client, "ks-waits", "Dask", wf.upload_binary(client, "ks-waits.py", WAIT_FOR_FLAG))
    job_token = ks.token("alice")
    with httpx.Client(base_url=ks_oasis.url + "/v2", headers={"X-Auth-Token": job_token}, timeout=30) as short:
        jid = wf.run_job(short, template, cid, job_configs={"args": [str(flag)]})
    trusts = wf.ok(v3.get("/OS-TRUST/trusts", params={"trustor_user_id": alice["user_id"]}))["trusts"]
    assert cluster_trust in {t["id"] for t in trusts} and len(trusts) == 2, trusts  # the cluster's and the job's
    job_trust = next(t["id"] for t in trusts if t["id"] != cluster_trust)
    wf.wait_job(client, jid, statuses=("RUNNING",))

    # Keystone itself refuses both tokens now (and so does oasis: its cache never outlives a token's expiry).
    wait_until(lambda: refused_by_keystone(admin, token) and refused_by_keystone(admin, job_token), 120,
               "Keystone to refuse alice's tokens (expired)")
    assert refused_by_oasis(ks_oasis, token) and refused_by_oasis(ks_oasis, job_token)
    flag.write_text("go")
    wf.wait_gone(client, cid)
    assert not without_trust(ks_oasis, cid)  # its deletion acted on its trust: the trust was still good then
    j = wf.job(client, jid)
    assert j["info"]["status"] == "SUCCEEDED", j
    for trust_id in (cluster_trust, job_trust):
        gone = admin.get(f"/OS-TRUST/trusts/{trust_id}")
        assert gone.status_code == 404, gone.text
    assert wf.ok(v3.get("/OS-TRUST/trusts", params={"trustor_user_id": alice["user_id"]}))["trusts"] == []


def test_a_scale_after_alice_deleted_her_keystone_trust_is_refused_with_the_reason(
        ks_oasis: Oasis, keystone_short_tokens: KeystoneServer, alice: dict) -> None:
    client, v3 = alice["client"], alice["v3"]
    cid = wf.create_cluster(client, "dask", "ks-kept", workers=1)
    c = wf.wait_cluster(client, cid)
    assert c["trust_id"]
    assert_keystone_knows(alice, keystone_short_tokens, c["trust_id"])
    # What the engine acts as on that trust, asked of Keystone with oasis's service credentials: alice on alpha.
    ks = keystone_short_tokens
    identity = KeystoneIdentity(KeystoneAuth(auth_url=ks.url, username=SERVICE_USER, password=ks.service_password,
                                             project_name=SERVICE_PROJECT, www_authenticate_uri=ks.url))
    acting = identity.trust_principal(c["trust_id"])
    assert acting is not None and acting.trust_id == c["trust_id"], acting
    assert (acting.user_id, acting.project_id) == (alice["user_id"], ks.projects["alpha"])
    assert "member" in acting.roles and not acting.is_admin
    assert wf.ok(v3.delete(f"/OS-TRUST/trusts/{c['trust_id']}"), 204) == {}

    wf.ok(client.put(f"/clusters/{cid}", json={"resize_node_groups": [{"name": "worker", "count": 2}]}), 202)

    def refused() -> dict | None:
        now = wf.cluster(client, cid)
        return now if now["status"] == "Active" and now["status_description"] else None

    c = wait_until(refused, 120, "the scale to be refused")
    assert "Scaling cluster failed" in c["status_description"], c
    assert "trust" in c["status_description"] and c["trust_id"] in c["status_description"], c
    assert {ng["name"]: ng["count"] for ng in c["node_groups"]}["worker"] == 1

    # Deleting goes on without the trust: nothing is left running that no row knows about.
    wf.ok(client.delete(f"/clusters/{cid}"), 204)
    wf.wait_gone(client, cid)
    assert without_trust(ks_oasis, cid)
    assert identity.trust_principal(c["trust_id"]) is None
    assert wf.ok(v3.get("/OS-TRUST/trusts", params={"trustor_user_id": alice["user_id"]}))["trusts"] == []
