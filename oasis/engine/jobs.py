"""Job operations: run (prepare, launch, watch), cancel, delete, suspend and resume, declared at the bottom as
steps of the one operation machine (oasis/engine/machine.py).

The launcher (oasis-agent `run`) keeps the job alive on its instance (the master, or a worker: where its driver
runs, oasis/edp/driver.py) whatever happens to the controller; the engine watches it with `wait`, which returns
the moment the job's result is written, so the API shows a job's end within a fraction of a second instead of
Sahara's 45-second poll, and soon after the job wrote to stdout or stderr, so its logs reach the store piece by
piece (oasis/edp/joblogs.py) a fraction of a second behind.

A job that fails may be run again (its retry policy: oasis/edp/retries.py; the next attempt's start:
oasis/engine/attempts.py), each attempt with its own directory on the instance and its own logs; a job sent to
a cluster still coming up waits in `prepare` until the cluster is Active."""
from __future__ import annotations

import asyncio
import logging
import posixpath
from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import select

from oasis import metrics
from oasis.db.health import host_health
from oasis.db.models import Cluster, Host, Instance, Job, JobBinary, JobTemplate, Site, utcnow
from oasis.db.session import Database
from oasis.db.states import ClusterOp, ClusterStatus, JobOp
from oasis.edp import access, history, joblogs, retries
from oasis.edp import statuses as st
from oasis.edp.binaries import BinaryError, fetch
from oasis.edp.datasources import resolve_job
from oasis.edp.driver import MASTER, Candidate, DriverError, Previous, driver_order, placement_of
from oasis.edp.joblogs import LogWriter
from oasis.edp.retries import RetryPolicy
from oasis.edp.schedule import CLUSTER_COMING_UP
from oasis.edp.shares import check_file_sources, shares_for_cluster
from oasis.engine import attempts
from oasis.engine.machine import Machine, Operation, OperationError, Step, Wait, Work
from oasis.engine.views import build_view, cluster_runtime
from oasis.identity import trusts
from oasis.identity.base import Identity, IdentityError
from oasis.identity.proxy import ProxyUsers
from oasis.plugins import get_plugin
from oasis.plugins.base import ClusterView, InstanceView, Plugin, PluginError
from oasis.remote.base import RemoteError, unreachable_in
from oasis.remote.hosts import Remotes
from oasis.storage import StoreError, endpoints_of
from oasis.storage.base import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

WAIT_SLICE = 20.0  # seconds one `wait` call blocks at most; it answers sooner when the job's logs grew
LOG_PIECE_BYTES = 1 << 20  # of each stream per `wait`: a chatty job's backlog comes over a few calls
STORE_RETRY_SECONDS = 1.0  # a store that refused a log piece is asked again this much later
# Failures that are the job's, not the engine's: they end the operation with a reason for the user.
JOB_FAILURES = (RemoteError, PluginError, BinaryError, ObjectNotFound, access.AccessError, StoreError,
                asyncio.TimeoutError)
# What a job waiting for its host does meanwhile, by step.
MEANWHILE = {"prepare": "the job starts once it answers", "launch": "the job starts once it answers",
             "watch": "the job keeps running there and is recorded once it answers"}
ACCESS_SECONDS = 7 * 24 * 3600  # scoped access lasts until the job ends, at most this long
ACCESS_RETRY_SECONDS = 5.0  # a failed renewal of a job's S3 access is tried again this soon (or at TTL/3)
CLUSTER_POLL_SECONDS = 1.0  # how often a job sent to a cluster still coming up looks at it again



class JobCannotRun(OperationError):
    """The job cannot run at all (its cluster ended in Error or is gone, its template or trust is gone): no
    retry would change that, so its retry policy does not apply."""


class HostLost(OperationError):
    """The job's host stayed unreachable past the grace while the job ran: this attempt is over (the job may go
    on there unseen), and a retry policy runs the job again."""


def _without_logs(result: dict[str, Any]) -> dict[str, Any]:
    """The job's end as kept on its row: the log bytes live in the store, never in the database."""
    return {k: v for k, v in result.items() if k != "logs"}


async def kill_on_instance(db: Database, remotes: Remotes, runtime: dict[str, Any]) -> None:
    """Stop a launched job's whole process tree, wherever it runs."""
    agent = _agent_for(db, remotes, runtime)
    if agent is not None:
        await agent.cancel_job(runtime["dir"])


