"""python-saharaclient, unmodified, against `oasis up`: Keystone v3 password auth at the server's /v3, the
data-processing endpoint from the catalog, and every manager of API '2' and '1.1'."""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from saharaclient import client as sahara
from saharaclient.api.base import APIException

from oasis.procs import group_states
from tests.compat.conftest import cloud
from tests.integration.services import Oasis, wait_until

DASK_JOB = b"""
from distributed import Client

client = Client()  # DASK_SCHEDULER_ADDRESS, set by oasis
print("sum", sum(client.gather(client.map(lambda x: x * x, range(10)))))
"""


@pytest.fixture(scope="module")
def session(oasis: Oasis) -> ks_session.Session:
    auth = cloud(oasis)["auth"]
    return ks_session.Session(auth=v3.Password(
        auth_url=auth["auth_url"], username=auth["username"], password=auth["password"],
        project_name=auth["project_name"], user_domain_name="Default", project_domain_name="Default"))


@pytest.fixture(scope="module")
def c2(session: ks_session.Session):  # noqa: ANN201
    return sahara.Client("2", session=session)


@pytest.fixture(scope="module")
def c1(session: ks_session.Session):  # noqa: ANN201
    return sahara.Client("1.1", session=session)


def api_error(call: Callable[[], object]) -> APIException:
    with pytest.raises(APIException) as info:
        call()
    return info.value


def unwrap(resource, key: str) -> dict:  # noqa: ANN001
    """Some managers (update calls, mostly) hand back the whole response: `{"<key>": {...}}`."""
    return getattr(resource, key)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def dask_version(client) -> str:  # noqa: ANN001
    return client.plugins.get("dask").versions[0]


def test_catalog_and_paths(session: ks_session.Session, oasis: Oasis) -> None:
    endpoint = session.get_endpoint(service_type="data-processing", interface="public")
    assert endpoint == f"{oasis.url}/v2"
    # Both clients found their version through the catalog and the version document at `/`.
    assert session.get_endpoint(service_type="data-processing", interface="public", version="1.1") \
        .rstrip("/").endswith("/v1.1")


def test_plugins(c2, c1) -> None:  # noqa: ANN001
    names = {p.name for p in c2.plugins.list()}
    assert {"dask", "spark"} <= names
    assert {p.name for p in c1.plugins.list()} == names
    dask = c2.plugins.get("dask")
    assert dask.plugin_labels["enabled"]["status"] is True
    version = dask.versions[0]
    details = c2.plugins.get_version_details("dask", version)
    assert "scheduler" in {p for procs in details.node_processes.values() for p in procs}
    assert c1.plugins.get_version_details("dask", version).name == "dask"
    assert api_error(lambda: c2.plugins.get("no-such-plugin")).error_code == 404

    # Labels (admin only): a disabled version refuses clusters; enabling it again restores them.
    updated = c2.plugins.update("dask", {"version_labels": {version: {"enabled": {"status": False}}}})
    assert updated.version_labels[version]["enabled"]["status"] is False
    try:
        e = api_error(lambda: c2.clusters.create(unique("off"), "dask", version, node_groups=[
            {"name": "m", "flavor_id": "2", "node_processes": ["scheduler"], "count": 1}]))
        assert (e.error_code, e.error_name) == (400, "INVALID_REFERENCE")
        immutable = api_error(lambda: c2.plugins.update("dask", {"plugin_labels": {"stable": {"status": False}}}))
        assert immutable.error_code == 400
    finally:
        c2.plugins.update("dask", {"version_labels": {version: {"enabled": {"status": True}}}})
    assert c2.plugins.get("dask").version_labels[version]["enabled"]["status"] is True


def test_images(c2, c1) -> None:  # noqa: ANN001
    images = c2.images.list()
    local = next(i for i in images if i.name == "local-runtime")  # the site image of `oasis up`
    assert "dask" in local.tags
    assert c2.images.get(local.id).id == local.id
    assert [i.id for i in c2.images.list(search_opts={"tags": ["dask"]})] == [local.id]

    original = list(local.tags)
    try:
        tagged = c2.images.update_tags(local.id, [*original, "extra"])  # v2: PUT /images/{id}/tags
        assert "extra" in tagged.tags
        assert "extra" in c1.images.get(local.id).tags
        c1.images.update_tags(local.id, original)  # v1.1: POST /images/{id}/untag
        assert sorted(c2.images.get(local.id).tags) == sorted(original)
        c1.images.update_tags(local.id, [*original, "v1tag"])  # v1.1: POST /images/{id}/tag
        assert "v1tag" in c2.images.get(local.id).tags

        c2.images.unregister_image(local.id)
        assert local.id not in {i.id for i in c2.images.list()}
        c2.images.update_image(local.id, "runner", "registered again")  # POST /images/{id}
        again = c2.images.get(local.id)
        assert (again.username, again.description) == ("runner", "registered again")
    finally:
        c2.images.update_image(local.id, local.username, local.description)
        c2.images.update_tags(local.id, original)
    assert sorted(c2.images.get(local.id).tags) == sorted(original)
    assert api_error(lambda: c2.images.get(str(uuid.uuid4()))).error_code == 404


