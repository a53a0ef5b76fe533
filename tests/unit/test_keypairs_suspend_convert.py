"""Sahara compatibility, issue 3: plugin labels in the database, the keypair registry and update_keypair, job
suspend and resume, and v1.1 convert-config."""
from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from sqlalchemy import select

from oasis.db.models import (
    Cluster,
    ClusterTemplate,
    Host,
    Image,
    Instance,
    Job,
    Keypair,
    PluginLabel,
)
from oasis.engine.clusters import ClusterWork, cluster_machine
from oasis.engine.jobs import job_machine
from oasis.procs import group_members, group_states
from oasis.remote.hosts import Remotes
from oasis.keys import generate_keypair
from oasis.remote.local import LocalRemote
from tests.unit.conftest import World, cluster_body, version_of
from tests.unit.test_api_clusters import set_status
from tests.unit.test_api_edp import active_cluster, binary, template


def _public(comment: str = "me@laptop") -> str:
    return generate_keypair(comment)[1]


def keypair(world: World, name: str = "mine", public_key: str | None = None, who: str = "alice") -> dict:
    body = {"name": name, **({"public_key": public_key} if public_key is not None else {})}
    r = world.post("/v2/keypairs", body, who=who)
    assert r.status_code == 202, r.text
    return r.json()["keypair"]


# --- plugin labels --------------------------------------------------------------------------------------------


def test_plugin_labels_live_in_the_database(world: World) -> None:
    version = version_of("spark")
    change = {"plugin_labels": {"hidden": {"status": True}},
              "version_labels": {version: {"enabled": {"status": False}}}}
    assert world.patch("/v2/plugins/spark", change, who="alice").status_code == 403
    assert world.patch("/v1.1/plugins/spark", change, who="carol").status_code == 403
    r = world.patch("/v2/plugins/spark", change, who="admin")
    assert r.status_code == 202, r.text
    with world.db.session() as s:
        rows = {(r.version, r.label): r.status for r in s.scalars(select(PluginLabel))}
    assert rows == {("", "hidden"): True, (version, "enabled"): False}
    assert not any("plugin-labels" in str(p) for p in Path(world.settings.objects_dir).rglob("*"))
    shown = world.get("/v2/plugins/spark").json()["plugin"]
    assert shown["plugin_labels"]["hidden"]["status"] is True
    assert shown["version_labels"][version]["enabled"]["status"] is False
    # Another API process on the same database sees the same labels (nothing is kept in memory).
    assert world.get(f"/v2/plugins/spark/{version}").json()["plugin"]["version_labels"][version]["enabled"][
        "status"] is False
    assert world.post("/v2/clusters", cluster_body()).json()["error_name"] == "INVALID_REFERENCE"
    # Setting it again updates the row rather than adding one.
    world.patch("/v2/plugins/spark", {"version_labels": {version: {"enabled": {"status": True}}}}, who="admin")
    with world.db.session() as s:
        assert s.get(PluginLabel, ("spark", version, "enabled")).status is True
        assert len(list(s.scalars(select(PluginLabel)))) == 2
    assert world.post("/v2/clusters", cluster_body()).status_code == 202


# --- keypairs -------------------------------------------------------------------------------------------------


def test_keypair_import_show_list_delete(world: World) -> None:
    public = _public()
    kp = keypair(world, "mine", public)
    assert kp["public_key"] == public and kp["fingerprint"].startswith("SHA256:")
    assert "private_key" not in kp
    assert world.get(f"/v2/keypairs/{kp['id']}").json()["keypair"]["name"] == "mine"
    assert world.get("/v2/keypairs/mine").json()["keypair"]["id"] == kp["id"]  # by name too, as Nova
    assert [k["name"] for k in world.get("/v2/keypairs").json()["keypairs"]] == ["mine"]
    assert world.get("/v2/keypairs", params={"name": "other"}).json()["keypairs"] == []
    dup = world.post("/v2/keypairs", {"name": "mine", "public_key": _public()})
    assert dup.status_code == 400 and dup.json()["error_name"] == "NAME_ALREADY_EXISTS"
    assert world.delete(f"/v2/keypairs/{kp['id']}").status_code == 204
    assert world.get(f"/v2/keypairs/{kp['id']}").status_code == 404


