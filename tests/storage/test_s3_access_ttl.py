"""S3 access that ends with the job, on the real Swift's s3api: presigned requests live OASIS_S3_ACCESS_TTL_SECONDS
(a few seconds here), a request is refused once expired, and a job longer than that TTL still completes through
the URLs the engine renews in its access file, which is gone once the job has ended."""
from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import pytest

from devtools.devswift import KEY, USER
from oasis.storage import store_for
from tests.integration import workflow as wf
from tests.integration.services import Oasis

TTL = 6

# The job outlives its first URLs: it waits (polling the store, with a deadline) until the store refuses the URL
# it was first given, then reads its input and writes its output through jobkit, i.e. through renewed URLs.
LONG_JOB = b"""
import os, stat, sys, time, urllib.error, urllib.request
from oasis import jobkit
inp, out = os.environ["OASIS_INPUT_URL"], os.environ["OASIS_OUTPUT_URL"]
path = os.environ["OASIS_DATA_ACCESS_FILE"]
print("mode", oct(stat.S_IMODE(os.stat(path).st_mode)), "env", "OASIS_DATA_ACCESS" in os.environ, file=sys.stderr)
first = jobkit.signed_url(jobkit.list_objects(inp)[0])
print("probe", first, file=sys.stderr)
deadline = time.time() + 120
while True:
    try:
        urllib.request.urlopen(first, timeout=10).read()
    except urllib.error.HTTPError as e:
        if e.code != 403:
            raise
        print("first URL refused", e.code, file=sys.stderr)
        break
    if time.time() > deadline:
        sys.exit("the first URL never expired")
    time.sleep(0.5)
text = jobkit.read_text(inp)
jobkit.write_text(jobkit.join(out, "part-00000"), text.upper())
print("renewed", jobkit.signed_url(jobkit.list_objects(inp)[0]) != first, file=sys.stderr)
"""


@pytest.fixture
def short_ttl(tmp_path: Path, swift):
    service = Oasis(tmp_path / "state")
    service.env["OASIS_S3_ACCESS_TTL_SECONDS"] = str(TTL)
    try:
        service.start_api("up")
        yield service
    finally:
        service.stop()


def test_presigned_urls_expire_and_a_longer_job_completes_through_renewed_ones(short_ttl: Oasis, swift,
                                                                               s3_creds) -> None:
    client = short_ttl.client
    bucket = f"ttl-{uuid.uuid4().hex[:8]}"
    src = store_for(f"s3://{bucket}/", s3_creds, create=True)
    src.put("in/a.txt", b"first line\n")
    src.put("in/b.txt", b"second line\n")
    creds = {"accesskey": USER, "secretkey": KEY, "endpoint": swift.endpoint}
    inp = wf.ok(client.post("/data-sources", json={"name": "in", "type": "s3", "url": f"s3://{bucket}/in",
                                                   "credentials": creds}), 202)["data_source"]
    out = wf.ok(client.post("/data-sources", json={"name": "out", "type": "s3", "url": f"s3://{bucket}/out",
                                                   "credentials": creds}), 202)["data_source"]
    main = wf.upload_binary(client, "long.py", LONG_JOB)
    cid = wf.create_cluster(client, "dask", "ttl", workers=1)
    wf.wait_cluster(client, cid)
    try:
        template = wf.job_template(client, "long", "Dask", main)
        jid = wf.run_job(client, template, cid, input_id=inp["id"], output_id=out["id"])
        j = wf.wait_job(client, jid)
        stderr = wf.logs(client, jid, "stderr")
        assert j["info"]["status"] == "SUCCEEDED", stderr
        assert "mode 0o600 env False" in stderr  # a private file, and no signed URL in the job's environment
        assert "first URL refused 403" in stderr and "renewed True" in stderr
        assert src.get("out/part-00000") == b"FIRST LINE\nSECOND LINE\n"
        probe = re.search(r"^probe (\S+)$", stderr, re.MULTILINE).group(1)
        assert f"X-Amz-Expires={TTL}&" in probe  # issued for the TTL, not for the job's deadline
        assert httpx.get(probe).status_code == 403  # expired: the store refuses it
        # the job's end removed its access file; no user secret anywhere on the instance
        assert not list((short_ttl.state_dir / "hosts").rglob("access.json"))
        for path in (short_ttl.state_dir / "hosts").rglob("*"):
            if path.is_file() and path.stat().st_size < 10_000_000:
                assert KEY.encode() + b'"' not in path.read_bytes(), path
    finally:
        wf.ok(client.delete(f"/clusters/{cid}"), 204)
        wf.wait_gone(client, cid)
