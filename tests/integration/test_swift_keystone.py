"""Swift without stored credentials (issue 13, item 3): `oasis up --config FILE` with the Keystone backend, and a
real Swift whose proxy authenticates with the same real Keystone (authtoken + keystoneauth, devtools/devswift.py),
registered in its catalog as `object-store`. alice (member of alpha) puts her input into alpha's account with her
own token, names it in a swift:// data source with no credentials, and a Dask word count reads it and writes its
output there, through temp URLs the engine signed with a key it set on alpha's account with a token of the
cluster's trust. bob (beta) cannot see alice's data source; the job's URLs die with it."""
from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from devtools.devswift import SwiftServer
from tests.integration import workflow as wf
from tests.integration.services import Oasis, wait_until
from tests.keystone_service import KeystoneServer, oasis_on_keystone

DEMO = Path(__file__).resolve().parents[2] / "oasis" / "demo" / "wordcount_dask_objects.py"

# The word count, after printing a temp URL of its input: the evidence that the job's access ends with it.
PROBE = b"""
import os, sys, runpy
from oasis import jobkit
print("probe", jobkit.signed_url(jobkit.list_objects(os.environ["OASIS_INPUT_URL"])[0]), file=sys.stderr)
sys.argv = ["wordcount"]
runpy.run_path(os.environ["WORDCOUNT"], run_name="__main__")
"""


@pytest.fixture(scope="module")
def ks_oasis(keystone: KeystoneServer, keystone_swift: SwiftServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Oasis]:
    with oasis_on_keystone(keystone, tmp_path_factory.mktemp("ks-swift-oasis"), cache_time=30,
                           env={"WORDCOUNT": str(DEMO)}) as service:
        yield service


def client_of(oasis: Oasis, keystone: KeystoneServer, user: str) -> httpx.Client:
    return httpx.Client(base_url=oasis.url + "/v2", headers={"X-Auth-Token": keystone.token(user)}, timeout=30)


def test_a_job_reads_and_writes_its_projects_swift_on_a_trust_with_no_stored_credentials(
        ks_oasis: Oasis, keystone: KeystoneServer, keystone_swift: SwiftServer) -> None:
    # the clouds.yaml `oasis up` writes sends its users to Keystone, and holds no credential of oasis's own
    cloud = yaml.safe_load((ks_oasis.state_dir / "clouds.yaml").read_text())["clouds"]["oasis"]["auth"]
    assert cloud["auth_url"] == keystone.url and "password" not in cloud and "username" not in cloud, cloud
    session = keystone.user_session("alice")
    account = session.get_endpoint(service_type="object-store", interface="public")
    assert account.endswith("/AUTH_" + keystone.projects["alpha"])
    mine = httpx.Client(base_url=account, headers={"X-Auth-Token": session.get_token()}, timeout=30)
    container = f"wc-{uuid.uuid4().hex[:8]}"
    assert mine.put(f"/{container}").status_code in (201, 202)
    for i in range(3):
        r = mine.put(f"/{container}/books/{i}.txt", content=b"the river the city\nthe data river\n" * (i + 1))
        assert r.status_code == 201, r.text

    with client_of(ks_oasis, keystone, "alice") as alice, client_of(ks_oasis, keystone, "bob") as bob:
        inp = wf.ok(alice.post("/data-sources", json={"name": "books", "type": "swift",
                                                      "url": f"swift://{container}/books"}), 202)["data_source"]
        out = wf.ok(alice.post("/data-sources", json={"name": "counts", "type": "swift",
                                                      "url": f"swift://{container}/counts/%JOB_EXEC_ID%"}),
                    202)["data_source"]
        assert bob.get(f"/data-sources/{inp['id']}").status_code == 404
        assert inp["id"] not in str(wf.ok(bob.get("/data-sources")))

        cid = wf.create_cluster(alice, "dask", "on-trust", workers=1)
        wf.wait_cluster(alice, cid)
        template = wf.job_template(alice, "wc-trust", "Dask", wf.upload_binary(alice, "probe.py", PROBE))
        jid = wf.run_job(alice, template, cid, input_id=inp["id"], output_id=out["id"])
        job = wf.wait_job(alice, jid)
        stderr = wf.logs(alice, jid, "stderr")
        assert job["info"]["status"] == "SUCCEEDED", (job["info"], stderr)
        assert wf.logs(alice, jid).splitlines()[:2] == ["the\t18", "river\t12"]

        # the output is in alpha's own account, read back with alice's own token
        listing = mine.get(f"/{container}", params={"prefix": f"counts/{jid}/", "format": "json"})
        assert listing.status_code == 200, listing.text
        parts = [o["name"] for o in listing.json() if "/part-" in o["name"]]
        assert parts, listing.json()
        lines = "".join(mine.get(f"/{container}/{p}").text for p in parts)
        assert sorted(lines.splitlines()) == ["city\t6", "data\t6", "river\t12", "the\t18"]

        # the job held a temp URL, no token: it is refused once the job has ended (the engine rotates the key
        # on the trust just after it records the end)
        probe = re.search(r"^probe (\S+)$", stderr, re.M)
        assert probe is not None, stderr
        assert "X-Auth-Token" not in stderr and "temp_url_sig" in probe.group(1)
        wait_until(lambda: httpx.get(probe.group(1), timeout=30).status_code == 401, 60,
                   "the job's temp URL to be refused")
        # bob's token does not open alpha's account
        assert httpx.get(f"{account}/{container}/books/0.txt", headers={"X-Auth-Token": keystone.token("bob")},
                         timeout=30).status_code in (401, 403)

        wf.ok(alice.delete(f"/clusters/{cid}"), 204)
        wf.wait_gone(alice, cid)
    mine.close()
