"""Jobs through `oasis up` on the local site, with the deployment's own store on Swift: binaries uploaded
(internal-db:// into Swift, and a swift:// binary), a Dask job reading swift:// and writing s3:// data (an output
URL with placeholders), and its scoped access refused after the job ends."""
from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import pytest

from devtools.devswift import KEY, USER
from oasis.storage import store_for
from tests.integration import workflow as wf
from tests.conftest import assert_no_secret_in_database
from tests.integration.services import Oasis

# The engine grants and revokes scoped access once it is wired to oasis.edp.access (see oasis/edp/access.py).
DEMO = Path(__file__).resolve().parents[2] / "oasis" / "demo" / "wordcount_dask_objects.py"

PROBE = b"""
import os, sys, runpy
from oasis import jobkit
# the evidence the test needs: a signed URL of the input, to try once the job has ended
print("probe", jobkit.signed_url(jobkit.list_objects(os.environ["OASIS_INPUT_URL"])[0]), file=sys.stderr)
sys.argv = ["wordcount"]
runpy.run_path(os.environ["WORDCOUNT"], run_name="__main__")
"""


@pytest.fixture
def on_swift(tmp_path: Path, swift):
    user = USER.replace(":", "%3A")
    service = Oasis(tmp_path / "state")
    service.env["OASIS_OBJECT_STORE"] = (f"swift+http://{user}:{KEY}@127.0.0.1:{swift.ports['proxy']}/auth/v1.0"
                                         f"?container=oasis-{uuid.uuid4().hex[:8]}")
    service.env["WORDCOUNT"] = str(DEMO)
    try:
        service.start_api("up")
        yield service
    finally:
        service.stop()


def test_dask_job_over_swift_and_s3_on_the_local_site(on_swift: Oasis, swift, swift_creds, s3_creds) -> None:
    client = on_swift.client
    container = f"wc-{uuid.uuid4().hex[:8]}"
    src = store_for(f"swift://{container}/", swift_creds, create=True)
    for i in range(3):
        src.put(f"books/{i}.txt", b"the river the city\nthe data river\n" * (i + 1))
    src.put("jobs/probe.py", PROBE)
    creds = {"user": USER, "password": KEY}  # the deployment's Swift: no auth_url needed
    inp = wf.ok(client.post("/data-sources", json={"name": "books", "type": "swift",
                                                   "url": f"swift://{container}/books", "credentials": creds}), 202)
    out = wf.ok(client.post("/data-sources", json={
        "name": "counts", "type": "s3", "url": f"s3://{container}/counts/%JOB_EXEC_ID%-%RANDSTR(4)%",
        "credentials": {"accesskey": USER, "secretkey": KEY, "endpoint": swift.endpoint}}), 202)
    assert "credentials" not in inp["data_source"] and KEY not in str(out)
    shown = wf.ok(client.get(f"/data-sources/{inp['data_source']['id']}"))
    assert KEY not in str(shown)
    main = wf.ok(client.post("/job-binaries", json={"name": "probe.py", "url": f"swift://{container}/jobs/probe.py",
                                                    "extra": creds}), 202)["job_binary"]
    assert "extra" not in main or KEY not in str(main["extra"])
    cid = wf.create_cluster(client, "dask", "objects", workers=2)
    wf.wait_cluster(client, cid)
    template = wf.job_template(client, "wc-objects", "Dask", main["id"])
    jid = wf.run_job(client, template, cid, input_id=inp["data_source"]["id"], output_id=out["data_source"]["id"])
    j = wf.wait_job(client, jid)
    stderr = wf.logs(client, jid, "stderr")
    assert j["info"]["status"] == "SUCCEEDED", stderr
    assert wf.logs(client, jid).splitlines()[:2] == ["the\t18", "river\t12"]
    resolved = j["data_source_urls"][out["data_source"]["id"]]
    assert re.fullmatch(rf"s3://{container}/counts/{jid}-[a-z]{{4}}", resolved)
    key = resolved.split("/", 3)[3]
    results = store_for(f"s3://{container}/", s3_creds)
    lines = "".join(results.get(o.key).decode() for o in results.list(key + "/") if "/part-" in o.key)
    assert sorted(lines.splitlines()) == ["city\t6", "data\t6", "river\t12", "the\t18"]
    # nothing secret in the job's logs, and its access ended with it
    assert KEY not in stderr and KEY not in wf.logs(client, jid)
    probe = re.search(r"^probe (\S+)$", stderr, re.M).group(1)
    assert httpx.get(probe).status_code == 401
    for path in (on_swift.state_dir / "hosts").rglob("*"):  # no user credential written onto an instance
        if path.is_file() and path.stat().st_size < 10_000_000:
            assert KEY.encode() + b'"' not in path.read_bytes() and b'"secretkey"' not in path.read_bytes(), path
    # nor in the database, which holds the cluster's key, the data sources' and the binary's credentials
    assert_no_secret_in_database(on_swift.state_dir, [KEY])
    wf.ok(client.delete(f"/clusters/{cid}"), 204)
    wf.wait_gone(client, cid)
