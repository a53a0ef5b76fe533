"""Storage and EDP pieces that need no server: secrets at rest, URL parsing, placeholders, a job's data sources,
jobkit's scoping, and S3 presigning on moto (a mock: the real S3 evidence is in tests/storage)."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from oasis.db.models import DataSource, Job
from oasis.db.session import Database
from oasis.edp.datasources import resolve_job, runtime_url
from oasis.storage.secrets import MARK, SecretError, Secrets, load_key
from oasis.storage.urls import parse


def test_secrets_are_encrypted_at_rest_with_a_private_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("OASIS_SECRET_KEY", raising=False)
    s = Secrets.for_state_dir(tmp_path)
    key_file = tmp_path / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    stored = s.encrypt_dict({"user": "u", "password": "pw-123"})
    assert set(stored) == {MARK} and "pw-123" not in json.dumps(stored)
    assert s.decrypt_dict(stored) == {"user": "u", "password": "pw-123"}
    assert s.encrypt_dict(stored) == stored  # not twice
    assert s.decrypt_dict({"user": "legacy"}) == {"user": "legacy"}  # rows from before encryption
    assert load_key(tmp_path) == key_file.read_bytes().strip()  # the same key next time
    other = Secrets.for_state_dir(tmp_path / "elsewhere")
    with pytest.raises(SecretError):
        other.decrypt_dict(stored)
    assert "pw" not in repr(s)


def test_urls() -> None:
    assert parse("swift://container.sahara/a/b.txt").container == "container"
    loc = parse("s3a://bucket/k/")
    assert (loc.kind, loc.container, loc.key, loc.url()) == ("s3", "bucket", "k/", "s3://bucket/k/")
    assert parse("hdfs://nn/x").is_object is False and parse("file:///tmp/x").key == "/tmp/x"
    with pytest.raises(ValueError):
        parse("swift:///nothing")


def test_placeholders_expand_once_per_execution(tmp_path: Path) -> None:
    url = runtime_url("swift://c/out/%JOB_EXEC_ID%/%RANDSTR(6)%-%RANDSTR(3)%", "job-1")
    head, tail = url.rsplit("/", 1)
    assert head == "swift://c/out/job-1" and len(tail) == 10 and tail[6] == "-" and tail.replace("-", "").isalpha()
    assert runtime_url("s3://b/%JOB_EXEC_ID%", None) == "s3://b/%JOB_EXEC_ID%"
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db.migrate()
    with db.session() as s:
        out = DataSource(project_id="p", name="out", type="swift", url="swift://c/out/%RANDSTR(8)%")
        inp = DataSource(project_id="p", name="in", type="s3", url="s3://b/in")
        theirs = DataSource(project_id="q", name="theirs", type="s3", url="s3://b/private")
        s.add_all([out, inp, theirs])
        s.flush()
        job = Job(project_id="p", job_template_id="t", input_id=inp.id, output_id=out.id, job_configs={
            "configs": {"edp.substitute_data_source_for_name": True, "edp.substitute_data_source_for_uuid": True},
            "args": ["datasource://out", out.id, theirs.id, "plain"]})
        s.add(job)
        s.flush()
        data = resolve_job(s, job)
    resolved = data.urls[out.id]
    assert resolved.startswith("swift://c/out/") and "%" not in resolved
    assert data.job_configs["args"] == [resolved, resolved, theirs.id, "plain"]  # one URL per execution;
    assert data.env == {"OASIS_INPUT_URL": "s3://b/in", "OASIS_OUTPUT_URL": resolved}  # other projects' unseen
    assert data.modes == {inp.id: "r", out.id: "rw"}


def test_jobkit_refuses_what_the_job_was_not_given(monkeypatch) -> None:
    from oasis import jobkit

    entry = {"kind": "swift-tempurl", "storage_url": "http://s/v1/AUTH_a", "container": "c", "key": "in",
             "prefix": "in/", "expires": 9, "sig": {"GET": "g"}, "object_sig": {"GET": "o"},
             "objects": [["in/a", 1], ["in/_SUCCESS", 0]]}
    monkeypatch.setenv(jobkit.ENV, json.dumps({"swift://c/in": entry}))
    assert jobkit.signed_url("swift://c/in/a") == \
        "http://s/v1/AUTH_a/c/in/a?temp_url_sig=g&temp_url_expires=9&temp_url_prefix=in%2F"
    assert "temp_url_sig=o" in jobkit.signed_url("swift://c/in")
    assert jobkit.list_objects("swift://c/in") == ["swift://c/in/a"]
    for url, method in (("swift://c/inside", "GET"), ("swift://d/in/a", "GET"), ("s3://c/in/a", "GET"),
                        ("swift://c/in/a", "PUT")):
        with pytest.raises(jobkit.AccessDenied):
            jobkit.signed_url(url, method)


def test_s3_grant_on_moto_presigns_inputs_and_planned_outputs(monkeypatch) -> None:
    moto = pytest.importorskip("moto")
    from oasis.edp import access

    with moto.mock_aws():
        from oasis.storage import store_for

        creds = {"accesskey": "AK", "secretkey": "SK-secret"}
        store = store_for("s3://bucket-m/", creds, create=True)
        store.put("in/a", b"1")
        store.put("in/b", b"22")
        grant = access.grant("j", [("i", "s3://bucket-m/in", creds, "r"), ("o", "s3://bucket-m/out", creds, "rw")],
                             None, lifetime_s=60, output_parts=3)
    data = json.loads(grant.env[access.ENV])
    assert [o[:2] for o in data["s3://bucket-m/in"]["objects"]] == [["in/a", 1], ["in/b", 2]]
    assert sorted(data["s3://bucket-m/out"]["put"]) == ["out", "out/_SUCCESS", "out/part-00000", "out/part-00001",
                                                        "out/part-00002"]
    assert "put" not in data["s3://bucket-m/in"] and "SK-secret" not in grant.env[access.ENV]
    assert grant.record == [{"data_source_id": "i", "url": "s3://bucket-m/in", "kind": "s3", "mode": "r"},
                            {"data_source_id": "o", "url": "s3://bucket-m/out", "kind": "s3", "mode": "rw"}]
    assert os.environ.get(access.ENV) is None


def test_s3_access_is_short_lived_and_renewed_on_a_fake_clock(tmp_path: Path, monkeypatch, caplog) -> None:
    """The engine's renewal loop on a fake clock: every TTL/3 a fresh grant (moto presigns) is written to the
    access file; a renewal that fails is logged without secrets and retried sooner, never ending the loop."""
    moto = pytest.importorskip("moto")
    import asyncio
    from urllib.parse import parse_qs, urlsplit

    from oasis.edp import access
    from oasis.engine.jobs import keep_fresh
    from oasis.storage import StoreError

    clock = {"now": 1_800_000_000.0}
    monkeypatch.setattr(access.time, "time", lambda: clock["now"])
    ttl, deadline = 30, int(clock["now"]) + 3600
    creds = {"accesskey": "AK", "secretkey": "SK-secret"}
    sources = [("i", "s3://bucket-r/in", creds, "r"), ("o", "s3://bucket-r/out", creds, "rw")]
    written: list[dict] = []
    failures = {"left": 1}
    target = tmp_path / "access.json"

    async def renew() -> None:
        if len(written) == 2 and failures["left"]:
            failures["left"] -= 1
            raise StoreError("S3 list in/: SlowDown")
        grant = access.grant("j", sources, None, lifetime_s=3600, output_parts=2, s3_ttl_s=ttl, deadline=deadline)
        target.write_text(grant.env[access.ENV])
        written.append(json.loads(grant.env[access.ENV]))

    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)
        clock["now"] += seconds
        if len(written) >= 4:
            raise asyncio.CancelledError

    with moto.mock_aws():
        from oasis.storage import store_for

        store_for("s3://bucket-r/", creds, create=True).put("in/a", b"1")
        with pytest.raises(asyncio.CancelledError):
            asyncio.run(keep_fresh(renew, ttl / 3, 2.0, first_delay=0.0, what="job j", sleep=fake_sleep))
    # renewed at once (a resumed watch), then every TTL/3, then 2 s after the failed attempt
    assert delays[:5] == [0.0, 10.0, 10.0, 2.0, 10.0]
    assert len(written) == 4
    for doc in written:
        entry = doc["s3://bucket-r/in"]
        url = entry["objects"][0][2]
        query = parse_qs(urlsplit(url).query)
        assert query["X-Amz-Expires"] == [str(ttl)]  # short-lived, not the job's deadline
        assert entry["expires"] <= deadline
    issued = [doc["s3://bucket-r/in"]["expires"] for doc in written]
    assert issued == sorted(issued) and issued[-1] - issued[0] == 32  # 10 + 10 + 2 + 10 s later, minus the first
    assert [r.message for r in caplog.records if "renewing" in r.message] == [
        "job j: renewing its data access failed, retrying in 2s: S3 list in/: SlowDown"]
    assert "SK-secret" not in caplog.text and "X-Amz-Signature" not in caplog.text


def test_jobkit_reads_the_access_file_again_when_it_changes_and_when_refused(tmp_path: Path, monkeypatch) -> None:
    from oasis import jobkit

    path = tmp_path / "access.json"

    def entry(sig: str) -> dict:
        return {"s3://b/in": {"kind": "s3-presigned", "bucket": "b", "key": "in", "prefix": "in/", "expires": 1,
                              "objects": [["in/a", 1, f"http://s3.invalid/b/in/a?sig={sig}"]]}}

    path.write_text(json.dumps(entry("one")))
    monkeypatch.setenv(jobkit.FILE_ENV, str(path))
    monkeypatch.delenv(jobkit.ENV, raising=False)
    assert jobkit.signed_url("s3://b/in/a").endswith("sig=one")
    tmp = tmp_path / "new"
    tmp.write_text(json.dumps(entry("two")))
    os.replace(tmp, path)  # what the engine's atomic rewrite does
    assert jobkit.signed_url("s3://b/in/a").endswith("sig=two")
    # a refused (expired) URL: the file is read again and the request retried once with the new URL
    seen: list[str] = []

    def fake_http(method: str, url: str, data: bytes | None = None) -> bytes:
        seen.append(url.rsplit("=", 1)[1])
        if url.endswith("sig=two"):
            fresh = tmp_path / "fresh"
            fresh.write_text(json.dumps(entry("three")))
            os.replace(fresh, path)
            raise jobkit.AccessDenied("GET: refused (403)")
        return b"data"

    monkeypatch.setattr(jobkit, "_http", fake_http)
    assert jobkit.read_bytes("s3://b/in/a") == b"data" and seen == ["two", "three"]
    path.unlink()  # the job's end: access withdrawn
    with pytest.raises(jobkit.AccessDenied):
        jobkit.signed_url("s3://b/in/a")


def test_the_test_swift_never_listens_on_every_interface() -> None:
    from devtools.devswift import SwiftServer

    for wildcard in ("0.0.0.0", "::"):
        with pytest.raises(ValueError, match="every interface"):
            SwiftServer(bind_ip=wildcard)
