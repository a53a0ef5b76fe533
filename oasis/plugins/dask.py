"""Dask distributed: one `scheduler`, any number of `worker`s."""
from __future__ import annotations

import asyncio
from typing import Any

from oasis.plugins.base import ClusterView, InstanceView, Launch, Plugin, PluginError
from oasis.plugins.common import (
    installed_version,
    start_daemon,
    stop_daemons,
    worker_memory_mb,
)


# A port that cannot be bound makes the scheduler, worker or nanny exit (the agent sees that), except an HTTP
# server's: distributed then warns "Port N is already in use" and takes another, which `info` would not show.
PORT_MOVED = ("is already in use",)


class DaskPlugin(Plugin):
    name = "dask"
    title = "Dask distributed"
    description = "Dask distributed clusters: a scheduler and workers; jobs are Python scripts given the scheduler."
    master_process = "scheduler"
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

    def scheduler_address(self, cluster: ClusterView) -> str:
        s = self._scheduler(cluster)
        return f"tcp://{s.address}:{s.ports['scheduler']}"

    def _env(self, cluster: ClusterView) -> dict[str, str]:
        return {"DASK_SCHEDULER_ADDRESS": self.scheduler_address(cluster), "PYTHONUNBUFFERED": "1"}

    async def start(self, cluster: ClusterView, instances: list[InstanceView]) -> None:
        python = cluster.runtime["python"]
        for s in (i for i in instances if "scheduler" in i.processes):
            await start_daemon(s, "scheduler", [
                python, "-m", "distributed.cli.dask_scheduler", "--host", s.address,
                "--port", str(s.ports["scheduler"]), "--dashboard-address", f"{s.address}:{s.ports['dashboard']}",
            ], {}, "Scheduler at:", PORT_MOVED)
        address = self.scheduler_address(cluster)

        async def worker(w: InstanceView) -> None:
            await start_daemon(w, "worker", [
                python, "-m", "distributed.cli.dask_worker", address, "--host", w.address,
                "--worker-port", str(w.ports["worker"]), "--nanny-port", str(w.ports["nanny"]),
                "--nthreads", str(w.vcpus), "--memory-limit", f"{worker_memory_mb(w)}MB", "--no-dashboard",
                # by default that HTTP server listens on every interface of the host
                "--dashboard-address", f"{w.address}:0",
                "--name", w.name, "--local-directory", f"{w.workdir}/dask",
            ], {}, "Registered to:", PORT_MOVED)

        await asyncio.gather(*(worker(w) for w in instances if "worker" in w.processes))

    async def decommission(self, cluster: ClusterView, instances: list[InstanceView]) -> None:
        # SIGTERM makes the nanny close its worker gracefully; the scheduler reschedules what was there.
        await stop_daemons(instances, grace=30)

    async def stop(self, cluster: ClusterView, instances: list[InstanceView]) -> None:
        # All at once: a worker that outlives its scheduler by a moment only logs a reconnect attempt.
        await stop_daemons(instances)

    def info(self, cluster: ClusterView) -> dict[str, dict[str, str]]:
        s = self._scheduler(cluster)
        return {"Dask": {"Scheduler": self.scheduler_address(cluster),
                         "Dashboard": f"http://{s.address}:{s.ports['dashboard']}/status"}}

    def launch(self, cluster: ClusterView, job_type: str, main: str | None, libs: list[str],
               configs: dict[str, Any], args: list[str], workdir: str) -> Launch:
        env = self._env(cluster)
        if libs:
            env["PYTHONPATH"] = ":".join(libs)
        if job_type == "Shell":
            return Launch(["/bin/sh", main or "", *args], env)
        return Launch([cluster.runtime["python"], main or "", *args], env)
