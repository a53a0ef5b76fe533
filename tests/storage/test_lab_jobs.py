"""Jobs over object storage and site shares on a multi-host lab cluster (real sshd hosts in network namespaces):
a real Swift whose proxy listens on the lab controller link's root-side address (which the `central` site's hosts
route to), a Dask job and a PySpark job reading swift:// and writing s3:// across hosts, with no user secret on
any host; and a Dask job reading and writing file:// data under the site's declared share, refused outside it.
Needs root (CI has it); lab runs take turns through the lab's lock."""
from __future__ import annotations

import ipaddress
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.devswift import KEY, USER, SwiftServer, memcached_binary
from oasis.storage import store_for
from tests.integration import workflow as wf
from tests.integration.services import Oasis, processes_under
from tests.lab_fixture import site_of

# the lab's Swift is up before the service and stops after it
pytestmark = pytest.mark.service(lab=True, needs=("lab_swift",))

DEMO = Path(__file__).resolve().parents[2] / "oasis" / "demo"
SITE = "central"
BOOKS = [b"the river the city\nthe data river\n", b"a city of data\n", b"the end\n"]

# The Dask wordcount over object storage, preceded by a record of the job's own environment in its job directory
# (its cwd), so that the test can look for secrets there once the job has ended.
DASK_JOB = f"""
import json, os, runpy, sys
with open("job-environment.json", "w") as f:
    json.dump(dict(os.environ), f)
sys.argv = ["wordcount"]
runpy.run_path({str(DEMO / "wordcount_dask_objects.py")!r}, run_name="__main__")
""".encode()


@pytest.fixture(scope="module")
def lab_swift(lab: dict) -> Iterator[SwiftServer]:
    """The proxy on the root side of the controller link: in the lab range, on no real interface."""
    if memcached_binary() is None:
        pytest.fail("memcached is not installed: scripts/setup must apt-get install memcached")
    address = lab["spec"].controller_address
    assert ipaddress.ip_address(address) in lab["spec"].range
    with SwiftServer(bind_ip=address) as server:
        yield server


def _expected_counts(texts: list[bytes]) -> list[str]:
    counts = Counter(w for t in texts for w in t.decode().split())
    return sorted(f"{w}\t{n}" for w, n in counts.items())


def _cluster(service: Oasis, lab: dict, plugin: str, name: str, **extra) -> str:
    cid = wf.create_cluster(service.client, plugin, name, availability_zone=SITE, **extra)
    c = wf.wait_cluster(service.client, cid, timeout=300)
    leaf = ipaddress.ip_network(site_of(lab, SITE)["networks"][0]["cidr"])
    ips = {i["internal_ip"] for ng in c["node_groups"] for i in ng["instances"]}
    assert all(ipaddress.ip_address(ip) in leaf for ip in ips) and len(ips) >= 2, ips  # several hosts
    return cid


def _delete(service: Oasis, cid: str) -> None:
    wf.ok(service.client.delete(f"/clusters/{cid}"), 204)
    wf.wait_gone(service.client, cid)


def _object_sources(service: Oasis, swift: SwiftServer, container: str, tag: str) -> tuple[str, str]:
    """swift://container/books (three objects) in, s3://container/counts/<job id> out."""
    src = store_for(f"swift://{container}/", {"auth_url": swift.auth_url, "user": USER, "password": KEY},
                    create=True)
    for i, text in enumerate(BOOKS):
        src.put(f"books/{i}.txt", text)
    client = service.client
    inp = wf.ok(client.post("/data-sources", json={
        "name": f"books-{tag}", "type": "swift", "url": f"swift://{container}/books",
        "credentials": {"user": USER, "password": KEY, "auth_url": swift.auth_url}}), 202)["data_source"]["id"]
    out = wf.ok(client.post("/data-sources", json={
        "name": f"counts-{tag}", "type": "s3", "url": f"s3://{container}/counts/%JOB_EXEC_ID%",
        "credentials": {"accesskey": USER, "secretkey": KEY, "endpoint": swift.endpoint}}), 202)["data_source"]["id"]
    return inp, out


def _output_lines(swift: SwiftServer, resolved: str) -> list[str]:
    container, key = resolved[len("s3://"):].split("/", 1)
    results = store_for(f"s3://{container}/", {"endpoint": swift.endpoint, "accesskey": USER, "secretkey": KEY})
    parts = [o.key for o in results.list(key + "/") if "/part-" in o.key]
    assert results.exists(key + "/_SUCCESS") and parts
    return sorted("".join(results.get(p).decode() for p in parts).splitlines())


def _no_secret_on_hosts(lab: dict) -> None:
    """No user credential in any file under the site's hosts' base dirs (job dirs included: the job's recorded
    environment, its logs, its files) nor in the environment of any process still running there; no access file
    left once the jobs have ended."""
    markers = [KEY.encode() + b'"', b'"secretkey"']
    for host in site_of(lab, SITE)["hosts"]:
        base = Path(host["base_dir"])
        assert not list(base.rglob("access.json")), f"an access file outlived its job on {host['name']}"
        for path in base.rglob("*"):
            if path.is_file() and not path.is_symlink() and path.stat().st_size < 10_000_000:
                data = path.read_bytes()
                assert not [m for m in markers if m in data], path
        for pid in processes_under(base):
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue  # ended meanwhile
            assert not [v for v in env if v.endswith(b"=" + KEY.encode()) or b"secretkey" in v
                        or v.startswith(b"OASIS_DATA_ACCESS=")], pid