def _agent_for(db: Database, remotes: Remotes, runtime: dict[str, Any]):
    """The agent of the instance a job was launched on, reached the way its cluster is, acting as the instance's
    Unix user (build_view gives each instance's agent its recorded owner)."""
    with db.session() as s:
        inst = s.get(Instance, runtime.get("instance_id") or "")
        cluster = s.get(Cluster, inst.cluster_id) if inst else None
        if cluster is None:
            return None
        view = build_view(s, remotes, cluster, ("active", "new", "decommission"))
    return next((i.agent for i in view.instances if i.id == inst.id), None)


def _trusted_swift(identity: Identity | None, trust_id: str | None):  # noqa: ANN202
    """How a job reaches a swift:// source stored without credentials: a trust-scoped token of its own trust or
    its cluster's, and the project's Swift from the token's catalog (None: no trust to act on)."""
    if identity is None or not trust_id:
        return None

    def token() -> tuple[str, str]:
        try:
            found = identity.trust_object_store(trust_id)
        except IdentityError as e:
            raise StoreError(f"reaching the project's Swift on its trust failed: {e}") from None
        if found is None:
            raise StoreError("a swift:// location without credentials needs the Keystone identity backend")
        return found
    return token


def _proxy_swift(proxy_users: ProxyUsers | None, job: Job) -> access.ProxyAccess | None:
    """How a job with a proxy user reaches a swift:// source stored without credentials: as that user."""
    record = dict(job.proxy or {})
    if proxy_users is None or not record.get("user_id"):
        return None

    def token() -> tuple[str, str]:
        try:
            return proxy_users.object_store(record)
        except IdentityError as e:
            raise StoreError(f"reaching the project's Swift as the job's proxy user failed: {e}") from None
    return access.ProxyAccess(proxy_users.auth_url, record["user_id"], record["password"], record["trust_id"],
                              token)


def _driver_choices(s, job: Job, cluster: Cluster, view: ClusterView, plugin: Plugin,  # noqa: ANN001
                    before: dict[str, Any]) -> list[tuple[InstanceView, str]]:
    """The instances this attempt's driver may run on, in the order to try them (oasis/edp/driver.py), each with
    its host's name."""
    configs = (job.job_configs or {}).get("configs")
    try:
        placement = placement_of(configs)
    except DriverError:  # validated by the API; a row from before runs as before
        placement = MASTER
    try:
        elsewhere = retries.policy_of(configs).elsewhere
    except retries.RetryError:
        elsewhere = RetryPolicy.elsewhere
    eligible = {i.id: i for i in plugin.driver_instances(view, placement)}
    host_of = {i.id: i.host_id for i in s.scalars(select(Instance).where(Instance.cluster_id == cluster.id))}
    hosts = {h: s.get(Host, h) for h in set(host_of.values())}
    master_hosts = {host_of.get(m.id) for m in view.having(plugin.master_process)}
    # oasis's own jobs on each instance: those of the cluster launched (or about to be) and not over
    busy = Counter((r or {}).get("instance_id") for r in s.scalars(select(Job.runtime).where(
        Job.cluster_id == cluster.id, Job.id != job.id, Job.status.not_in(st.TERMINAL))))
    candidates = [Candidate(i.id, i.name, hosts[host_of[i.id]].name, busy[i.id], _away(hosts[host_of[i.id]]),
                            host_of[i.id] in master_hosts) for i in eligible.values() if i.id in host_of]
    last = retries.previous_attempt(before)
    previous = Previous(last.get("instance_id"), last.get("host"), bool(last.get("host_lost"))) if last else None
    return [(eligible[c.instance_id], c.host) for c in driver_order(candidates, previous, elsewhere)]


def _away(host: Host) -> bool:
    """The host's last health check found it unreachable, or an operator took it out of service."""
    return host.status != "up" or host_health(host)["reachable"] is False


async def _first_answering(choices: list[tuple[InstanceView, str]], name: str) -> tuple[InstanceView, str, str]:
    """The first of the driver's choices whose host answers, with the job's directory `name` made there. One whose
    host cannot be reached is passed over for the next; if none answers, the first one's failure stands (the
    machine waits within the grace and runs `prepare` again, which chooses again)."""
    first: RemoteError | None = None
    for inst, host in choices:
        workdir = f"{inst.workdir}/jobs/{name}"
        try:
            await inst.remote.run(["mkdir", "-p", workdir])
            return inst, host, workdir
        except RemoteError as e:
            gone = unreachable_in(e)
            if gone is None:
                raise
            log.info("the driver of a job cannot run on %s now (%s); trying the next instance", inst.name, gone)
            first = first or e
    if first is None:
        raise JobCannotRun("the job's cluster has no instance its driver may run on")
    raise first


