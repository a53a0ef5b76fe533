#!/usr/bin/env python3
"""oasis benchmark: autoscaling's reaction time, from work submitted to a new worker registered with the
scheduler, against the direct way (a worker started by hand with `dask worker` joining the same scheduler); and
for Spark, from a driver with dynamic allocation asking for executors to one running a task on a new worker,
against a Spark worker started by hand.

    .venv/bin/python bench/autoscale.py [--reps N]

One `oasis up` (free port, temporary state dir) and one Dask cluster of 1 worker, autoscaled (min 1, max 2,
cooldown 0). Each repetition, in the same run:
  - oasis: a client (the cluster's own TLS credentials, from its client-config) submits 20 tasks that wait for a
    gate file; the time until the scheduler has a second worker. Then the gate opens, the tasks end, and the
    group shrinks back to 1 (polled through the API) before the next repetition.
  - direct: autoscaling off (PATCH `autoscaling: null`), the same tasks submitted, and at once a `dask worker`
    started here with the same credentials; the time until the scheduler has it. It is stopped by PID.

Then one Spark cluster of 1 worker (1 core), autoscaled the same way. Each repetition, in the same run:
  - oasis: a PySpark job through the API with `spark.dynamicAllocation.enabled=true`, 8 tasks that mark the
    worker they run on (a file per worker, named after its executor's directory) and wait for a gate; the clock
    starts when the first task runs (its driver then has one executor and a backlog, and asks for more within
    Spark's 1 s backlog timeout) and stops when a task runs on a second worker. Then the gate opens, the job
    ends, and the group shrinks back to 1.
  - direct: autoscaling off, the same job, and at the first task a `spark-class ...Worker` started here (with
    the cluster's secret from its client-config, in a 0600 file) joining the same master; the same clock. It is
    stopped by PID.
Results go to bench/autoscale-results.md (printed too)."""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from oasis.cli.client import OasisClient, authenticate, endpoint_for  # noqa: E402
from oasis.cli.embedded import EmbeddedService  # noqa: E402
from oasis.procs import wait_until  # noqa: E402

