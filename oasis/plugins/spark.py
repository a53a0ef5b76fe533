"""Apache Spark standalone: one `master`, any number of `worker`s (Sahara's `slave` is accepted too)."""
from __future__ import annotations

import asyncio
import re
from enum import StrEnum
from typing import Any

from oasis.plugins import security, spark_dynalloc
from oasis.plugins.base import (ClusterView, FrameworkHealth, InstanceView, Launch, Load, Plugin, PluginError,
                                RemoteError)
from oasis.plugins.common import (
    installed_version,
    memory_offered_mb,
    start_daemon,
    stop_daemons,
    worker_memory_mb,
)
from oasis.plugins.probe import ProbeFailed, get_json
from oasis.plugins.spark_dynalloc import METRICS_DIR, Ask

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
#   driver (spark-submit on the master instance, or a worker with `edp.oasis.driver`): its UI is switched off
#           (see `launch`); its RPC (spark.driver.port), block manager and py4j/accumulator sockets, and the
#           executors' block managers on the workers, bind port 0: the kernel picks one from its ephemeral range (32768-60999 on Linux),
#           outside the hosts' allocation range (20000-29999 by default), and executors learn the driver's
#           from the master, so nothing needs to know them in advance.
#   web UIs, secured: the allocated UI port serves HTTPS and asks for a client certificate of the cluster's CA;
#           Spark also opens a plain HTTP connector that only redirects to it, on --webui-port 0 (ephemeral).
#
# Security (every cluster but the security bench's insecure half, see `security.INSECURE_ENV`):
#   - `spark.authenticate` with a secret of the cluster's own, and AES-based RPC encryption
#     (`spark.network.crypto.enabled`), on the master, the workers, the drivers and so the executors. The secret
#     reaches the daemons through the instance's spark-defaults.conf and a driver (spark-submit) through the
#     job's properties file, both mode 0600; never a command line or an environment oasis sets. Executors get it
#     from Spark itself: the worker that launches one passes the secret in the executor's environment
#     (`_SPARK_AUTH_SECRET`) and strips `-Dspark.authenticate.secret` from its command line, so it is readable
#     only by the instance's own user (and root) through /proc/PID/environ.
#   - the master's and workers' web UIs: `spark.ssl.standalone.*` with `needClientAuth`, a PKCS12 key store
#     per instance (a certificate for its address and name) and a JKS trust store holding the cluster's CA.
# Keys in SECURITY_KEYS are set last: a cluster config cannot turn them off.
SECURITY_KEYS = ("spark.authenticate", "spark.authenticate.secret", "spark.network.crypto.enabled")
UI_STORES = ("ui-keystore.p12", "ui-truststore.jks")

# Event logs (what a Spark History Server replays as an application's UI once it is gone): every Spark and Java job
# writes them into its own working directory on the master instance, where the driver runs (client mode), so no
# Hadoop connector for an object store is needed; the engine keeps them in the deployment's store when the job
# ends (oasis/edp/history.py, whose HISTORY_DIR this is). One file per application (rolling off: Spark 4 would
# write a directory of parts), compressed as Spark compresses it by default. A job (or its cluster) may switch
# them off with `spark.eventLog.enabled=false`; where they go is oasis's, so a job's own `dir` or `rolling`
# settings are not passed on.
HISTORY_DIR = "history"

# Graceful decommission (Spark 3.1+; the signal is configurable since 3.2): a worker sent SIGPWR tells the master
# it is leaving and decommissions its executors, which move their cached RDD blocks and shuffle files to the
# others before they exit; the master gives it no new executor meanwhile. A scale-down sends it, waits for the
# worker's executors to be gone (up to DECOMMISSION_TIMEOUT) and then stops the worker. Defaults a cluster
# config may change (`spark.decommission.enabled=false` turns it off: the worker is then stopped at once).
DECOMMISSION_DEFAULTS = {"spark.decommission.enabled": "true", "spark.storage.decommission.enabled": "true",
                         "spark.storage.decommission.rddBlocks.enabled": "true",
                         "spark.storage.decommission.shuffleBlocks.enabled": "true"}
DECOMMISSION_TIMEOUT = 120.0
DECOMMISSION_POLL = 1.0
EVENT_LOG_KEYS = ("spark.eventLog.dir", "spark.eventLog.rolling.enabled")

