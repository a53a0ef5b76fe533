"""Dask distributed: one `scheduler`, any number of `worker`s."""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from oasis.plugins import security
from oasis.plugins.base import ClusterView, FrameworkHealth, InstanceView, Launch, Load, Plugin, PluginError
from oasis.plugins.common import (
    installed_version,
    start_daemon,
    stop_daemons,
    worker_memory_mb,
)
from oasis.plugins.probe import CLIENT_CONTEXT, ProbeFailed, get_json, get_text, run_python

log = logging.getLogger(__name__)


# A port that cannot be bound makes the scheduler, worker or nanny exit (the agent sees that), except an HTTP
# server's: distributed then warns "Port N is already in use" and takes another, which `info` would not show.
PORT_MOVED = ("is already in use",)

# The HTTP servers of the scheduler (dashboard, /json, /metrics, /info) and of the workers serve TLS with the
# cluster's certificate (`distributed.scheduler.dashboard.tls.*`), but distributed makes that context with
# `ssl.create_default_context(purpose=CLIENT_AUTH)`, which asks for no client certificate. This preload, run in
# each scheduler and worker once its HTTP server listens and before it says it is ready, makes the certificate
# required, so only holders of the cluster's certificates get an answer. It fails the daemon if there is no TLS.
HTTP_TLS_PRELOAD = b'''"""oasis: the HTTP server of this node answers only clients with a certificate of the cluster's CA."""
import logging
import ssl


def dask_setup(server):
    context = getattr(getattr(server, "http_server", None), "ssl_options", None)
    if not isinstance(context, ssl.SSLContext):
        raise RuntimeError("oasis: the HTTP server has no TLS context; refusing to serve it in the clear")
    context.verify_mode = ssl.CERT_REQUIRED
    logging.getLogger("distributed.oasis").info("oasis: HTTP requires a client certificate of the cluster")
'''
HTTP_TLS_READY = "oasis: HTTP requires a client certificate of the cluster"

# A Dask job's performance report (`distributed.performance_report`: its task stream, profiles and the
# scheduler's view of the run, one HTML file) is saved next to its logs, in the job's history directory, which the
# engine keeps in the deployment's store when the job ends (oasis/edp/history.py, whose HISTORY_DIR and
# DASK_REPORT these are). The job's script runs through this wrapper, written into the job's directory: the same
# script, argv and exit code as `python script.py ARGS` (a SystemExit passes through), inside a report. The
# report is an extra: if a client cannot be made or the report cannot be saved, the script runs or ends as it
# would have, with one line on stderr.
HISTORY_DIR, DASK_REPORT = "history", "dask-report.html"
WRAPPER = "oasis_dask_job.py"
# A job (else its cluster) switches the report off with `false`: the scheduler draws it with bokeh when the
# script ends, 0.2 to 0.5 s on a small job (bench/run.py), which a job of many short scripts may not want to pay.
REPORT_CONFIG = "oasis.dask.performance_report"
WRAPPER_CODE = b'''"""oasis: run a Dask job's script (argv: REPORT SCRIPT ARGS...) inside a performance report."""
import os
import runpy
import sys


def note(message):
    sys.stderr.write("oasis: %s\\n" % message)
    sys.stderr.flush()


def main(argv):
    report, script, args = argv[0], argv[1], argv[2:]
    sys.argv = [script, *args]
    sys.path[0] = os.path.dirname(os.path.abspath(script))  # as `python SCRIPT` would have it
    try:
        from distributed import Client, performance_report

        # the job's scheduler and TLS settings: DASK_SCHEDULER_ADDRESS and DASK_CONFIG, as the script's own
        client = Client()
        # bokeh's scripts inline: the report opens offline, and loads nothing from a third party
        recorder = performance_report(filename=report, mode="inline")
        recorder.__enter__()
    except Exception as e:  # noqa: BLE001
        note("no performance report for this job: %s" % e)
        client = recorder = None
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        if recorder is not None:
            try:
                os.makedirs(os.path.dirname(report), exist_ok=True)
                with open(script, errors="replace") as f:
                    code = f.read()
                # the script's own code in the report's "calling code", not this wrapper's
                client.sync(recorder.__aexit__, None, None, None, code=code)
            except Exception as e:  # noqa: BLE001
                note("the performance report could not be saved: %s" % e)
        if client is not None:
            client.close()


if __name__ == "__main__":
    main(sys.argv[1:])
'''