def _trust_of(s, job: Job) -> str | None:  # noqa: ANN001
    cluster = s.get(Cluster, job.cluster_id or "")
    return job.trust_id or (cluster.trust_id if cluster is not None else None)


class JobWork(Work):
    model = Job

    def __init__(self, db: Database, job_id: str, on_change, remotes: Remotes, store: ObjectStore,  # noqa: ANN001
                 secrets, access_ttl: float, identity: Identity | None = None,  # noqa: ANN001
                 proxy_users: ProxyUsers | None = None, grace: float = 1800.0,
                 sleep=asyncio.sleep) -> None:  # noqa: ANN001
        super().__init__(db, job_id, on_change)
        self.grace = grace  # seconds a retriable job's lost host is waited for before the attempt is given up
        self.sleep = sleep
        self.remotes, self.store, self.secrets, self.identity = remotes, store, secrets, identity
        self.proxy_users = proxy_users
        self.access_ttl = access_ttl  # S3 presigned requests' lifetime; renewed every third of it
        self.launched_now = False  # this engine launched the job: its access is fresh

    # --- how a wait shows on a job ----------------------------------------------------------------------

    def site_name(self) -> str:
        with self.db.session() as s:
            cluster = s.get(Cluster, self.row(s).cluster_id or "")
            site = s.get(Site, cluster.site_id) if cluster else None
            return site.name if site else "?"

    def show_waiting(self, message: str, first: bool) -> None:
        with self.db.session() as s:
            job = self.row(s)
            job.info = {**(job.info or {}), "status_description": f"{message}; {MEANWHILE.get(job.op_step, '')}"}
        self.on_change()

    def show_resumed(self, message: str) -> None:
        with self.db.session() as s:
            job = self.row(s)
            job.info = {k: v for k, v in (job.info or {}).items() if k != "status_description"}
        self.on_change()

    def _runtime(self) -> dict[str, Any]:
        with self.db.session() as s:
            return dict(self.row(s).runtime or {})

    def _agent(self, runtime: dict[str, Any]):  # noqa: ANN202
        agent = _agent_for(self.db, self.remotes, runtime) if runtime.get("dir") else None
        if agent is None:
            raise OperationError("the job's instance is gone")
        return agent

    # --- run: prepare, launch, watch --------------------------------------------------------------------

    async def prepare(self) -> None:
        """Put the job's files on the instance its driver runs on and work out its command."""
        job_id = self.id
        await self._cluster_active()
        with self.db.session() as s:
            job = self.row(s)
            cluster = s.get(Cluster, job.cluster_id or "")
            if cluster is None or cluster.status != ClusterStatus.ACTIVE:
                raise JobCannotRun("the job's cluster is not Active")
            template = s.get(JobTemplate, job.job_template_id)
            if template is None:
                raise JobCannotRun("the job's template no longer exists")
            plugin = get_plugin(cluster.plugin_name)
            trust_id = job.trust_id
            before = attempts.kept(job.runtime)
        try:  # a job started after its creator's token expired runs on the creator's trust
            trusts.act_on(self.identity, trust_id, "start the job")
        except trusts.TrustGone as e:
            raise JobCannotRun(str(e)) from None
        with self.db.session() as s:
            job = self.row(s)
            cluster = s.get(Cluster, job.cluster_id or "")
            view = build_view(s, self.remotes, cluster, ("active",))
            view.secrets = dict(cluster.secrets or {})  # for the job's credential files only
            # Where the driver runs (oasis/edp/driver.py): the master instance (a retry waits for it, within the
            # grace like any step, since a cluster has one), or a worker: the least busy, and for a retry after
            # a lost host another one whose host answers.
            choices = _driver_choices(s, job, cluster, view, plugin, before)
            attempt = retries.current_attempt(before)
            binaries = {bid: s.get(JobBinary, bid) for bid in [*template.mains, *template.libs]}
            trusted = _trusted_swift(self.identity, _trust_of(s, job))  # the binaries' and the data's Swift
            files = {bid: (b.name, fetch(self.store, b, self.secrets, trusted))
                     for bid, b in binaries.items() if b is not None}
            data = resolve_job(s, job)
            # file:// data must lie on a share every host of a multi-host site mounts (rw for what is written)
            check_file_sources([(u, data.modes.get(d, "rw")) for d, u in data.urls.items()],
                               *shares_for_cluster(s, cluster))
            configs, urls, env = data.job_configs, data.urls, dict(data.env)
            sources, parts = access.sources_for_job(s, data), access.output_parts(job.job_configs)
            job_type = template.type
            mains, libs = list(template.mains), list(template.libs)
            python = cluster_runtime(s, cluster)["python"]
            proxy = _proxy_swift(self.proxy_users, job)
        # The job's scoped access (signed URLs), recorded before anything can fail after it, so revoke finds it.
        grant = await asyncio.to_thread(access.grant, job_id, sources, self.secrets, endpoints_of(self.store),
                                        ACCESS_SECONDS, parts, self.access_ttl, None, trusted, proxy)
        self.set(runtime={**before, "access": grant.record})
        # its own directory: the launcher starts a job directory once
        runs_on, host, workdir = await _first_answering(choices, f"{job_id}-{attempt}" if attempt > 1 else job_id)
        if grant.env:  # the signed URLs go in a file only the job's user reads, never in the job's row or env
            access_file = posixpath.join(workdir, access.FILE_NAME)
            await runs_on.write(access_file, grant.env[access.ENV].encode(), 0o600)
            env[access.FILE_ENV] = access_file
        # The cluster's credentials for the job (a dask config with the client certificate, Spark's properties
        # file with the secret): files only the job's user reads, which the launch points the job at by path.
        for path, content in plugin.job_files(view, workdir).items():
            await runs_on.write(path, content, 0o600)
        paths = {}
        for bid, (name, content) in files.items():
            paths[bid] = posixpath.join(workdir, posixpath.basename(name) or bid)
            await runs_on.write(paths[bid], content, 0o755)
        launch = plugin.launch(view, job_type, paths.get(mains[0]) if mains else None,
                               [paths[b] for b in libs if b in paths], configs.get("configs") or {},
                               [str(a) for a in configs.get("args") or []], workdir, driver=runs_on)
        if job_type == "Shell":
            env.update({str(k): str(v) for k, v in (configs.get("params") or {}).items()})
        runtime = {**before, "instance_id": runs_on.id, "instance": runs_on.name, "host": host, "dir": workdir,
                   "python": python, "argv": launch.argv,
                   "env": {**launch.env, **env}, "access": grant.record, "access_deadline": grant.expires}
        self.set(runtime=runtime, data_source_urls=urls)

    async def _cluster_active(self) -> None:
        """Wait while the job's cluster is on its way to Active (Sahara kept such a job PENDING); fail the job if
        the cluster ends otherwise. The wait holds the job's lease, so a cancel or delete still ends it."""
        shown = None
        while True:
            with self.db.session() as s:
                job = self.row(s)
                cluster = s.get(Cluster, job.cluster_id or "")
                status = cluster.status if cluster is not None else None
                reason = ((cluster.info or {}).get("status_description") or "") if cluster is not None else ""
                name = cluster.name if cluster is not None else job.cluster_id
            if status == ClusterStatus.ACTIVE:
                if shown is not None:
                    self.show_resumed(f"cluster {name} is Active")
                return
            if status is None:
                raise JobCannotRun(f"the job's cluster {name} was deleted before the job could start")
            if status not in CLUSTER_COMING_UP:
                raise JobCannotRun(f"the job's cluster {name} is {status}, not Active"
                                   + (f": {reason[:500]}" if reason else ""))
            if status != shown:
                with self.db.session() as s:
                    job = self.row(s)
                    job.info = {**(job.info or {}), "status_description":
                                f"waiting for cluster {name} to be Active (it is {status}); the job starts then"}
                self.on_change()
                shown = status
            await self.sleep(CLUSTER_POLL_SECONDS)

    def _log_id(self) -> str:
        """Where the current attempt's logs live in the store."""
        return joblogs.log_id(self.id, retries.current_attempt(self._runtime()))

    def _unreachable_for(self) -> float:
        """Seconds the current wait for an unreachable host has lasted (0: none), as the machine recorded it."""
        with self.db.session() as s:
            record = (self.row(s).op_target or {}).get("unreachable")
        if not record:
            return 0.0
        return (utcnow() - datetime.fromisoformat(record["since"])).total_seconds()

    async def launch(self) -> None:
        runtime = self._runtime()
        pid = await self._agent(runtime).run_job(runtime["dir"], runtime["argv"], runtime["env"])
        self.launched_now = True
        with self.db.session() as s:  # what it waited for is over; its attempts tell the story so far
            info = {k: v for k, v in (self.row(s).info or {}).items() if k != "status_description"}
        self.set(status=st.RUNNING, engine_job_id=f"{pid}@{runtime['instance_id']}", start_time=utcnow(), info=info)

    async def watch(self) -> None:
        """Wait for the job's end (`_watch`). The host of a job that its retry policy would run again is waited
        for within the grace only: past it, this attempt is lost and the next one starts."""
        try:
            await self._watch()
            return
        except RemoteError as e:
            gone = unreachable_in(e)
            if gone is None or not self._may_run_again(st.FAILED) or self._unreachable_for() <= self.grace:
                raise
            lost = f"{gone} for more than {self.grace:g}s while the job ran; this attempt is given up"
        # raised outside the handler, so that it carries no Unreachable for the machine to wait on again
        raise HostLost(lost)

    async def _watch(self) -> None:
        """Wait for the job's end, slice by slice, copying its logs between slices; its S3 access is renewed
        meanwhile. The result is kept on the operation for `ended`, so a resumed watch finds it again."""
        runtime = self._runtime()
        agent = self._agent(runtime)
        renewer = None
        if access.needs_renewal(runtime.get("access") or []):
            period = max(1.0, self.access_ttl / 3)
            renewer = asyncio.create_task(keep_fresh(
                lambda: self._renew_access(runtime, agent.remote, agent.owner_ids), period, min(period, ACCESS_RETRY_SECONDS),
                first_delay=period if self.launched_now else 0.0, what=f"job {self.id}"))
        logs = await asyncio.to_thread(LogWriter, self.store, self._log_id())  # on where the store's parts end
        try:
            while True:
                result = await self._copy_logs(agent, runtime["dir"], logs, WAIT_SLICE)
                if result.get("done") and logs.caught_up(result.get("logs")):
                    break
        finally:
            if renewer is not None:
                renewer.cancel()
                await asyncio.gather(renewer, return_exceptions=True)
        await history.collect(agent.remote, runtime["dir"], self.store, self.id)  # event logs, Dask report
        # the access file goes before the job shows as ended: whoever sees the end sees the access withdrawn
        await self._drop_access_file(agent.remote, force=True)
        await asyncio.to_thread(logs.finish)  # whole, under the final keys, before the job shows as ended
        with self.db.session() as s:
            job = self.row(s)
            job.op_target = {**(job.op_target or {}), "result": _without_logs(result)}

    async def ended(self) -> None:
        with self.db.session() as s:
            result = dict((self.row(s).op_target or {}).get("result") or {})
        status, end = _status_of(result), _end_of(result)
        # The launcher's supervisor gone without writing the job's end: the host restarted or its processes were
        # killed; for the next attempt's placement that host was lost, as one unreachable past the grace is.
        lost = bool(result.get("lost"))
        reason = (f"the job's processes on host {self._runtime().get('host')} ended without an exit code (the host "
                  f"restarted, or they were killed)") if lost else ""
        if self._again(status, result.get("rc"), end, reason, host_lost=lost):
            metrics.observe_job_end(result.get("ended"))
            return
        self._withdraw()  # whoever sees the end sees the job's data access gone
        self._record_end(result)

    async def failed(self, error: Exception) -> None:
        await self._finish_logs()
        reason = str(error)[:2000]
        if not isinstance(error, JobCannotRun) and self._may_run_again(st.FAILED):
            # its host stayed away while it ran (HostLost), or past the grace before it could start
            lost = isinstance(error, HostLost) or unreachable_in(error) is not None
            if not lost:  # a lost host is not asked
                await self._drop_access_file(force=True)  # this attempt's; the next one writes its own
            if self._again(st.FAILED, None, utcnow(), reason, host_lost=lost):
                return
        self._withdraw()
        with self.db.session() as s:
            info = {**(self.row(s).info or {}), "status_description": reason}
        # the last attempt is the row itself (its status, times and exit code), never a second copy of them
        self.done(status=st.FAILED, end_time=utcnow(), start_time=_or_now(self.id, self.db), info=info)
        self._after_end()
        await self._drop_access_file()

    # --- the end of a job -------------------------------------------------------------------------------

    def _may_run_again(self, status: str) -> bool:
        with self.db.session() as s:
            job = self.row(s)
            try:
                policy = retries.policy_of((job.job_configs or {}).get("configs"))
            except retries.RetryError:
                return False
            return policy.allows(retries.current_attempt(job.runtime), status)

    def _again(self, status: str, rc: int | None, end: datetime, reason: str, host_lost: bool = False) -> bool:
        """If the job's retry policy runs it again after this attempt, make it wait for the next one: this
        attempt's data access is withdrawn, its proxy user and trust stay for the next. False: it was the last."""
        if not self._may_run_again(status):
            return False
        self._revoke_access()
        with self.db.session() as s:
            due = attempts.next_attempt(self.row(s), status, rc, end, reason, utcnow(), host_lost)
        if due is not None:
            log.info("job %s: attempt ended %s; the next one starts at %s", self.id, status, due)
            metrics.RETRIES.labels("job", JobOp.RUN, "job_failed").inc()
        self.on_change()
        return due is not None

    def _record_end(self, result: dict[str, Any]) -> None:
        rc = result.get("rc")
        self.done(status=_status_of(result), return_code=rc, end_time=_end_of(result))
        metrics.observe_job_end(result.get("ended"))  # the job's end → the engine recording it
        self._after_end()

    async def _renew_access(self, runtime: dict[str, Any], remote, owner=None) -> None:  # noqa: ANN001
        """Grant the job's access again (fresh S3 presigned requests) and rewrite its access file."""
        with self.db.session() as s:
            job = self.row(s)
            if job is None or job.status in st.TERMINAL:
                return
            sources = access.sources_for_record(s, runtime.get("access") or [])
            parts = access.output_parts(job.job_configs)
            trusted = _trusted_swift(self.identity, _trust_of(s, job))
            proxy = _proxy_swift(self.proxy_users, job)
        grant = await asyncio.to_thread(access.grant, self.id, sources, self.secrets, endpoints_of(self.store),
                                        ACCESS_SECONDS, parts, self.access_ttl, runtime.get("access_deadline"),
                                        trusted, proxy)
        if grant.env:
            await remote.put(posixpath.join(runtime["dir"], access.FILE_NAME), grant.env[access.ENV].encode(),
                             0o600, owner)  # the job's user reads it

    async def _drop_access_file(self, remote=None, force: bool = False) -> None:  # noqa: ANN001
        """An ended job's access file goes (its S3 URLs then die by expiry). Best effort: the host may be gone."""
        with self.db.session() as s:
            job = self.row(s)
            runtime = dict(job.runtime or {}) if job else {}
            ended = job is None or job.status in st.TERMINAL
        if not (ended or force) or not runtime.get("dir"):
            return
        try:
            if remote is None:
                agent = _agent_for(self.db, self.remotes, runtime)
                remote = agent.remote if agent is not None else None
            if remote is not None:
                await remote.run(["rm", "-f", posixpath.join(runtime["dir"], access.FILE_NAME)])
        except RemoteError as e:
            log.warning("job %s: could not remove its access file: %s", self.id, e)

    async def _copy_logs(self, agent, workdir: str, logs: LogWriter, timeout: float) -> dict[str, Any]:  # noqa: ANN001
        """One `wait` on the job: it answers at its end, at `timeout`, or soon after its stdout or stderr grew,
        with the bytes past what the store holds, which are appended there."""
        result = await agent.wait_job(workdir, timeout, logs.offsets, LOG_PIECE_BYTES)
        try:
            await asyncio.to_thread(logs.append, result.get("logs"))
        except (StoreError, OSError) as e:  # the job goes on; the next wait asks again from what was stored
            log.warning("job %s: could not copy its logs to the store, trying again: %s", self.id, e)
            await asyncio.sleep(STORE_RETRY_SECONDS)
        return result

    async def _finish_logs(self) -> None:
        """A job that ended without its watch (it failed, its host is gone) keeps what the store holds of its
        logs, as whole final objects."""
        try:
            log_id = self._log_id()
            await asyncio.to_thread(lambda: LogWriter(self.store, log_id).finish())
        except (StoreError, OSError) as e:
            log.warning("job %s: could not make its logs final: %s", self.id, e)

    def _withdraw(self) -> None:
        """Withdraw the job's data access: its scoped URLs (Swift: rotate the temp-URL key once no live job uses
        it) and its proxy user (deleting it deletes its trust and revokes its tokens). A proxy user Keystone
        does not delete now is left to the periodic clean-up, which finds it by its name."""
        self._revoke_access()
        self._remove_proxy()

    def _revoke_access(self) -> None:
        with self.db.session() as s:
            job = self.row(s)
            record = list((job.runtime or {}).get("access") or []) if job else []
            located = access.located_for_job(s, record)
            trusted = _trusted_swift(self.identity, _trust_of(s, job)) if job else None
        if located:
            access.revoke(self.id, located, self.secrets, endpoints_of(self.store), trusted)

    def _remove_proxy(self) -> None:
        with self.db.session() as s:
            job = self.row(s)
            proxy = dict(job.proxy or {}) if job else {}
        if proxy and self.proxy_users is not None:
            try:
                self.proxy_users.remove(proxy)
            except IdentityError as e:
                log.warning("job %s: could not remove its proxy user %s now: %s", self.id, proxy.get("name"), e)
                return
            self.set(proxy=None)

    def _after_end(self) -> None:
        """A transient cluster is deleted once its last job has ended (on the cluster's own trust); the job's
        trust has done its work."""
        trusts.release(self.identity, self._own_trust())
        with self.db.session() as s:
            job = self.row(s)
            cluster = s.get(Cluster, job.cluster_id or "") if job else None
            if cluster is None or not cluster.is_transient or cluster.op is not None:
                return
            busy = s.scalars(select(Job.id).where(Job.cluster_id == cluster.id, Job.status.not_in(st.TERMINAL))).first()
            if busy is None:
                cluster.status, cluster.op, cluster.op_step, cluster.op_target = (
                    ClusterStatus.DELETING, ClusterOp.DELETE, None, {})
        self.on_change()

    def _own_trust(self) -> str | None:
        """The job's trust, unless it is its recurring job's (released when that one is deleted)."""
        with self.db.session() as s:
            job = self.row(s)
            if job is None or (job.runtime or {}).get("shared_trust"):
                return None
            return job.trust_id

    # --- suspend and resume -----------------------------------------------------------------------------
    # A stopped job is alive: both go back to watching it, which keeps the status written here. If the signal
    # cannot be sent, the job stays as it was (RUNNING or SUSPENDED) and the reason is in its info: the job
    # itself goes on, so it is not given Sahara's terminal SUSPENDFAILED.

    async def stop_group(self) -> None:
        await self._signal("STOP")

    async def continue_group(self) -> None:
        await self._signal("CONT")

    async def _signal(self, sig: str) -> None:
        runtime = self._runtime()
        running = await self._agent(runtime).signal_job(runtime["dir"], sig)
        with self.db.session() as s:
            job = self.row(s)
            job.op_target = {"running": running}

    async def signalled(self) -> None:
        with self.db.session() as s:
            job = self.row(s)
            running = bool((job.op_target or {}).get("running"))
            done = st.SUSPENDED if job.op == JobOp.SUSPEND else st.RUNNING
            info = {k: v for k, v in (job.info or {}).items() if k != "status_description"}
        # A job that ended meanwhile is not marked: the watch records how it ended.
        self._watch_again(info, status=done if running else None)

    async def not_signalled(self, error: Exception) -> None:
        with self.db.session() as s:
            job = self.row(s)
            suspending = job.op == JobOp.SUSPEND
            info = dict(job.info or {})
        verb = "suspend" if suspending else "resume"
        log.warning("job %s: could not %s it: %s", self.id, verb, error)
        info["status_description"] = f"Could not {verb}: {error}"[:2000]
        self._watch_again(info, status=st.RUNNING if suspending else st.SUSPENDED)

    def _watch_again(self, info: dict[str, Any], status: str | None) -> None:
        values: dict[str, Any] = {"status": status} if status is not None else {}
        self.set(**values, info=info, op=JobOp.RUN, op_step="watch", op_target={})

    # --- cancel and delete ------------------------------------------------------------------------------

    async def cancel(self) -> None:
        runtime = self._runtime()
        agent = _agent_for(self.db, self.remotes, runtime) if runtime.get("dir") else None
        if agent is None:  # never launched
            result: dict[str, Any] = {"cancelled": True}
        else:
            await agent.cancel_job(runtime["dir"])
            logs = await asyncio.to_thread(LogWriter, self.store, self._log_id())
            deadline = asyncio.get_running_loop().time() + 60
            while True:  # the job's last words, up to its end (or the minute a kill may take)
                left = max(0.0, deadline - asyncio.get_running_loop().time())
                result = await self._copy_logs(agent, runtime["dir"], logs, left)
                if (result.get("done") and logs.caught_up(result.get("logs"))) or not left:
                    break
            await asyncio.to_thread(logs.finish)
            result = _without_logs(result)
            await history.collect(agent.remote, runtime["dir"], self.store, self.id)
            await self._drop_access_file(agent.remote, force=True)
            if result.get("done"):
                result = {**result, "cancelled": True}
        with self.db.session() as s:
            job = self.row(s)
            job.op_target = {**(job.op_target or {}), "result": result}

    async def not_cancelled(self, error: Exception) -> None:
        with self.db.session() as s:
            info = dict(self.row(s).info or {})
        self._watch_again({**info, "status_description": f"Could not cancel: {error}"[:2000]}, status=None)

    async def delete(self) -> None:
        with self.db.session() as s:
            job = self.row(s)
            running = job.status not in st.TERMINAL and job.runtime.get("dir")
            runtime = dict(job.runtime)
        if running:
            try:
                await kill_on_instance(self.db, self.remotes, runtime)
            except RemoteError as e:  # deleting a job must not hang on an unreachable host
                log.warning("job %s: could not stop it before deleting: %s", self.id, e)
            self._withdraw()
            await self._drop_access_file(force=True)
        await asyncio.to_thread(joblogs.delete_all, self.store, self.id)

    async def deleted(self) -> None:
        self._remove_proxy()  # a job deleted before it ran still has its proxy user
        trusts.release(self.identity, self._own_trust())  # before the row: the identity's writes are fenced
        with self.db.session() as s:
            job = self.row(s)
            if job is not None:
                s.delete(job)
        self.on_change()

    async def not_deleted(self, error: Exception) -> None:
        self.set(info={"status_description": f"Deleting failed: {error}"[:2000]})