# The Spark Connect server of a cluster (see SparkPlugin's "Spark Connect server" block).
CONNECT_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
CONNECT_APP = "oasis Spark Connect"
CONNECT_READY = "Spark Connect server started at"
CONNECT_PORT = "connect"          # the master instance's port name
CONNECT_TOKEN = "connect_token"   # the secret the gateway presents (`spark.connect.authenticate.token`)
CONNECT_CONFIG = "oasis.spark.connect"   # "on-demand" (the default), "true" (with the cluster) or "false"
EXECUTOR_MEMORY = "spark.executor.memory"
CONNECT_MAX_EXECUTORS = "oasis.spark.connect.max_executors"
CONNECT_IDLE_EXECUTOR = 60
CONNECT_READY_TIMEOUT = 300.0


class SparkPlugin(Plugin):
    name = "spark"
    title = "Apache Spark"
    description = "Spark standalone clusters from the pyspark distribution, running on Java 17."
    master_process = "master"
    drivers_on_workers = True  # spark-submit (client mode) runs on any instance: every one has the Spark runtime
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
            _config("Executor memory", EXECUTOR_MEMORY, "1g", "Memory per executor of a job"),
            _config("Executor cores", "spark.executor.cores", 1, "Cores per executor of a job", "int"),
        ]

    def ports(self, process: str) -> list[str]:
        return {"master": ["master", "master_ui", CONNECT_PORT], "worker": ["worker", "worker_ui"]}.get(process, [])

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

    def _env(self, cluster: ClusterView, inst: InstanceView, ui_port: int | None = None) -> dict[str, str]:
        rt = cluster.runtime
        # A busy port must fail the start, not move the daemon to a port that `info` does not show.
        # System properties win over spark-defaults.conf: a cluster config cannot turn the REST server on.
        opts = "-Dspark.port.maxRetries=0 -Dspark.master.rest.enabled=false"
        # The master and the workers only coordinate (executors and drivers are JVMs of their own, which
        # SPARK_DAEMON_JAVA_OPTS does not reach): C1's code is plenty for them, and without C2 a daemon's start
        # takes about half the CPU, most of it C2 compiling start-up code (TLS, the RPC handshake's crypto)
        # that runs once. On a small host the daemons of a cluster start at once and compete for its cores.
        opts += " -XX:TieredStopAtLevel=1"
        if ui_port is not None and self._secure(cluster):
            # per daemon (a master and a worker may share an instance and its spark-defaults.conf); not a secret
            opts += f" -Dspark.ssl.standalone.port={ui_port}"
        env = {"SPARK_HOME": rt["spark_home"], "SPARK_LOCAL_IP": inst.address, "SPARK_CONF_DIR": f"{inst.workdir}/conf",
               "PYSPARK_PYTHON": rt["python"], "SPARK_LOG_DIR": inst.procdir, "SPARK_DAEMON_JAVA_OPTS": opts}
        if rt.get("java_home"):
            env["JAVA_HOME"] = rt["java_home"]
        if inst.volumes:  # shuffle and spill files of the daemons and drivers here (it wins over spark.local.dir)
            env["SPARK_LOCAL_DIRS"] = ",".join(inst.volumes)
        return env

    @staticmethod
    def _secure(cluster: ClusterView) -> bool:
        return not cluster.secrets.get("insecure")

    # --- credentials ------------------------------------------------------------------------------------------

    def make_secrets(self, cluster: ClusterView) -> dict[str, Any]:
        if security.insecure_for_bench():
            return {"insecure": True, **connect_secrets()}
        # The CA's key is kept (encrypted with the row): every configure, scale's included, signs a UI
        # certificate for each instance's address.
        ca = security.make_cluster_ca(cluster.name, self.name)
        return {"auth_secret": security.new_password(), "store_password": security.new_password(),
                "ca": security.as_dict(ca), "client": security.as_dict(security.client_pem(ca, cluster.name)),
                **connect_secrets()}

    def _auth_conf(self, cluster: ClusterView) -> dict[str, str]:
        if not self._secure(cluster):
            return {}
        return dict(zip(SECURITY_KEYS, ("true", cluster.secrets["auth_secret"], "true")))

    def _ui_conf(self, cluster: ClusterView, conf_dir: str) -> dict[str, str]:
        password = cluster.secrets["store_password"]
        keystore, truststore = (f"{conf_dir}/{n}" for n in UI_STORES)
        prefix = "spark.ssl.standalone"
        return {f"{prefix}.enabled": "true", f"{prefix}.needClientAuth": "true", f"{prefix}.protocol": "TLSv1.3",
                f"{prefix}.keyStore": keystore, f"{prefix}.keyStoreType": "PKCS12",
                f"{prefix}.keyStorePassword": password, f"{prefix}.keyPassword": password,
                f"{prefix}.trustStore": truststore, f"{prefix}.trustStoreType": "JKS",
                f"{prefix}.trustStorePassword": password}

    def _instance_files(self, cluster: ClusterView, inst: InstanceView) -> dict[str, bytes]:
        conf = f"{inst.workdir}/conf"
        settings = self._spark_defaults(cluster)
        files: dict[str, bytes] = {}
        if self._secure(cluster):
            settings.update(self._ui_conf(cluster, conf))
            ca = security.pem_of(cluster.secrets["ca"])
            password = cluster.secrets["store_password"]
            ui = security.node_pem(ca, inst.name, [inst.address, inst.name])
            files[f"{conf}/{UI_STORES[0]}"] = security.pkcs12_keystore("ui", ui, ca.cert, password)
            files[f"{conf}/{UI_STORES[1]}"] = security.jks_truststore("cluster-ca", ca.cert, password)
        files[f"{conf}/spark-defaults.conf"] = _properties(settings)
        files.update(self._connect_files(cluster, inst))
        return files

    async def configure(self, cluster: ClusterView, instances: list[InstanceView]) -> None:
        await asyncio.gather(*(i.write(path, data, 0o600) for i in instances
                               for path, data in self._instance_files(cluster, i).items()))

    def _spark_defaults(self, cluster: ClusterView) -> dict[str, Any]:
        out = {c["name"]: c["default_value"] for c in self.configs(cluster.version)}
        out.update(DECOMMISSION_DEFAULTS)
        for section in cluster.configs.values():
            if isinstance(section, dict):
                out.update({k: v for k, v in section.items() if k.startswith("spark.")})
        out.update(self._auth_conf(cluster))
        return out

    def _job_properties(self, workdir: str) -> str:
        return f"{workdir}/spark.properties"

    def job_files(self, cluster: ClusterView, workdir: str) -> dict[str, bytes]:
        # The driver's whole configuration: spark-submit reads no spark-defaults.conf next to --properties-file.
        # The event log directory must exist before the driver starts (Spark does not make it); a file in it
        # makes it, given with the rest of the job's directory to the job's user. So must the directory of the
        # driver's metrics that a job with dynamic allocation writes for the autoscaler (spark_dynalloc).
        return {self._job_properties(workdir): _properties(self._spark_defaults(cluster)),
                f"{workdir}/{HISTORY_DIR}/README": b"This job's Spark event logs; oasis keeps them when it ends.\n",
                f"{workdir}/{METRICS_DIR}/README": b"With dynamic allocation, the driver's metrics (for autoscaling).\n"}

    def event_log_conf(self, cluster: ClusterView, configs: dict[str, Any], workdir: str) -> dict[str, str]:
        """The `--conf`s of a job's event logging: into its own directory, unless the job (else its cluster)
        says `spark.eventLog.enabled=false`."""
        enabled = configs.get("spark.eventLog.enabled", cluster.config("spark.eventLog.enabled", True))
        if str(enabled).strip().lower() == "false":
            return {"spark.eventLog.enabled": "false"}
        return {"spark.eventLog.enabled": "true", "spark.eventLog.dir": f"file:{workdir}/{HISTORY_DIR}",
                "spark.eventLog.rolling.enabled": "false"}

    def configs_problem(self, cluster_configs: dict[str, Any]) -> str | None:
        view = ClusterView("", "", "", cluster_configs, {})
        value = view.config(CONNECT_CONFIG)
        if connect_mode_of(value) is None:
            return f"{CONNECT_CONFIG} {value!r} is not one of on-demand (the default), true or false"
        executors = view.config(CONNECT_MAX_EXECUTORS, 2)
        if not str(executors).strip().isdigit() or int(str(executors).strip()) < 1:
            return f"{CONNECT_MAX_EXECUTORS} {executors!r} is not a whole number of at least 1"
        return None

    def job_problem(self, cluster_configs: dict[str, Any], groups: list[tuple[list[str], int]],
                    job_configs: dict[str, Any]) -> str | None:
        """An executor bigger than what every worker offers is never given one, and the driver waits for it for
        ever (in standalone mode a worker must have the executor's whole memory free)."""
        asked = (job_configs.get("configs") or {}).get(EXECUTOR_MEMORY) or \
            ClusterView("", "", "", cluster_configs, {}).config(EXECUTOR_MEMORY, "1g")
        wanted = size_mb(str(asked))
        if wanted is None:
            return f"{EXECUTOR_MEMORY} {asked!r} is not a size (such as 512m or 2g)"
        offers = [memory_offered_mb(ram) for processes, ram in groups
                  if "worker" in {self.canonical(p) for p in processes}]
        if offers and wanted > max(offers):
            return (f"{EXECUTOR_MEMORY} {asked} is more than any worker of the cluster offers ({max(offers)} MB): "
                    f"no executor of that size would ever start; ask for {max(offers)}m or less")
        return None

    def client_config(self, info: dict[str, Any], secrets: dict[str, Any]) -> dict[str, Any]:
        spark_info = info.get("Spark") or {}
        out: dict[str, Any] = {"plugin": self.name, "master_url": spark_info.get("Master", ""),
                               "web_ui": spark_info.get("Web UI", ""), "spark_conf": {}}
        if secrets.get("auth_secret"):
            out["spark_conf"] = dict(zip(SECURITY_KEYS, ("true", secrets["auth_secret"], "true")))
            # the web UIs ask for a client certificate of the cluster's CA (curl --cacert --cert --key)
            out.update(ca=secrets["ca"]["cert"], cert=secrets["client"]["cert"], key=secrets["client"]["key"])
        return out

    async def start(self, cluster: ClusterView, instances: list[InstanceView]) -> None:
        spark_class = f"{cluster.runtime['spark_home']}/bin/spark-class"
        # Workers only retry registration after many seconds, so the master goes first and must be up.
        for m in (i for i in instances if "master" in i.processes):
            await start_daemon(m, "master", [spark_class, MASTER_CLASS, "--host", m.address,
                                             "--port", str(m.ports["master"]),
                                             "--webui-port", self._http_port(cluster, m.ports["master_ui"])],
                               self._env(cluster, m, m.ports["master_ui"]), "New state: ALIVE", BIND_FAILED)
        url = self.master_url(cluster)

        async def worker(w: InstanceView) -> None:
            argv = [spark_class, WORKER_CLASS, "--host", w.address, "--port", str(w.ports["worker"]),
                    "--webui-port", self._http_port(cluster, w.ports["worker_ui"]), "--cores", str(w.vcpus),
                    "--memory", f"{worker_memory_mb(w)}m", "--work-dir",
                    f"{w.volumes[0] if w.volumes else w.workdir}/work", url]
            await start_daemon(w, "worker", argv, self._env(cluster, w, w.ports["worker_ui"]),
                               "Successfully registered with master", BIND_FAILED)

        await asyncio.gather(*(worker(w) for w in instances if "worker" in w.processes))
        if connect_mode(cluster) == ConnectMode.AT_START:
            for m in (i for i in instances if "master" in i.processes):
                await self._start_connect(cluster, m)

    def _http_port(self, cluster: ClusterView, ui_port: int) -> str:
        """Secured, the UI's port is the HTTPS one, and the plain connector (a redirect only) takes any port."""
        return "0" if self._secure(cluster) else str(ui_port)

    async def decommission(self, cluster: ClusterView, instances: list[InstanceView]) -> None:
        workers = [i for i in instances if "worker" in i.processes and "master" not in i.processes]
        enabled = str(cluster.config("spark.decommission.enabled", "true")).strip().lower() != "false"
        if workers and enabled and cluster.having("master"):
            signal = str(cluster.config("spark.worker.decommission.signal", "PWR"))
            await asyncio.gather(*(self._signal_worker(w, signal) for w in workers))
            await self._wait_drained(cluster, workers)
        await stop_daemons(instances)

    @staticmethod
    async def _signal_worker(w: InstanceView, signal: str) -> None:
        # The daemon's pid file names the JVM itself (spark-class execs it), which decommissions on that signal.
        try:
            await w.remote.run(["sh", "-c", 'pid=$(cat "$1" 2>/dev/null) && kill -s "$2" "$pid"', "sh",
                                f"{w.procdir}/worker.pid", signal], timeout=30, check=False)
        except RemoteError:
            pass  # its host does not answer: the stop that follows says so

    async def _wait_drained(self, cluster: ClusterView, workers: list[InstanceView]) -> None:
        """Until the master shows none of `workers` with cores in use (their executors have moved their blocks
        and exited), or DECOMMISSION_TIMEOUT."""
        m = self._master(cluster)
        keys = {(w.address, int(w.ports["worker"])) for w in workers}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DECOMMISSION_TIMEOUT
        while loop.time() < deadline:
            try:
                state = await get_json(m, cluster.runtime["python"], self._master_json(cluster), self._creds(cluster))
            except ProbeFailed:
                return
            used = [w for w in state.get("workers") or [] if isinstance(w, dict)
                    and (str(w.get("host")), int(w.get("port") or 0)) in keys and int(w.get("coresused") or 0) > 0]
            if not used:
                return
            await asyncio.sleep(DECOMMISSION_POLL)

    def _master_json(self, cluster: ClusterView) -> str:
        m = self._master(cluster)
        return f"{'https' if self._secure(cluster) else 'http'}://{m.address}:{m.ports['master_ui']}/json/"

    def _creds(self, cluster: ClusterView) -> dict[str, str] | None:
        return {"ca": cluster.secrets["ca"]["cert"], **cluster.secrets["client"]} if self._secure(cluster) else None

    async def load(self, cluster: ClusterView) -> Load | None:
        # The master's own view (`/json/`): its workers' cores and cores in use, and its applications; one that
        # is WAITING has no executor yet and asks for at least one executor's cores. With it, in the same remote
        # command, what the drivers with dynamic allocation ask for beyond what they have (spark_dynalloc).
        m = self._master(cluster)
        try:
            state, asks = await spark_dynalloc.read(m, cluster.runtime["python"], self._master_json(cluster),
                                                    self._creds(cluster))
        except ProbeFailed:
            return None
        names = {(w.address, int(w.ports["worker"])): w.name for w in cluster.having("worker")}
        executor_cores = int(cluster.config("spark.executor.cores", 1) or 1)
        return spark_load(state, names, executor_cores, asks)

    async def stop(self, cluster: ClusterView, instances: list[InstanceView]) -> None:
        # Workers before the master, so that none of them spends its last seconds reconnecting.
        await stop_daemons([i for i in instances if "master" not in i.processes])
        await stop_daemons([i for i in instances if "master" in i.processes])

    async def health(self, cluster: ClusterView) -> FrameworkHealth:
        # The master's own view, from its web UI's JSON (`/json/`), which asks for a certificate of the cluster's
        # CA: its state (ALIVE) and its workers, each known by the host and RPC port it registered with.
        m = self._master(cluster)
        expected = {(w.address, int(w.ports["worker"])): w.name for w in cluster.having("worker")}
        secure = self._secure(cluster)
        url = f"{'https' if secure else 'http'}://{m.address}:{m.ports['master_ui']}/json/"
        creds = {"ca": cluster.secrets["ca"]["cert"], **cluster.secrets["client"]} if secure else None
        try:
            state = await get_json(m, cluster.runtime["python"], url, creds)
        except ProbeFailed as e:
            return FrameworkHealth("master", False, f"the master on {m.name} does not answer: {e}",
                                   list(expected.values()))
        if state.get("status") != "ALIVE":
            return FrameworkHealth("master", False, f"the master on {m.name} is {state.get('status')}",
                                   list(expected.values()))
        alive = {(str(w.get("host")), int(w.get("port") or 0)) for w in state.get("workers") or []
                 if isinstance(w, dict) and w.get("state") == "ALIVE"}
        return FrameworkHealth("master", True, f"the master on {m.name} is ALIVE", list(expected.values()),
                               [name for key, name in expected.items() if key in alive])

    async def activity(self, cluster: ClusterView) -> str | None:
        # The master's running applications (a spark-submit, a shell or a notebook attached to it).
        m = self._master(cluster)
        secure = self._secure(cluster)
        url = f"{'https' if secure else 'http'}://{m.address}:{m.ports['master_ui']}/json/"
        creds = {"ca": cluster.secrets["ca"]["cert"], **cluster.secrets["client"]} if secure else None
        try:
            state = await get_json(m, cluster.runtime["python"], url, creds)
        except ProbeFailed:
            return None
        apps = [a for a in state.get("activeapps") or [] if isinstance(a, dict) and not idle_connect_server(a)]
        return f"{len(apps)} Spark application(s) running" if apps else None

    def info(self, cluster: ClusterView) -> dict[str, dict[str, str]]:
        m = self._master(cluster)
        return {"Spark": {**self._info(cluster, m)["Spark"], **self._connect_info(cluster, m)}}

    def _info(self, cluster: ClusterView, m: InstanceView) -> dict[str, dict[str, str]]:
        if not self._secure(cluster):
            return {"Spark": {"Web UI": f"http://{m.address}:{m.ports['master_ui']}", "Master": self.master_url(cluster),
                              "Security": "none (security bench)"}}
        return {"Spark": {"Web UI": f"https://{m.address}:{m.ports['master_ui']}", "Master": self.master_url(cluster),
                          "Security": "spark.authenticate with the cluster's own secret and RPC encryption; web UIs "
                                      "over HTTPS for client certificates of the cluster's CA only; credentials "
                                      "from GET /v2/clusters/{id}/client-config or `oasis cluster connect`"}}

    def launch(self, cluster: ClusterView, job_type: str, main: str | None, libs: list[str],
               configs: dict[str, Any], args: list[str], workdir: str, driver: InstanceView | None = None) -> Launch:
        # The driver (client mode) binds its instance's address, which executors connect back to.
        m = driver or self._master(cluster)
        env = self._env(cluster, m)
        # The properties file carries the cluster's secret; only its path is on the command line.
        env["OASIS_SPARK_PROPERTIES"] = self._job_properties(workdir)
        if job_type == "Shell":
            return Launch(["/bin/sh", main or "", *args], env)
        submit = [f"{cluster.runtime['spark_home']}/bin/spark-submit", "--master", self.master_url(cluster),
                  "--properties-file", self._job_properties(workdir),
                  "--deploy-mode", "client", "--conf", f"spark.driver.host={m.address}",
                  "--conf", "spark.ui.enabled=false"]
        for k, v in configs.items():
            if k.startswith("spark.") and k not in EVENT_LOG_KEYS and k != "spark.eventLog.enabled":
                submit += ["--conf", f"{k}={v}"]
        for k, v in self.event_log_conf(cluster, configs, workdir).items():
            submit += ["--conf", f"{k}={v}"]
        for k, v in spark_dynalloc.driver_conf(cluster, configs, workdir).items():
            submit += ["--conf", f"{k}={v}"]
        if job_type == "Java" or (main or "").endswith(".jar"):
            main_class = configs.get("edp.java.main_class")
            if not main_class:
                raise PluginError("A jar job needs configs['edp.java.main_class']")
            submit += ["--class", str(main_class)]
            if not main and libs:  # a Java template's jar is among its libs: the first is the application (Sahara)
                main, libs = libs[0], libs[1:]
            if libs:
                submit += ["--jars", ",".join(libs)]
        elif libs:
            submit += ["--py-files", ",".join(libs)]
        return Launch([*submit, main or "", *args], env)

    # --- Spark Connect server (issue 16 item 3) ------------------------------------------------------------------
    # A Spark Connect server on the master instance: a driver of the cluster (spark-submit of Spark's own
    # SparkConnectServer, in client mode) that Spark Connect clients reach through oasis's gateway
    # (oasis/gateway/), never directly. It is one of the master instance's daemons, so the cluster's stop,
    # restart and delete stop and start it with the master. Its gRPC port is one of the instance's own
    # (CONNECT_PORT), bound to the instance's address; Spark's pre-shared token check
    # (`spark.connect.authenticate.token`, a token of the cluster's own in its secrets) refuses every call that
    # does not carry it, and only the gateway has it. Its properties file (mode 0600) carries that token and the
    # cluster's `spark.authenticate` secret, as a job's does: nothing on a command line or in an environment.
    #
    # Not starving jobs: the server holds no cores while no one queries it. Dynamic allocation (with shuffle
    # tracking, so no external shuffle service is needed) gives it at most `oasis.spark.connect.max_executors`
    # executors of `spark.executor.cores` while queries run and releases them after
    # CONNECT_IDLE_EXECUTOR seconds without work; an idle server is not activity (idle-cluster checks).

    def _connect_on(self, cluster: ClusterView, m: InstanceView) -> bool:
        return connect_enabled(cluster, m.ports)

    def _connect_properties(self, m: InstanceView) -> str:
        return f"{m.workdir}/conf/connect.properties"

    def _connect_files(self, cluster: ClusterView, inst: InstanceView) -> dict[str, bytes]:
        if "master" not in inst.processes or not self._connect_on(cluster, inst):
            return {}
        settings = self._spark_defaults(cluster)
        max_executors = int(str(cluster.config(CONNECT_MAX_EXECUTORS, 2)).strip() or 1)
        settings.update({
            "spark.app.name": CONNECT_APP, "spark.ui.enabled": "false", "spark.eventLog.enabled": "false",
            "spark.driver.host": inst.address, "spark.port.maxRetries": "0",
            "spark.connect.grpc.binding.address": inst.address,
            "spark.connect.grpc.binding.port": str(inst.ports[CONNECT_PORT]),
            "spark.connect.grpc.port.maxRetries": "0",
            "spark.connect.authenticate.token": cluster.secrets[CONNECT_TOKEN],
            # Shuffle files of a removed executor: migrated by decommission where the cluster has it on (the
            # default; Spark warns when both are on), else kept alive by shuffle tracking.
            "spark.dynamicAllocation.enabled": "true",
            "spark.dynamicAllocation.shuffleTracking.enabled": str(not _migrates_shuffle(settings)).lower(),
            # none at the start: an executor held by an idle server would take a core from jobs and keep its worker
            # busy for the autoscaler; the first query asks for one
            "spark.dynamicAllocation.minExecutors": "0", "spark.dynamicAllocation.initialExecutors": "0",
            "spark.dynamicAllocation.maxExecutors": str(max(1, max_executors)),
            "spark.dynamicAllocation.executorIdleTimeout": f"{CONNECT_IDLE_EXECUTOR}s"})
        # its driver's asks are read by the autoscaler like a job's (spark_dynalloc), from a directory its glob sees
        metrics = f"{inst.workdir}/jobs/connect-server/{METRICS_DIR}"
        settings.update(spark_dynalloc.sink_conf(metrics))
        return {self._connect_properties(inst): _properties(settings),
                f"{metrics}/README": b"The Spark Connect server's driver metrics (for autoscaling).\n"}

    async def start_connect(self, cluster: ClusterView) -> InstanceView:
        """Start the server of a cluster whose Connect is on demand (the gateway asked: someone opens a session),
        and return the instance it runs on. Idempotent: a server already running is left alone."""
        m = self._master(cluster)
        if not self._connect_on(cluster, m):
            raise PluginError(f"cluster {cluster.name} runs no Spark Connect server ({CONNECT_CONFIG} is false, or "
                              "the cluster was made before oasis offered one)")
        # a cluster made before Connect was on by default has no properties file yet: (re)written, as configure does
        await asyncio.gather(*(m.write(path, data, 0o600) for path, data in self._connect_files(cluster, m).items()))
        await self._start_connect(cluster, m)
        return m

    async def _start_connect(self, cluster: ClusterView, m: InstanceView) -> None:
        submit = [f"{cluster.runtime['spark_home']}/bin/spark-submit", "--master", self.master_url(cluster),
                  "--properties-file", self._connect_properties(m), "--deploy-mode", "client",
                  "--class", CONNECT_CLASS, "--name", CONNECT_APP]
        env = self._env(cluster, m)
        env.pop("SPARK_DAEMON_JAVA_OPTS", None)  # the driver's JIT stays whole: it runs the queries' planning
        # a driver's start (its SparkContext, an executor, the gRPC service) is far more than a daemon's: on a
        # loaded host it took over READY_TIMEOUT, so it has a bound of its own
        await m.agent.start(m.procdir, "connect", submit, env, ready=CONNECT_READY, timeout=CONNECT_READY_TIMEOUT,
                            fail=BIND_FAILED)

    def _connect_info(self, cluster: ClusterView, m: InstanceView) -> dict[str, str]:
        if not self._connect_on(cluster, m):
            return {}
        when = ("started with the cluster" if connect_mode(cluster) == ConnectMode.AT_START
                else "started by the first session")
        return {"Spark Connect": f"{when}, through the oasis gateway: `oasis cluster connect` prints its "
                                 "connection string"}

    @staticmethod
    def connect_endpoint(instances: list[InstanceView]) -> tuple[InstanceView, int] | None:
        """The master instance and the port of its Spark Connect server (what the gateway forwards to)."""
        for i in instances:
            if "master" in i.processes and CONNECT_PORT in i.ports:
                return i, int(i.ports[CONNECT_PORT])
        return None