POLICY = {"node_groups": {"worker": {"min": 1, "max": 2, "cooldown": 0}}}
TASKS = 20
SPARK_TASKS = 8
SPARK_JOB = b'''
import hashlib, os, sys
from pyspark.sql import SparkSession

gate, seen = sys.argv[1], sys.argv[2]


def task(i):
    import hashlib, os, time
    worker = os.path.dirname(os.path.dirname(os.getcwd()))  # <worker's work dir>/<app>/<executor>
    open(os.path.join(seen, hashlib.sha256(worker.encode()).hexdigest()[:16]), "a").close()
    while not os.path.exists(gate):
        time.sleep(0.05)
    return i


spark = SparkSession.builder.appName("bench-dynalloc").getOrCreate()
print("result", sum(spark.sparkContext.parallelize(range(%d), %d).map(task).collect()))
spark.stop()
''' % (SPARK_TASKS, SPARK_TASKS)
SPARK_CONFIGS = {"spark.dynamicAllocation.enabled": "true", "spark.executor.cores": "1",
                 "spark.dynamicAllocation.executorIdleTimeout": "2s"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def gated(i: int, gate: str) -> int:
    import os as _os
    import time as _time
    while not _os.path.exists(gate):
        _time.sleep(0.05)
    return i


def failed(futures: list) -> None:  # noqa: ANN001
    """Raise a task's own error: a task that fails leaves nothing waiting, and no worker would ever be added."""
    for f in futures:
        if f.status == "error":
            raise RuntimeError(f"a benchmark task failed: {f.exception()!r}")


def workers_of(c: OasisClient, cid: str) -> int:
    cluster = c.show("clusters", cid)
    if cluster["status"] != "Active":
        return -1
    return sum(len(ng["instances"]) for ng in cluster["node_groups"] if ng["name"] == "worker")


def job_status(c: OasisClient, jid: str) -> str:
    return c.show("jobs", jid)["info"]["status"]


def spark_reaction(c: OasisClient, work: Path, gates: Path, reps: int) -> tuple[list[float], list[float]]:
    """The Spark half: (oasis times, direct times), each from the first task to a task on a second worker."""
    import pyspark

    version = c.get("/plugins/spark")["plugin"]["versions"][0]
    cid = c.create("clusters", {"name": "bench-autoscale-spark", "plugin_name": "spark", "plugin_version": version,
                                "autoscaling": POLICY, "node_groups": [
                                    {"name": "master", "flavor_id": "2", "node_processes": ["master"], "count": 1},
                                    {"name": "worker", "flavor_id": "2", "node_processes": ["worker"], "count": 1}]}
                   )["id"]
    oasis_times: list[float] = []
    direct_times: list[float] = []
    spark_oasis: list[float] = []
    spark_direct: list[float] = []
    try:
        wait_until(lambda: workers_of(c, cid) == 1, 300, "the Spark cluster", 0.2)
        binary = c.upload_binary("bench-dynalloc.py", SPARK_JOB)["id"]
        template = c.create("job-templates", {"name": "bench-dynalloc", "type": "Spark", "mains": [binary]})["id"]
        cfg = c.client_config(cid)
        spark_home = str(Path(pyspark.__file__).parent)
        conf = work / "spark-conf"
        conf.mkdir(mode=0o700)
        fd = os.open(conf / "spark-defaults.conf", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, "".join(f"{k} {v}\n" for k, v in cfg["spark_conf"].items()).encode())
        os.close(fd)
        env = dict(os.environ, SPARK_HOME=spark_home, SPARK_CONF_DIR=str(conf), SPARK_LOG_DIR=str(work),
                   SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
        java = shutil.which("java")
        if java:
            env["JAVA_HOME"] = str(Path(os.path.realpath(java)).parent.parent)

        def run(name: str) -> tuple[str, Path, Path]:
            gate, seen = gates / f"spark-{name}", gates / f"seen-{name}"
            seen.mkdir()
            seen.chmod(0o1777)  # the tasks run as the project's user (or, on the hand-started worker, as us)
            jid = c.create("jobs", {"job_template_id": template, "cluster_id": cid, "job_configs": {
                "configs": SPARK_CONFIGS, "args": [str(gate), str(seen)]}})["id"]

            def marks() -> int:
                if job_status(c, jid) in ("FAILED", "KILLED", "DONEWITHERROR"):
                    raise RuntimeError(f"the benchmark job failed: {c.logs(jid, 'stderr')[-2000:]}")
                return len(list(seen.iterdir()))

            wait_until(marks, 300, "the job's first task", 0.02)
            return jid, gate, seen

        def finish(jid: str, gate: Path) -> None:
            gate.touch()
            wait_until(lambda: job_status(c, jid) == "SUCCEEDED", 300, "the job's end", 0.2)

        for rep in range(reps):
            jid, gate, seen = run(f"oasis-{rep}")
            t0 = time.monotonic()
            wait_until(lambda: len(list(seen.iterdir())) >= 2, 300, "a task on the autoscaled worker", 0.02)
            oasis_times.append(time.monotonic() - t0)
            log(f"rep {rep}: spark oasis {oasis_times[-1]:.2f} s")
            finish(jid, gate)
            wait_until(lambda: workers_of(c, cid) == 1, 300, "the shrink back to 1", 0.2)

            c.patch(f"/clusters/{cid}", {"autoscaling": None})
            jid, gate, seen = run(f"direct-{rep}")
            t0 = time.monotonic()
            proc = subprocess.Popen([f"{spark_home}/bin/spark-class", "org.apache.spark.deploy.worker.Worker",
                                     "--host", "127.0.0.1", "--port", "0", "--webui-port", "0", "--cores", "1",
                                     "--memory", "1536m", "--work-dir", str(work / f"worker-{rep}"),
                                     cfg["master_url"]], env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                wait_until(lambda: len(list(seen.iterdir())) >= 2, 300, "a task on the hand-started worker", 0.02)
                direct_times.append(time.monotonic() - t0)
                log(f"rep {rep}: spark direct {direct_times[-1]:.2f} s")
                finish(jid, gate)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(60)
            c.patch(f"/clusters/{cid}", {"autoscaling": POLICY})
    finally:
        for gate in gates.glob("spark-*"):
            gate.touch()
        c.delete(f"/clusters/{cid}")
        wait_until(lambda: c.cluster_or_none(cid) is None, 300, "the Spark cluster to be deleted", 0.2)
    return oasis_times, direct_times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--output", type=Path, default=ROOT / "bench" / "autoscale-results.md")
    ap.add_argument("--skip-dask", action="store_true", help="the Spark half only")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="oasis-bench-autoscale-"))
    # the tasks run as the project's Unix user, who cannot enter `work` (0700): the gates live apart
    gates = Path(tempfile.mkdtemp(prefix="oasis-bench-autoscale-gates-"))
    gates.chmod(0o755)
    service = EmbeddedService(work / "oasis")
    oasis_times: list[float] = []
    direct_times: list[float] = []
    try:
        log("starting oasis up")
        service.start()
        c = OasisClient(endpoint_for(service.url), authenticate(service.credentials()).token)
        if not args.skip_dask:
            oasis_times, direct_times = dask_reaction(c, work, gates, args.reps)
        spark_oasis, spark_direct = spark_reaction(c, work, gates, args.reps)
    finally:
        service.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(gates, ignore_errors=True)
    write_results(args, oasis_times, direct_times, spark_oasis, spark_direct)


def dask_reaction(c: OasisClient, work: Path, gates: Path, reps: int) -> tuple[list[float], list[float]]:
    """The Dask half: (oasis times, direct times), each from the submit to a second worker registered."""
    from distributed import Client, wait
    from distributed.security import Security

    oasis_times: list[float] = []
    direct_times: list[float] = []
    cid: str | None = None
    try:
        version = c.get("/plugins/dask")["plugin"]["versions"][0]
        cid = c.create("clusters", {"name": "bench-autoscale", "plugin_name": "dask", "plugin_version": version,
                                    "autoscaling": POLICY, "node_groups": [
                                        {"name": "master", "flavor_id": "2", "node_processes": ["scheduler"],
                                         "count": 1},
                                        {"name": "worker", "flavor_id": "2", "node_processes": ["worker"],
                                         "count": 1}]})["id"]
        wait_until(lambda: workers_of(c, cid) == 1, 300, "the Dask cluster", 0.2)
        cfg = c.client_config(cid)
        tls = work / "tls"
        tls.mkdir(mode=0o700)
        for name in ("ca", "cert", "key"):
            (tls / f"{name}.pem").write_text(cfg[name])
            (tls / f"{name}.pem").chmod(0o600)
        security = Security(tls_ca_file=str(tls / "ca.pem"), tls_client_cert=str(tls / "cert.pem"),
                            tls_client_key=str(tls / "key.pem"), require_encryption=True)
        client = Client(cfg["scheduler_address"], security=security)

        def n_workers() -> int:
            return len(client.scheduler_info()["workers"])

        for rep in range(reps):
            # oasis: the autoscaler sees the work and adds a worker
            gate = gates / f"oasis-{rep}"
            t0 = time.monotonic()
            futures = client.map(gated, range(TASKS), gate=str(gate), pure=False)
            wait_until(lambda: failed(futures) or n_workers() >= 2, 300, "the autoscaled worker", 0.02)
            oasis_times.append(time.monotonic() - t0)
            log(f"rep {rep}: oasis {oasis_times[-1]:.2f} s")
            gate.touch()
            client.gather(futures)
            del futures
            wait_until(lambda: workers_of(c, cid) == 1 and n_workers() == 1, 300, "the shrink back to 1", 0.2)

            # direct: a worker started by hand joins the same scheduler
            c.patch(f"/clusters/{cid}", {"autoscaling": None})
            gate = gates / f"direct-{rep}"
            conf = work / f"direct-{rep}"
            conf.mkdir(mode=0o700)
            pair = {"cert": str(tls / "cert.pem"), "key": str(tls / "key.pem")}
            (conf / "dask.yaml").write_text(yaml.safe_dump({"distributed": {"comm": {
                "require-encryption": True,
                "tls": {"ca-file": str(tls / "ca.pem"), "worker": pair, "client": pair}}}}))
            t0 = time.monotonic()
            futures = client.map(gated, range(TASKS), gate=str(gate), pure=False)
            proc = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", cfg["scheduler_address"],
                                     "--nthreads", "1", "--name", f"direct-{rep}", "--no-dashboard",
                                     "--host", "127.0.0.1"],
                                    env={**os.environ, "DASK_CONFIG": str(conf)}, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                wait_until(lambda: failed(futures) or n_workers() >= 2, 300, "the worker started by hand", 0.02)
                direct_times.append(time.monotonic() - t0)
                log(f"rep {rep}: direct {direct_times[-1]:.2f} s")
                gate.touch()
                # waited for, not gathered: the hand-started worker has only a client certificate (no
                # serverAuth), so the scheduler cannot connect to it to fetch its results
                wait(futures)
                client.cancel(futures)
                del futures
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(60)
            wait_until(lambda: n_workers() == 1, 120, "the hand-started worker to leave", 0.2)
            c.patch(f"/clusters/{cid}", {"autoscaling": POLICY})
        client.close()
    finally:
        for gate in gates.glob("*-*"):
            if not gate.is_dir():
                gate.touch()
        if cid is not None:  # its daemons and the project's user go with it
            c.delete(f"/clusters/{cid}")
            wait_until(lambda: c.cluster_or_none(cid) is None, 300, "the cluster to be deleted", 0.2)
    return oasis_times, direct_times


