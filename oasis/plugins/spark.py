"""Apache Spark standalone: one `master`, any number of `worker`s (Sahara's `slave` is accepted too)."""
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

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
# How a Spark daemon says it could not bind a port (Jetty and the RPC server throw a BindException, Netty's
# native transport an "Address already in use"): it may exit, or log it and stay up without ever getting ready.
BIND_FAILED = ("java.net.BindException", "Address already in use")

# Every listener, and where its port comes from (nothing binds a fixed default such as 6066, 7077 or 8080):
#   master: RPC (--port) and web UI (--webui-port) from the instance's allocation; the REST submission server
#           (6066 by default) is switched off: jobs go through spark-submit in client mode, and that server
#           takes unauthenticated submissions.
#   worker: RPC (--port) and web UI (--webui-port) from the allocation; the external shuffle service (7337) is
#           off unless a cluster config turns it on.
#   driver (spark-submit on the master instance): its UI is switched off (see `launch`); its RPC
#           (spark.driver.port), block manager and py4j/accumulator sockets, and the executors' block managers
#           on the workers, bind port 0: the kernel picks one from its ephemeral range (32768-60999 on Linux),
#           outside the hosts' allocation range (20000-29999 by default), and executors learn the driver's
#           from the master, so nothing needs to know them in advance.


class SparkPlugin(Plugin):
    name = "spark"
    title = "Apache Spark"
    description = "Spark standalone clusters from the pyspark distribution, running on Java 17."
    master_process = "master"
    worker_process = "worker"
    aliases = {"slave": "worker"}
    job_types = ["Spark", "Java", "Shell"]

    def versions(self) -> list[str]:
        v = installed_version("pyspark")
        return [v] if v else []

    def node_processes(self, version: str) -> dict[str, list[str]]:
        return {"Spark": ["master", "worker"]}

    def configs(self, version: str) -> list[dict[str, Any]]:
        return [
            _config("Executor memory", "spark.executor.memory", "1g", "Memory per executor of a job"),
            _config("Executor cores", "spark.executor.cores", 1, "Cores per executor of a job", "int"),
        ]

    def ports(self, process: str) -> list[str]:
        return {"master": ["master", "master_ui"], "worker": ["worker", "worker_ui"]}.get(process, [])

    def config_hints(self, job_type: str) -> dict[str, Any]:
        configs = [{"name": "edp.java.main_class", "value": "", "description": "Main class of a jar job"}]
        return {"configs": configs if job_type == "Java" else [], "args": [], "params": {}}

    # --- engine half ------------------------------------------------------------------------------------------

    def _master(self, cluster: ClusterView) -> InstanceView:
        masters = cluster.having("master")
        if len(masters) != 1:
            raise PluginError(f"cluster {cluster.name} has {len(masters)} masters")
        return masters[0]

    def master_url(self, cluster: ClusterView) -> str:
        m = self._master(cluster)
        return f"spark://{m.address}:{m.ports['master']}"

    def _env(self, cluster: ClusterView, inst: InstanceView) -> dict[str, str]:
        rt = cluster.runtime
        env = {"SPARK_HOME": rt["spark_home"], "SPARK_LOCAL_IP": inst.address, "SPARK_CONF_DIR": f"{inst.workdir}/conf",
               "PYSPARK_PYTHON": rt["python"], "SPARK_LOG_DIR": inst.procdir,
               # A busy port must fail the start, not move the daemon to a port that `info` does not show.
               # System properties win over spark-defaults.conf: a cluster config cannot turn the REST server on.
               "SPARK_DAEMON_JAVA_OPTS": "-Dspark.port.maxRetries=0 -Dspark.master.rest.enabled=false"}
        if rt.get("java_home"):
            env["JAVA_HOME"] = rt["java_home"]
        return env

    async def configure(self, cluster: ClusterView, instances: list[InstanceView]) -> None:
        defaults = "\n".join(f"{k} {v}" for k, v in self._spark_defaults(cluster).items()) + "\n"
        await asyncio.gather(*(i.remote.put(f"{i.workdir}/conf/spark-defaults.conf", defaults.encode())
                               for i in instances))

    def _spark_defaults(self, cluster: ClusterView) -> dict[str, Any]:
        out = {c["name"]: c["default_value"] for c in self.configs(cluster.version)}
        for section in cluster.configs.values():
            if isinstance(section, dict):
                out.update({k: v for k, v in section.items() if k.startswith("spark.")})
        return out

    async def start(self, cluster: ClusterView, instances: list[InstanceView]) -> None:
        spark_class = f"{cluster.runtime['spark_home']}/bin/spark-class"
        # Workers only retry registration after many seconds, so the master goes first and must be up.
        for m in (i for i in instances if "master" in i.processes):
            await start_daemon(m, "master", [spark_class, MASTER_CLASS, "--host", m.address,
                                             "--port", str(m.ports["master"]),
                                             "--webui-port", str(m.ports["master_ui"])],
                               self._env(cluster, m), "New state: ALIVE", BIND_FAILED)
        url = self.master_url(cluster)

        async def worker(w: InstanceView) -> None:
            argv = [spark_class, WORKER_CLASS, "--host", w.address, "--port", str(w.ports["worker"]),
                    "--webui-port", str(w.ports["worker_ui"]), "--cores", str(w.vcpus),
                    "--memory", f"{worker_memory_mb(w)}m", "--work-dir", f"{w.workdir}/work", url]
            await start_daemon(w, "worker", argv, self._env(cluster, w), "Successfully registered with master",
                               BIND_FAILED)

        await asyncio.gather(*(worker(w) for w in instances if "worker" in w.processes))

    async def decommission(self, cluster: ClusterView, instances: list[InstanceView]) -> None:
        await stop_daemons(instances)

    async def stop(self, cluster: ClusterView, instances: list[InstanceView]) -> None:
        # Workers before the master, so that none of them spends its last seconds reconnecting.
        await stop_daemons([i for i in instances if "master" not in i.processes])
        await stop_daemons([i for i in instances if "master" in i.processes])

    def info(self, cluster: ClusterView) -> dict[str, dict[str, str]]:
        m = self._master(cluster)
        return {"Spark": {"Web UI": f"http://{m.address}:{m.ports['master_ui']}", "Master": self.master_url(cluster)}}

    def launch(self, cluster: ClusterView, job_type: str, main: str | None, libs: list[str],
               configs: dict[str, Any], args: list[str], workdir: str) -> Launch:
        m = self._master(cluster)
        env = self._env(cluster, m)
        if job_type == "Shell":
            return Launch(["/bin/sh", main or "", *args], env)
        submit = [f"{cluster.runtime['spark_home']}/bin/spark-submit", "--master", self.master_url(cluster),
                  "--deploy-mode", "client", "--conf", f"spark.driver.host={m.address}",
                  "--conf", "spark.ui.enabled=false"]
        for k, v in configs.items():
            if k.startswith("spark."):
                submit += ["--conf", f"{k}={v}"]
        if job_type == "Java" or (main or "").endswith(".jar"):
            main_class = configs.get("edp.java.main_class")
            if not main_class:
                raise PluginError("A jar job needs configs['edp.java.main_class']")
            submit += ["--class", str(main_class)]
            if libs:
                submit += ["--jars", ",".join(libs)]
        elif libs:
            submit += ["--py-files", ",".join(libs)]
        return Launch([*submit, main or "", *args], env)


def _config(title: str, name: str, default: Any, description: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "title": title, "applicable_target": "general", "scope": "cluster", "config_type": kind,
            "default_value": default, "is_optional": True, "priority": 2, "description": description,
            "config_values": None}