@pytest.mark.parametrize("api", ["2", "1.1"])
def test_node_group_templates(api: str, c2, c1) -> None:  # noqa: ANN001
    c = c2 if api == "2" else c1
    version = dask_version(c2)
    prefix = unique("ngt")
    created = [c.node_group_templates.create(f"{prefix}-{i}", "dask", version, "2", node_processes=["worker"])
               for i in range(3)]
    assert created[0].plugin_name == "dask"
    if api == "1.1":
        assert created[0].hadoop_version == version and created[0].tenant_id
    else:
        assert created[0].plugin_version == version and created[0].project_id

    mine = {t.id for t in created}
    everything = c.node_group_templates.list(search_opts={"plugin_name": "dask"})
    assert mine <= {t.id for t in everything}
    first = c.node_group_templates.list(limit=2, sort_by="name")
    assert len(first) == 2 and first.next == first[-1].id
    rest = c.node_group_templates.list(limit=2, marker=first.next, sort_by="name")
    assert {t.id for t in first} | {t.id for t in rest} >= mine or len(rest) == 2
    assert rest.prev is None or rest.prev in {t.id for t in everything}

    one = c.node_group_templates.get(created[0].id)
    assert one.name == f"{prefix}-0" and one.node_processes == ["worker"]
    renamed = c.node_group_templates.update(created[0].id, name=f"{prefix}-renamed", description="d")
    assert (renamed.name, renamed.description) == (f"{prefix}-renamed", "d")
    exported = c.node_group_templates.export(created[1].id)
    assert exported.node_group_template["flavor_id"] == "{flavor_id}"  # wrapped, as OSC's import reads it

    dup = api_error(lambda: c.node_group_templates.create(f"{prefix}-1", "dask", version, "2",
                                                          node_processes=["worker"]))
    assert (dup.error_code, dup.error_name) == (400, "NAME_ALREADY_EXISTS")
    bad = api_error(lambda: c.node_group_templates.create(unique("x"), "no-plugin", "1", "2",
                                                          node_processes=["worker"]))
    assert (bad.error_code, bad.error_name) == (400, "INVALID_REFERENCE")
    for t in created:
        c.node_group_templates.delete(t.id)
    missing = api_error(lambda: c.node_group_templates.get(created[0].id))
    assert (missing.error_code, missing.error_name) == (404, "NOT_FOUND")


@pytest.mark.parametrize("api", ["2", "1.1"])
def test_cluster_templates(api: str, c2, c1) -> None:  # noqa: ANN001
    c = c2 if api == "2" else c1
    version = dask_version(c2)
    ngt = c.node_group_templates.create(unique("w"), "dask", version, "2", node_processes=["worker"])
    groups = [{"name": "master", "flavor_id": "2", "node_processes": ["scheduler"], "count": 1},
              {"name": "worker", "node_group_template_id": ngt.id, "count": 2}]
    prefix = unique("ct")
    created = [c.cluster_templates.create(f"{prefix}-{i}", "dask", version, node_groups=groups) for i in range(2)]
    assert [len(t.node_groups) for t in created] == [2, 2]
    page = c.cluster_templates.list(limit=1, sort_by="name", search_opts={"name": f"{prefix}-0"})
    assert [t.id for t in page] == [created[0].id]
    second = c.cluster_templates.list(limit=1, marker=created[0].id, sort_by="name")
    assert created[0].id not in {t.id for t in second}
    assert c.cluster_templates.get(created[1].id).name == f"{prefix}-1"
    assert c.cluster_templates.update(created[1].id, description="updated").description == "updated"
    assert c.cluster_templates.export(created[1].id).cluster_template["node_groups"] == "{node_groups}"

    in_use = api_error(lambda: c.node_group_templates.delete(ngt.id))
    assert (in_use.error_code, in_use.error_name) == (400, "INVALID_REFERENCE")
    for t in created:
        c.cluster_templates.delete(t.id)
    c.node_group_templates.delete(ngt.id)
    assert api_error(lambda: c.cluster_templates.get(created[0].id)).error_code == 404


