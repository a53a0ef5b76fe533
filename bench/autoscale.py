#!/usr/bin/env python3
"""oasis benchmark: autoscaling's reaction time, from work submitted to a new worker registered with the
scheduler, against the direct way (a worker started by hand with `dask worker` joining the same scheduler).

    .venv/bin/python bench/autoscale.py [--reps N]

One `oasis up` (free port, temporary state dir) and one Dask cluster of 1 worker, autoscaled (min 1, max 2,
cooldown 0). Each repetition, in the same run:
  - oasis: a client (the cluster's own TLS credentials, from its client-config) submits 20 tasks that wait for a
    gate file; the time until the scheduler has a second worker. Then the gate opens, the tasks end, and the
    group shrinks back to 1 (polled through the API) before the next repetition.
  - direct: autoscaling off (PATCH `autoscaling: null`), the same tasks submitted, and at once a `dask worker`
    started here with the same credentials; the time until the scheduler has it. It is stopped by PID.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--output", type=Path, default=ROOT / "bench" / "autoscale-results.md")
    args = ap.parse_args()

    from distributed import Client, wait
    from distributed.security import Security

    work = Path(tempfile.mkdtemp(prefix="oasis-bench-autoscale-"))
    # the tasks run as the project's Unix user, who cannot enter `work` (0700): the gates live apart
    gates = Path(tempfile.mkdtemp(prefix="oasis-bench-autoscale-gates-"))
    gates.chmod(0o755)
    service = EmbeddedService(work / "oasis")
    oasis_times: list[float] = []
    cid: str | None = None
    c: OasisClient | None = None
    direct_times: list[float] = []
    try:
        log("starting oasis up")
        service.start()
        c = OasisClient(endpoint_for(service.url), authenticate(service.credentials()).token)
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

        for rep in range(args.reps):
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
        for gate in gates.glob("*"):
            gate.touch()
        if c is not None and cid is not None:  # its daemons and the project's user go with it
            c.delete(f"/clusters/{cid}")
            wait_until(lambda: c.cluster_or_none(cid) is None, 300, "the cluster to be deleted", 0.2)
        service.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(gates, ignore_errors=True)

    def row(name: str, xs: list[float]) -> str:
        return f"| {name} | {statistics.median(xs):.2f} | {min(xs):.2f} | {max(xs):.2f} | {len(xs)} |"

    text = "\n".join([
        "# Autoscaling: work submitted → a new worker registered with the scheduler",
        "",
        f"`bench/autoscale.py --reps {args.reps}`, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.node()} ({platform.machine()}, Python {platform.python_version()}).",
        "",
        f"A Dask cluster on `local` (1 worker of flavor m1.small, autoscaled min 1, max 2, cooldown 0); a client "
        f"submits {TASKS} tasks that wait; the time until the scheduler has a second worker.",
        "",
        "| way | median (s) | min (s) | max (s) | runs |",
        "|---|---|---|---|---|",
        row("oasis autoscaling (the engine reads the load, scales, the worker starts)", oasis_times),
        row("direct: `dask worker` started by hand at submit time", direct_times),
        "",
        "oasis's extra time is the autoscaler's period (the load is read every 2 s: half of it on average), two "
        "probes of the scheduler on its host, and the scale operation's steps (placement, the instance's "
        "directory, its TLS files, the daemon's start through the agent) before the worker's own start, which is "
        "all the direct way pays.",
        "",
    ])
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