def size_mb(spec: str) -> int | None:
    """A Spark memory size in MiB, as Spark reads one (`512m`, `2g`, `2048k`; a bare number is MiB)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kmgtp]?)b?\s*", spec.lower())
    if m is None:
        return None
    kib = int(m.group(1)) * 1024 ** "kmgtp".index(m.group(2) or "m")
    return kib // 1024


def _properties(settings: dict[str, Any]) -> bytes:
    return ("".join(f"{k} {v}\n" for k, v in settings.items())).encode()


def _config(title: str, name: str, default: Any, description: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "title": title, "applicable_target": "general", "scope": "cluster", "config_type": kind,
            "default_value": default, "is_optional": True, "priority": 2, "description": description,
            "config_values": None}


class ConnectMode(StrEnum):
    """When a cluster's Spark Connect server runs (the config CONNECT_CONFIG)."""
    ON_DEMAND = "on-demand"  # the default: started when the gateway gets the cluster's first session
    AT_START = "true"        # started with the cluster, before it is Active
    OFF = "false"


CONNECT_VALUES = {"on-demand": ConnectMode.ON_DEMAND, "on_demand": ConnectMode.ON_DEMAND,
                  "true": ConnectMode.AT_START, "yes": ConnectMode.AT_START, "on": ConnectMode.AT_START,
                  "1": ConnectMode.AT_START, "false": ConnectMode.OFF, "no": ConnectMode.OFF, "off": ConnectMode.OFF,
                  "0": ConnectMode.OFF}


