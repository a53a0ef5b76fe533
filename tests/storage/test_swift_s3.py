"""Object stores and per-job scoped access against a real OpenStack Swift (native API and S3 through s3api of the
same server), and the wordcount jobs reading swift:// and writing s3:// through oasis.jobkit on real Dask and
Spark."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from devtools.devswift import KEY, USER
from oasis.edp import access as acc
from oasis.edp.binaries import fetch
from oasis.storage import Endpoints, open_store, store_for
from oasis.storage.base import ObjectNotFound
from oasis.storage.secrets import Secrets

DEMO = Path(__file__).resolve().parents[2] / "oasis" / "demo"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("kind", ["swift", "s3", "file"])
def test_object_store_put_get_list_delete(kind: str, swift, swift_creds, s3_creds, tmp_path: Path) -> None:
    if kind == "file":
        store = open_store(None, tmp_path / "objects")
    else:
        store = store_for(f"{kind}://{_name('store')}/", swift_creds if kind == "swift" else s3_creds, create=True)
    store.put("a/one.txt", b"1")
    store.put("a/two.txt", b"22")
    store.put("b/three.txt", b"333")
    assert store.get("a/two.txt") == b"22"
    assert store.exists("a/one.txt") and not store.exists("a/none")
    assert [(o.key, o.size) for o in store.list("a/")] == [("a/one.txt", 1), ("a/two.txt", 2)]
    assert len(store.list()) == 3
    store.delete("a/one.txt")
    store.delete("a/one.txt")  # deleting twice is fine
    assert not store.exists("a/one.txt")
    with pytest.raises(ObjectNotFound):
        store.get("a/one.txt")
    assert "testing" not in repr(store)


def test_swift_and_s3_are_one_server_and_deployment_store_spec(swift) -> None:
    user = USER.replace(":", "%3A")  # user names with a colon are percent-encoded in the spec
    spec = f"swift+http://{user}:{KEY}@127.0.0.1:{swift.ports['proxy']}/auth/v1.0?container=oasis-deploy"
    deploy = open_store(spec, Path("/nonexistent"))
    deploy.put("job-binary-internals/x", b"bytes")
    s3 = open_store(f"s3+http://{user}:{KEY}@127.0.0.1:{swift.ports['proxy']}?bucket=oasis-deploy", Path("/x"))
    assert s3.get("job-binary-internals/x") == b"bytes"  # the same object, through the S3 API
    assert deploy.endpoints == Endpoints(swift_auth_url=swift.auth_url)
    assert KEY not in repr(deploy) and KEY not in repr(s3)


def test_wrong_credentials_are_refused_without_echoing_them(swift) -> None:
    with pytest.raises(Exception) as err:
        store_for("swift://c/x", {"auth_url": swift.auth_url, "user": USER, "password": "wrong-pw-1234"},
                  create=True)
    assert "wrong-pw-1234" not in str(err.value)
    with pytest.raises(Exception) as err:
        store_for("s3://bucket-x/x", {"endpoint": swift.endpoint, "accesskey": USER, "secretkey": "bad-s3-5678"},
                  create=True)
    assert "bad-s3-5678" not in str(err.value)


def test_remote_binaries_are_fetched_with_encrypted_credentials(swift, swift_creds, s3_creds, tmp_path) -> None:
    secrets = Secrets.for_state_dir(tmp_path)
    container = _name("bins")
    store_for(f"swift://{container}/", swift_creds, create=True).put("jobs/wc.py", b"print('hi')")
    deploy = open_store(None, tmp_path / "objects")
    deploy.endpoints = Endpoints(swift_auth_url=swift.auth_url)

    class Binary:  # the two columns fetch reads
        name = "wc.py"
        url = f"swift://{container}/jobs/wc.py"
        extra = secrets.encrypt_dict({"user": USER, "password": KEY})  # no auth_url: the deployment's Swift

    assert "testing" not in json.dumps(Binary.extra)
    assert fetch(deploy, Binary, secrets) == b"print('hi')"
    Binary.url = f"s3://{container}/jobs/wc.py"  # the same container seen as a bucket
    Binary.extra = secrets.encrypt_dict({"accesskey": USER, "secretkey": KEY, "endpoint": swift.endpoint})
    assert fetch(deploy, Binary, secrets) == b"print('hi')"


# --- scoped access ------------------------------------------------------------------------------------------


def _seed(creds: dict, container: str, kind: str = "swift") -> None:
    store = store_for(f"{kind}://{container}/", creds, create=True)
    for name, text in (("in/a.txt", "the river the city\n"), ("in/b.txt", "the data river\n"),
                       ("secret/keys.txt", "not yours\n"), ("inside.txt", "a sibling of in/, not in it\n")):
        store.put(name, text.encode())


def _status(method: str, url: str, data: bytes | None = None) -> int:
    return httpx.request(method, url, content=data, timeout=30).status_code


def test_swift_temp_urls_are_scoped_to_the_prefix_and_die_with_the_job(swift, swift_creds, tmp_path) -> None:
    secrets = Secrets.for_state_dir(tmp_path)
    container = _name("scoped")
    _seed(swift_creds, container)
    job = str(uuid.uuid4())
    stored = secrets.encrypt_dict(swift_creds)
    grant = acc.grant(job, [("in", f"swift://{container}/in", stored, "r"),
                            ("out", f"swift://{container}/out/{job}", stored, "rw")], secrets, lifetime_s=600)
    env = grant.env[acc.ENV]
    assert KEY not in env and "X-Auth-Token" not in env and USER not in env  # no user credential reaches a job
    data = json.loads(env)
    assert [o[0] for o in data[f"swift://{container}/in"]["objects"]] == ["in/a.txt", "in/b.txt"]
    os.environ[acc.ENV] = env
    try:
        from oasis import jobkit
        url_a = jobkit.signed_url(f"swift://{container}/in/a.txt")
        assert httpx.get(url_a).text == "the river the city\n"
        # the same signature outside the prefix: another object, a sibling sharing the name's start, a container
        storage = data[f"swift://{container}/in"]["storage_url"]
        sig = url_a.split("?", 1)[1]
        assert _status("GET", f"{storage}/{container}/secret/keys.txt?{sig}") == 401
        assert _status("GET", f"{storage}/{container}/inside.txt?{sig.replace('prefix=in%2F', 'prefix=in')}") == 401
        assert _status("GET", f"{storage}/{container}/secret/keys.txt?"
                       f"{sig.replace('prefix=in%2F', 'prefix=secret%2F')}") == 401
        with pytest.raises(jobkit.AccessDenied):
            jobkit.signed_url(f"swift://{container}/secret/keys.txt")
        # inputs are read-only; the output is writable, and only there
        assert _status("PUT", url_a, b"x") == 401
        with pytest.raises(jobkit.AccessDenied):
            jobkit.signed_url(f"swift://{container}/in/a.txt", "PUT")
        jobkit.write_text(f"swift://{container}/out/{job}/part-00000", "hello\n")
        assert store_for(f"swift://{container}/", swift_creds).get(f"out/{job}/part-00000") == b"hello\n"
        assert jobkit.read_text(f"swift://{container}/in") == "the river the city\nthe data river\n"
    finally:
        del os.environ[acc.ENV]
    # the job ends: its URLs are refused from then on
    assert acc.revoke(job, [(r["url"], stored) for r in grant.record], secrets) == []
    assert _status("GET", url_a) == 401


def test_swift_key_rotates_only_when_the_last_job_of_the_account_ends(swift, swift_creds) -> None:
    container = _name("overlap")
    _seed(swift_creds, container)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    src = [("in", f"swift://{container}/in", swift_creds, "r")]
    grant_a, grant_b = acc.grant(a, src, None, lifetime_s=600), acc.grant(b, src, None, lifetime_s=600)

    def url(grant) -> str:
        e = json.loads(grant.env[acc.ENV])[f"swift://{container}/in"]
        return (f"{e['storage_url']}/{container}/in/a.txt?temp_url_sig={e['sig']['GET']}"
                f"&temp_url_expires={e['expires']}&temp_url_prefix=in%2F")

    acc.revoke(a, [(src[0][1], swift_creds)], None)
    assert _status("GET", url(grant_b)) == 200  # b still runs
    acc.revoke(b, [(src[0][1], swift_creds)], None)
    assert _status("GET", url(grant_b)) == 401 and _status("GET", url(grant_a)) == 401


def test_s3_presigned_requests_are_per_object_and_expire(swift, s3_creds) -> None:
    bucket = _name("presign")
    _seed(s3_creds, bucket, "s3")
    job = str(uuid.uuid4())
    grant = acc.grant(job, [("in", f"s3://{bucket}/in", s3_creds, "r"),
                            ("out", f"s3://{bucket}/out", s3_creds, "rw")], None, lifetime_s=4, output_parts=2)
    env = json.loads(grant.env[acc.ENV])
    assert KEY not in grant.env[acc.ENV]
    inp = env[f"s3://{bucket}/in"]
    assert [o[0] for o in inp["objects"]] == ["in/a.txt", "in/b.txt"]
    get_a = inp["objects"][0][2]
    assert httpx.get(get_a).text == "the river the city\n"
    assert _status("GET", get_a.replace("/in/a.txt", "/secret/keys.txt")) == 403  # the signature names the key
    put = env[f"s3://{bucket}/out"]["put"]
    assert sorted(put) == ["out", "out/_SUCCESS", "out/part-00000", "out/part-00001"]
    assert _status("PUT", put["out/part-00000"], b"x") == 200
    assert _status("PUT", put["out/part-00000"].replace("/out/part-00000", "/in/a.txt"), b"x") == 403
    deadline = grant.expires + 1
    while time.time() < deadline:
        time.sleep(0.2)
    assert _status("GET", get_a) == 403  # expired with the job's deadline


# --- jobs ---------------------------------------------------------------------------------------------------

TEXT = "the river the city\nthe data river\n"


def _job_env(grant: acc.JobAccess, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OASIS_", "DASK_"))}
    return {**env, **grant.env, **extra}


def _counts(store, prefix: str) -> dict[str, int]:
    lines = "".join(store.get(o.key).decode() for o in store.list(prefix) if "/part-" in o.key).splitlines()
    return {w: int(n) for w, n in (line.split("\t") for line in lines)}


def test_dask_wordcount_reads_swift_writes_s3_with_scoped_access(swift, swift_creds, s3_creds, tmp_path) -> None:
    from distributed import LocalCluster

    container, bucket = _name("dask-in"), _name("dask-out")
    src = store_for(f"swift://{container}/", swift_creds, create=True)
    for i in range(3):
        src.put(f"books/{i}.txt", (TEXT * (i + 1)).encode())
    job = str(uuid.uuid4())
    inp, out = f"swift://{container}/books", f"s3://{bucket}/counts/{job}"
    grant = acc.grant(job, [("i", inp, swift_creds, "r"), ("o", out, s3_creds, "rw")], None, lifetime_s=600,
                      output_parts=8)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster:
        r = subprocess.run([sys.executable, str(DEMO / "wordcount_dask_objects.py")], capture_output=True, text=True,
                           timeout=120, env=_job_env(grant, DASK_SCHEDULER_ADDRESS=cluster.scheduler_address,
                                                     OASIS_INPUT_URL=inp, OASIS_OUTPUT_URL=out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:2] == ["the\t18", "river\t12"]
    result = store_for(f"s3://{bucket}/", s3_creds)
    assert _counts(result, f"counts/{job}/") == {"the": 18, "river": 12, "city": 6, "data": 6}
    assert result.exists(f"counts/{job}/_SUCCESS")
    acc.revoke(job, [(inp, swift_creds), (out, s3_creds)], None)
    e = json.loads(grant.env[acc.ENV])[inp]
    assert _status("GET", f"{e['storage_url']}/{container}/books/0.txt?temp_url_sig={e['sig']['GET']}"
                   f"&temp_url_expires={e['expires']}&temp_url_prefix=books%2F") == 401


@pytest.mark.spark
def test_spark_wordcount_reads_and_writes_through_jobkit(swift, swift_creds, s3_creds, tmp_path) -> None:
    container = _name("spark")
    src = store_for(f"swift://{container}/", swift_creds, create=True)
    for i in range(2):
        src.put(f"in/{i}.txt", (TEXT * (i + 1)).encode())
    job = str(uuid.uuid4())
    inp, out = f"swift://{container}/in", f"s3://{container}/out"
    grant = acc.grant(job, [("i", inp, swift_creds, "r"), ("o", out, s3_creds, "rw")], None, lifetime_s=600,
                      output_parts=4)
    try:
        import pyspark

        submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
        env = _job_env(grant, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable,
                       PYSPARK_DRIVER_PYTHON=sys.executable)
        r = subprocess.run([str(submit), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
                            str(DEMO / "wordcount_spark_objects.py"), inp, out],
                           capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.splitlines()[:2] == ["the\t9", "river\t6"]
        assert _counts(store_for(f"s3://{container}/", s3_creds), "out/") == {"the": 9, "river": 6, "city": 3,
                                                                              "data": 3}
    finally:  # the account's temp-URL key rotates only once no job holds a live registration (the Swift is shared)
        acc.revoke(job, [(inp, swift_creds), (out, s3_creds)], None)