# Scheduler task states that wait for a core (Prometheus' `dask_scheduler_tasks{state=...}`): `queued` (ready,
# held back by the scheduler until a worker has room), `no-worker` (ready, no worker can take it).
READY_STATES = ("queued", "no-worker")
# A worker's own task states that are work in hand (its heartbeat's `task_counts`): a worker with none of them
# holds only results, which `retire_workers` moves away before it goes.
WORKER_BUSY_STATES = ("executing", "long-running", "ready", "constrained", "waiting", "fetch", "flight",
                      "resumed", "cancelled")
RETIRE_TIMEOUT = 120.0

# Runs with the instance's Python and its distributed (-I: nothing from the environment) on the scheduler's host:
# retire the named workers (the scheduler copies every result held only by them to the others first, then closes
# them), as the cluster's client, whose certificate and key arrive on stdin and reach OpenSSL through pipes.
RETIRE_CODE = CLIENT_CONTEXT + r"""
import asyncio
address, timeout, names = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
args = {"ssl_context": context, "require_encryption": True} if context is not None else {}

async def main():
    from distributed.core import rpc
    async with rpc(address, connection_args=args, timeout=timeout) as scheduler:
        out = await asyncio.wait_for(scheduler.retire_workers(names=names, close_workers=True,
                                                              stimulus_id="oasis-decommission"), timeout)
    sys.stdout.write(json.dumps(sorted(str(w.get("name")) for w in out.values())))

asyncio.run(main())
"""