def connect_mode_of(value: Any) -> ConnectMode | None:
    """The mode a config value asks for (None: not a mode); unset is on demand."""
    if value is None:
        return ConnectMode.ON_DEMAND
    return CONNECT_VALUES.get(str(value).strip().lower())


def connect_mode(cluster: ClusterView) -> ConnectMode:
    return connect_mode_of(cluster.config(CONNECT_CONFIG)) or ConnectMode.ON_DEMAND


def connect_enabled(cluster: ClusterView, master_ports: dict[str, int]) -> bool:
    """Whether a cluster can serve Spark Connect: unless it says `oasis.spark.connect: false`. By default its
    server starts with the first session (a server is one more JVM on the master and its start as long as the
    master's own, so a cluster without Connect users pays nothing); a cluster made before the feature (no port,
    no token) has none."""
    return (connect_mode(cluster) != ConnectMode.OFF and CONNECT_PORT in master_ports
            and bool(cluster.secrets.get(CONNECT_TOKEN)))


def _migrates_shuffle(settings: dict[str, Any]) -> bool:
    return all(str(settings.get(k, "false")).strip().lower() == "true"
               for k in ("spark.decommission.enabled", "spark.storage.decommission.enabled",
                         "spark.storage.decommission.shuffleBlocks.enabled"))


