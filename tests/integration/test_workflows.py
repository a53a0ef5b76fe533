"""Workflows through a real `oasis up` with a real Dask cluster on `local`: a DAG (a -> b, a -> c) of Shell jobs
where b reads what a wrote (a file:// output, handed over as `{{ steps.a.output }}`) SUCCEEDS with the right
output; a run whose middle step fails stops its dependant and is FAILED, and once the cause is fixed (a marker
file the step checks) `restart` runs only that step and its dependant, and the run SUCCEEDS. With a running_jobs
quota of 1, of two independent steps the second waits (visibly) while the first runs, held at a gate; and a run
held at a gate is cancelled from the CLI (its job KILLED, the rest not run) and restarted to SUCCEEDED."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import subprocess
import sys

import pytest

from tests.integration import workflow as wf
from tests.integration.cluster_checks import assert_nothing_left
from tests.integration.services import Oasis, open_dir, wait_until

WRITE = b"""#!/bin/sh
printf '%s\\n' "$2" > "${1#file://}"
"""
READ = b"""#!/bin/sh
[ -e "$3" ] || { echo "no marker $3" >&2; exit 4; }
{ cat "${1#file://}"; echo "read by b"; } > "$2"
"""
HELLO = b"#!/bin/sh\necho hello\n"
GATE = b"""#!/bin/sh
while [ ! -e "$1" ]; do sleep 0.2; done
echo "through $1"
"""
ENDED = ("SUCCEEDED", "FAILED", "KILLED")
TERMINAL = ("SUCCEEDED", "FAILED", "KILLED", "DONEWITHERROR", "SUSPENDFAILED")  # a job's ends


@pytest.fixture(scope="module")
def dask_cluster(service: Oasis) -> Iterator[str]:
    cid = wf.create_cluster(service.client, "dask", "flows", workers=1)
    try:
        wf.wait_cluster(service.client, cid)
        yield cid
    finally:
        wf.ok(service.client.delete(f"/clusters/{cid}"), 204)
        wf.wait_gone(service.client, cid)
        assert_nothing_left(service.state_dir, cid)


@pytest.fixture
def shared() -> Iterator[Path]:
    """Where the jobs (their project's Unix user) write and read."""
    with open_dir("oasis-flow-", writable=True) as d:
        yield d


def _templates(service: Oasis, tag: str) -> dict[str, str]:
    c = service.client
    return {name: wf.job_template(c, f"{name}-{tag}", "Shell", wf.upload_binary(c, f"{name}-{tag}.sh", data))
            for name, data in (("write", WRITE), ("read", READ), ("hello", HELLO))}


def _workflow(service: Oasis, cluster: str, shared: Path, tag: str) -> str:
    c = service.client
    jt = _templates(service, tag)
    out = wf.ok(c.post("/data-sources", json={"name": f"a-out-{tag}", "type": "file",
                                              "url": f"file://{shared}/a-out"}), 202)["data_source"]["id"]
    body = {"name": f"flow-{tag}", "placement": {"cluster_id": cluster}, "parameters": {"word": "hello"},
            "steps": [{"name": "a", "job_template_id": jt["write"], "output_id": out,
                       "job_configs": {"args": [f"file://{shared}/a-out", "{{ word }} from a"]}},
                      {"name": "b", "job_template_id": jt["read"], "depends_on": ["a"],
                       "job_configs": {"args": ["{{ steps.a.output }}", f"{shared}/b-out", f"{shared}/marker"]}},
                      {"name": "c", "job_template_id": jt["hello"], "depends_on": ["b"]}]}
    return wf.ok(c.post("/workflows", json=body), 202)["workflow"]["id"]


def _wait_run(service: Oasis, run_id: str) -> dict:
    found: dict = {}

    def ended() -> bool:
        found.update(wf.ok(service.client.get(f"/workflow-runs/{run_id}"), 200)["workflow_run"])
        return found["status"] in ENDED
    wait_until(ended, timeout=300, what=f"workflow run {run_id} to end", interval=0.5)
    return found


def _steps(run: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in run["steps"]}


def test_a_dag_passes_a_steps_output_to_the_next(service: Oasis, dask_cluster: str, shared: Path) -> None:
    (shared / "marker").touch()
    wid = _workflow(service, dask_cluster, shared, "ok")
    run = wf.ok(service.client.post(f"/workflows/{wid}/run", json={"parameters": {"word": "hi"}}), 202)
    done = _wait_run(service, run["workflow_run"]["id"])
    assert done["status"] == "SUCCEEDED", done
    assert _steps(done) == {"a": "SUCCEEDED", "b": "SUCCEEDED", "c": "SUCCEEDED"}
    assert (shared / "b-out").read_text() == "hi from a\nread by b\n"
    a = next(s for s in done["steps"] if s["name"] == "a")
    assert a["output_url"] == f"file://{shared}/a-out" and a["start_time"] and a["end_time"]
    for s in done["steps"]:
        assert wf.job(service.client, s["job_id"])["info"]["status"] == "SUCCEEDED"


def test_a_failed_step_stops_its_dependant_and_a_restart_runs_only_what_failed(
        service: Oasis, dask_cluster: str, shared: Path) -> None:
    wid = _workflow(service, dask_cluster, shared, "fix")
    run_id = wf.ok(service.client.post(f"/workflows/{wid}/run", json={}), 202)["workflow_run"]["id"]
    failed = _wait_run(service, run_id)
    assert failed["status"] == "FAILED"
    assert _steps(failed) == {"a": "SUCCEEDED", "b": "FAILED", "c": "SKIPPED"}
    first = {s["name"]: s["job_id"] for s in failed["steps"]}
    assert wf.logs(service.client, first["b"], "stderr") == f"no marker {shared}/marker\n"

    (shared / "marker").touch()  # the cause, fixed
    wf.ok(service.client.post(f"/workflow-runs/{run_id}/restart", json={}), 202)
    done = _wait_run(service, run_id)
    assert done["status"] == "SUCCEEDED", done
    again = {s["name"]: s["job_id"] for s in done["steps"]}
    assert again["a"] == first["a"] and again["b"] != first["b"] and again["c"]  # a kept, b and c run
    assert (shared / "b-out").read_text() == "hello from a\nread by b\n"


def test_a_managed_run_creates_uses_and_deletes_its_cluster(service: Oasis, shared: Path) -> None:
    c = service.client
    jt = _templates(service, "managed")
    body = {"name": "flow-managed", "placement": {"managed_cluster": wf.cluster_body(c, "dask", "own", workers=1)},
            "steps": [{"name": "a", "job_template_id": jt["write"],
                       "job_configs": {"args": [f"file://{shared}/managed-out", "made on its own cluster"]}}]}
    wid = wf.ok(c.post("/workflows", json=body), 202)["workflow"]["id"]
    run = wf.ok(c.post(f"/workflows/{wid}/run", json={}), 202)["workflow_run"]
    assert run["managed_cluster"] and run["cluster_id"]
    try:
        done = _wait_run(service, run["id"])
        assert done["status"] == "SUCCEEDED", done
        assert (shared / "managed-out").read_text() == "made on its own cluster\n"
        wf.wait_gone(c, run["cluster_id"], timeout=180)  # the run deleted it
        assert_nothing_left(service.state_dir, run["cluster_id"])
    finally:
        if wf.cluster(c, run["cluster_id"]) is not None:  # a failed run's cluster must not outlive the test
            c.delete(f"/clusters/{run['cluster_id']}")
            wf.wait_gone(c, run["cluster_id"], timeout=180)


def _gated(service: Oasis, cluster: str, shared: Path, tag: str, *, second_depends: bool) -> str:
    """Step a waits for `shared/gate-TAG`; step b says hello (after a, or beside it)."""
    c = service.client
    gate = wf.job_template(c, f"gate-{tag}", "Shell", wf.upload_binary(c, f"gate-{tag}.sh", GATE))
    hello = wf.job_template(c, f"hello-{tag}", "Shell", wf.upload_binary(c, f"hello-{tag}.sh", HELLO))
    body = {"name": f"flow-{tag}", "placement": {"cluster_id": cluster},
            "steps": [{"name": "a", "job_template_id": gate, "job_configs": {"args": [f"{shared}/gate-{tag}"]}},
                      {"name": "b", "job_template_id": hello, "depends_on": ["a"] if second_depends else []}]}
    return wf.ok(c.post("/workflows", json=body), 202)["workflow"]["id"]


def _run_view(service: Oasis, run_id: str) -> dict:
    return wf.ok(service.client.get(f"/workflow-runs/{run_id}"), 200)["workflow_run"]


def test_a_step_over_the_running_jobs_quota_waits_for_a_slot(service: Oasis, dask_cluster: str,
                                                             shared: Path) -> None:
    c = service.client
    project = wf.ok(c.get("/quotas"), 200)["project_id"]
    wf.ok(c.put(f"/quotas/{project}", json={"quota": {"running_jobs": 1}}), 200)
    try:
        wid = _gated(service, dask_cluster, shared, "quota", second_depends=False)
        run_id = wf.ok(c.post(f"/workflows/{wid}/run", json={}), 202)["workflow_run"]["id"]

        def both_would_run() -> dict | None:  # a's job runs (held at its gate), b is ready and waits
            steps = {s["name"]: s for s in _run_view(service, run_id)["steps"]}
            a_job = wf.job(c, steps["a"]["job_id"]) if steps["a"]["job_id"] else None
            ready = a_job is not None and a_job["info"]["status"] == "RUNNING" and "waiting" in steps["b"]["reason"]
            return steps if ready else None
        steps = wait_until(both_would_run, 180, "step a to run and step b to wait for a slot")
        assert steps["b"]["status"] == "PENDING" and steps["b"]["job_id"] is None
        assert steps["b"]["reason"] == "waiting: project over its running_jobs quota (used 1 of 1)"
        assert wf.ok(c.get("/quotas"), 200)["usage"]["running_jobs"] == 1  # the quota is not exceeded
        running = [j for j in wf.ok(c.get("/jobs"), 200)["jobs"]
                   if j["info"]["status"] not in TERMINAL]
        assert [j["id"] for j in running] == [steps["a"]["job_id"]]

        (shared / "gate-quota").touch()  # a ends: its slot goes to b
        done = _wait_run(service, run_id)
        assert done["status"] == "SUCCEEDED", done
        ended = {s["name"]: s for s in done["steps"]}
        assert ended["b"]["reason"] == "" and ended["b"]["start_time"] >= ended["a"]["end_time"]
        assert wf.logs(c, ended["a"]["job_id"], "stdout") == f"through {shared}/gate-quota\n"
    finally:
        wf.ok(c.put(f"/quotas/{project}", json={"quota": {"running_jobs": None}}), 200)


def _cli(service: Oasis, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oasis.cli.main", "--state-dir", str(service.state_dir), *args],
                          env={**service.env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=300)


def test_a_run_held_at_a_gate_is_cancelled_then_restarted(service: Oasis, dask_cluster: str, shared: Path) -> None:
    c = service.client
    wid = _gated(service, dask_cluster, shared, "cancel", second_depends=True)
    run_id = wf.ok(c.post(f"/workflows/{wid}/run", json={}), 202)["workflow_run"]["id"]

    def held() -> str | None:
        a = next(s for s in _run_view(service, run_id)["steps"] if s["name"] == "a")
        return a["job_id"] if a["job_id"] and wf.job(c, a["job_id"])["info"]["status"] == "RUNNING" else None
    first_job = wait_until(held, 180, "step a's job to run, held at its gate")

    cancelled = _cli(service, "workflow", "cancel", run_id, "--wait")
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert f"run {run_id} of flow-cancel: KILLED" in cancelled.stdout
    killed = _run_view(service, run_id)
    steps = {s["name"]: s for s in killed["steps"]}
    assert killed["status"] == "KILLED" and killed["end_time"]
    assert steps["a"]["status"] == "KILLED" and steps["b"]["status"] == "SKIPPED"
    assert wf.job(c, first_job)["info"]["status"] == "KILLED"  # killed as a job's cancel kills it
    again = c.post(f"/workflow-runs/{run_id}/cancel", json={})
    assert again.status_code == 409 and "has ended (KILLED)" in again.json()["error_message"], again.text

    (shared / "gate-cancel").touch()
    wf.ok(c.post(f"/workflow-runs/{run_id}/restart", json={}), 202)
    done = _wait_run(service, run_id)
    assert done["status"] == "SUCCEEDED", done
    steps = {s["name"]: s for s in done["steps"]}
    assert steps["a"]["job_id"] != first_job and steps["b"]["status"] == "SUCCEEDED"