OPERATIONS: dict[str, Operation[JobWork]] = {
    # Both steps before the watch are idempotent (the launcher starts a job directory once), so a host that
    # cannot be reached is waited for, within the grace; a launched job is waited for without one: only the
    # host knows how it ends, and the launcher records that there.
    JobOp.RUN: Operation(
        steps=(Step("prepare", JobWork.prepare), Step("launch", JobWork.launch),
               Step("watch", JobWork.watch, wait=Wait.FOREVER)),
        finish=JobWork.ended, rollback=JobWork.failed),
    JobOp.CANCEL: Operation(steps=(Step("cancel", JobWork.cancel, wait=Wait.FOREVER),),
                            finish=JobWork.ended, rollback=JobWork.not_cancelled),
    JobOp.DELETE: Operation(steps=(Step("delete", JobWork.delete, wait=Wait.NO),),
                            finish=JobWork.deleted, rollback=JobWork.not_deleted),
    JobOp.SUSPEND: Operation(steps=(Step("signal", JobWork.stop_group, wait=Wait.NO),),
                             finish=JobWork.signalled, rollback=JobWork.not_signalled),
    JobOp.RESUME: Operation(steps=(Step("signal", JobWork.continue_group, wait=Wait.NO),),
                            finish=JobWork.signalled, rollback=JobWork.not_signalled),
}


