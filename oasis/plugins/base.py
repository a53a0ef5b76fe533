"""The plugin SPI, after Sahara's: a plugin says what processes it has, validates a topology, configures,
starts, scales, decommissions and stops, and says how a job is launched on its master.

Two halves. The pure half (versions, processes, configs, `validate`) is what the API calls synchronously.
The engine half receives a `ClusterView` whose instances carry a `Remote`; a plugin never touches the database
or opens a connection itself.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from oasis.remote.agent_client import Agent, owner_ids
# RemoteError and unreachable_in: what a plugin's engine half may catch of its remotes (oasis/plugins/probe.py)
from oasis.remote.base import Remote, RemoteError, unreachable_in  # noqa: F401


class PluginError(Exception):
    """A topology or configuration the plugin refuses; the message is shown to the user as is."""


@dataclass
class NodeGroupShape:
    name: str
    processes: list[str]
    count: int


@dataclass
class InstanceView:
    id: str
    name: str
    node_group: str
    processes: list[str]
    address: str  # bind address on the cluster's management network
    workdir: str
    ports: dict[str, int]
    vcpus: int
    ram_mb: int
    remote: Remote
    agent: Agent
    # The Unix user of the cluster's project that the instance's processes run as ({"name", "uid", "gid"});
    # None where the host cannot switch users (the agent's own user then runs them).
    owner: dict[str, Any] | None = None
    # Mount points of the instance's block storage volumes (its node group's `volumes_per_node`), for the
    # frameworks' local and spill directories; empty: none, the instance's directory serves.
    volumes: list[str] = field(default_factory=list)

    async def write(self, path: str, data: bytes, mode: int = 0o600) -> None:
        """Put a file into the instance's directory, readable by the instance's processes (and nobody else)."""
        await self.remote.put(path, data, mode, owner_ids(self.owner))

    @property
    def procdir(self) -> str:
        """Where the agent keeps this instance's daemons: pid files and logs."""
        return f"{self.workdir}/proc"


@dataclass
class ClusterView:
    id: str
    name: str
    version: str
    configs: dict[str, Any]
    runtime: dict[str, Any]  # from the image: python, spark_home, java_home ...
    instances: list[InstanceView] = field(default_factory=list)
    # The cluster's own credentials (`Plugin.make_secrets`, kept by the engine in the cluster row's `secrets`):
    # filled in where a plugin needs them (configure, a job's files), empty elsewhere. Never shown or logged.
    secrets: dict[str, Any] = field(default_factory=dict, repr=False)

    def having(self, process: str) -> list[InstanceView]:
        return [i for i in self.instances if process in i.processes]

    def config(self, name: str, default: Any = None) -> Any:
        """A cluster-level config value, whatever its target section."""
        for section in self.configs.values():
            if isinstance(section, dict) and name in section:
                return section[name]
        return default


@dataclass
class Launch:
    """How a job runs on the instance of its driver (the master, unless placed elsewhere): argv and environment
    for the launcher."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class FrameworkHealth:
    """What a plugin found of its framework on a running cluster (`Plugin.health`): whether the master process
    (the Dask scheduler, the Spark master) answered, and which of the expected workers it has registered. The
    engine (oasis/engine/verification.py) turns it, with the hosts' health, into GREEN / YELLOW / RED."""

    master: str  # what the plugin calls its master process ("scheduler", "master")
    master_up: bool
    detail: str  # what answered, or why nothing did
    expected: list[str] = field(default_factory=list)  # names of the instances whose worker should be registered
    registered: list[str] = field(default_factory=list)  # those of them that are


