"""Cluster verification against real frameworks through `oasis up`: a Dask cluster verifies GREEN (on demand and
by the periodic check), YELLOW once a worker is killed (named in the reason), RED once its scheduler is; a Spark
cluster verifies GREEN. The cluster's status stays Active throughout; each change of health is on its event log."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

from tests.integration import workflow as wf
from tests.integration.cluster_checks import cluster_dir
from tests.integration.services import Oasis, wait_until

pytestmark = pytest.mark.service(env={"OASIS_VERIFICATION_SECONDS": "2"})

FINAL = ("GREEN", "YELLOW", "RED")


def verify(client: httpx.Client, cluster_id: str) -> dict:
    """Sahara's on-demand verification: PATCH START (202, CHECKING), then the API until that one is final."""
    asked = wf.ok(client.patch(f"/clusters/{cluster_id}", json={"verification": {"status": "START"}}), 202)
    requested = asked["cluster"]["verification"]
    assert requested["status"] == "CHECKING" and requested["checks"] == []

    def done():
        v = wf.cluster(client, cluster_id)["verification"]
        return v if v["id"] == requested["id"] and v["status"] in FINAL else None

    return wait_until(done, 120, f"verification {requested['id']} to end")


def cli(service: Oasis, *args: str) -> subprocess.CompletedProcess:
    """`oasis ...` as a user runs it, on the service's clouds.yaml."""
    return subprocess.run([sys.executable, "-m", "oasis.cli.main", "--state-dir", str(service.state_dir), *args],
                          env={**service.env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=300)


def checks(verification: dict) -> dict[str, dict]:
    return {c["name"]: c for c in verification["checks"]}


def kill_daemon(service: Oasis, cluster_id: str, process: str) -> str:
    """SIGKILL a daemon's process group (the daemon and its children: a Dask worker's nanny and worker), found by
    its pid file; the name of its instance."""
    pidfile = next(cluster_dir(service.state_dir, cluster_id).glob(f"*/proc/{process}.pid"))
    os.killpg(os.getpgid(int(pidfile.read_text())), signal.SIGKILL)
    return pidfile.parent.parent.name


def health_steps(client: httpx.Client, cluster_id: str) -> list[str]:
    steps = wf.cluster(client, cluster_id, progress=True)["provision_progress"]
    return [s["step_name"] for s in steps if s["step_type"] == "Engine: verify cluster"]


def test_dask_green_then_yellow_then_red(service: Oasis) -> None:
    client = service.client
    cid = wf.create_cluster(client, "dask", "verified", workers=2)
    try:
        c = wf.wait_cluster(client, cid)
        workers = {i["instance_name"] for ng in c["node_groups"] if ng["name"] == "worker" for i in ng["instances"]}
        # the periodic verification (every 2 s here) comes without being asked
        periodic = wait_until(lambda: (v := wf.cluster(client, cid)["verification"])["status"] in FINAL and v,
                              60, "a periodic verification")
        assert periodic["status"] == "GREEN", periodic

        green = verify(client, cid)
        assert green["status"] == "GREEN", green
        assert {c["status"] for c in green["checks"]} == {"GREEN"}
        assert "All 2 workers are registered" in checks(green)["Workers registered"]["description"]
        # the same from the CLI: a new verification, waited for, each check printed with its reason
        by_cli = cli(service, "cluster", "verify", "verified", "--wait", "--timeout", "120")
        assert by_cli.returncode == 0, by_cli.stdout + by_cli.stderr
        assert "Verification: GREEN" in by_cli.stdout and "All 2 workers are registered" in by_cli.stdout
        shown = cli(service, "--json", "cluster", "show", "verified")
        assert shown.returncode == 0, shown.stderr
        last = json.loads(shown.stdout)["verification"]
        assert last["status"] == "GREEN" and last["id"] != green["id"]  # the CLI's own verification

        gone = kill_daemon(service, cid, "worker")
        assert gone in workers
        yellow = wait_until(lambda: (v := verify(client, cid))["status"] != "GREEN" and v, 60,
                            "the scheduler to see the worker gone")
        assert yellow["status"] == "YELLOW", yellow
        registered = checks(yellow)["Workers registered"]
        assert registered["status"] == "YELLOW" and "1 of 2" in registered["description"]
        assert gone in registered["description"] and (workers - {gone}).pop() not in registered["description"]
        assert checks(yellow)["Scheduler alive"]["status"] == "GREEN"

        kill_daemon(service, cid, "scheduler")
        red = verify(client, cid)
        assert red["status"] == "RED", red
        assert checks(red)["Scheduler alive"]["status"] == "RED"
        assert "does not answer" in checks(red)["Scheduler alive"]["description"]
        red_cli = cli(service, "cluster", "verify", "verified", "--wait", "--timeout", "120")
        assert red_cli.returncode == 1, red_cli.stdout + red_cli.stderr  # not GREEN
        assert "Verification: RED" in red_cli.stdout and "Scheduler alive" in red_cli.stdout
        after = wf.cluster(client, cid)
        assert after["status"] == "Active"  # a verification reports; it never changes the cluster's status
        # each change of health is on the event log, once
        assert health_steps(client, cid) == ["Health: GREEN", "Health: YELLOW", "Health: RED"]
    finally:
        client.delete(f"/clusters/{cid}")
        wf.wait_gone(client, cid)


@pytest.mark.spark
def test_spark_verifies_green(service: Oasis) -> None:
    client = service.client
    cid = wf.create_cluster(client, "spark", "verified-spark", workers=1)
    try:
        wf.wait_cluster(client, cid, timeout=300)
        green = verify(client, cid)
        assert green["status"] == "GREEN", green
        assert checks(green)["Master alive"]["description"].endswith("is ALIVE")
        assert "All 1 workers are registered" in checks(green)["Workers registered"]["description"]
    finally:
        client.delete(f"/clusters/{cid}")
        wf.wait_gone(client, cid)