def test_keypair_generated_private_key_is_answered_once(world: World) -> None:
    kp = keypair(world, "gen")
    assert "PRIVATE KEY" in kp["private_key"] and kp["public_key"].startswith("ssh-ed25519 ")
    assert "PRIVATE KEY" not in world.get(f"/v2/keypairs/{kp['id']}").text
    assert "PRIVATE KEY" not in world.get("/v2/keypairs").text
    with world.db.session() as s:
        row = s.get(Keypair, kp["id"])
        assert "PRIVATE" not in row.public_key and not hasattr(row, "private_key")


def test_keypair_validation(world: World) -> None:
    for junk in ("junk", "ssh-rsa AAAA", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIlL x", generate_keypair()[0],
                 _public() + "\n" + _public()):
        r = world.post("/v2/keypairs", {"name": "k", "public_key": junk})
        assert r.status_code == 400 and r.json()["error_name"] == "VALIDATION_ERROR", (junk, r.text)
        assert "PRIVATE KEY" not in r.text
    for name in ("", "a/b", "x" * 256):
        r = world.post("/v2/keypairs", {"name": name, "public_key": _public()})
        assert r.status_code == 400 and r.json()["error_name"] == "VALIDATION_ERROR"
    assert world.post("/v2/keypairs", {"name": "k", "private_key": "x"}).status_code == 400
    assert world.get("/v2/keypairs").json()["keypairs"] == []


def test_keypairs_are_per_project(world: World) -> None:
    kp = keypair(world, "shared-name")
    assert world.get(f"/v2/keypairs/{kp['id']}", who="bob").status_code == 404
    assert world.delete(f"/v2/keypairs/{kp['id']}", who="bob").status_code == 404
    assert world.get("/v2/keypairs", who="bob").json()["keypairs"] == []
    assert world.get("/v2/keypairs", who="admin").json()["keypairs"] == []  # an admin's own project only
    theirs = keypair(world, "shared-name", who="bob")  # the same name in another project is another keypair
    assert theirs["id"] != kp["id"]
    assert world.get("/v2/keypairs/shared-name", who="bob").json()["keypair"]["id"] == theirs["id"]
    # A reader may look but not create.
    assert world.get("/v2/keypairs", who="carol").status_code == 200
    assert world.post("/v2/keypairs", {"name": "r"}, who="carol").status_code == 403
    # Bob's keypair is not a reference alice's cluster can use.
    r = world.post("/v2/clusters", cluster_body(user_keypair_id=theirs["id"]))
    assert r.status_code == 400 and r.json()["error_name"] == "NOT_FOUND"


def test_cluster_names_a_keypair(world: World) -> None:
    r = world.post("/v2/clusters", cluster_body(user_keypair_id="nope"))
    assert r.status_code == 400 and r.json()["error_name"] == "NOT_FOUND"
    assert "Requested keypair 'nope' not found" in r.json()["error_message"]
    with world.db.session() as s:
        assert s.scalars(select(Cluster)).first() is None  # nothing written
    keypair(world, "mine", _public())
    r = world.post("/v2/clusters", cluster_body(user_keypair_id="mine"))
    assert r.status_code == 202 and r.json()["cluster"]["user_keypair_id"] == "mine"
    assert world.post("/v2/clusters", cluster_body("c2")).json()["cluster"]["user_keypair_id"] is None


def test_update_keypair_is_an_engine_operation(world: World) -> None:
    keypair(world, "mine", _public())
    plain = world.post("/v2/clusters", cluster_body("plain")).json()["cluster"]
    keyed = world.post("/v2/clusters", cluster_body("keyed", user_keypair_id="mine")).json()["cluster"]
    r = world.patch(f"/v2/clusters/{keyed['id']}", {"update_keypair": True})
    assert r.status_code == 400 and "not in 'Active' status" in r.json()["error_message"]
    set_status(world, plain["id"], "Active")
    set_status(world, keyed["id"], "Active")
    r = world.patch(f"/v2/clusters/{plain['id']}", {"update_keypair": True})
    assert r.status_code == 400 and "no user keypair" in r.json()["error_message"]
    world.notified.clear()
    r = world.patch(f"/v2/clusters/{keyed['id']}", {"update_keypair": True})
    assert r.status_code == 202 and r.json()["cluster"]["status"] == "Active" and world.notified
    with world.db.session() as s:
        row = s.get(Cluster, keyed["id"])
        assert (row.op, row.op_step, row.status) == ("update_keypair", None, "Active")
    scale = world.put(f"/v2/clusters/{keyed['id']}", {"resize_node_groups": [{"name": "worker", "count": 3}]})
    assert scale.status_code == 400 and "busy with another operation (update_keypair)" in scale.json()["error_message"]
    # update_keypair: false changes nothing; the other fields of the PATCH still apply.
    r = world.patch(f"/v2/clusters/{plain['id']}", {"update_keypair": False, "description": "d"})
    assert r.status_code == 202 and r.json()["cluster"]["description"] == "d"
    with world.db.session() as s:
        assert s.get(Cluster, plain["id"]).op is None