@dataclass
class Load:
    """What a running framework says of its work (`Plugin.load`), the signal the engine's autoscaler decides
    from (oasis/engine/autoscale.py). Dask: tasks ready to run that no core has yet (queued, no-worker, or
    assigned to a worker beyond its threads) and the cores running tasks; Spark: the cores that applications
    asked for and were not granted (a WAITING application's first executor at least; for an application with
    dynamic allocation, the executors its driver asks for beyond those it has) and the cores in use."""

    pending: int  # work waiting for a core: tasks (Dask) or cores (Spark)
    busy_cores: int
    total_cores: int
    busy: list[str] = field(default_factory=list)  # names of the worker instances that hold running work
    workers: list[str] = field(default_factory=list)  # names of the worker instances the framework has registered
    unit: str = "pending tasks"  # what `pending` counts, as the event log says it
    waiting_apps: int = 0  # Spark: applications WAITING for resources
    asked_executors: int = 0  # Spark: executors drivers with dynamic allocation asked for and do not have

    def describe(self) -> str:
        apps = f", {self.waiting_apps} waiting applications" if self.waiting_apps else ""
        asked = f", {self.asked_executors} executors asked by dynamic allocation" if self.asked_executors else ""
        return f"{self.pending} {self.unit}{apps}{asked}, {self.busy_cores} busy cores of {self.total_cores}"


