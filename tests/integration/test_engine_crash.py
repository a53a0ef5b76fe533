"""An engine killed with SIGKILL loses nothing: another engine takes over the lease and finishes the work,
with no duplicate or orphan process. Runs on SQLite and on PostgreSQL."""
from __future__ import annotations

import signal

from tests.integration import workflow as wf
from tests.integration.cluster_checks import assert_clean_processes, assert_nothing_left, daemons
from tests.integration.services import Oasis, wait_until

SLOW_JOB = b"""
import time
print("started", flush=True)
time.sleep(3)
print("finished", flush=True)
"""


def kill_engine(service: Oasis) -> None:
    engine = service.procs[-1]
    engine.send_signal(signal.SIGKILL)
    engine.wait(10)


def test_engine_killed_while_provisioning(split: Oasis) -> None:
    client = split.client
    cid = wf.create_cluster(client, "dask", "crash-create")
    # Kill it while the framework processes are starting: some are up, some are not.
    wait_until(lambda: wf.cluster(client, cid)["status"] == "Starting", 60, "the Starting step", 0.01)
    kill_engine(split)
    assert wf.cluster(client, cid)["status"] == "Starting"

    split.start_engine()
    c = wf.wait_cluster(client, cid)
    assert c["info"]["Dask"]["Scheduler"].startswith("tls://127.0.0.1:")
    assert_clean_processes(split.state_dir, cid, expected=3)
    steps = wf.cluster(client, cid, progress=True)["provision_progress"]
    assert all(s["successful"] for s in steps), steps
    assert len({s["step_name"] for s in steps}) == len(steps), "a resumed step was logged twice"


def test_engine_killed_while_a_job_runs(split: Oasis) -> None:
    client = split.client
    cid = wf.create_cluster(client, "dask", "crash-job", workers=1)
    wf.wait_cluster(client, cid)
    template = wf.job_template(client, "slow", "Dask", wf.upload_binary(client, "slow.py", SLOW_JOB))
    jid = wf.run_job(client, template, cid)
    wait_until(lambda: wf.job(client, jid)["info"]["status"] == "RUNNING", 60, "the job to run", 0.02)
    kill_engine(split)

    split.start_engine()
    j = wf.wait_job(client, jid)
    assert j["info"]["status"] == "SUCCEEDED"
    assert j["return_code"] == 0 and j["end_time"]
    assert wf.logs(client, jid).split() == ["started", "finished"], "the job ran more than once"


def test_engine_killed_while_deleting(split: Oasis) -> None:
    client = split.client
    cid = wf.create_cluster(client, "dask", "crash-delete")
    wf.wait_cluster(client, cid)
    before = len(daemons(split.state_dir, cid))
    wf.ok(client.delete(f"/clusters/{cid}"), 204)
    # Kill it once the engine is stopping daemons, before it finished.
    wait_until(lambda: len(daemons(split.state_dir, cid)) < before, 60, "the delete to begin", 0.01)
    kill_engine(split)

    split.start_engine()
    wf.wait_gone(client, cid)
    assert_nothing_left(split.state_dir, cid)