class _AllLocal(Remotes):
    """Every host, SSH ones included, reached on this machine: the real agent edits a real authorized_keys."""

    def for_host(self, host, site=None, via=None, context=None, client_key=None):
        return LocalRemote(host.address)


def test_engine_installs_replaces_and_removes_the_user_key(world: World, tmp_path: Path) -> None:
    first = _public("first@x")
    keypair(world, "mine", first)
    cid = world.post("/v2/clusters", cluster_body("keyed", user_keypair_id="mine")).json()["cluster"]["id"]
    set_status(world, cid, "Active", with_instances=True)
    keys = tmp_path / "ssh" / "authorized_keys"
    keys.parent.mkdir()
    keys.write_text("ssh-ed25519 AAAAothers someone-else\n")
    with world.db.session() as s:
        for h in s.scalars(select(Host)):
            h.access, h.spec = "ssh", {"authorized_keys": str(keys)}
        s.get(Image, world.image_id).runtime = {"python": sys.executable}
    work = ClusterWork(world.db, cid, lambda: None, _AllLocal())
    engine = cluster_machine(world.db, _AllLocal())

    async def go() -> None:
        await work.user_key(("active",), install=True)
        lines = keys.read_text().splitlines()
        assert lines[0] == "ssh-ed25519 AAAAothers someone-else"
        assert lines[1] == " ".join(first.split()[:2] + [f"oasis-user-{cid}"])
        await work.user_key(("active",), install=True)  # idempotent
        assert len(keys.read_text().splitlines()) == 2
        # Rotate: the keypair is re-created with a new key, then update_keypair.
        assert world.delete("/v2/keypairs/mine").status_code == 204
        second = _public("second@x")
        keypair(world, "mine", second)
        with world.db.session() as s:
            s.get(Cluster, cid).op = "update_keypair"
        await engine(cid)
        lines = keys.read_text().splitlines()
        assert lines == ["ssh-ed25519 AAAAothers someone-else",
                         " ".join(second.split()[:2] + [f"oasis-user-{cid}"])]
        with world.db.session() as s:
            c = s.get(Cluster, cid)
            assert (c.op, c.status, c.status_description) == (None, "Active", "")
        steps = world.get(f"/v2/clusters/{cid}").json()["cluster"]["provision_progress"]
        assert [(p["step_name"], p["successful"]) for p in steps] == [("Update the user keypair", True)]
        await work.user_key(("active",), install=False)
        assert keys.read_text().splitlines() == ["ssh-ed25519 AAAAothers someone-else"]
        # A keypair gone when the operation runs: the failure is kept, the cluster stays Active.
        world.delete("/v2/keypairs/mine")
        with world.db.session() as s:
            s.get(Cluster, cid).op = "update_keypair"
        await engine(cid)
        with world.db.session() as s:
            c = s.get(Cluster, cid)
            assert c.op is None and c.status == "Active" and "no longer exists" in c.status_description
        steps = world.get(f"/v2/clusters/{cid}").json()["cluster"]["provision_progress"]
        assert sorted(p["successful"] for p in steps if p["step_name"] == "Update the user keypair") == [False, True]

    asyncio.run(go())


def test_local_hosts_are_skipped(world: World) -> None:
    keypair(world, "mine", _public())
    cid = world.post("/v2/clusters", cluster_body("keyed", user_keypair_id="mine")).json()["cluster"]["id"]
    set_status(world, cid, "Active", with_instances=True)  # the seeded host is access "local"
    with world.db.session() as s:
        s.get(Image, world.image_id).runtime = {"python": sys.executable}
        s.get(Cluster, cid).op = "update_keypair"
    asyncio.run(cluster_machine(world.db, Remotes())(cid))
    with world.db.session() as s:
        c = s.get(Cluster, cid)
        assert (c.op, c.status_description) == (None, "")


# --- job suspend and resume -----------------------------------------------------------------------------------


