"""Trusts with the builtin identity, on a real `oasis up` whose tokens last a few seconds: work that outlives the
creator's token runs on the creator's trust (a transient cluster deleted after its job), the trust is deleted
when the work is done, and a trust the creator deleted stops a scale asked for later, with the reason."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration import workflow as wf
from tests.integration.services import Oasis, wait_until

TOKEN_SECONDS = 4.0
pytestmark = pytest.mark.service(env={"OASIS_TOKEN_HOURS": str(TOKEN_SECONDS / 3600)})
PASSWORD = "trust-me-not-1"

# Waits for a file the test makes once the token that ran the job has expired: the job ends after it, whatever
# the machine's speed.
WAIT_FOR_FLAG = b"""
import os, sys, time
while not os.path.exists(sys.argv[1]):
    time.sleep(0.1)
print("done")
"""


def token_of(service: Oasis, user: str, password: str, project: str) -> str:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "password": password, "domain": {"name": "Default"}}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
    r = httpx.post(service.url + "/v3/auth/tokens", json=body, timeout=10)
    assert r.status_code == 201, r.text
    return r.headers["X-Subject-Token"]


class FreshToken(httpx.Auth):
    """A new token for every request: the test's own polling must not depend on tokens that expire in seconds."""

    def __init__(self, service: Oasis, user: str, password: str, project: str) -> None:
        self.args = (service, user, password, project)

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["X-Auth-Token"] = token_of(*self.args)
        yield request


@pytest.fixture(scope="module")
def member(service: Oasis) -> dict:
    """A project with a member, and clients of the member (v2 and v3) that log in for each request."""
    service.client = service.login()  # the module's first token may have expired already
    pid, first = service.add_project("trusting", "truster", PASSWORD)
    first.close()
    fresh = httpx.Client(base_url=service.url + "/v2", auth=FreshToken(service, "truster", PASSWORD, "trusting"),
                         timeout=30)
    v3 = httpx.Client(base_url=service.url + "/v3", auth=FreshToken(service, "truster", PASSWORD, "trusting"),
                      timeout=30)
    me = v3.get("/auth/tokens", headers={"X-Subject-Token": token_of(service, "truster", PASSWORD, "trusting")})
    assert me.status_code == 200, me.text
    try:
        yield {"project_id": pid, "client": fresh, "v3": v3, "user_id": me.json()["token"]["user"]["id"]}
    finally:
        fresh.close()
        v3.close()


def expired(service: Oasis, token: str) -> bool:
    return httpx.get(service.url + "/v2/clusters", headers={"X-Auth-Token": token}, timeout=10).status_code == 401


def test_a_transient_cluster_is_deleted_through_its_trust_after_the_token_expired(
        service: Oasis, member: dict, data_dir: Path) -> None:
    client, v3 = member["client"], member["v3"]
    token = token_of(service, "truster", PASSWORD, "trusting")
    with httpx.Client(base_url=service.url + "/v2", headers={"X-Auth-Token": token}, timeout=30) as short:
        made = wf.ok(short.post("/clusters", json=wf.cluster_body(short, "dask", "transient", workers=1,
                                                                  is_transient=True)), 202)["cluster"]
    cid, cluster_trust = made["id"], made["trust_id"]
    assert cluster_trust, made
    trust = wf.ok(v3.get(f"/OS-TRUST/trusts/{cluster_trust}"))["trust"]
    assert trust["trustor_user_id"] == member["user_id"] and trust["impersonation"] is True
    assert [r["name"] for r in trust["roles"]] == ["member"]
    wf.wait_cluster(client, cid)

    flag = data_dir / "go"
    template = wf.job_template(client, "waits", "Dask", wf.upload_binary(client, "waits.py", WAIT_FOR_FLAG))
    job_token = token_of(service, "truster", PASSWORD, "trusting")
    with httpx.Client(base_url=service.url + "/v2", headers={"X-Auth-Token": job_token}, timeout=30) as short:
        jid = wf.run_job(short, template, cid, job_configs={"args": [str(flag)]})
    trusts = wf.ok(v3.get("/OS-TRUST/trusts", params={"trustor_user_id": member["user_id"]}))["trusts"]
    assert len(trusts) == 2, trusts  # the cluster's and the job's: its end deletes the cluster
    wf.wait_job(client, jid, statuses=("RUNNING",))

    wait_until(lambda: expired(service, job_token) and expired(service, token), 60, "the tokens to expire")
    flag.write_text("go")
    wf.wait_gone(client, cid)
    assert wf.job(client, jid)["info"]["status"] == "SUCCEEDED"
    gone = v3.get(f"/OS-TRUST/trusts/{cluster_trust}")
    assert gone.status_code == 404, gone.text
    assert wf.ok(v3.get("/OS-TRUST/trusts", params={"trustor_user_id": member["user_id"]}))["trusts"] == []


def test_a_scale_driven_after_the_trust_was_deleted_is_refused_with_the_reason(service: Oasis, member: dict) -> None:
    client, v3 = member["client"], member["v3"]
    cid = wf.create_cluster(client, "dask", "kept", workers=1)
    c = wf.wait_cluster(client, cid)
    assert wf.ok(v3.delete(f"/OS-TRUST/trusts/{c['trust_id']}"), 204) == {}

    wf.ok(client.put(f"/clusters/{cid}", json={"resize_node_groups": [{"name": "worker", "count": 2}]}), 202)

    def refused() -> dict | None:
        now = wf.cluster(client, cid)
        return now if now["status"] == "Active" and now["status_description"] else None

    c = wait_until(refused, 120, "the scale to be refused")
    assert "trust" in c["status_description"] and "Scaling cluster failed" in c["status_description"]
    assert {ng["name"]: ng["count"] for ng in c["node_groups"]}["worker"] == 1

    # Deleting goes on without the trust: nothing is left running that no row knows about.
    wf.ok(client.delete(f"/clusters/{cid}"), 204)
    wf.wait_gone(client, cid)