@pytest.mark.parametrize("api", ["2", "1.1"])
def test_data_sources(api: str, c2, c1) -> None:  # noqa: ANN001
    c = c2 if api == "2" else c1
    prefix = unique("ds")
    created = [c.data_sources.create(f"{prefix}-{i}", "input", "hdfs", f"hdfs://namenode/in/{i}",
                                     credential_user="u", credential_pass="p4ss") for i in range(3)]
    assert not hasattr(created[0], "credentials")  # never shown
    page = c.data_sources.list(limit=2, search_opts={"type": "hdfs"})
    assert len(page) == 2 and page.next is not None
    following = c.data_sources.list(limit=2, marker=page.next, search_opts={"type": "hdfs"})
    assert {d.id for d in page}.isdisjoint({d.id for d in following})
    assert c.data_sources.get(created[0].id).url == "hdfs://namenode/in/0"
    updated = c.data_sources.update(created[0].id, {"description": "new", "url": "hdfs://namenode/moved"})
    updated = updated.data_source  # this manager keeps the envelope
    assert (updated["description"], updated["url"]) == ("new", "hdfs://namenode/moved")
    dup = api_error(lambda: c.data_sources.create(f"{prefix}-1", "", "hdfs", "hdfs://x/y"))
    assert dup.error_name == "NAME_ALREADY_EXISTS"
    for d in created:
        c.data_sources.delete(d.id)
    assert api_error(lambda: c.data_sources.delete(created[0].id)).error_code == 404


def test_job_binary_internals_v11(c1) -> None:  # noqa: ANN001
    name = unique("jbi") + ".py"
    jbi = c1.job_binary_internals.create(name, "print('hello')")
    assert (jbi.name, jbi.datasize) == (name, len("print('hello')"))
    assert jbi.tenant_id
    assert jbi.id in {b.id for b in c1.job_binary_internals.list()}
    assert c1.job_binary_internals.get(jbi.id).name == name
    assert unwrap(c1.job_binary_internals.update(jbi.id, is_public=True), "job_binary_internal")["is_public"] is True
    binary = c1.job_binaries.create(unique("jb"), f"internal-db://{jbi.id}", description="v1 binary")
    assert c1.job_binaries.get_file(binary.id) == b"print('hello')"
    assert c1.job_binaries.update(binary.id, {"description": "changed"}).description == "changed"
    in_use = api_error(lambda: c1.job_binary_internals.delete(jbi.id))
    assert in_use.error_code == 400
    c1.job_binaries.delete(binary.id)
    c1.job_binary_internals.delete(jbi.id)
    assert api_error(lambda: c1.job_binary_internals.get(jbi.id)).error_code == 404


def test_job_binaries_and_templates(c2, c1) -> None:  # noqa: ANN001
    jbi = c1.job_binary_internals.create(unique("main") + ".py", DASK_JOB)
    prefix = unique("jb")
    binaries = [c2.job_binaries.create(f"{prefix}-{i}", f"internal-db://{jbi.id}") for i in range(3)]
    page = c2.job_binaries.list(limit=2)
    assert len(page) == 2 and page.next
    assert c2.job_binaries.list(limit=2, marker=page.next)
    assert c2.job_binaries.get(binaries[0].id).url == f"internal-db://{jbi.id}"
    assert c2.job_binaries.get_file(binaries[0].id) == DASK_JOB
    assert c2.job_binaries.update(binaries[0].id, {"description": "x"}).description == "x"
    bad = api_error(lambda: c2.job_binaries.create(unique("bad"), "ftp://nowhere/x"))
    assert (bad.error_code, bad.error_name) == (400, "BAD_JOB_BINARY")

    template = c2.job_templates.create(unique("jt"), "Dask", mains=[binaries[0].id], description="v2")
    assert [m["id"] for m in template.mains] == [binaries[0].id]
    assert template.id in {t.id for t in c2.job_templates.list(search_opts={"type": "Dask"})}
    assert c2.job_templates.get(template.id).type == "Dask"
    assert unwrap(c2.job_templates.update(template.id, description="changed"), "job_template")["description"] \
        == "changed"
    assert isinstance(c2.job_templates.get_configs("Dask").job_config, dict)

    v1_job = c1.jobs.create(unique("j1"), "Dask", mains=[binaries[1].id])
    assert v1_job.mains[0]["tenant_id"]
    assert v1_job.id in {j.id for j in c1.jobs.list()}
    assert c1.jobs.get(v1_job.id).name == v1_job.name
    assert unwrap(c1.jobs.update(v1_job.id, description="v1"), "job")["description"] == "v1"
    assert isinstance(c1.jobs.get_configs("Dask").job_config, dict)

    types = {t.name: t for t in c2.job_types.list()}
    assert "Dask" in types and any(p["name"] == "dask" for p in types["Dask"].plugins)
    only = c2.job_types.list(search_opts={"type": "Dask", "plugin_name": "dask"})  # upstream refused these
    assert [t.name for t in only] == ["Dask"]
    assert c1.job_types.list(search_opts={"type": "Dask", "plugin": "dask"})[0].name == "Dask"

    in_use = api_error(lambda: c2.job_binaries.delete(binaries[0].id))
    assert in_use.error_code == 400
    c1.jobs.delete(v1_job.id)
    c2.job_templates.delete(template.id)
    for b in binaries:
        c2.job_binaries.delete(b.id)
    c1.job_binary_internals.delete(jbi.id)
    assert api_error(lambda: c2.job_templates.get(template.id)).error_code == 404


