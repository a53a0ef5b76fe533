"""Policy by role on a real `oasis up` with the builtin identity: a reader refused a cluster create with the
rule's message, a member allowed; a policy file given to the process changes both; a bad one stops it with one
line."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration import workflow as wf
from tests.integration.services import Oasis

pytestmark = pytest.mark.integration

PASSWORD = "policy-test-password-1"
DATA_SOURCE = {"name": "in", "type": "hdfs", "url": "hdfs://namenode/in"}


@pytest.fixture()
def parent() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="oasis-policy-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def add_reader(service: Oasis, project: str, project_id: str, name: str) -> httpx.Client:
    with httpx.Client(base_url=service.url + "/v3", headers=dict(service.client.headers), timeout=30) as v3:
        made = v3.post("/users", json={"user": {"name": name, "password": PASSWORD}})
        assert made.status_code == 201, made.text
        role = v3.put(f"/projects/{project_id}/users/{made.json()['user']['id']}/roles/reader")
        assert role.status_code == 204, role.text
    return service.login_as(name, PASSWORD, project)


def test_reader_and_member_by_the_defaults_then_by_a_policy_file(parent: Path) -> None:
    state = parent / "state"
    service = Oasis(state)
    try:
        service.start_api("up")
        project, member = service.add_project("analytics", "alice", PASSWORD)
        reader = add_reader(service, "analytics", project, "carol")
        r = reader.post("/clusters", json={"name": "no", "plugin_name": "dask", "plugin_version": "x",
                                           "node_groups": []})
        assert r.status_code == 403, r.text
        assert r.json()["error_name"] == "FORBIDDEN"
        assert r.json()["error_message"].startswith(
            "Policy doesn't allow data-processing:cluster:create to be performed. It needs the member or admin role")
        assert reader.get("/clusters").status_code == 200
        assert reader.post("/data-sources", json=DATA_SOURCE).status_code == 403
        cluster = wf.create_cluster(member, "dask", "allowed", workers=1)  # the member may
        assert wf.ok(reader.get(f"/clusters/{cluster}"))["cluster"]["name"] == "allowed"  # and the reader sees it
        wf.ok(member.delete(f"/clusters/{cluster}"), 204)
        wf.wait_gone(member, cluster)
        for client in (member, reader):
            client.close()
    finally:
        service.stop()

    # the same state, restarted with a file: readers register data sources, members no longer create clusters
    policy_file = parent / "policy.yaml"
    policy_file.write_text('"data-processing:data-sources:register": "rule:project_reader"\n'
                           '"data-processing:clusters:create": "rule:context_is_admin"\n')
    service = Oasis(state)
    service.env["OASIS_POLICY_FILE"] = str(policy_file)
    try:
        service.start_api("up")
        member = service.login_as("alice", PASSWORD, "analytics")
        reader = service.login_as("carol", PASSWORD, "analytics")
        assert reader.post("/data-sources", json=DATA_SOURCE).status_code == 202
        r = member.post("/clusters", json={"name": "no", "plugin_name": "dask", "plugin_version": "x",
                                           "node_groups": []})
        assert r.status_code == 403, r.text
        assert r.json()["error_message"].splitlines()[0] == (
            "Policy doesn't allow data-processing:cluster:create to be performed. It needs the admin role.")
        assert reader.delete(f"/data-sources/{wf.ok(reader.get('/data-sources'))['data_sources'][0]['id']}") \
            .status_code == 403  # the rest keeps its default
        for client in (member, reader):
            client.close()
    finally:
        service.stop()

    # a file that cannot be used: `oasis up` says so in one line and exits, before it serves
    policy_file.write_text('"data-processing:clusters:destroy": "rule:context_is_admin"\n')
    service = Oasis(state)
    service.env["OASIS_POLICY_FILE"] = str(policy_file)
    proc = service.spawn("up")
    try:
        assert proc.wait(timeout=60) == 2
    except subprocess.TimeoutExpired:
        pytest.fail("oasis up served with a bad policy file")
    finally:
        service.stop()
    log = (state / "up-0.log").read_text()
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines == [f"error: policy file {policy_file}: unknown rule data-processing:clusters:destroy "
                     "(docs/policy.yaml lists every rule)"], log