def write_results(args: argparse.Namespace, oasis_times: list[float], direct_times: list[float],
                  spark_oasis: list[float], spark_direct: list[float]) -> None:
    def row(name: str, xs: list[float]) -> str:
        return f"| {name} | {statistics.median(xs):.2f} | {min(xs):.2f} | {max(xs):.2f} | {len(xs)} |"

    def ratio(a: list[float], b: list[float]) -> str:
        return f"{statistics.median(a) / statistics.median(b):.2f}" if a and b else "-"

    header = ["| way | median (s) | min (s) | max (s) | runs |", "|---|---|---|---|---|"]
    dask = [
        "## Dask: work submitted → a new worker registered with the scheduler",
        "",
        f"A Dask cluster on `local` (1 worker of flavor m1.small, autoscaled min 1, max 2, cooldown 0); a client "
        f"submits {TASKS} tasks that wait; the time until the scheduler has a second worker.",
        "",
        *header,
        row("oasis autoscaling (the engine reads the load, scales, the worker starts)", oasis_times),
        row("direct: `dask worker` started by hand at submit time", direct_times),
        "",
        f"oasis / direct (medians): {ratio(oasis_times, direct_times)}. oasis's extra time is the autoscaler's "
        "period (the load is read every 2 s: half of it on average), two probes of the scheduler on its host, and "
        "the scale operation's steps (placement, the instance's directory, its TLS files, the daemon's start "
        "through the agent) before the worker's own start, which is all the direct way pays.",
        "",
    ] if oasis_times and direct_times else []
    spark = [
        "## Spark with dynamic allocation: the driver's ask → an executor running a task on a new worker",
        "",
        f"A Spark cluster on `local` (1 worker of flavor m1.small: 1 core, autoscaled min 1, max 2, cooldown 0); "
        f"a PySpark job through the API with dynamic allocation and {SPARK_TASKS} tasks that wait; from its first "
        "task (one executor, a backlog: the driver asks for more within Spark's 1 s backlog timeout) to a task "
        "running on a second worker.",
        "",
        *header,
        row("oasis autoscaling (the driver's gauges read, the scale, the worker starts, the master launches an "
            "executor)", spark_oasis),
        row("direct: a Spark worker (`spark-class ...Worker`) started by hand at the first task", spark_direct),
        "",
        f"oasis / direct (medians): {ratio(spark_oasis, spark_direct)}. Both pay the driver's backlog timeout, "
        "the worker's JVM start and registration, the executor's JVM start and its registration with the driver; "
        "oasis adds the autoscaler's period (2 s), the metrics' period (1 s), one probe of the master's host and "
        "the scale operation's steps.",
        "",
    ]
    text = "\n".join([
        "# Autoscaling's reaction",
        "",
        f"`bench/autoscale.py --reps {args.reps}{' --skip-dask' if args.skip_dask else ''}`, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.node()} ({platform.machine()}, Python {platform.python_version()}).",
        "",
        *dask,
        *spark,
    ])
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
