"""The job reconciler: run (prepare, launch, watch), cancel and delete.

The launcher (oasis-agent `run`) keeps the job alive on the master instance whatever happens to the
controller; the engine watches it with `wait`, which returns the moment the job's result is written, so the
API shows a job's end within a fraction of a second instead of Sahara's 45-second poll."""
from __future__ import annotations

import asyncio
import logging
import posixpath
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select

from oasis.db.models import Cluster, Instance, Job, JobBinary, JobTemplate, Site, utcnow
from oasis.db.session import Database
from oasis.edp import access
from oasis.edp import statuses as st
from oasis.edp.binaries import BinaryError, fetch
from oasis.edp.datasources import resolve_job
from oasis.edp.shares import check_file_sources, shares_for_cluster
from oasis.engine.views import build_view, cluster_runtime
from oasis.engine.waiting import Backoff, waiting_message
from oasis.plugins import get_plugin
from oasis.plugins.base import PluginError
from oasis.remote.base import RemoteError, Unreachable, unreachable_in
from oasis.remote.hosts import Remotes
from oasis.storage import StoreError, endpoints_of
from oasis.storage.base import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

WAIT_SLICE = 20.0  # seconds one `wait` call blocks; between slices the logs are copied to the store
JOB_ERRORS = (RemoteError, PluginError, BinaryError, ObjectNotFound, LookupError, OSError, access.AccessError,
              StoreError)
ACCESS_SECONDS = 7 * 24 * 3600  # scoped access lasts until the job ends, at most this long
ACCESS_RETRY_SECONDS = 5.0  # a failed renewal of a job's S3 access is tried again this soon (or at TTL/3)


def log_key(job_id: str, stream: str) -> str:
    return f"jobs/{job_id}/{stream}"


async def kill_on_instance(db: Database, remotes: Remotes, runtime: dict[str, Any]) -> None:
    """Stop a launched job's whole process tree, wherever it runs."""
    agent = _agent_for(db, remotes, runtime)
    if agent is not None:
        await agent.cancel_job(runtime["dir"])


def _agent_for(db: Database, remotes: Remotes, runtime: dict[str, Any]):
    """The agent of the instance a job was launched on, reached the way its cluster is."""
    with db.session() as s:
        inst = s.get(Instance, runtime.get("instance_id") or "")
        cluster = s.get(Cluster, inst.cluster_id) if inst else None
        if cluster is None:
            return None
        view = build_view(s, remotes, cluster, ("active", "new", "decommission"))
    return next((i.agent for i in view.instances if i.id == inst.id), None)