def job_machine(db: Database, remotes: Remotes, store: ObjectStore, on_change=lambda: None,  # noqa: ANN001
                secrets=None, *, access_ttl: float = 900.0, unreachable_grace: float = 1800.0,  # noqa: ANN001
                probe=None, identity: Identity | None = None,  # noqa: ANN001
                proxy_users: ProxyUsers | None = None) -> Machine[JobWork]:
    return Machine(lambda jid: JobWork(db, jid, on_change, remotes, store, secrets, access_ttl, identity,
                                       proxy_users, unreachable_grace),
                   OPERATIONS, JOB_FAILURES, unreachable_grace, probe)


async def keep_fresh(renew, period: float, retry: float, *, first_delay: float = 0.0, what: str = "",
                     sleep=asyncio.sleep) -> None:
    """Call `renew` every `period` seconds until cancelled. A renewal that fails is logged (the exception's
    message only: store and remote errors never carry secrets) and tried again after `retry`; it never ends
    the loop, so it never fails the job by itself."""
    delay = first_delay
    while True:
        await sleep(delay)
        try:
            await renew()
            delay = period
        except (access.AccessError, StoreError, RemoteError, OSError) as e:
            log.warning("%s: renewing its data access failed, retrying in %.0fs: %s", what, retry, e)
            delay = retry


def _status_of(result: dict[str, Any]) -> str:
    if result.get("cancelled"):
        return st.KILLED
    if result.get("lost"):
        return st.FAILED
    return st.SUCCEEDED if result.get("rc") == 0 else st.DONEWITHERROR


def _end_of(result: dict[str, Any]) -> datetime:
    return datetime.utcfromtimestamp(result["ended"]) if result.get("ended") else utcnow()


def _or_now(job_id: str, db: Database) -> datetime:
    with db.session() as s:
        job = s.get(Job, job_id)
        return job.start_time or utcnow()