def wait_status(get: Callable[[], object], attr: Callable[[object], str], wanted: set[str],
                timeout: float = 180) -> object:
    def reached() -> object | None:
        obj = get()
        status = attr(obj)
        assert status != "Error", getattr(obj, "status_description", "")
        return obj if status in wanted else None

    return wait_until(reached, timeout, f"status in {wanted}", interval=0.3)


def test_dask_cluster_and_jobs(c2, c1) -> None:  # noqa: ANN001
    version = dask_version(c2)
    name = unique("dask")
    cluster = c2.clusters.create(name, "dask", version, node_groups=[
        {"name": "master", "flavor_id": "2", "node_processes": ["scheduler"], "count": 1},
        {"name": "worker", "flavor_id": "2", "node_processes": ["worker"], "count": 1}])
    assert cluster.status == "Validating"
    dup = api_error(lambda: c2.clusters.create(name, "dask", version, node_groups=[
        {"name": "m", "flavor_id": "2", "node_processes": ["scheduler"], "count": 1}]))
    assert (dup.error_code, dup.error_name) == (400, "NAME_ALREADY_EXISTS")
    bad = api_error(lambda: c2.clusters.create(unique("bad"), "hadoop", "1", node_groups=[]))
    assert (bad.error_code, bad.error_name) == (400, "INVALID_REFERENCE")

    started = time.monotonic()
    active = wait_status(lambda: c2.clusters.get(cluster.id), lambda c: c.status, {"Active"})
    assert time.monotonic() - started < 120
    assert [ng["count"] for ng in active.node_groups] == [1, 1]
    assert cluster.id in {c.id for c in c2.clusters.list(search_opts={"plugin_name": "dask"})}
    v1_view = c1.clusters.get(cluster.id, show_progress=True)
    assert v1_view.hadoop_version == version and v1_view.tenant_id
    assert all("events" in step for step in v1_view.provision_progress)

    asked = unwrap(c2.clusters.verification_update(cluster.id, "START"), "cluster")
    assert asked["verification"]["status"] == "CHECKING"  # an engine checks the scheduler, workers and hosts
    verified = wait_status(lambda: c2.clusters.get(cluster.id), lambda c: c.verification["status"],
                           {"GREEN", "YELLOW", "RED"})
    assert verified.verification["status"] == "GREEN", verified.verification
    assert unwrap(c2.clusters.update(cluster.id, description="compat"), "cluster")["description"] == "compat"

    jbi = c1.job_binary_internals.create(unique("job") + ".py", DASK_JOB)
    binary = c2.job_binaries.create(unique("jb"), f"internal-db://{jbi.id}")
    template = c2.job_templates.create(unique("jt"), "Dask", mains=[binary.id])

    job = c2.jobs.create(template.id, cluster.id)
    assert job.info["status"] in ("PENDING", "RUNNING", "SUCCEEDED")
    done = wait_status(lambda: c2.jobs.refresh_status(job.id), lambda j: j.info["status"],
                       {"SUCCEEDED", "FAILED", "KILLED", "DONEWITHERROR"})
    assert done.info["status"] == "SUCCEEDED"
    assert job.id in {j.id for j in c2.jobs.list(search_opts={"status": "SUCCEEDED"})}
    assert unwrap(c2.jobs.update(job.id, is_public=True), "job")["is_public"] is True

    execution = c1.job_executions.create(template.id, cluster.id)
    assert execution.job_id == template.id and hasattr(execution, "oozie_job_id")
    finished = wait_status(lambda: c1.job_executions.get(execution.id), lambda j: j.info["status"],
                           {"SUCCEEDED", "FAILED", "KILLED", "DONEWITHERROR"})
    assert finished.info["status"] == "SUCCEEDED"
    assert execution.id in {e.id for e in c1.job_executions.list()}
    unknown = api_error(lambda: c2.jobs.get(str(uuid.uuid4())))
    assert (unknown.error_code, unknown.error_name) == (404, "NOT_FOUND")

    c1.job_executions.delete(execution.id)
    c2.jobs.delete(job.id)
    wait_until(lambda: not c2.jobs.list(), 60, "jobs deleted", interval=0.3)
    c2.clusters.delete(cluster.id)

    def gone() -> bool:
        try:
            c2.clusters.get(cluster.id)
        except APIException as e:
            return e.error_code == 404
        return False

    wait_until(gone, 120, "cluster deleted", interval=0.3)
    c2.job_templates.delete(template.id)
    c2.job_binaries.delete(binary.id)
    c1.job_binary_internals.delete(jbi.id)