def test_dask_job_over_swift_and_s3_across_hosts(service: Oasis, lab: dict, lab_swift: SwiftServer) -> None:
    client = service.client
    container = f"lab-dask-{uuid.uuid4().hex[:8]}"
    inp, out = _object_sources(service, lab_swift, container, "dask")
    cid = _cluster(service, lab, "dask", "lab-objects-dask", flavor="1")
    try:
        template = wf.job_template(client, "lab-wc-dask", "Dask", wf.upload_binary(client, "wc-dask.py", DASK_JOB))
        jid = wf.run_job(client, template, cid, input_id=inp, output_id=out)
        j = wf.wait_job(client, jid, timeout=300)
        stderr = wf.logs(client, jid, "stderr")
        assert j["info"]["status"] == "SUCCEEDED", stderr[-3000:]
        assert "# 3 objects on 2 workers" in stderr  # the workers (on other hosts) fetched the objects
        resolved = j["data_source_urls"][out]
        assert resolved == f"s3://{container}/counts/{jid}"
        assert _output_lines(lab_swift, resolved) == _expected_counts(BOOKS)
        recorded = [p for h in site_of(lab, SITE)["hosts"]
                    for p in Path(h["base_dir"]).rglob(f"jobs/{jid}/job-environment.json")]
        assert len(recorded) == 1 and "OASIS_DATA_ACCESS_FILE" in recorded[0].read_text()  # access as a file
        _no_secret_on_hosts(lab)
        assert KEY not in stderr and KEY not in wf.logs(client, jid)
    finally:
        _delete(service, cid)


def test_pyspark_job_over_swift_and_s3_across_hosts(service: Oasis, lab: dict, lab_swift: SwiftServer) -> None:
    client = service.client
    container = f"lab-spark-{uuid.uuid4().hex[:8]}"
    inp, out = _object_sources(service, lab_swift, container, "spark")
    # m1.small: an executor needs 1 GB; one instance per host
    cid = _cluster(service, lab, "spark", "lab-objects-spark", workers=2)
    try:
        main = wf.upload_binary(client, "wc-spark.py", (DEMO / "wordcount_spark_objects.py").read_bytes())
        template = wf.job_template(client, "lab-wc-spark", "Spark", main)
        jid = wf.run_job(client, template, cid, input_id=inp, output_id=out)
        j = wf.wait_job(client, jid, timeout=300)
        stderr = wf.logs(client, jid, "stderr")
        assert j["info"]["status"] == "SUCCEEDED", stderr[-3000:]
        assert wf.logs(client, jid).splitlines()[:2] == ["the\t4", "city\t2"]
        assert _output_lines(lab_swift, j["data_source_urls"][out]) == _expected_counts(BOOKS)
        _no_secret_on_hosts(lab)
    finally:
        _delete(service, cid)


def test_file_data_on_the_sites_share(service: Oasis, lab: dict) -> None:
    client = service.client
    share = Path(next(s["path"] for s in site_of(lab, SITE)["shares"] if s["access_level"] == "rw"))
    books = share / f"books-{uuid.uuid4().hex[:6]}"
    books.mkdir()
    for i, text in enumerate(BOOKS):
        (books / f"{i}.txt").write_bytes(text)

    def source(name: str, url: str) -> str:
        return wf.ok(client.post("/data-sources", json={"name": name, "type": "file", "url": url}), 202
                     )["data_source"]["id"]

    inp = source("share-books", f"file://{books}")
    out = source("share-counts", f"file://{share}/counts-%JOB_EXEC_ID%")
    outside = source("outside", f"file://{books.parent.parent}/elsewhere-%JOB_EXEC_ID%")
    cid = _cluster(service, lab, "dask", "lab-share-dask", flavor="1")
    try:
        main = wf.upload_binary(client, "wc-file.py", (DEMO / "wordcount_dask_objects.py").read_bytes())
        template = wf.job_template(client, "lab-wc-file", "Dask", main)
        jid = wf.run_job(client, template, cid, input_id=inp, output_id=out)
        j = wf.wait_job(client, jid, timeout=300)
        stderr = wf.logs(client, jid, "stderr")
        assert j["info"]["status"] == "SUCCEEDED", stderr[-3000:]
        assert "# 3 objects on 2 workers" in stderr
        written = share / f"counts-{jid}"
        assert (written / "_SUCCESS").exists()
        lines = sorted("".join(p.read_text() for p in sorted(written.glob("part-*"))).splitlines())
        assert lines == _expected_counts(BOOKS)
        # outside the share: refused at create (the API knows the cluster) ...
        r = client.post("/jobs", json={"job_template_id": template, "cluster_id": cid, "input_id": inp,
                                       "output_id": outside})
        assert r.status_code == 400 and r.json()["error_name"] == "INVALID_DATA", r.text
        assert "is not on a share of site 'central'" in r.json()["error_message"]
        # ... and at prepare, for a data source only the engine resolves (named in the job's arguments)
        jid = wf.run_job(client, template, cid, input_id=inp, job_configs={
            "configs": {"edp.substitute_data_source_for_name": True}, "args": ["datasource://outside"]})
        j = wf.wait_job(client, jid, timeout=120)
        assert j["info"]["status"] == "FAILED"
        assert re.search(r"elsewhere-\S+ is not on a share of site 'central'", j["info"]["status_description"])
        assert not list(books.parent.parent.glob("elsewhere-*"))
    finally:
        _delete(service, cid)
