"""The embedded default (`oasis up`) with real Dask clusters: jobs, logs, cancel, scaling, transient
clusters, failure and rollback."""
from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from tests.integration import workflow as wf
from tests.integration.cluster_checks import assert_clean_processes, assert_nothing_left, cluster_dir
from tests.integration.services import Oasis, processes_under, wait_until

WORDCOUNT = b"""
import sys
from collections import Counter
from distributed import Client

client = Client()  # DASK_SCHEDULER_ADDRESS, set by oasis
path = sys.argv[1].removeprefix("file://")
lines = open(path).read().splitlines()
futures = client.map(lambda line: Counter(line.split()), lines)
total = sum(client.gather(futures), Counter())
print("workers", len(client.scheduler_info()["workers"]))
for word, n in total.most_common(3):
    print(word, n)
"""

SLEEPER = b"""
import subprocess, time
subprocess.Popen(["sleep", "300"])  # a child: cancel must stop the whole tree
print("sleeping", flush=True)
time.sleep(300)
"""


def test_wordcount_logs_and_datasource_substitution(embedded: Oasis, data_dir: Path) -> None:
    client = embedded.client
    text = data_dir / "input.txt"
    text.write_text("the river the city\nthe data river\n" * 50)
    cid = wf.create_cluster(client, "dask", "wc")
    c = wf.wait_cluster(client, cid)
    assert [ng["count"] for ng in c["node_groups"]] == [1, 2]
    assert len({i["instance_name"] for ng in c["node_groups"] for i in ng["instances"]}) == 3
    assert_clean_processes(embedded.state_dir, cid, expected=3)

    ds = wf.ok(client.post("/data-sources", json={"name": "text", "type": "file", "url": f"file://{text}"}), 202)
    template = wf.job_template(client, "wordcount", "Dask", wf.upload_binary(client, "wc.py", WORDCOUNT))
    jid = wf.run_job(client, template, cid, job_configs={
        "configs": {"edp.substitute_data_source_for_name": True}, "args": ["datasource://text"]})
    j = wf.wait_job(client, jid)
    assert j["info"]["status"] == "SUCCEEDED", wf.logs(client, jid, "stderr")
    assert j["data_source_urls"] == {ds["data_source"]["id"]: f"file://{text}"}
    out = wf.logs(client, jid).splitlines()
    assert out[0] == "workers 2"
    assert out[1:3] == ["the 150", "river 100"] and out[3] in ("city 50", "data 50")

    wf.ok(client.delete(f"/clusters/{cid}"), 204)
    wf.wait_gone(client, cid)
    assert_nothing_left(embedded.state_dir, cid)


def test_failing_job_and_cancel_stops_the_process_tree(embedded: Oasis) -> None:
    client = embedded.client
    cid = wf.create_cluster(client, "dask", "cancel", workers=1)
    wf.wait_cluster(client, cid)
    failing = wf.job_template(client, "fails", "Dask", wf.upload_binary(client, "fail.py", b"raise SystemExit(3)"))
    j = wf.wait_job(client, wf.run_job(client, failing, cid))
    assert (j["info"]["status"], j["return_code"]) == ("DONEWITHERROR", 3)

    sleeper = wf.job_template(client, "sleeper", "Dask", wf.upload_binary(client, "sleep.py", SLEEPER))
    jid = wf.run_job(client, sleeper, cid)
    wait_until(lambda: wf.job(client, jid)["info"]["status"] == "RUNNING", 60, "the job to run")
    job_dir = next(embedded.state_dir.glob(f"hosts/localhost/{cid}/*/jobs/{jid}"))
    wait_until(lambda: len(processes_under(job_dir)) >= 2, 30, "the job and its child")
    wf.ok(client.patch(f"/jobs/{jid}", json={"info": {"status": "cancel"}}), 202)
    j = wf.wait_job(client, jid)
    assert j["info"]["status"] == "KILLED"
    assert processes_under(job_dir) == [], "cancel left part of the job's process tree running"
    # cancelling a finished job is refused
    r = client.patch(f"/jobs/{jid}", json={"info": {"status": "cancel"}})
    assert r.status_code == 400 and r.json()["error_code"] == 400