# --- issue 3: convert-config, update_keypair, suspend and resume ---------------------------------------------

HADOOP_XML = b"""<?xml version="1.0"?>
<configuration>
  <property><name>dask.worker.threads</name><value>2</value></property>
  <property><name>io.file.buffer.size</name><value>65536</value></property>
</configuration>
"""


def test_convert_config_v11(c2, c1) -> None:  # noqa: ANN001
    version = dask_version(c2)
    name = unique("conv")
    ct = c1.plugins.convert_to_cluster_template("dask", version, name, HADOOP_XML)
    assert ct["name"] == name and ct["hadoop_version"] == version and ct["node_groups"] == []
    assert ct["cluster_configs"] == {"general": {"dask.worker.threads": "2", "io.file.buffer.size": "65536"}}
    assert c2.cluster_templates.get(ct["id"]).cluster_configs == ct["cluster_configs"]
    # No node groups come from a configuration file: a cluster from the template must name its own.
    refused = api_error(lambda: c2.clusters.create(unique("c"), "dask", version, cluster_template_id=ct["id"]))
    assert (refused.error_code, refused.error_name) == (400, "INVALID_DATA")
    # Malformed XML is the client's error; saharaclient turns any non-202 into a RuntimeError.
    with pytest.raises(RuntimeError):
        c1.plugins.convert_to_cluster_template("dask", version, unique("conv"), b"<configuration><property>")
    c2.cluster_templates.delete(ct["id"])


def _dask_groups() -> list[dict]:
    return [{"name": "master", "flavor_id": "2", "node_processes": ["scheduler"], "count": 1},
            {"name": "worker", "flavor_id": "2", "node_processes": ["worker"], "count": 1}]


def _delete_cluster(c2, cluster_id: str) -> None:  # noqa: ANN001
    c2.clusters.delete(cluster_id)

    def gone() -> bool:
        try:
            c2.clusters.get(cluster_id)
        except APIException as e:
            return e.error_code == 404
        return False

    wait_until(gone, 120, "cluster deleted", interval=0.3)


def test_cluster_update_keypair_v2(c2, oasis: Oasis) -> None:  # noqa: ANN001
    version = dask_version(c2)
    missing = api_error(lambda: c2.clusters.create(unique("kp"), "dask", version, node_groups=_dask_groups(),
                                                   user_keypair_id="no-such-keypair"))
    assert (missing.error_code, missing.error_name) == (400, "NOT_FOUND")
    kp_name = unique("kp")
    # The keypair registry is an oasis extension; saharaclient has no manager for it (Sahara used Nova's).
    r = c2.clusters.api.post("/keypairs", json={"name": kp_name})
    assert r.status_code == 202, r.text
    assert "PRIVATE KEY" in r.json()["keypair"]["private_key"]
    cluster = c2.clusters.create(unique("kp"), "dask", version, node_groups=_dask_groups(), user_keypair_id=kp_name)
    try:
        refused = api_error(lambda: c2.clusters.update_keypair(cluster.id))  # not Active yet
        assert (refused.error_code, refused.error_name) == (400, "INVALID_DATA")
        wait_status(lambda: c2.clusters.get(cluster.id), lambda c: c.status, {"Active"})
        updated = unwrap(c2.clusters.update_keypair(cluster.id), "cluster")
        assert updated["status"] == "Active" and updated["user_keypair_id"] == kp_name

        def step() -> dict | None:
            steps = c2.clusters.get(cluster.id, show_progress=True).provision_progress
            done = [s for s in steps if s["step_name"] == "Update the user keypair" and s["successful"] is not None]
            return done[0] if done else None

        assert wait_until(step, 60, "keypair update step", interval=0.3)["successful"] is True
        assert c2.clusters.get(cluster.id).status_description == ""
    finally:
        _delete_cluster(c2, cluster.id)
        c2.clusters.api.delete(f"/keypairs/{kp_name}")


