"""EDP: job binary internals, job binaries, data sources, job templates and jobs."""
from __future__ import annotations

from sqlalchemy import select

from oasis.api.binaries import MAX_INTERNAL_BYTES
from oasis.db.models import Cluster, Job, JobBinaryInternal

from tests.unit.conftest import World, cluster_body


def upload(world: World, name: str = "wc.py", data: bytes = b"print('hi')\n", version: str = "v2") -> dict:
    r = world.client.put(f"/{version}/job-binary-internals/{name}", content=data,
                         headers={**world.h(), "Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    return r.json()["job_binary_internal"]


def binary(world: World, name: str = "wc.py", data: bytes = b"print('hi')\n") -> dict:
    internal = upload(world, name, data)
    r = world.post("/v2/job-binaries", {"name": name, "url": f"internal-db://{internal['id']}"})
    assert r.status_code == 202, r.text
    return r.json()["job_binary"]


def active_cluster(world: World, name: str = "c1", plugin: str = "spark", workers: int = 1) -> str:
    r = world.post("/v2/clusters", cluster_body(name, plugin=plugin, workers=workers))
    assert r.status_code == 202, r.text
    cid = r.json()["cluster"]["id"]
    with world.db.session() as s:
        c = s.get(Cluster, cid)
        # as the engine leaves it: Active, with the credentials its configure step made
        c.status, c.op, c.secrets = "Active", None, {"auth_secret": "made-by-configure"}
    return cid


def template(world: World, job_type: str = "Spark", mains: list[str] | None = None, **extra) -> dict:
    r = world.post("/v2/job-templates", {"name": f"jt-{job_type}", "type": job_type, "mains": mains or [], **extra})
    assert r.status_code == 202, r.text
    return r.json()["job_template"]


def test_job_binary_internals(world: World) -> None:
    data = b"#!/bin/sh\necho hi\n"
    internal = upload(world, "run.sh", data)
    assert internal["datasize"] == len(data) and internal["name"] == "run.sh"
    with world.db.session() as s:
        row = s.get(JobBinaryInternal, internal["id"])
        assert row.object_key == f"job-binary-internals/{internal['id']}"
    assert world.store.get(f"job-binary-internals/{internal['id']}") == data
    listed = world.get("/v2/job-binary-internals").json()["binaries"]
    assert [b["id"] for b in listed] == [internal["id"]]
    assert world.get(f"/v2/job-binary-internals/{internal['id']}/data").content == data
    r = world.patch(f"/v2/job-binary-internals/{internal['id']}", {"name": "run2.sh"})
    assert r.status_code == 202 and r.json()["job_binary_internal"]["name"] == "run2.sh"
    # v1.1 spells the project `tenant_id`.
    v1 = world.get(f"/v1.1/{world.projects['p1']}/job-binary-internals/{internal['id']}").json()["job_binary_internal"]
    assert v1["tenant_id"] == world.projects["p1"] and "project_id" not in v1
    assert world.delete(f"/v2/job-binary-internals/{internal['id']}").status_code == 204
    assert not world.store.exists(f"job-binary-internals/{internal['id']}")
    assert world.get(f"/v2/job-binary-internals/{internal['id']}").status_code == 404


def test_job_binary_internal_refusals(world: World) -> None:
    def put(name: str, data: bytes) -> tuple[int, str]:
        r = world.client.put(f"/v2/job-binary-internals/{name}", content=data, headers=world.h())
        return r.status_code, r.json().get("error_name", "")

    assert put("empty", b"") == (400, "BAD_JOB_BINARY_INTERNAL")
    assert put("big", b"x" * (MAX_INTERNAL_BYTES + 1)) == (400, "DATA_TOO_BIG")
    assert put("bad name!", b"x") == (400, "VALIDATION_ERROR")
    assert upload(world, "exact", b"x" * MAX_INTERNAL_BYTES)["datasize"] == MAX_INTERNAL_BYTES
    assert put("exact", b"x") == (400, "NAME_ALREADY_EXISTS")
    # A name ending in .json is a name, not a format suffix.
    assert upload(world, "conf.json", b"{}")["name"] == "conf.json"


def test_job_binaries(world: World) -> None:
    jb = binary(world, "wc.py", b"print(1)")
    assert jb["url"].startswith("internal-db://") and "extra" not in jb
    assert world.get(f"/v2/job-binaries/{jb['id']}/data").content == b"print(1)"
    assert [b["id"] for b in world.get("/v2/job-binaries").json()["binaries"]] == [jb["id"]]
    r = world.patch(f"/v2/job-binaries/{jb['id']}", {"description": "counts words"})
    assert r.status_code == 202 and r.json()["job_binary"]["description"] == "counts words"
    swift = world.post("/v2/job-binaries", {"name": "s", "url": "swift://c/o.jar",
                                            "extra": {"user": "u", "password": "topsecret"}})
    assert swift.status_code == 202 and "topsecret" not in swift.text
    assert "topsecret" not in world.get(f"/v2/job-binaries/{swift.json()['job_binary']['id']}").text
    assert "topsecret" not in world.get("/v2/job-binaries").text

    def create(body: dict) -> tuple[int, str]:
        r = world.post("/v2/job-binaries", body)
        return r.status_code, r.json().get("error_name", "")

    assert create({"name": "x", "url": "internal-db://nope"}) == (400, "INVALID_REFERENCE")
    assert create({"name": "x", "url": "swift://c/o"}) == (400, "BAD_JOB_BINARY")
    assert create({"name": "x", "url": "s3://b/k", "extra": {"accesskey": "a"}}) == (400, "BAD_JOB_BINARY")
    assert create({"name": "x", "url": "manila://share/p"}) == (400, "BAD_JOB_BINARY")
    assert create({"name": "x", "url": "no-scheme"}) == (400, "BAD_JOB_BINARY")
    assert create({"name": "wc.py", "url": jb["url"]}) == (400, "NAME_ALREADY_EXISTS")
    assert create({"name": "_bad", "url": jb["url"]}) == (400, "VALIDATION_ERROR")
    # An internal binary in use by a job binary stays.
    internal_id = jb["url"].removeprefix("internal-db://")
    assert world.delete(f"/v2/job-binary-internals/{internal_id}").json()["error_name"] == "DELETION_FAILED"
    assert world.delete(f"/v2/job-binaries/{jb['id']}").status_code == 204
    assert world.get(f"/v2/job-binaries/{jb['id']}").status_code == 404


def test_data_sources(world: World) -> None:
    r = world.post("/v2/data-sources", {"name": "in", "type": "swift", "url": "swift://c/in",
                                        "credentials": {"user": "u", "password": "hunter2"}})
    assert r.status_code == 202 and "hunter2" not in r.text and "credentials" not in r.json()["data_source"]
    ds = r.json()["data_source"]
    assert world.get(f"/v2/data-sources/{ds['id']}").json()["data_source"]["url"] == "swift://c/in"
    assert "hunter2" not in world.get("/v2/data-sources").text
    assert world.post("/v2/data-sources", {"name": "f", "type": "file", "url": "file:///tmp/in"}).status_code == 202
    assert world.post("/v2/data-sources", {"name": "h", "type": "hdfs", "url": "/user/x"}).status_code == 202
    assert [d["name"] for d in world.get("/v2/data-sources", params={"type": "file"}).json()["data_sources"]] == ["f"]
    r = world.patch(f"/v2/data-sources/{ds['id']}", {"url": "swift://c/in2"})
    assert r.status_code == 202 and r.json()["data_source"]["url"] == "swift://c/in2"

    def create(body: dict) -> tuple[int, str]:
        r = world.post("/v2/data-sources", body)
        return r.status_code, r.json().get("error_name", "")

    assert create({"name": "x", "type": "file", "url": "swift://c/o"}) == (400, "INVALID_DATA")
    assert create({"name": "x", "type": "maprfs", "url": "maprfs://x"}) == (400, "VALIDATION_ERROR")
    assert create({"name": "in", "type": "s3", "url": "s3://b/k"}) == (400, "NAME_ALREADY_EXISTS")
    assert world.patch(f"/v2/data-sources/{ds['id']}", {"type": "file"}).json()["error_name"] == "INVALID_DATA"
    assert world.delete(f"/v2/data-sources/{ds['id']}").status_code == 204


def test_job_templates(world: World) -> None:
    main, lib = binary(world, "main.py"), binary(world, "lib.zip")
    jt = template(world, "Spark", [main["id"]], libs=[lib["id"]],
                  interface=[{"name": "n", "mapping_type": "args", "location": "0", "value_type": "number",
                              "default": "1"}])
    assert [m["name"] for m in jt["mains"]] == ["main.py"] and [l["name"] for l in jt["libs"]] == ["lib.zip"]
    assert jt["interface"][0]["mapping_type"] == "args"
    assert world.get(f"/v2/job-templates/{jt['id']}").json()["job_template"]["type"] == "Spark"
    assert [t["name"] for t in world.get("/v2/job-templates", params={"type": "Spark"}).json()["job_templates"]] \
        == ["jt-Spark"]
    r = world.patch(f"/v2/job-templates/{jt['id']}", {"description": "d"})
    assert r.status_code == 202 and r.json()["job_template"]["description"] == "d"
    assert world.patch(f"/v2/job-templates/{jt['id']}", {"type": "Java"}).json()["error_name"] == "VALIDATION_ERROR"
    # A binary used by a template stays.
    assert world.delete(f"/v2/job-binaries/{main['id']}").json()["error_name"] == "DELETION_FAILED"
    assert template(world, "Java", libs=[lib["id"]])["type"] == "Java"
    assert template(world, "Dask", [main["id"]])["type"] == "Dask"

    def create(body: dict) -> tuple[int, str]:
        r = world.post("/v2/job-templates", {"name": "x", **body})
        return r.status_code, r.json().get("error_name", "")

    assert create({"type": "Pig", "mains": [main["id"]]}) == (400, "VALIDATION_ERROR")  # no plugin runs Pig
    assert create({"type": "Spark"}) == (400, "INVALID_DATA")
    assert create({"type": "Shell", "mains": []}) == (400, "INVALID_DATA")
    assert create({"type": "Java"}) == (400, "INVALID_DATA")
    assert create({"type": "Spark", "mains": [main["id"]], "libs": [main["id"]]}) == (400, "INVALID_DATA")
    assert create({"type": "Spark", "mains": ["nope"]}) == (400, "INVALID_REFERENCE")
    hints = world.get("/v2/job-templates/config-hints/Java").json()["job_config"]
    assert "edp.java.main_class" in [c["name"] for c in hints["configs"]]
    assert world.get("/v2/job-templates/config-hints/Pig").status_code == 400


def test_jobs(world: World) -> None:
    main = binary(world, "main.py")
    jt = template(world, "Spark", [main["id"]])
    cid = active_cluster(world)
    src = world.post("/v2/data-sources", {"name": "in", "type": "file", "url": "file:///tmp/in"}).json()["data_source"]
    dst = world.post("/v2/data-sources", {"name": "out", "type": "file", "url": "file:///tmp/out"}).json()["data_source"]
    world.notified.clear()
    r = world.post("/v2/jobs", {"job_template_id": jt["id"], "cluster_id": cid, "input_id": src["id"],
                                "output_id": dst["id"], "job_configs": {
                                    "configs": {"fs.s3a.secret.key": "SECRETVALUE", "spark.x": "1"},
                                    "args": ["a"]}})
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    assert world.notified
    assert job["info"]["status"] == "PENDING" and job["engine_job_id"] is None
    assert job["job_configs"]["configs"] == {"fs.s3a.secret.key": "", "spark.x": "1"}
    assert "SECRETVALUE" not in r.text
    with world.db.session() as s:
        row = s.get(Job, job["id"])
        assert (row.op, row.status, row.job_configs["configs"]["fs.s3a.secret.key"]) == ("run", "PENDING", "SECRETVALUE")
    assert world.get(f"/v2/jobs/{job['id']}", params={"refresh_status": "True"}).json()["job"]["id"] == job["id"]
    assert [j["id"] for j in world.get("/v2/jobs", params={"status": "PENDING"}).json()["jobs"]] == [job["id"]]
    assert world.get("/v2/jobs", params={"status": "KILLED"}).json()["jobs"] == []
    # Logs come from the object store; none yet is an empty text.
    assert world.get(f"/v2/jobs/{job['id']}/logs").text == ""
    world.store.put(f"jobs/{job['id']}/stderr", b"warning\n")
    logs = world.get(f"/v2/jobs/{job['id']}/logs", params={"stream": "stderr"})
    assert logs.text == "warning\n" and logs.headers["content-type"].startswith("text/plain")
    assert world.get(f"/v2/jobs/{job['id']}/logs", params={"stream": "env"}).status_code == 400
    # Cancel, then delete.
    world.notified.clear()
    with world.db.session() as s:
        s.get(Job, job["id"]).lease_owner = "engine-1"
    r = world.patch(f"/v2/jobs/{job['id']}", {"info": {"status": "cancel"}})
    assert r.status_code == 202 and r.json()["job"]["info"]["status"] == "TOBEKILLED" and world.notified
    with world.db.session() as s:
        row = s.get(Job, job["id"])
        assert (row.op, row.lease_owner) == ("cancel", "engine-1")  # the watching engine stops, then lets go
    assert world.patch(f"/v2/jobs/{job['id']}", {"info": {"status": "suspend"}}).status_code == 400
    assert world.patch(f"/v2/jobs/{job['id']}", {"info": {"status": "cancel"}, "is_public": True}).status_code == 400
    assert world.patch(f"/v2/jobs/{job['id']}", {"is_public": True}).json()["job"]["is_public"] is True
    assert world.delete(f"/v2/jobs/{job['id']}").status_code == 204
    with world.db.session() as s:
        assert s.get(Job, job["id"]).op == "delete"
    # A template with jobs stays.
    assert world.delete(f"/v2/job-templates/{jt['id']}").json()["error_name"] == "DELETION_FAILED"


def test_job_refusals(world: World) -> None:
    main = binary(world, "main.py")
    spark_jt, dask_jt = template(world, "Spark", [main["id"]]), template(world, "Dask", [main["id"]])
    java_jt = template(world, "Java", libs=[main["id"]])
    cid = active_cluster(world)
    r = world.post("/v2/clusters", cluster_body("pending", workers=1))
    pending = r.json()["cluster"]["id"]
    ds = world.post("/v2/data-sources", {"name": "in", "type": "file", "url": "file:///tmp/in"}).json()["data_source"]
    same = world.post("/v2/data-sources", {"name": "in2", "type": "file", "url": "file:///tmp/in"}).json()["data_source"]

    def run(body: dict) -> tuple[int, str]:
        r = world.post("/v2/jobs", body)
        return r.status_code, r.json().get("error_name", "")

    with world.db.session() as s:  # a cluster that is not on its way to Active (one still coming up is taken)
        s.get(Cluster, pending).status = "Error"
    assert run({"job_template_id": spark_jt["id"], "cluster_id": pending}) == (400, "INVALID_DATA")
    assert run({"job_template_id": "nope", "cluster_id": cid}) == (400, "INVALID_REFERENCE")
    assert run({"job_template_id": spark_jt["id"], "cluster_id": "nope"}) == (400, "INVALID_REFERENCE")
    assert run({"job_template_id": dask_jt["id"], "cluster_id": cid}) == (400, "INVALID_REFERENCE")  # spark cluster
    assert run({"job_template_id": java_jt["id"], "cluster_id": cid}) == (400, "INVALID_DATA")
    assert run({"job_template_id": java_jt["id"], "cluster_id": cid,
                "job_configs": {"configs": {"edp.java.main_class": "Main"}}})[0] == 202
    assert run({"job_template_id": spark_jt["id"], "cluster_id": cid, "input_id": ds["id"],
                "output_id": ds["id"]}) == (400, "INVALID_DATA")
    assert run({"job_template_id": spark_jt["id"], "cluster_id": cid, "input_id": ds["id"],
                "output_id": same["id"]}) == (400, "INVALID_DATA")
    assert run({"job_template_id": spark_jt["id"], "cluster_id": cid, "input_id": "nope"}) == (400, "INVALID_REFERENCE")
    assert run({"job_template_id": spark_jt["id"]}) == (400, "VALIDATION_ERROR")
    assert run({"job_template_id": spark_jt["id"], "cluster_id": cid, "job_configs": {"argz": []}}) \
        == (400, "VALIDATION_ERROR")
    assert world.get("/v2/jobs/nope").status_code == 404
    assert world.patch("/v2/jobs/nope", {"is_public": True}).status_code == 404


def test_cancel_finished_job_and_other_projects(world: World) -> None:
    main = binary(world, "main.py")
    jt = template(world, "Spark", [main["id"]])
    cid = active_cluster(world)
    job = world.post("/v2/jobs", {"job_template_id": jt["id"], "cluster_id": cid}).json()["job"]
    with world.db.session() as s:
        row = s.get(Job, job["id"])
        row.status, row.op = "SUCCEEDED", None
    r = world.patch(f"/v2/jobs/{job['id']}", {"info": {"status": "cancel"}})
    assert r.status_code == 400 and r.json()["error_name"] == "CANCELING_FAILED"
    assert world.get(f"/v2/jobs/{job['id']}", who="bob").status_code == 404
    assert world.get(f"/v2/jobs/{job['id']}/logs", who="bob").status_code == 404
    assert world.get("/v2/jobs", who="bob").json()["jobs"] == []
    assert world.get(f"/v2/job-templates/{jt['id']}", who="bob").status_code == 404
    assert world.get(f"/v2/job-binaries/{main['id']}/data", who="bob").status_code == 404
    # bob cannot run alice's template on his cluster, nor hers.
    bob_cluster = world.post("/v2/clusters", cluster_body("bobs", workers=1), who="bob").json()["cluster"]["id"]
    r = world.post("/v2/jobs", {"job_template_id": jt["id"], "cluster_id": bob_cluster}, who="bob")
    assert r.status_code == 400 and r.json()["error_name"] == "INVALID_REFERENCE"
    with world.db.session() as s:
        assert len(list(s.scalars(select(Job)))) == 1


def test_a_spark_executor_bigger_than_every_worker_is_refused_at_once(world: World) -> None:
    """A worker of m1.small offers 1536 MB: a bigger executor would leave the job waiting for ever."""
    cid = active_cluster(world)
    jt = template(world, "Spark", [binary(world, "main.py")["id"]])

    def post(configs: dict):  # noqa: ANN202
        return world.post("/v2/jobs", {"job_template_id": jt["id"], "cluster_id": cid,
                                       "job_configs": {"configs": configs}})

    r = post({"spark.executor.memory": "2g"})
    assert r.status_code == 400 and r.json()["error_name"] == "INVALID_DATA", r.text
    assert "spark.executor.memory 2g is more than any worker of the cluster offers (1536 MB)" in r.text
    r = post({"spark.executor.memory": "lots"})
    assert r.status_code == 400 and "is not a size" in r.text, r.text
    for fits in ({}, {"spark.executor.memory": "1536m"}, {"spark.executor.memory": "1048576k"}):
        assert post(fits).status_code == 202