def _job(world: World, status: str = "RUNNING", runtime: dict | None = None,
         cid: str | None = None) -> tuple[str, str]:
    main = binary(world, "run.sh", b"#!/bin/sh\nsleep 60\n")
    jt = template(world, "Shell", [main["id"]])
    cid = cid or active_cluster(world)
    r = world.post("/v2/jobs", {"job_template_id": jt["id"], "cluster_id": cid})
    assert r.status_code == 202, r.text
    job_id = r.json()["job"]["id"]
    with world.db.session() as s:
        job = s.get(Job, job_id)
        job.status, job.op, job.op_step = status, "run", "watch"
        job.runtime = runtime if runtime is not None else {"instance_id": "x", "dir": "/tmp/nowhere"}
    return job_id, cid


def test_suspend_and_resume_set_desired_state(world: World) -> None:
    job_id, _ = _job(world)
    world.notified.clear()
    r = world.patch(f"/v2/jobs/{job_id}", {"info": {"status": "suspend"}})
    assert r.status_code == 202 and r.json()["job"]["info"]["status"] == "TOBESUSPENDED" and world.notified
    with world.db.session() as s:
        assert s.get(Job, job_id).op == "suspend"
    again = world.patch(f"/v2/jobs/{job_id}", {"info": {"status": "suspend"}})
    assert again.status_code == 400 and again.json()["error_name"] == "SUSPENDING_FAILED"
    early = world.patch(f"/v2/jobs/{job_id}", {"info": {"status": "resume"}})
    assert early.status_code == 400 and early.json()["error_name"] == "INVALID_JOB_STATUS"
    with world.db.session() as s:  # the engine did it
        job = s.get(Job, job_id)
        job.status, job.op, job.op_step = "SUSPENDED", "run", "watch"
    # v1.1 spells it the same way on job executions.
    r = world.patch(f"/v1.1/job-executions/{job_id}", {"info": {"status": "resume"}})
    assert r.status_code == 202 and r.json()["job_execution"]["info"]["status"] == "SUSPENDED"
    with world.db.session() as s:
        assert s.get(Job, job_id).op == "resume"
    # Cancel still works on a suspended job.
    with world.db.session() as s:
        job = s.get(Job, job_id)
        job.status, job.op = "SUSPENDED", "run"
    r = world.patch(f"/v2/jobs/{job_id}", {"info": {"status": "cancel"}})
    assert r.status_code == 202 and r.json()["job"]["info"]["status"] == "TOBEKILLED"


def test_suspend_refusals(world: World) -> None:
    job_id, cid = _job(world, status="PENDING", runtime={})
    r = world.patch(f"/v2/jobs/{job_id}", {"info": {"status": "suspend"}})
    assert r.status_code == 400 and r.json()["error_name"] == "SUSPENDING_FAILED"
    assert "status: PENDING" in r.json()["error_message"]
    with world.db.session() as s:
        s.get(Job, job_id).status = "SUCCEEDED"
    assert world.patch(f"/v2/jobs/{job_id}", {"info": {"status": "suspend"}}).json()["error_name"] == \
        "SUSPENDING_FAILED"
    with world.db.session() as s:
        s.get(Job, job_id).status = "RUNNING"
        s.get(Cluster, cid).status = "Scaling"
    r = world.patch(f"/v2/jobs/{job_id}", {"info": {"status": "suspend"}})
    assert r.status_code == 400 and "inactive" in r.json()["error_message"]
    with world.db.session() as s:
        s.get(Cluster, cid).status = "Active"
    assert world.patch(f"/v2/jobs/{job_id}", {"info": {"status": "suspend"}}, who="bob").status_code == 404
    assert world.patch(f"/v2/jobs/{job_id}", {"info": {"status": "pause"}}).json()["error_name"] == \
        "VALIDATION_ERROR"



async def until(condition, what: str, timeout: float = 10) -> None:  # noqa: ANN001
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"waited {timeout}s for {what}"
        await asyncio.sleep(0.02)