def test_scale_up_down_and_chosen_instances(embedded: Oasis) -> None:
    client = embedded.client
    cid = wf.create_cluster(client, "dask", "scaled", workers=1)
    wf.wait_cluster(client, cid)
    wf.ok(client.put(f"/clusters/{cid}", json={"resize_node_groups": [{"name": "worker", "count": 3}]}), 202)
    c = wf.wait_cluster(client, cid)
    workers = next(ng for ng in c["node_groups"] if ng["name"] == "worker")
    assert workers["count"] == 3 and len(workers["instances"]) == 3
    assert_clean_processes(embedded.state_dir, cid, expected=4)

    chosen = workers["instances"][0]["instance_id"]
    wf.ok(client.put(f"/clusters/{cid}", json={"resize_node_groups": [
        {"name": "worker", "count": 2, "instances": [chosen]}]}), 202)
    c = wf.wait_cluster(client, cid)
    workers = next(ng for ng in c["node_groups"] if ng["name"] == "worker")
    assert workers["count"] == 2 and chosen not in {i["instance_id"] for i in workers["instances"]}
    assert_clean_processes(embedded.state_dir, cid, expected=3)

    wf.ok(client.put(f"/clusters/{cid}", json={"add_node_groups": [
        {"name": "extra", "flavor_id": "1", "node_processes": ["worker"], "count": 1}]}), 202)
    c = wf.wait_cluster(client, cid)
    assert {ng["name"]: ng["count"] for ng in c["node_groups"]} == {"master": 1, "worker": 2, "extra": 1}
    assert_clean_processes(embedded.state_dir, cid, expected=4)


def test_transient_cluster_is_deleted_after_its_job(embedded: Oasis) -> None:
    client = embedded.client
    cid = wf.create_cluster(client, "dask", "transient", workers=1, is_transient=True)
    wf.wait_cluster(client, cid)
    template = wf.job_template(client, "quick", "Dask", wf.upload_binary(client, "quick.py", b"print('done')"))
    jid = wf.run_job(client, template, cid)
    wf.wait_gone(client, cid)
    j = wf.job(client, jid)
    assert j["info"]["status"] == "SUCCEEDED"
    assert_nothing_left(embedded.state_dir, cid)


def test_ports_held_by_others_are_avoided(embedded: Oasis) -> None:
    client = embedded.client
    held = []
    first = embedded.first_port
    for port in range(first, first + 4):  # the first ports of the host's range, which oasis hands out first
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:  # another process of this machine holds it already: held by others all the same
            s.close()
            continue
        s.listen()
        held.append(s)
    try:
        cid = wf.create_cluster(client, "dask", "crowded", workers=1)
        c = wf.wait_cluster(client, cid)
    finally:
        for s in held:
            s.close()
    assert int(c["info"]["Dask"]["Scheduler"].rsplit(":", 1)[1]) >= first + 4


def test_a_process_dying_at_start_rolls_back_everything(embedded: Oasis) -> None:
    client = embedded.client
    cid = wf.create_cluster(client, "dask", "doomed")
    # The scheduler crashes while it starts.
    pidfile = wait_until(lambda: next(cluster_dir(embedded.state_dir, cid).glob("*/proc/scheduler.pid"), None),
                         60, "the scheduler to be started", 0.01)
    os.kill(int(wait_until(pidfile.read_text, 10, "its pid")), signal.SIGKILL)
    c = wf.wait_cluster(client, cid, status="Error")
    assert c["status_description"].startswith("Creating cluster failed for the following reason(s):")
    assert "scheduler exited before it was ready" in c["status_description"]
    assert all(not ng["instances"] for ng in c["node_groups"])
    assert_nothing_left(embedded.state_dir, cid)
    failed = [s for s in wf.cluster(client, cid, progress=True)["provision_progress"] if s["successful"] is False]
    assert failed and failed[0]["events"], "the failed step and its reason are in the event log"