class Plugin(ABC):
    name: str
    title: str
    description: str
    master_process: str  # where jobs are launched by default, and the one process a cluster has exactly once
    worker_process: str
    # Whether a job's driver may run on a worker instance (`edp.oasis.driver=worker`, oasis/edp/driver.py): the
    # framework's client runtime is on every instance, and the driver reaches the master from anywhere.
    drivers_on_workers: bool = False
    aliases: dict[str, str] = {}
    job_types: list[str] = []

    # --- pure half: the API calls these -----------------------------------------------------------------------

    @abstractmethod
    def versions(self) -> list[str]: ...

    @abstractmethod
    def node_processes(self, version: str) -> dict[str, list[str]]: ...

    def configs(self, version: str) -> list[dict[str, Any]]:
        return []

    def required_image_tags(self, version: str) -> list[str]:
        return [self.name, version]

    def canonical(self, process: str) -> str:
        return self.aliases.get(process, process)

    def all_processes(self, version: str) -> set[str]:
        return {p for procs in self.node_processes(version).values() for p in procs} | set(self.aliases)

    def validate(self, version: str, node_groups: list[NodeGroupShape]) -> None:
        """Exactly one master, at least one worker, and no process the plugin does not know."""
        if version not in self.versions():
            raise PluginError(f"Plugin {self.name} doesn't support version {version}")
        known = self.all_processes(version)
        unknown = sorted({p for ng in node_groups for p in ng.processes if p not in known})
        if unknown:
            raise PluginError(f"Plugin doesn't support the following node processes: {', '.join(unknown)}")
        for ng in node_groups:
            procs = [self.canonical(p) for p in ng.processes]
            if len(procs) != len(set(procs)):
                raise PluginError(f"Node group '{ng.name}' names a process twice")
        masters = sum(ng.count for ng in node_groups if self.master_process in map(self.canonical, ng.processes))
        workers = sum(ng.count for ng in node_groups if self.worker_process in map(self.canonical, ng.processes))
        if masters != 1:
            raise PluginError(f"{self.title} cluster needs exactly one '{self.master_process}', got {masters}")
        if workers < 1:
            raise PluginError(f"{self.title} cluster needs at least one '{self.worker_process}'")

    def ports(self, process: str) -> list[str]:
        """Names of the ports one instance needs for a process; the engine allocates them per host."""
        return []

    def config_hints(self, job_type: str) -> dict[str, Any]:
        return {"configs": [], "args": [], "params": {}}

    def configs_problem(self, cluster_configs: dict[str, Any]) -> str | None:
        """Why a cluster's configs (its own over its template's, by section) are not valid for the plugin, so that
        the create is refused at once; None when they are."""
        return None

    def job_problem(self, cluster_configs: dict[str, Any], groups: list[tuple[list[str], int]],
                    job_configs: dict[str, Any]) -> str | None:
        """Why a job with these configs could never run on a cluster of these node groups ((processes, RAM MB of
        the flavor) each), so that it is refused at once rather than left waiting for resources that never come;
        None when it could run."""
        return None

    def client_config(self, info: dict[str, Any], secrets: dict[str, Any]) -> dict[str, Any]:
        """What a member of the owning project needs to reach the cluster from outside it (addresses from the
        cluster's `info`, credentials from its `secrets`): the body of `GET /v2/clusters/{id}/client-config`."""
        return {"plugin": self.name}

    # --- engine half ------------------------------------------------------------------------------------------

    def make_secrets(self, cluster: ClusterView) -> dict[str, Any]:
        """The cluster's own credentials (a CA and certificates, shared secrets), made once per cluster by the
        engine's configure step, which stores them and hands them back in `ClusterView.secrets` ever after
        (scale reuses them)."""
        return {}

    async def configure(self, cluster: ClusterView, instances: list[InstanceView]) -> None:
        """Write configuration onto instances (`cluster.secrets` is set); must be idempotent."""

    @abstractmethod
    async def start(self, cluster: ClusterView, instances: list[InstanceView]) -> None:
        """Start the processes of these instances (all of them on create, the new ones on scale) and return
        once each is ready. Idempotent: a process already running is left alone."""

    async def start_connect(self, cluster: ClusterView) -> InstanceView:
        """Start the cluster's Spark Connect server, which starts on demand (the gateway asks for it), and return
        the instance it runs on. Idempotent. A plugin without one refuses."""
        raise PluginError(f"{self.title} clusters have no Spark Connect server")

    @abstractmethod
    async def decommission(self, cluster: ClusterView, instances: list[InstanceView]) -> None:
        """Take workers out of service gracefully and stop them: called by a scale-down before the instances
        are removed (`cluster.secrets` is set), so that the framework moves their work and data first."""

    @abstractmethod
    async def stop(self, cluster: ClusterView, instances: list[InstanceView]) -> None:
        """Stop every process of these instances. Idempotent."""

    async def health(self, cluster: ClusterView) -> FrameworkHealth:
        """Ask the running framework itself (with the cluster's credentials, `cluster.secrets` is set) whether its
        master answers and which workers it has; never raises for a framework or host that does not answer (that
        is what it reports). The default knows nothing of a framework: its master is taken as up."""
        return FrameworkHealth(self.master_process, True, "the plugin has no health check",
                               [i.name for i in cluster.having(self.worker_process)],
                               [i.name for i in cluster.having(self.worker_process)])

    async def activity(self, cluster: ClusterView) -> str | None:
        """What uses the running framework now besides oasis's own jobs (clients connected, applications
        running), for the idle limit (oasis/engine/lifecycle.py): a phrase, or None if nothing does or the plugin
        cannot tell. Never raises for a framework that does not answer."""
        return None

    async def load(self, cluster: ClusterView) -> Load | None:
        """What the running framework has to do now (with the cluster's credentials, `cluster.secrets` is set),
        for the autoscaler; None where it cannot tell (no answer: the autoscaler then changes nothing). The
        default knows nothing of a framework."""
        return None

    @abstractmethod
    def info(self, cluster: ClusterView) -> dict[str, dict[str, str]]:
        """Links shown in the cluster's `info` (web UIs, service addresses)."""

    def driver_instances(self, cluster: ClusterView, placement: str) -> list[InstanceView]:
        """The instances a job's driver may run on for its placement: `master` the master instance, `worker` every
        worker instance off the master (the plugin must allow it), or the worker on the master where it is the
        cluster's only one."""
        if placement == "master":
            return cluster.having(self.master_process)
        if not self.drivers_on_workers:
            raise PluginError(f"{self.title} runs a job's driver on the master instance only")
        workers = cluster.having(self.worker_process)
        return [i for i in workers if self.master_process not in i.processes] or workers

    def job_files(self, cluster: ClusterView, workdir: str) -> dict[str, bytes]:
        """Files (path: content) that give a job in `workdir` its cluster's credentials; the engine writes them
        mode 0600 with the job's other files (`cluster.secrets` is set). `launch` points the job at them."""
        return {}

    @abstractmethod
    def launch(self, cluster: ClusterView, job_type: str, main: str | None, libs: list[str],
               configs: dict[str, Any], args: list[str], workdir: str, driver: InstanceView | None = None) -> Launch:
        """The command that runs a job of this type on `driver` (one of `driver_instances`; None: the master)."""