def test_engine_suspends_and_resumes_a_real_job(world: World, tmp_path: Path) -> None:
    cid = active_cluster(world)
    set_status(world, cid, "Active", with_instances=True)
    with world.db.session() as s:
        s.get(Image, world.image_id).runtime = {"python": sys.executable}
        inst = s.scalars(select(Instance).where(Instance.cluster_id == cid)).first()
        host = s.get(Host, inst.host_id)
        host.base_dir = str(tmp_path)
        inst_id = inst.id
    job_id, _ = _job(world, runtime={"instance_id": inst_id, "dir": str(tmp_path / "job")}, cid=cid)
    remotes = Remotes()
    engine = job_machine(world.db, remotes, world.store)

    async def go() -> None:
        agent = remotes.agent(LocalRemote(), host, sys.executable)
        await agent.install()
        pid = await agent.run_job(str(tmp_path / "job"), ["sh", "-c", "sleep 120 & sleep 120; wait"], {})
        try:
            # The shell and both of its sleeps, running: a stop that lands while the shell is between its vfork
            # and its child's exec leaves the shell waiting in state D for a child that is stopped.
            await until(lambda: group_members(pid) == ["S", "S", "S"], "the job's three processes to sleep")
            assert world.patch(f"/v2/jobs/{job_id}", {"info": {"status": "suspend"}}).status_code == 202
            await engine(job_id)
            with world.db.session() as s:
                job = s.get(Job, job_id)
                assert (job.status, job.op, job.op_step) == ("SUSPENDED", "run", "watch")
            # a stop signal is delivered to each process of the group as it next runs: seen within moments
            await until(lambda: group_states(pid) == {"T"}, "the whole group stopped")
            assert (await agent.wait_job(str(tmp_path / "job"), 0.2))["done"] is False
            assert world.patch(f"/v2/jobs/{job_id}", {"info": {"status": "resume"}}).status_code == 202
            await engine(job_id)
            with world.db.session() as s:
                assert s.get(Job, job_id).status == "RUNNING"
            await until(lambda: "T" not in group_states(pid), "the whole group going again")
        finally:
            await agent.cancel_job(str(tmp_path / "job"), 1)
        # A job that has ended is not marked suspended: the watch records its end.
        with world.db.session() as s:
            job = s.get(Job, job_id)
            job.status, job.op = "TOBESUSPENDED", "suspend"
        await engine(job_id)
        with world.db.session() as s:
            assert s.get(Job, job_id).status == "TOBESUSPENDED"

    asyncio.run(go())


def test_engine_suspend_failure_keeps_the_job_running(world: World) -> None:
    job_id, _ = _job(world, runtime={"instance_id": "gone", "dir": "/tmp/nowhere"})
    world.patch(f"/v2/jobs/{job_id}", {"info": {"status": "suspend"}})
    asyncio.run(job_machine(world.db, Remotes(), world.store)(job_id))
    with world.db.session() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.op, job.op_step) == ("RUNNING", "run", "watch")
        assert "Could not suspend" in job.info["status_description"]


# --- v1.1 convert-config --------------------------------------------------------------------------------------

CONFIG_XML = b"""<?xml version="1.0"?>
<configuration>
  <property><name>spark.executor.memory</name><value>2g</value><description>x</description></property>
  <property><name>spark.executor.cores</name><value>3</value></property>
  <property><name>dfs.replication</name><value>1</value></property>
</configuration>
"""


def _convert(world: World, name: str, data: bytes, plugin: str = "spark", version: str | None = None,
             api: str = "v1.1"):
    return world.client.post(f"/{api}/plugins/{plugin}/{version or version_of(plugin)}/convert-config/{name}",
                             content=data, headers={**world.h(), "Content-Type": "application/octet-stream"})


def test_convert_config_creates_a_template(world: World) -> None:
    r = _convert(world, "from-xml", CONFIG_XML)
    assert r.status_code == 202, r.text
    ct = r.json()["cluster_template"]
    assert ct["name"] == "from-xml" and ct["hadoop_version"] == version_of("spark")  # v1.1 field names
    assert ct["cluster_configs"] == {"general": {"spark.executor.memory": "2g", "spark.executor.cores": 3,
                                                 "dfs.replication": "1"}}
    assert ct["node_groups"] == []
    with world.db.session() as s:
        assert s.get(ClusterTemplate, ct["id"]).project_id == world.projects["p1"]
    # No node groups in a configuration file: a cluster from the template must bring its own.
    body = {"name": "c1", "plugin_name": "spark", "plugin_version": version_of("spark"),
            "cluster_template_id": ct["id"]}
    refused = world.post("/v2/clusters", body)
    assert refused.status_code == 400 and refused.json()["error_name"] == "INVALID_DATA"
    assert "node groups" in refused.json()["error_message"]
    groups = cluster_body()["node_groups"]
    r = world.post("/v2/clusters", {**body, "node_groups": groups})
    assert r.status_code == 202, r.text
    assert r.json()["cluster"]["cluster_configs"]["general"]["spark.executor.memory"] == "2g"
    dup = _convert(world, "from-xml", CONFIG_XML)
    assert dup.status_code == 400 and dup.json()["error_name"] == "NAME_ALREADY_EXISTS"