LOOP_JOB = b"""#!/bin/sh
i=0
while true; do i=$((i+1)); echo "tick $i"; sleep 0.2; done
"""



def stopped(pgid: int) -> bool:
    """Nothing of the job runs: every process stopped (T), or, for a shell the stop caught between a vfork and
    its child's exec, waiting (D) on that stopped child."""
    states = group_states(pgid)
    return "T" in states and states <= {"T", "D"}


def test_job_suspend_resume_cancel(c2, c1) -> None:  # noqa: ANN001
    version = dask_version(c2)
    cluster = c2.clusters.create(unique("susp"), "dask", version, node_groups=_dask_groups())
    jbi = c1.job_binary_internals.create(unique("loop") + ".sh", LOOP_JOB)
    binary = c2.job_binaries.create(unique("jb"), f"internal-db://{jbi.id}")
    template = c2.job_templates.create(unique("jt"), "Shell", mains=[binary.id])
    try:
        wait_status(lambda: c2.clusters.get(cluster.id), lambda c: c.status, {"Active"})
        job = c2.jobs.create(template.id, cluster.id)
        running = wait_status(lambda: c2.jobs.get(job.id), lambda j: j.info["status"], {"RUNNING"})
        pid = int(running.engine_job_id.split("@")[0])
        wait_until(lambda: "S" in group_states(pid) or "R" in group_states(pid), 30, "job processes")

        # saharaclient has no suspend call: the PATCH its managers make, as Sahara documents it.
        c2.jobs._patch(f"/jobs/{job.id}", {"info": {"status": "suspend"}})
        suspended = wait_status(lambda: c2.jobs.get(job.id), lambda j: j.info["status"], {"SUSPENDED"}, 60)
        assert suspended.end_time is None
        wait_until(lambda: stopped(pid), 10, "every process of the job to be stopped")
        refused = api_error(lambda: c2.jobs._patch(f"/jobs/{job.id}", {"info": {"status": "suspend"}}))
        assert (refused.error_code, refused.error_name) == (400, "SUSPENDING_FAILED")
        # It stays suspended: the watch, back at work, does not take a stopped job for an ended one.
        watched_until = time.monotonic() + 1.5
        while time.monotonic() < watched_until:
            assert c2.jobs.get(job.id).info["status"] == "SUSPENDED"
            assert stopped(pid), group_states(pid)

        c1.job_executions._patch(f"/job-executions/{job.id}", {"info": {"status": "resume"}}, "job_execution")
        wait_status(lambda: c2.jobs.get(job.id), lambda j: j.info["status"], {"RUNNING"}, 60)
        wait_until(lambda: "T" not in group_states(pid) and group_states(pid), 30, "job continued")

        # Suspend again, then cancel: a stopped job still dies.
        c2.jobs._patch(f"/jobs/{job.id}", {"info": {"status": "suspend"}})
        wait_status(lambda: c2.jobs.get(job.id), lambda j: j.info["status"], {"SUSPENDED"}, 60)
        c2.jobs._patch(f"/jobs/{job.id}", {"info": {"status": "cancel"}})
        killed = wait_status(lambda: c2.jobs.get(job.id), lambda j: j.info["status"],
                             {"KILLED", "FAILED", "DONEWITHERROR", "SUCCEEDED"}, 60)
        assert killed.info["status"] == "KILLED"
        wait_until(lambda: not group_states(pid), 30, "job processes gone")
        c2.jobs.delete(job.id)
    finally:
        _delete_cluster(c2, cluster.id)
        c2.job_templates.delete(template.id)
        c2.job_binaries.delete(binary.id)
        c1.job_binary_internals.delete(jbi.id)
