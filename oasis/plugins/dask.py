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
            ], {}, "Scheduler at:")
        address = self.scheduler_address(cluster)

        async def worker(w: InstanceView) -> None:
            await start_daemon(w, "worker", [
                python, "-m", "distributed.cli.dask_worker", address, "--host", w.address,
                "--worker-port", str(w.ports["worker"]), "--nanny-port", str(w.ports["nanny"]),
                "--nthreads", str(w.vcpus), "--memory-limit", f"{worker_memory_mb(w)}MB", "--no-dashboard",
                "--name", w.name, "--local-directory", f"{w.workdir}/dask",
            ], {}, "Registered to:")

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