def test_convert_config_refusals(world: World) -> None:
    for bad_xml in (b"", b"<configuration><property>", b"not xml at all", b"<other/>",
                    b"<configuration><property><value>1</value></property></configuration>",
                    b"<configuration><property><name></name></property></configuration>"):
        r = _convert(world, "t", bad_xml)
        assert r.status_code == 400 and r.json()["error_name"] == "VALIDATION_ERROR", (bad_xml, r.text)
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
                       for i in range(1, 10))
            + b']><configuration><property><name>x</name><value>&lol9;</value></property></configuration>')
    r = _convert(world, "t", bomb)
    assert r.status_code == 400 and r.json()["error_name"] == "VALIDATION_ERROR"
    assert _convert(world, "bad name!", CONFIG_XML).json()["error_name"] == "VALIDATION_ERROR"
    assert _convert(world, "t", CONFIG_XML, plugin="nope", version="1").json()["error_name"] == "INVALID_REFERENCE"
    assert _convert(world, "t", CONFIG_XML, api="v2").status_code == 404  # removed in v2, as in Sahara
    assert world.get("/v2/cluster-templates").json()["cluster_templates"] == []


def test_openapi_lists_the_new_paths(world: World) -> None:
    doc = world.client.get("/openapi.json").json()
    assert {"get", "post"} <= set(doc["paths"]["/v2/keypairs"])
    assert {"get", "delete"} <= set(doc["paths"]["/v2/keypairs/{id}"])
    assert "post" in doc["paths"]["/v1.1/plugins/{name}/{version}/convert-config/{template}"]
    assert "resume" in json.dumps(doc["paths"]["/v2/jobs/{id}"]["patch"]["requestBody"])


# --- CLI ------------------------------------------------------------------------------------------------------


def test_cli_keypair_commands_against_the_app(world: World, tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from oasis.cli import common
    from oasis.cli.main import app

    monkeypatch.setattr(common, "TRANSPORT", world.client._transport)  # the real app, in process
    monkeypatch.setattr(common.console, "width", 200)

    def cli(*args: str):
        return CliRunner().invoke(app, ["--url", "http://testserver/v2", "--token", world.tokens["alice"], *args])

    pub = tmp_path / "id.pub"
    pub.write_text(_public("cli@x") + "\n")
    r = cli("keypair", "create", "imported", "--public-key", str(pub))
    assert r.exit_code == 0 and "created keypair imported SHA256:" in r.stdout, r.output
    secret = tmp_path / "gen.key"
    r = cli("keypair", "create", "generated", "--private-key", str(secret))
    assert r.exit_code == 0, r.output
    assert "PRIVATE KEY" in secret.read_text() and (secret.stat().st_mode & 0o777) == 0o600
    assert "PRIVATE KEY" not in r.stdout
    r = cli("keypair", "create", "again", "--private-key", str(secret))  # never overwrites a file
    assert r.exit_code == 1 and "exists" in r.output
    assert cli("keypair", "create", "neither").exit_code == 1
    listed = cli("--json", "keypair", "list")
    assert sorted(k["name"] for k in json.loads(listed.stdout)) == ["generated", "imported"]
    assert json.loads(cli("--json", "keypair", "show", "imported").stdout)["public_key"] == pub.read_text().strip()
    assert cli("keypair", "delete", "imported").exit_code == 0
    gone = cli("keypair", "show", "imported")
    assert gone.exit_code == 1 and "404" in gone.output and "Traceback" not in gone.output
    bad_key = tmp_path / "bad.pub"
    bad_key.write_text("not a key")
    r = cli("keypair", "create", "bad", "--public-key", str(bad_key))
    assert r.exit_code == 1 and "VALIDATION_ERROR" in r.output

    job_id, _ = _job(world)
    assert cli("job", "suspend", job_id).exit_code == 0
    with world.db.session() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.op) == ("TOBESUSPENDED", "suspend")
        job.status, job.op = "SUSPENDED", "run"
    assert cli("job", "resume", job_id).exit_code == 0
    with world.db.session() as s:
        assert s.get(Job, job_id).op == "resume"
