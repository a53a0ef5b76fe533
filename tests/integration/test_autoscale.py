"""Autoscaling through `oasis up` with a real Dask cluster: a job whose task graph widens (200 tasks of 0.2 s)
makes the worker group grow from 1 to its max of 3; when it narrows to a single reduction the idle workers are
retired (their results moved first) and the group shrinks back to 1; the job succeeds with the right result and
every decision is an event with its reason. With Spark, an application WAITING for a core grows the group, and a
worker left idle is decommissioned and removed while another application still runs on the worker that stays.

The job's two phases wait for the test (gate files) rather than for a guess of how long a scale takes: the wide
phase holds its tasks until the test has seen the third worker join, the reduction holds until the test has
seen the group shrink back. So the test checks what happened, never how fast."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.integration import workflow as wf
from tests.integration.services import Oasis, wait_until

JOB = b'''
import os, sys, time
from distributed import Client

wide_gate, narrow_gate = sys.argv[1], sys.argv[2]


def square(i, gate):
    import os, time
    while not os.path.exists(gate):  # the test opens it once it has seen the cluster grow
        time.sleep(0.05)
    time.sleep(0.2)
    return i * i


def total(xs, gate):
    import os, time
    while not os.path.exists(gate):  # ... and this one once it has seen it shrink
        time.sleep(0.05)
    return sum(xs)


client = Client()
squares = client.map(square, range(200), gate=wide_gate, pure=False)
result = client.submit(total, squares, narrow_gate).result()
assert result == sum(i * i for i in range(200)), result
# every one of the 200 results is still there after the workers that computed most of them were retired
assert sum(client.gather(squares)) == result
print("result", result)
'''


def workers(c: dict) -> list[str]:
    return sorted(i["instance_name"] for ng in c["node_groups"] if ng["name"] == "worker" for i in ng["instances"])


def autoscale_events(client, cluster_id: str) -> list[str]:  # noqa: ANN001
    steps = wf.cluster(client, cluster_id, progress=True)["provision_progress"]
    return [e["event_info"] for s in steps if s["step_type"] == "Engine: autoscale" for e in s.get("events") or []]


@pytest.mark.service()
def test_dask_job_grows_then_shrinks_the_cluster_with_no_task_lost(service: Oasis) -> None:
    client = service.client
    # the job's tasks run as the project's user, who cannot enter pytest's own (0700) temporary directories
    gates = Path(tempfile.mkdtemp(prefix="oasis-autoscale-gates-"))
    gates.chmod(0o755)
    wide, narrow = gates / "wide", gates / "narrow"
    cid = wf.create_cluster(client, "dask", "elastic", workers=1, autoscaling={
        "node_groups": {"worker": {"min": 1, "max": 3, "cooldown": 3}}})
    try:
        c = wf.wait_cluster(client, cid)
        assert len(workers(c)) == 1
        assert c["autoscaling"]["node_groups"]["worker"] == {"min": 1, "max": 3, "cooldown": 3}
        template = wf.job_template(client, "widen-narrow", "Dask", wf.upload_binary(client, "wn.py", JOB))
        jid = wf.run_job(client, template, cid, job_configs={"args": [str(wide), str(narrow)]})

        def grown():
            c = wf.cluster(client, cid)
            return c if c["status"] == "Active" and len(workers(c)) == 3 else None

        wait_until(grown, 240, "the worker group to grow to 3")
        grew = [e for e in autoscale_events(client, cid) if "→ 3" in e]
        assert grew and "pending tasks" in grew[0], autoscale_events(client, cid)
        assert wf.job(client, jid)["info"]["status"] == "RUNNING"
        wide.touch()

        def shrunk():
            c = wf.cluster(client, cid)
            return c if c["status"] == "Active" and len(workers(c)) == 1 else None

        wait_until(shrunk, 240, "the worker group to shrink back to 1")
        events = autoscale_events(client, cid)
        assert any("→ 1" in e and "removing idle" in e for e in events) or \
            sum("removing idle" in e for e in events) >= 2, events
        assert wf.job(client, jid)["info"]["status"] == "RUNNING"  # the reduction still runs: it was not lost
        narrow.touch()

        j = wf.wait_job(client, jid)
        assert j["info"]["status"] == "SUCCEEDED", wf.logs(client, jid, "stderr")
        assert wf.logs(client, jid).splitlines()[-1] == f"result {sum(i * i for i in range(200))}"
        assert len(workers(wf.cluster(client, cid))) == 1  # never below min
    finally:
        wide.touch()
        narrow.touch()
        client.delete(f"/clusters/{cid}")
        wf.wait_gone(client, cid)
        shutil.rmtree(gates, ignore_errors=True)


SPARK_JOB = b'''
import sys
from pyspark.sql import SparkSession

gate = sys.argv[1]


def square(i):
    import os, time
    while not os.path.exists(gate):  # the test opens it when it has seen what it waits for
        time.sleep(0.05)
    return i * i


spark = SparkSession.builder.appName("gated").getOrCreate()
print("result", sum(spark.sparkContext.parallelize(range(10), 2).map(square).collect()))
spark.stop()
'''


@pytest.mark.service()
def test_a_waiting_spark_application_grows_the_cluster_and_an_idle_worker_is_decommissioned(service: Oasis) -> None:
    """Two applications of one core each on a cluster of one 1-core worker: the second WAITs, the group grows to 2
    and it runs; once the first ends its worker is idle, is decommissioned (SIGPWR) and removed, while the second
    still runs on the other worker and then succeeds."""
    client = service.client
    gates = Path(tempfile.mkdtemp(prefix="oasis-autoscale-gates-"))
    gates.chmod(0o755)
    first, second = gates / "first", gates / "second"
    cid = wf.create_cluster(client, "spark", "elastic-spark", workers=1, autoscaling={
        "node_groups": {"worker": {"min": 1, "max": 2, "cooldown": 3}}})
    try:
        wf.wait_cluster(client, cid)
        template = wf.job_template(client, "gated", "Spark", wf.upload_binary(client, "gated.py", SPARK_JOB))
        one_core = {"configs": {"spark.cores.max": "1", "spark.executor.cores": "1"}}
        a = wf.run_job(client, template, cid, job_configs={**one_core, "args": [str(first)]})
        b = wf.run_job(client, template, cid, job_configs={**one_core, "args": [str(second)]})

        def grown():
            c = wf.cluster(client, cid)
            return c if c["status"] == "Active" and len(workers(c)) == 2 else None

        wait_until(grown, 300, "the worker group to grow to 2")
        grew = [e for e in autoscale_events(client, cid) if "→ 2" in e]
        assert grew and "waiting applications" in grew[0], autoscale_events(client, cid)
        first.touch()
        assert wf.wait_job(client, a, timeout=300)["info"]["status"] == "SUCCEEDED", wf.logs(client, a, "stderr")[-3000:]

        def shrunk():
            c = wf.cluster(client, cid)
            return c if c["status"] == "Active" and len(workers(c)) == 1 else None

        wait_until(shrunk, 300, "the worker group to shrink back to 1")
        assert any("→ 1" in e and "removing idle" in e for e in autoscale_events(client, cid))
        assert wf.job(client, b)["info"]["status"] == "RUNNING"  # its worker was kept
        second.touch()
        j = wf.wait_job(client, b, timeout=300)
        assert j["info"]["status"] == "SUCCEEDED", wf.logs(client, b, "stderr")[-3000:]
        for jid in (a, b):
            assert wf.logs(client, jid).splitlines()[-1] == f"result {sum(i * i for i in range(10))}"
    finally:
        first.touch()
        second.touch()
        client.delete(f"/clusters/{cid}")
        wf.wait_gone(client, cid)
        shutil.rmtree(gates, ignore_errors=True)


DYNALLOC_JOB = b'''
import hashlib, os, sys
from pyspark.sql import SparkSession

wide_gate, narrow_gate, seen = sys.argv[1], sys.argv[2], sys.argv[3]


def square(i):
    import hashlib, os, time
    # the Python worker runs in its executor's directory, <worker's work dir>/<app>/<executor>: one mark per
    # worker that ran a task, for the test to see the new workers' executors at work
    worker = os.path.dirname(os.path.dirname(os.getcwd()))
    open(os.path.join(seen, hashlib.sha256(worker.encode()).hexdigest()[:16]), "a").close()
    while not os.path.exists(wide_gate):  # the test opens it once executors run on every worker
        time.sleep(0.05)
    time.sleep(0.2)
    return (i % 4, i * i)


def last(x):
    import os, time
    while not os.path.exists(narrow_gate):  # ... and this one once it has seen the group shrink
        time.sleep(0.05)
    return x


spark = SparkSession.builder.appName("widen-narrow").getOrCreate()
sc = spark.sparkContext
# wide: 24 tasks (a shuffle's map side on every executor), then its reduce side reads them all
sums = sc.parallelize(range(24), 24).map(square).reduceByKey(lambda a, b: a + b, 2).collect()
total = sum(v for _, v in sums)
# narrow: one task; the executors left idle are released by dynamic allocation and their workers go
print("result", sc.parallelize([total], 1).map(last).collect()[0])
spark.stop()
'''


def master_state(client, cid: str, where: Path) -> dict:  # noqa: ANN001
    """The Spark master's own `/json/`, with the cluster's client certificate (GET client-config)."""
    import httpx
    import ssl

    from oasis.cli.connect import client_files, write_private
    cfg = wf.ok(client.get(f"/clusters/{cid}/client-config"))["client_config"]
    write_private(where, client_files(cfg, where))
    ctx = ssl.create_default_context(cafile=str(where / "ca.pem"))
    ctx.load_cert_chain(str(where / "client.pem"), str(where / "client-key.pem"))
    ui = wf.cluster(client, cid)["info"]["Spark"]["Web UI"]
    return httpx.get(ui.rstrip("/") + "/json/", verify=ctx, timeout=10).json()


@pytest.mark.spark
@pytest.mark.service()
def test_a_spark_job_with_dynamic_allocation_grows_then_shrinks_the_cluster_with_no_task_lost(
        service: Oasis, tmp_path: Path) -> None:
    """A driver with dynamic allocation on a cluster of one 1-core worker: its wide stage (24 tasks) makes it ask
    for more executors than the master can grant (RUNNING, not WAITING: the master's `/json/` does not show the
    ask; the driver's ExecutorAllocationManager gauges do), the group grows to its max of 3, and executors run
    on the new workers; its narrow phase (one task) lets Spark release the idle executors, their workers are
    decommissioned and removed while the job runs on; the job succeeds with the right result and no task lost."""
    client = service.client
    gates = Path(tempfile.mkdtemp(prefix="oasis-autoscale-gates-"))
    gates.chmod(0o755)
    wide, narrow, seen = gates / "wide", gates / "narrow", gates / "seen"
    seen.mkdir()
    seen.chmod(0o1777)  # the tasks (the project's user) mark the workers they ran on
    cid = wf.create_cluster(client, "spark", "dynalloc", workers=1, autoscaling={
        "node_groups": {"worker": {"min": 1, "max": 3, "cooldown": 3}}})
    try:
        wf.wait_cluster(client, cid)
        template = wf.job_template(client, "widen-narrow-spark", "Spark",
                                   wf.upload_binary(client, "wn-spark.py", DYNALLOC_JOB))
        configs = {"spark.dynamicAllocation.enabled": "true", "spark.executor.cores": "1",
                   "spark.dynamicAllocation.executorIdleTimeout": "2s",
                   "spark.dynamicAllocation.shuffleTracking.timeout": "2s"}
        jid = wf.run_job(client, template, cid, job_configs={"configs": configs,
                                                             "args": [str(wide), str(narrow), str(seen)]})

        def grown():
            c = wf.cluster(client, cid)
            return c if c["status"] == "Active" and len(workers(c)) == 3 else None

        wait_until(grown, 300, "the worker group to grow to 3")
        grew = [e for e in autoscale_events(client, cid) if "scaled worker" in e and "removing" not in e]
        assert grew and all("executors asked by dynamic allocation" in e for e in grew), autoscale_events(client, cid)
        assert not any("waiting applications" in e for e in grew)  # the application was RUNNING throughout
        # an executor of the application on each of the three workers, each running one of the wide tasks
        wait_until(lambda: len(list(seen.iterdir())) == 3, 300, "tasks on executors of all three workers")
        busy = [w for w in master_state(client, cid, tmp_path / "conn")["workers"] if w["coresused"] > 0]
        assert len(busy) == 3, busy
        assert wf.job(client, jid)["info"]["status"] == "RUNNING"
        wide.touch()

        def shrunk():
            c = wf.cluster(client, cid)
            return c if c["status"] == "Active" and len(workers(c)) == 1 else None

        try:
            wait_until(shrunk, 300, "the worker group to shrink back to 1")
        except TimeoutError as e:  # what each side said, for the report
            state = master_state(client, cid, tmp_path / "conn")
            raise AssertionError(f"{e}: events {autoscale_events(client, cid)}; master {state['workers']} "
                                 f"{state['activeapps']}; driver {wf.logs(client, jid, 'stderr')[-6000:]}") from None
        events = autoscale_events(client, cid)
        assert any("removing idle" in e for e in events), events
        assert wf.job(client, jid)["info"]["status"] == "RUNNING"  # the narrow task kept its worker
        narrow.touch()

        j = wf.wait_job(client, jid, timeout=300)
        assert j["info"]["status"] == "SUCCEEDED", (j["info"], wf.logs(client, jid, "stderr")[-3000:])
        assert wf.logs(client, jid).splitlines()[-1] == f"result {sum(i * i for i in range(24))}"
        stderr = wf.logs(client, jid, "stderr")
        assert "Lost task" not in stderr and "FetchFailed" not in stderr, stderr[-3000:]  # no task was lost
        assert len(workers(wf.cluster(client, cid))) == 1
    finally:
        wide.touch()
        narrow.touch()
        client.delete(f"/clusters/{cid}")
        wf.wait_gone(client, cid)
        shutil.rmtree(gates, ignore_errors=True)