class DaskPlugin(Plugin):
    name = "dask"
    title = "Dask distributed"
    description = "Dask distributed clusters: a scheduler and workers; jobs are Python scripts given the scheduler."
    master_process = "scheduler"
    drivers_on_workers = True  # the client script runs on any instance: every one has Python and distributed
    worker_process = "worker"
    job_types = ["Dask", "Shell"]

    def versions(self) -> list[str]:
        v = installed_version("distributed")
        return [v] if v else []

    def node_processes(self, version: str) -> dict[str, list[str]]:
        return {"Dask": ["scheduler", "worker"]}

    def ports(self, process: str) -> list[str]:
        # Every listener: scheduler (--port) and its dashboard, worker (--worker-port) and nanny (--nanny-port)
        # from the instance's allocation. The worker's own HTTP server (/health, /metrics; it runs even with
        # --no-dashboard) binds the instance's address on port 0: the kernel's ephemeral range lies outside the
        # hosts' allocation range, and the scheduler learns the port from the worker.
        return {"scheduler": ["scheduler", "dashboard"], "worker": ["worker", "nanny"]}.get(process, [])

    def _scheduler(self, cluster: ClusterView) -> InstanceView:
        schedulers = cluster.having("scheduler")
        if len(schedulers) != 1:
            raise PluginError(f"cluster {cluster.name} has {len(schedulers)} schedulers")
        return schedulers[0]

    @staticmethod
    def _secure(cluster: ClusterView) -> bool:
        """Every cluster is, but those of the security bench's insecure half (see `security.INSECURE_ENV`)."""
        return not cluster.secrets.get("insecure")

    def _scheme(self, cluster: ClusterView) -> str:
        return "tls" if self._secure(cluster) else "tcp"

    def scheduler_address(self, cluster: ClusterView) -> str:
        s = self._scheduler(cluster)
        return f"{self._scheme(cluster)}://{s.address}:{s.ports['scheduler']}"

    # --- credentials ------------------------------------------------------------------------------------------

    def make_secrets(self, cluster: ClusterView) -> dict[str, Any]:
        if security.insecure_for_bench():
            return {"insecure": True}
        # The CA's key is kept (encrypted with the row): every configure, scale's included, signs each instance a
        # certificate for its address and name (distributed checks only the chain, but a browser or curl at the
        # dashboard checks the name too).
        ca = security.make_cluster_ca(cluster.name, self.name)
        return {"ca": security.as_dict(ca), "client": security.as_dict(security.client_pem(ca, cluster.name))}

    @staticmethod
    def _tls_dir(base: str) -> str:
        return f"{base}/tls"

    def _tls_files(self, cluster: ClusterView, base: str, who: str, pem: dict[str, str]) -> dict[str, bytes]:
        d = self._tls_dir(base)
        return {f"{d}/ca.pem": cluster.secrets["ca"]["cert"].encode(), f"{d}/{who}.pem": pem["cert"].encode(),
                f"{d}/{who}-key.pem": pem["key"].encode()}

    def _dask_config(self, base: str, who: str, daemon: bool) -> bytes:
        """A dask config file: TLS for every connection, with the cluster's CA and `who`'s certificate; for
        the daemons also the HTTP servers' TLS and the preload that requires client certificates there."""
        d = self._tls_dir(base)
        pair = {"cert": f"{d}/{who}.pem", "key": f"{d}/{who}-key.pem"}
        roles = ("scheduler", "worker", "client") if daemon else ("client",)
        config: dict[str, Any] = {"comm": {"require-encryption": True,
                                           "tls": {"ca-file": f"{d}/ca.pem", **{r: dict(pair) for r in roles}}}}
        if daemon:
            preload = f"{base}/oasis_http_tls.py"
            config["scheduler"] = {"dashboard": {"tls": {"ca-file": f"{d}/ca.pem", **pair}}, "preload": [preload]}
            config["worker"] = {"preload": [preload]}
        return yaml.safe_dump({"distributed": config}).encode()

    def _daemon_files(self, cluster: ClusterView, inst: InstanceView) -> dict[str, bytes]:
        conf = f"{inst.workdir}/conf"
        node = security.node_pem(security.pem_of(cluster.secrets["ca"]), inst.name, [inst.address, inst.name])
        return {**self._tls_files(cluster, conf, "node", security.as_dict(node)),
                f"{conf}/dask/dask.yaml": self._dask_config(conf, "node", True),
                f"{conf}/oasis_http_tls.py": HTTP_TLS_PRELOAD}

    def job_files(self, cluster: ClusterView, workdir: str) -> dict[str, bytes]:
        wrapper = {f"{workdir}/{WRAPPER}": WRAPPER_CODE}
        if not self._secure(cluster):
            return wrapper
        return {**self._tls_files(cluster, workdir, "client", cluster.secrets["client"]),
                f"{workdir}/dask/dask.yaml": self._dask_config(workdir, "client", False), **wrapper}

    @staticmethod
    def report_path(workdir: str) -> str:
        return f"{workdir}/{HISTORY_DIR}/{DASK_REPORT}"

    def client_config(self, info: dict[str, Any], secrets: dict[str, Any]) -> dict[str, Any]:
        dask_info = info.get("Dask") or {}
        out: dict[str, Any] = {"plugin": self.name, "scheduler_address": dask_info.get("Scheduler", ""),
                               "dashboard": dask_info.get("Dashboard", "")}
        if secrets.get("client"):
            out.update(ca=secrets["ca"]["cert"], cert=secrets["client"]["cert"], key=secrets["client"]["key"],
                       require_encryption=True)
        return out

    # --- engine half ------------------------------------------------------------------------------------------

    async def configure(self, cluster: ClusterView, instances: list[InstanceView]) -> None:
        if not self._secure(cluster):
            return
        await asyncio.gather(*(i.write(path, data, 0o600) for i in instances
                               for path, data in self._daemon_files(cluster, i).items()))

    def _daemon_env(self, cluster: ClusterView, inst: InstanceView) -> dict[str, str]:
        # A path, not a secret: the daemons read their TLS settings from the instance's mode-0600 config file.
        return {"DASK_CONFIG": f"{inst.workdir}/conf/dask"} if self._secure(cluster) else {}

    async def start(self, cluster: ClusterView, instances: list[InstanceView]) -> None:
        python = cluster.runtime["python"]
        secure = self._secure(cluster)
        protocol = ["--protocol", self._scheme(cluster)]
        for s in (i for i in instances if "scheduler" in i.processes):
            await start_daemon(s, "scheduler", [
                python, "-m", "distributed.cli.dask_scheduler", "--host", s.address, *protocol,
                "--port", str(s.ports["scheduler"]), "--dashboard-address", f"{s.address}:{s.ports['dashboard']}",
            ], self._daemon_env(cluster, s), HTTP_TLS_READY if secure else "Scheduler at:", PORT_MOVED)
        address = self.scheduler_address(cluster)

        async def worker(w: InstanceView) -> None:
            await start_daemon(w, "worker", [
                python, "-m", "distributed.cli.dask_worker", address, "--host", w.address, *protocol,
                "--worker-port", str(w.ports["worker"]), "--nanny-port", str(w.ports["nanny"]),
                "--nthreads", str(w.vcpus), "--memory-limit", f"{worker_memory_mb(w)}MB", "--no-dashboard",
                # by default that HTTP server listens on every interface of the host
                "--dashboard-address", f"{w.address}:0",
                # spill and scratch data on the instance's first volume, where it has one
                "--name", w.name, "--local-directory", w.volumes[0] if w.volumes else f"{w.workdir}/dask",
            ], self._daemon_env(cluster, w), "Registered to:", PORT_MOVED)

        await asyncio.gather(*(worker(w) for w in instances if "worker" in w.processes))

    def _client_creds(self, cluster: ClusterView) -> dict[str, str] | None:
        return {"ca": cluster.secrets["ca"]["cert"], **cluster.secrets["client"]} if self._secure(cluster) else None

    async def decommission(self, cluster: ClusterView, instances: list[InstanceView]) -> None:
        # Graceful: the scheduler retires the workers first (`retire_workers`: each result that only they hold is
        # copied to a worker that stays, then they are closed), so that nothing computed is lost; their daemons
        # are stopped after. If the scheduler cannot be asked, SIGTERM still makes each nanny close its worker
        # gracefully, and the scheduler recomputes whatever was only there.
        workers = [i for i in instances if "worker" in i.processes]
        schedulers = cluster.having("scheduler")
        if workers and schedulers and all("scheduler" not in i.processes for i in instances):
            s = schedulers[0]
            try:
                out = await run_python(s, cluster.runtime["python"], RETIRE_CODE,
                                       [self.scheduler_address(cluster), str(RETIRE_TIMEOUT),
                                        *(w.name for w in workers)],
                                       self._client_creds(cluster), isolated=False, timeout=RETIRE_TIMEOUT)
                log.info("cluster %s: the scheduler retired %s", cluster.name, ", ".join(json.loads(out)) or "none")
            except (ProbeFailed, ValueError) as e:
                log.warning("cluster %s: the scheduler could not retire %s (%s); stopping them", cluster.name,
                            ", ".join(w.name for w in workers), e)
        await stop_daemons(instances, grace=30)

    async def load(self, cluster: ClusterView) -> Load | None:
        # The scheduler's own view: its task states from its Prometheus metrics (`dask_scheduler_tasks`), and each
        # worker's threads and task counts (its last heartbeat) from `/json/identity.json`; both from its HTTP
        # server, which asks for a certificate of the cluster's CA.
        s = self._scheduler(cluster)
        base = f"{'https' if self._secure(cluster) else 'http'}://{s.address}:{s.ports['dashboard']}"
        creds, python = self._client_creds(cluster), cluster.runtime["python"]
        try:
            metrics, identity = await asyncio.gather(get_text(s, python, f"{base}/metrics", creds),
                                                     get_json(s, python, f"{base}/json/identity.json", creds))
        except ProbeFailed as e:
            log.info("cluster %s: no load from the scheduler: %s", cluster.name, e)
            return None
        return dask_load(metrics, identity)

    async def stop(self, cluster: ClusterView, instances: list[InstanceView]) -> None:
        # All at once: a worker that outlives its scheduler by a moment only logs a reconnect attempt.
        await stop_daemons(instances)

    async def health(self, cluster: ClusterView) -> FrameworkHealth:
        # The scheduler's own view (`Scheduler.identity()`), from its HTTP server, which asks for a certificate
        # of the cluster's CA: the workers it has registered, by the name each was started with (`--name`).
        s = self._scheduler(cluster)
        expected = [w.name for w in cluster.having("worker")]
        secure = self._secure(cluster)
        url = f"{'https' if secure else 'http'}://{s.address}:{s.ports['dashboard']}/json/identity.json"
        creds = {"ca": cluster.secrets["ca"]["cert"], **cluster.secrets["client"]} if secure else None
        try:
            identity = await get_json(s, cluster.runtime["python"], url, creds)
        except ProbeFailed as e:
            return FrameworkHealth("scheduler", False, f"the scheduler on {s.name} does not answer: {e}", expected)
        names = {str(w.get("name")) for w in (identity.get("workers") or {}).values() if isinstance(w, dict)}
        return FrameworkHealth("scheduler", True, f"the scheduler on {s.name} answers",
                               expected, [n for n in expected if n in names])

    async def activity(self, cluster: ClusterView) -> str | None:
        # The scheduler's counts: its clients (less the "fire-and-forget" one it always has) and the tasks its
        # workers are processing (work a client left running).
        s = self._scheduler(cluster)
        secure = self._secure(cluster)
        url = f"{'https' if secure else 'http'}://{s.address}:{s.ports['dashboard']}/json/counts.json"
        creds = {"ca": cluster.secrets["ca"]["cert"], **cluster.secrets["client"]} if secure else None
        try:
            counts = await get_json(s, cluster.runtime["python"], url, creds)
        except ProbeFailed:
            return None
        clients, tasks = max(0, int(counts.get("clients") or 0) - 1), int(counts.get("processing") or 0)
        if not clients and not tasks:
            return None
        return f"{clients} Dask client(s) connected, {tasks} task(s) processing"

    def info(self, cluster: ClusterView) -> dict[str, dict[str, str]]:
        s = self._scheduler(cluster)
        if not self._secure(cluster):
            return {"Dask": {"Scheduler": self.scheduler_address(cluster),
                             "Dashboard": f"http://{s.address}:{s.ports['dashboard']}/status",
                             "Security": "none (security bench)"}}
        return {"Dask": {"Scheduler": self.scheduler_address(cluster),
                         "Dashboard": f"https://{s.address}:{s.ports['dashboard']}/status",
                         "Security": "TLS with mutual authentication by the cluster's own CA, on every connection "
                                     "and on the dashboard; credentials from GET /v2/clusters/{id}/client-config "
                                     "or `oasis cluster connect`"}}

    def launch(self, cluster: ClusterView, job_type: str, main: str | None, libs: list[str],
               configs: dict[str, Any], args: list[str], workdir: str, driver: InstanceView | None = None) -> Launch:
        # The same wherever the client runs: it connects to the scheduler's address with the job's own TLS files.
        env = {"DASK_SCHEDULER_ADDRESS": self.scheduler_address(cluster), "PYTHONUNBUFFERED": "1"}
        if self._secure(cluster):
            # dask reads its config from this directory: `job_files` put the TLS settings there, so a plain
            # `distributed.Client()` connects with the cluster's client certificate. A path, not a secret.
            env["DASK_CONFIG"] = f"{workdir}/dask"
        if libs:
            env["PYTHONPATH"] = ":".join(libs)
        if job_type == "Shell":
            return Launch(["/bin/sh", main or "", *args], env)
        if not self.reports(cluster, configs):
            return Launch([cluster.runtime["python"], main or "", *args], env)
        wrapper = [f"{workdir}/{WRAPPER}", self.report_path(workdir)]
        return Launch([cluster.runtime["python"], *wrapper, main or "", *args], env)

    @staticmethod
    def reports(cluster: ClusterView, configs: dict[str, Any]) -> bool:
        """Whether a Dask job runs inside a performance report: unless the job, else its cluster, says false."""
        return str(configs.get(REPORT_CONFIG, cluster.config(REPORT_CONFIG, True))).strip().lower() != "false"

    def job_problem(self, cluster_configs: dict[str, Any], groups: list[tuple[list[str], int]],
                    job_configs: dict[str, Any]) -> str | None:
        value = (job_configs.get("configs") or {}).get(REPORT_CONFIG, True)
        if str(value).strip().lower() not in ("true", "false"):
            return f"{REPORT_CONFIG} must be true or false, not {str(value)[:40]!r}"
        return None


def dask_load(metrics: str, identity: dict[str, Any]) -> Load:
    """The load from the scheduler's metrics (Prometheus text) and identity (JSON)."""
    states: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics):
        if family.name == "dask_scheduler_tasks":
            for sample in family.samples:
                states[sample.labels.get("state", "")] = sample.value
    total = busy_cores = over = 0
    busy, names = [], []
    for w in (identity.get("workers") or {}).values():
        if not isinstance(w, dict):
            continue
        threads = int(w.get("nthreads") or 0)
        counts = ((w.get("metrics") or {}).get("task_counts") or {})
        running = int(counts.get("executing", 0)) + int(counts.get("long-running", 0))
        in_hand = sum(int(counts.get(k, 0)) for k in WORKER_BUSY_STATES)
        total += threads
        busy_cores += min(threads, running)
        over += max(0, in_hand - threads)  # assigned to it, beyond its threads: waiting for a core too
        names.append(str(w.get("name")))
        if in_hand:
            busy.append(str(w.get("name")))
    pending = int(sum(states.get(k, 0) for k in READY_STATES)) + over
    return Load(pending=pending, busy_cores=busy_cores, total_cores=total, busy=sorted(busy), workers=sorted(names))