class JobReconciler:
    def __init__(self, db: Database, remotes: Remotes, store: ObjectStore, on_change=lambda: None,
                 secrets=None, access_ttl: float = 900.0, unreachable_grace: float = 1800.0) -> None:
        self.db, self.remotes, self.store, self.on_change = db, remotes, store, on_change
        self.secrets = secrets
        self.access_ttl = access_ttl  # S3 presigned requests' lifetime; renewed every third of it
        self.unreachable_grace = unreachable_grace  # seconds a job not yet launched waits for its host

    async def __call__(self, job_id: str) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            op = job.op if job else None
        if op == "run":
            await self.run(job_id)
        elif op == "cancel":
            await self.cancel(job_id)
        elif op == "delete":
            await self.delete(job_id)
        elif op == "suspend":
            await self.signal(job_id, "STOP")
        elif op == "resume":
            await self.signal(job_id, "CONT")

    def _set(self, job_id: str, **values: Any) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            for k, v in values.items():
                setattr(job, k, v)
        self.on_change()

    # --- run ----------------------------------------------------------------------------------------------------

    async def run(self, job_id: str) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            step = job.op_step or "prepare"
        try:
            # Both steps are idempotent (the launcher starts a job directory once), so a host that cannot be
            # reached is waited for, within the grace, and the step is simply run again.
            if step == "prepare":
                await self._until_reachable(job_id, lambda: self._prepare(job_id), self.unreachable_grace,
                                            "the job starts once it answers")
                step = "launch"
            if step == "launch":
                await self._until_reachable(job_id, lambda: self._launch(job_id), self.unreachable_grace,
                                            "the job starts once it answers")
            await self._watch(job_id, fresh=step in ("prepare", "launch"))
        except JOB_ERRORS as e:
            log.warning("job %s failed: %s", job_id, e)
            self._set(job_id, status=st.FAILED, end_time=utcnow(), op=None, op_step=None,
                      start_time=_or_now(job_id, self.db), info={"status_description": str(e)[:2000]})
            self._after_end(job_id)
            await self._drop_access_file(job_id)

    async def _prepare(self, job_id: str) -> None:
        """Put the job's files on the master instance and work out its command."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            cluster = s.get(Cluster, job.cluster_id or "")
            if cluster is None or cluster.status != "Active":
                raise LookupError("the job's cluster is not Active")
            template = s.get(JobTemplate, job.job_template_id)
            if template is None:
                raise LookupError("the job's template no longer exists")
            plugin = get_plugin(cluster.plugin_name)
            view = build_view(s, self.remotes, cluster, ("active",))
            master = view.having(plugin.master_process)[0]
            workdir = f"{master.workdir}/jobs/{job_id}"
            binaries = {bid: s.get(JobBinary, bid) for bid in [*template.mains, *template.libs]}
            files = {bid: (b.name, fetch(self.store, b, self.secrets)) for bid, b in binaries.items()
                     if b is not None}
            data = resolve_job(s, job)
            # file:// data must lie on a share every host of a multi-host site mounts (rw for what is written)
            check_file_sources([(u, data.modes.get(d, "rw")) for d, u in data.urls.items()],
                               *shares_for_cluster(s, cluster))
            configs, urls, env = data.job_configs, data.urls, dict(data.env)
            sources, parts = access.sources_for_job(s, data), access.output_parts(job.job_configs)
            job_type = template.type
            mains, libs = list(template.mains), list(template.libs)
            python = cluster_runtime(s, cluster)["python"]
        # The job's scoped access (signed URLs), recorded before anything can fail after it, so revoke finds it.
        grant = await asyncio.to_thread(access.grant, job_id, sources, self.secrets, endpoints_of(self.store),
                                        ACCESS_SECONDS, parts, self.access_ttl)
        self._set(job_id, runtime={"access": grant.record})
        await master.remote.run(["mkdir", "-p", workdir])
        if grant.env:  # the signed URLs go in a file only the job's user reads, never in the job's row or env
            access_file = posixpath.join(workdir, access.FILE_NAME)
            await master.remote.put(access_file, grant.env[access.ENV].encode(), 0o600)
            env[access.FILE_ENV] = access_file
        paths = {}
        for bid, (name, data) in files.items():
            paths[bid] = posixpath.join(workdir, posixpath.basename(name) or bid)
            await master.remote.put(paths[bid], data, 0o755)
        launch = plugin.launch(view, job_type, paths.get(mains[0]) if mains else None, [paths[b] for b in libs if b in paths],
                               configs.get("configs") or {}, [str(a) for a in configs.get("args") or []], workdir)
        if job_type == "Shell":
            env.update({str(k): str(v) for k, v in (configs.get("params") or {}).items()})
        runtime = {"instance_id": master.id, "dir": workdir, "python": python, "argv": launch.argv,
                   "env": {**launch.env, **env}, "access": grant.record, "access_deadline": grant.expires}
        self._set(job_id, runtime=runtime, data_source_urls=urls, op_step="launch")

    async def _launch(self, job_id: str) -> None:
        with self.db.session() as s:
            runtime = dict(s.get(Job, job_id).runtime)
        agent = _agent_for(self.db, self.remotes, runtime)
        if agent is None:
            raise LookupError("the job's master instance is gone")
        pid = await agent.run_job(runtime["dir"], runtime["argv"], runtime["env"])
        self._set(job_id, status=st.RUNNING, engine_job_id=f"{pid}@{runtime['instance_id']}", start_time=utcnow(),
                  op_step="watch")

    async def _watch(self, job_id: str, fresh: bool = False) -> None:
        with self.db.session() as s:
            runtime = dict(s.get(Job, job_id).runtime)
        agent = _agent_for(self.db, self.remotes, runtime)
        if agent is None:
            raise LookupError("the job's master instance is gone")
        renewer = None
        if access.needs_renewal(runtime.get("access") or []):
            period = max(1.0, self.access_ttl / 3)
            renewer = asyncio.create_task(keep_fresh(
                lambda: self._renew_access(job_id, runtime, agent.remote), period,
                min(period, ACCESS_RETRY_SECONDS), first_delay=period if fresh else 0.0, what=f"job {job_id}"))
        try:
            while True:
                result = await self._until_reachable(
                    job_id, lambda: agent.wait_job(runtime["dir"], WAIT_SLICE), None,
                    "the job keeps running there and is recorded once it answers")
                await self._copy_logs(job_id, agent.remote, runtime["dir"])
                if result.get("done"):
                    break
        finally:
            if renewer is not None:
                renewer.cancel()
                await asyncio.gather(renewer, return_exceptions=True)
        # the access file goes before the job shows as ended: whoever sees the end sees the access withdrawn
        await self._drop_access_file(job_id, agent.remote, force=True)
        self._finish(job_id, result)

    async def _renew_access(self, job_id: str, runtime: dict[str, Any], remote) -> None:
        """Grant the job's access again (fresh S3 presigned requests) and rewrite its access file."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None or job.status in st.TERMINAL:
                return
            sources = access.sources_for_record(s, runtime.get("access") or [])
            parts = access.output_parts(job.job_configs)
        grant = await asyncio.to_thread(access.grant, job_id, sources, self.secrets, endpoints_of(self.store),
                                        ACCESS_SECONDS, parts, self.access_ttl, runtime.get("access_deadline"))
        if grant.env:
            await remote.put(posixpath.join(runtime["dir"], access.FILE_NAME), grant.env[access.ENV].encode(),
                             0o600)

    async def _drop_access_file(self, job_id: str, remote=None, force: bool = False) -> None:
        """An ended job's access file goes (its S3 URLs then die by expiry). Best effort: the host may be gone."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
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
            log.warning("job %s: could not remove its access file: %s", job_id, e)

    async def _until_reachable(self, job_id: str, attempt: Callable[[], Awaitable[Any]], grace: float | None,
                               meanwhile: str) -> Any:
        """Run `attempt`; while it fails because the job's host cannot be reached (its site cut off), note it on
        the job (with what happens `meanwhile`) and run it again with a capped backoff. Past `grace` seconds the
        failure stands. A launched job is waited for without a grace: only the host knows how it ends, and the
        launcher records that there."""
        backoff = Backoff()
        started = time.monotonic()
        while True:
            try:
                result = await attempt()
            except JOB_ERRORS as e:
                gone = unreachable_in(e)
                if gone is None or (grace is not None and time.monotonic() - started > grace):
                    raise
                self._note_unreachable(job_id, gone, meanwhile)
                await backoff.pause()
                continue
            self._note_reachable(job_id)
            return result

    def _note_unreachable(self, job_id: str, gone: Unreachable, meanwhile: str) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            info = dict(job.info or {})
            if "unreachable" in info:
                return
            cluster = s.get(Cluster, job.cluster_id or "")
            site = s.get(Site, cluster.site_id) if cluster else None
            now = utcnow()
            message = waiting_message(site.name if site else "?", gone.host, now, gone.reason)
            info["unreachable"] = {"since": now.isoformat(), "host": gone.host, "reason": gone.reason}
            info["status_description"] = f"{message}; {meanwhile}"
            job.info = info
        log.warning("job %s: %s", job_id, message)
        self.on_change()

    def _note_reachable(self, job_id: str) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            info = dict(job.info or {})
            if "unreachable" not in info:
                return
            del info["unreachable"]
            info.pop("status_description", None)
            job.info = info
        self.on_change()

    def _finish(self, job_id: str, result: dict[str, Any]) -> None:
        rc = result.get("rc")
        if result.get("cancelled"):
            status = st.KILLED
        elif result.get("lost"):
            status = st.FAILED
        else:
            status = st.SUCCEEDED if rc == 0 else st.DONEWITHERROR
        ended = datetime.utcfromtimestamp(result["ended"]) if result.get("ended") else utcnow()
        self._set(job_id, status=status, return_code=rc, end_time=ended, op=None, op_step=None)
        self._after_end(job_id)

    async def _copy_logs(self, job_id: str, remote, workdir: str) -> None:
        for stream in ("stdout", "stderr"):
            try:
                data = await remote.get(f"{workdir}/{stream}")
            except RemoteError:
                continue
            await asyncio.to_thread(self.store.put, log_key(job_id, stream), data)

    def _revoke(self, job_id: str) -> None:
        """Withdraw the job's scoped data access (Swift: rotate the temp-URL key once no live job uses it)."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            record = list((job.runtime or {}).get("access") or []) if job else []
            located = access.located_for_job(s, record)
        if located:
            access.revoke(job_id, located, self.secrets, endpoints_of(self.store))

    def _after_end(self, job_id: str) -> None:
        """A transient cluster is deleted once its last job has ended."""
        self._revoke(job_id)
        with self.db.session() as s:
            job = s.get(Job, job_id)
            cluster = s.get(Cluster, job.cluster_id or "") if job else None
            if cluster is None or not cluster.is_transient or cluster.op is not None:
                return
            busy = s.scalars(select(Job.id).where(Job.cluster_id == cluster.id, Job.status.not_in(st.TERMINAL))).first()
            if busy is None:
                cluster.status, cluster.op, cluster.op_step, cluster.op_target = "Deleting", "delete", None, {}
        self.on_change()

    # --- suspend and resume -------------------------------------------------------------------------------------

    async def signal(self, job_id: str, sig: str) -> None:
        """Suspend (STOP) or resume (CONT) a launched job's whole process group, then go back to watching it: a
        stopped job is alive, so the watch goes on and keeps the status written here. If the signal cannot be
        sent, the job stays as it was (RUNNING or SUSPENDED) and the reason is in its info: the job itself goes
        on, so it is not given Sahara's terminal SUSPENDFAILED."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            runtime, info = dict(job.runtime), dict(job.info or {})
        done, failed = (st.SUSPENDED, st.RUNNING) if sig == "STOP" else (st.RUNNING, st.SUSPENDED)
        verb = "suspend" if sig == "STOP" else "resume"
        try:
            agent = _agent_for(self.db, self.remotes, runtime) if runtime.get("dir") else None
            if agent is None:
                raise LookupError("the job's master instance is gone")
            await agent.install()  # a cluster older than the agent's `signal` command gets it now
            running = await agent.signal_job(runtime["dir"], sig)
        except JOB_ERRORS as e:
            log.warning("job %s: could not %s it: %s", job_id, verb, e)
            self._set(job_id, status=failed, info={**info, "status_description": f"Could not {verb}: {e}"[:2000]},
                      op="run", op_step="watch")
            return
        info.pop("status_description", None)
        # A job that ended meanwhile is not marked: the watch records how it ended.
        values = {"status": done} if running else {}
        self._set(job_id, **values, info=info, op="run", op_step="watch")

    # --- cancel and delete --------------------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            runtime = dict(job.runtime)
        agent = _agent_for(self.db, self.remotes, runtime) if runtime.get("dir") else None
        if agent is None:
            self._set(job_id, status=st.KILLED, end_time=utcnow(), op=None, op_step=None)
            self._after_end(job_id)
            return
        await agent.cancel_job(runtime["dir"])
        result = await agent.wait_job(runtime["dir"], 60)
        await self._copy_logs(job_id, agent.remote, runtime["dir"])
        await self._drop_access_file(job_id, agent.remote, force=True)
        self._finish(job_id, {**result, "cancelled": True} if result.get("done") else result)

    async def delete(self, job_id: str) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            running = job.status not in st.TERMINAL and job.runtime.get("dir")
            runtime = dict(job.runtime)
        if running:
            try:
                await kill_on_instance(self.db, self.remotes, runtime)
            except RemoteError as e:  # deleting a job must not hang on an unreachable host
                log.warning("job %s: could not stop it before deleting: %s", job_id, e)
        if running:
            self._revoke(job_id)
            await self._drop_access_file(job_id, force=True)
        for stream in ("stdout", "stderr"):
            self.store.delete(log_key(job_id, stream))
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is not None:
                s.delete(job)
        self.on_change()


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


def _or_now(job_id: str, db: Database) -> datetime:
    with db.session() as s:
        job = s.get(Job, job_id)
        return job.start_time or utcnow()