def connect_secrets() -> dict[str, str]:
    return {CONNECT_TOKEN: security.new_password()}


def idle_connect_server(app: dict[str, Any]) -> bool:
    """The master's record of a cluster's Connect server holding no cores: no one is querying it."""
    return app.get("name") == CONNECT_APP and int(app.get("cores") or 0) == 0


def spark_load(state: dict[str, Any], names: dict[tuple[str, int], str], executor_cores: int,
               asks: dict[str, Ask] | None = None) -> Load:
    """The load from the master's `/json/` state; `names`: instance names by the (host, port) of their worker;
    `asks`: what drivers with dynamic allocation ask for, by application id. An application with an ask counts
    its missing executors (none: it asks for nothing more, WAITING or not); one without, one executor if it is
    WAITING."""
    alive = [w for w in state.get("workers") or [] if isinstance(w, dict) and w.get("state") == "ALIVE"]
    key = lambda w: (str(w.get("host")), int(w.get("port") or 0))  # noqa: E731
    busy = sorted(names.get(key(w), str(w.get("id"))) for w in alive if int(w.get("coresused") or 0) > 0)
    apps = [a for a in state.get("activeapps") or [] if isinstance(a, dict)]
    # a Connect server without executors is WAITING whenever it is idle: not an application waiting for work (what
    # it asks for while a query runs is in `asks`, as a job's is)
    waiting = [a for a in apps if a.get("state") == "WAITING" and not idle_connect_server(a)]
    asks = asks or {}
    asked = sum(asks[a["id"]].missing for a in apps if a.get("id") in asks)
    unasked = sum(1 for a in waiting if a.get("id") not in asks)
    cores = max(1, executor_cores)
    return Load(pending=(asked + unasked) * cores,
                busy_cores=sum(int(w.get("coresused") or 0) for w in alive),
                total_cores=sum(int(w.get("cores") or 0) for w in alive), busy=busy,
                workers=sorted(names.get(key(w), str(w.get("id"))) for w in alive),
                unit="requested cores", waiting_apps=len(waiting), asked_executors=asked)
