"""Failure isolation on the real lab (root only): an edge site cut off makes its own operations wait, visibly,
while clusters, jobs and site operations elsewhere go on, and the waiting operation resumes by itself when the
site returns; a job that ends while no control plane runs is recorded, with its real end, once oasis is back."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from oasis.procs import wait_until
from tests.integration import workflow as wf
from tests.integration.services import Oasis, processes_under
from tests.integration.test_lab_sites import run_on_site
from tests.lab_fixture import site_of

pytestmark = pytest.mark.service(lab=True)

SHELL_JOB = b"echo started\nsleep 6\necho finished\n"


def cut_off(lab: dict, site: str) -> None:
    """Kill every process of the site's hosts' namespaces (their sshd and its sessions): the lab made them, and
    `labmod.up` starts the sshd again."""
    for host in site_of(lab, site)["hosts"]:
        pids = subprocess.run(["ip", "netns", "pids", host["namespace"]], capture_output=True, text=True,
                              check=True).stdout
        for pid in map(int, pids.split()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def site_view(service: Oasis, name: str) -> dict:
    return wf.ok(service.client.get(f"/sites/{name}"))["site"]


def site_when(service: Oasis, name: str, condition: Callable[[dict], bool]) -> dict | None:
    site = site_view(service, name)
    return site if condition(site) else None


def test_an_edge_cut_off_waits_while_other_sites_go_on(service: Oasis, lab: dict) -> None:
    client = service.client
    edge = site_of(lab, "edge-2")
    edge_hosts = {h["name"] for h in edge["hosts"]}
    cut_off(lab, "edge-2")
    try:
        cid = wf.create_cluster(client, "dask", "iso-edge", workers=1, flavor="1", availability_zone="edge-2")

        def waiting() -> dict | None:
            c = wf.cluster(client, cid)
            assert c["status"] != "Error", c["status_description"]
            return c if c["status_description"].startswith("Waiting for site edge-2: host ") else None

        c = wait_until(waiting, 90, "the edge cluster to say it waits for its site", 0.2)
        assert "unreachable since" in c["status_description"] and "retrying" in c["status_description"]
        assert any(h in c["status_description"] for h in edge_hosts), c["status_description"]
        step = c["status"]
        events = [e["event_info"] or "" for s in wf.cluster(client, cid, progress=True)["provision_progress"]
                  for e in s.get("events", [])]
        assert any(e.startswith("Waiting for site edge-2") for e in events), events

        # Meanwhile, elsewhere: a Dask cluster goes Active and runs a job; a site operation runs to its end.
        run_on_site(service, lab, "central", "iso-central")
        version = wf.ok(client.post("/exports", json={}), 202)["export"]["version"]
        wf.ok(client.post("/sites/central/update", json={"bundle_version": version}), 202)
        central = wait_until(lambda: site_when(service, "central", lambda s: s["operation"] is None), 90,
                             "the central site update to end", 0.2)
        assert central["status"] == "Active" and central["bundle_version"] == version, central["status_description"]

        # The health check sees the edge's hosts gone, and the others there.
        edge_site = wait_until(lambda: site_when(service, "edge-2", lambda s: s["health"]["status"] == "unreachable"),
                               60, "edge-2 to be seen unreachable", 0.5)
        for h in edge_site["hosts"]:
            assert h["health"]["reachable"] is False and h["health"]["error"] and h["health"]["unreachable_since"]
        assert wf.ok(client.get("/sites/central"))["site"]["health"]["status"] == "healthy"

        # Still waiting, at the same step, not rolled back.
        c = wf.cluster(client, cid)
        assert (c["status"], c["status_description"][:24]) == (step, "Waiting for site edge-2:"), c
    finally:
        lab["labmod"].up(lab["spec"], lab["state_dir"])  # starts the edge's sshd again

    c = wf.wait_cluster(client, cid, timeout=240)
    assert c["status_description"] == ""
    assert c["info"]["Dask"]["Scheduler"].startswith("tls://")
    instances = [i for ng in c["node_groups"] for i in ng["instances"]]
    assert len(instances) == 2
    events = [e["event_info"] or "" for s in wf.cluster(client, cid, progress=True)["provision_progress"]
              for e in s.get("events", [])]
    assert any("answers again" in e for e in events), events
    wait_until(lambda: site_view(service, "edge-2")["health"]["status"] == "healthy", 60,
               "edge-2 to be seen healthy again", 0.5)
    wf.ok(client.delete(f"/clusters/{cid}"), 204)
    wf.wait_gone(client, cid)
    for host in edge["hosts"]:
        assert not processes_under(Path(host["base_dir"]) / cid)


def test_a_job_that_ends_while_the_control_plane_is_stopped(service: Oasis, lab: dict) -> None:
    client = service.client
    cid = wf.create_cluster(client, "dask", "iso-cp", workers=1, flavor="1", availability_zone="central")
    wf.wait_cluster(client, cid)
    template = wf.job_template(client, "iso-shell", "Shell", wf.upload_binary(client, "iso.sh", SHELL_JOB))
    jid = wf.run_job(client, template, cid)
    wait_until(lambda: wf.job(client, jid)["info"]["status"] == "RUNNING", 60, "the job to run", 0.05)

    up = service.procs[-1]
    up.send_signal(signal.SIGKILL)  # the whole control plane: API and engine are this one process
    up.wait(10)
    killed = datetime.now(UTC).timestamp()

    dirs = [d for h in site_of(lab, "central")["hosts"] for d in (Path(h["base_dir"]) / cid).glob(f"*/jobs/{jid}")]
    assert len(dirs) == 1, dirs
    job_dir = dirs[0]
    pid = int((job_dir / "pid").read_text())
    assert Path(f"/proc/{pid}").exists(), "the job should still run while the control plane is down"
    # The job's end, on the host, with nobody watching: its launcher writes the result.
    wait_until(lambda: (job_dir / "result").exists(), 60, "the job to end on its host", 0.1)
    assert not Path(f"/proc/{pid}").exists()
    result = json.loads((job_dir / "result").read_text())
    assert result["rc"] == 0 and killed <= result["ended"]

    restarted = datetime.now(UTC).timestamp()
    service.client.close()
    service.start_api("up")  # the same state dir and database
    client = service.client
    j = wf.wait_job(client, jid, timeout=120)
    assert j["info"]["status"] == "SUCCEEDED", j
    assert j["return_code"] == 0
    end = datetime.strptime(j["end_time"], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    assert end == int(result["ended"]) and result["ended"] < restarted, (j["end_time"], result, restarted)
    assert wf.logs(client, jid).split() == ["started", "finished"], "the job ran more than once"
    wf.ok(client.delete(f"/clusters/{cid}"), 204)
    wf.wait_gone(client, cid)


def test_a_job_sent_to_a_cut_off_site_waits_and_then_runs(service: Oasis, lab: dict) -> None:
    client = service.client
    cid = wf.create_cluster(client, "dask", "iso-late", workers=1, flavor="1", availability_zone="edge-1")
    wf.wait_cluster(client, cid)
    template = wf.job_template(client, "iso-late", "Shell", wf.upload_binary(client, "late.sh", b"echo ran\n"))
    cut_off(lab, "edge-1")
    try:
        jid = wf.run_job(client, template, cid)

        def waiting() -> dict | None:
            j = wf.job(client, jid)
            assert j["info"]["status"] not in ("FAILED", "KILLED"), j["info"]
            return j if (j["info"].get("status_description") or "").startswith("Waiting for site edge-1") else None

        j = wait_until(waiting, 90, "the job to say it waits for its site", 0.2)
        assert j["info"]["status_description"].endswith("the job starts once it answers"), j["info"]
        assert j["info"]["status"] != "RUNNING", "nothing runs while the site is cut off"
    finally:
        lab["labmod"].up(lab["spec"], lab["state_dir"])
    j = wf.wait_job(client, jid, timeout=180)
    assert j["info"]["status"] == "SUCCEEDED" and "status_description" not in j["info"], j
    assert wf.logs(client, jid).split() == ["ran"]
    wf.ok(client.delete(f"/clusters/{cid}"), 204)
    wf.wait_gone(client, cid)
