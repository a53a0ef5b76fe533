"""The engine: finds operations nobody holds, takes its fair share of them, and drives each with its model's
operation machine while renewing the lease. Any number of engines may run on one database; each operation is driven by one at a
time, every write it makes is fenced by the lease, and each period's periodic work is done by one engine.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from datetime import timedelta
from typing import Any, Callable

from sqlalchemy import func, select

from oasis import logconfig, metrics
from oasis.config import Settings
from oasis.db.models import Cluster, Job, Site, WorkflowRun, utcnow
from oasis.db.session import Database, LeaseLost, fenced
from oasis.db.states import ClusterOp, ClusterStatus
from oasis.edp.joblogs import purge_expired
from oasis.edp.statuses import TERMINAL
from oasis.engine import attempts, leases
from oasis.engine.autoscale import Autoscaler
from oasis.engine.changes import Changes
from oasis.engine.clusters import cluster_machine
from oasis.engine.health import check_hosts
from oasis.engine.jobs import job_machine
from oasis.engine.lifecycle import Lifecycle
from oasis.engine.pools import Pools
from oasis.engine.sites import site_machine
from oasis.engine.proxies import SWEEP_SECONDS, sweep
from oasis.engine.verification import Verifications
from oasis.engine.workflows import workflow_machine
from oasis.identity import open_identity, open_proxy_users
from oasis.remote.hosts import Remotes
from oasis.storage.base import ObjectStore
from oasis.storage.secrets import secrets_for

log = logging.getLogger(__name__)

TRANSIENT_IDLE_SECONDS = 30.0  # Sahara's min_transient_cluster_active_time
PERIODIC_SECONDS = 10.0  # each periodic task runs once per period, on whichever engine claims it first
PERIODIC_CHECK_SECONDS = 1.0  # how often an engine looks for an unclaimed period: none is missed
RETENTION_SECONDS = 300.0  # how often ended jobs past OASIS_JOB_RETENTION_DAYS are looked for
LAG_WARNING_SECONDS = 5.0  # a loop this late is worth a warning: the machine or the database is overloaded


class Engine:
    def __init__(self, settings: Settings, db: Database, store: ObjectStore) -> None:
        self.settings, self.db, self.store = settings, db, store
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.remotes = Remotes()
        self.identity = open_identity(settings, db)  # trusts: acting for a user after its token has expired
        self.proxy_users = open_proxy_users(settings, self.identity)
        grace = settings.unreachable_grace_seconds
        self.changes = Changes()  # what waits on other rows (a workflow run on its jobs) wakes with wake()
        self.machines: list[tuple[Any, Callable]] = [
            (Cluster, cluster_machine(db, self.remotes, self.wake, unreachable_grace=grace, identity=self.identity)),
            (Job, job_machine(db, self.remotes, store, self.wake, secrets_for(settings.state_dir),
                              access_ttl=settings.s3_access_ttl_seconds, unreachable_grace=grace,
                              identity=self.identity, proxy_users=self.proxy_users)),
            (Site, site_machine(db, self.remotes, self.wake)),
            (WorkflowRun, workflow_machine(db, self.wake, identity=self.identity, wait=self.changes.wait,
                                           quota_defaults=settings.quota_defaults,
                                           secrets=secrets_for(settings.state_dir), proxy_users=self.proxy_users)),
        ]
        self.tasks: dict[str, asyncio.Task] = {}
        self.driving: dict[str, tuple[Any, str]] = {}  # row id -> (model, the op being driven)
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_periodic = 0.0
        self._health: asyncio.Task | None = None  # the host health check in progress, if any
        self._health_shards = leases.Sharded("health", PERIODIC_SECONDS)
        self._retention: asyncio.Task | None = None  # the job retention run in progress, if any
        self._proxy_sweep: asyncio.Task | None = None  # the proxy users' clean-up in progress, if any
        self.pulse = leases.Pulse(db, self.id)
        self.verifications = Verifications(db, self.remotes, self.id, settings.verification_seconds)
        self.lifecycle = Lifecycle(db, self.remotes, self.id, settings.idle_delete_after_seconds,
                                   settings.error_cluster_grace_seconds)
        self.autoscaler = Autoscaler(db, self.remotes, self.id, settings.quota_defaults, self.wake)
        self.pools = Pools(db, self.id, self.identity, settings.quota_defaults, self.wake)

    def wake(self) -> None:
        """Look for work now rather than at the next poll; callable from any thread."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)
            self._loop.call_soon_threadsafe(self.changes.notify)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        stop = stop or asyncio.Event()
        await asyncio.to_thread(self.pulse.start)
        log.info("engine %s started", self.id)
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    self._tick()
                except Exception:  # a database hiccup must not end the engine
                    log.exception("engine %s: scheduling failed; retrying", self.id)
                waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
                waited = time.monotonic()
                await asyncio.wait(waiters, timeout=self.settings.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
                waited = time.monotonic() - waited
                if waited > LAG_WARNING_SECONDS:  # the loop was busy (CPU-starved host, slow database)
                    log.warning("engine %s: its loop lagged %.1f s behind; the machine may be overloaded", self.id,
                                waited)
                for w in waiters:
                    w.cancel()
        finally:
            if self._health is not None:
                self._health.cancel()
            for task in list(self.tasks.values()):
                task.cancel()
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            await self.verifications.stop()
            await self.lifecycle.stop()
            await self.autoscaler.stop()
            await self.pools.stop()
            await asyncio.to_thread(self.pulse.stop)
            await self.remotes.close()

    def _tick(self) -> None:
        engines = len(leases.alive(self.db))
        for model, machine in self.machines:
            # An operation that another one replaced (a delete or cancel asked for meanwhile) stops now; its
            # lease is released once it has, and the new operation is claimed then: the two never overlap.
            mine = {i: op for i, (m, op) in self.driving.items() if m is model}
            for row_id in leases.superseded(self.db, model, mine, self.id):
                self.tasks[row_id].cancel()
            wanted = leases.share(self.db, model, engines, len(mine))
            for row_id, op in leases.claimable(self.db, model, set(self.tasks), wanted):
                if leases.claim(self.db, model, row_id, op, self.id, self.settings.lease_seconds):
                    self.driving[row_id] = (model, op)
                    self.tasks[row_id] = asyncio.create_task(self._drive(model, machine, row_id))
        now = asyncio.get_running_loop().time()
        if now - self._last_periodic >= PERIODIC_CHECK_SECONDS:
            self._last_periodic = now
            self._periodic()

    async def _drive(self, model: Any, machine: Callable, row_id: str) -> None:
        """Drive with the operation's context on every line logged meanwhile: the request that asked for it and
        the operation (`cluster:<id>:create`), so that its story reads across the API's and the engines' logs."""
        kind, op = metrics.model_name(model.__tablename__), self.driving[row_id][1]
        context = self._context_of(model, row_id)
        with logconfig.bound(**{**context, "operation": f"{kind}:{row_id}:{op}", f"{kind}_id": row_id}), \
                metrics.OPERATIONS_IN_FLIGHT.labels(kind, op).track_inprogress():
            await self._drive_bound(model, machine, row_id, kind, op)

    def _context_of(self, model: Any, row_id: str) -> dict[str, str | None]:
        """The request that asked for the row's operation, and the rows it belongs to (a job's cluster, a
        cluster's site). Best effort: a database hiccup here costs the lines their context, not the operation."""
        related = [name for name in ("cluster_id", "site_id") if hasattr(model, name)]
        try:
            with self.db.session() as s:
                row = s.execute(select(model.request_id, *(getattr(model, n) for n in related)).where(
                    model.id == row_id)).first()
        except Exception:  # noqa: BLE001 - the operation itself meets the database next and handles it
            log.warning("engine %s: could not read the context of %s %s", self.id, model.__tablename__, row_id)
            return {}
        return dict(zip(["request_id", *related], row)) if row is not None else {}

    async def _drive_bound(self, model: Any, machine: Callable, row_id: str, kind: str, op: str) -> None:
        me = asyncio.current_task()
        keeper = asyncio.create_task(self._keep_lease(model, row_id, me))
        release = True
        try:
            with fenced(model, row_id, self.id):
                await machine(row_id)
        except asyncio.CancelledError:
            pass  # the lease was lost (another operation preempted this one) or the engine is stopping
        except LeaseLost as e:
            log.warning("engine %s: %s; leaving it to its new owner", self.id, e)
            metrics.OPERATIONS.labels(kind, op, "lost").inc()
            release = False
        except Exception:
            # An engine bug, not a user error: keep the lease until it expires, so that the retry is not a
            # hot loop, and let whichever engine takes it next try again from the recorded step.
            log.exception("engine %s: %s %s failed; it will be retried", self.id, model.__tablename__, row_id)
            metrics.OPERATIONS.labels(kind, op, "error").inc()
            metrics.RETRIES.labels(kind, op, "engine_error").inc()
            release = False
        finally:
            keeper.cancel()
            self.tasks.pop(row_id, None)
            self.driving.pop(row_id, None)
            if release:
                leases.release(self.db, model, row_id, self.id)
            self.wake()

    async def _keep_lease(self, model: Any, row_id: str, task: asyncio.Task) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            if not leases.renew(self.db, model, row_id, self.id, self.settings.lease_seconds):
                log.info("engine %s: lost the lease on %s %s", self.id, model.__tablename__, row_id)
                task.cancel()
                return

    # --- periodic work: each period's run of each task by exactly one engine -------------------------------

    def _periodic(self) -> None:
        slot = leases.claim_period(self.db, "transient-clusters", PERIODIC_SECONDS, self.id)
        if slot is not None:
            log.info("engine %s: periodic transient-clusters slot %d", self.id, slot)
            self._delete_idle_transient()
        slot = leases.claim_period(self.db, "job-retention", RETENTION_SECONDS, self.id)
        if slot is not None and self.settings.job_retention_days > 0:
            log.info("engine %s: periodic job-retention slot %d", self.id, slot)
            self._expire_jobs()
        if self.proxy_users is not None and \
                leases.claim_period(self.db, "proxy-users", SWEEP_SECONDS, self.id) is not None:
            self._sweep_proxy_users()
        if leases.claim_period(self.db, "job-starts", attempts.DUE_SECONDS, self.id) and attempts.start_due(
                self.db, quota_defaults=self.settings.quota_defaults):
            self.wake()  # retried and scheduled jobs whose time has come
        self._check_health()
        self.verifications.tick()
        self.lifecycle.tick()
        self.autoscaler.tick()
        self.pools.tick()

    def _sweep_proxy_users(self) -> None:
        """Remove the proxy users a crash left behind; in a thread (Keystone calls), never two at once."""
        if self._proxy_sweep is not None and not self._proxy_sweep.done():
            return
        assert self.proxy_users is not None
        self._proxy_sweep = asyncio.create_task(asyncio.to_thread(sweep, self.db, self.proxy_users))
        self._proxy_sweep.add_done_callback(_log_sweep_failure)

    def _expire_jobs(self) -> None:
        """Remove the logs (and, once their cluster is gone, the rows) of jobs past the retention; in a thread,
        since a store may be slow, and never two at once."""
        if self._retention is not None and not self._retention.done():
            return
        self._retention = asyncio.create_task(asyncio.to_thread(
            purge_expired, self.db, self.store, self.settings.job_retention_days))
        self._retention.add_done_callback(_log_retention_failure)

    def _check_health(self) -> None:
        """Check the hosts of the sites whose check this engine took for this period (claimed by shard of the
        sites, once per period), unless its previous check still runs (a site cut off makes a check last up to
        its timeout)."""
        if self._health is not None and not self._health.done():
            return
        if not self._health_shards.due():
            return
        with self.db.session() as s:
            site_ids = list(s.scalars(select(Site.id)))
        sites = self._health_shards.claim(self.db, self.id, site_ids)
        if sites:
            log.info("engine %s: periodic health of %d site(s), slot %d", self.id, len(sites),
                     self._health_shards.slot)
            self._health = asyncio.create_task(check_hosts(self.db, self.remotes, sites))
            self._health.add_done_callback(_log_failure)

    def _delete_idle_transient(self) -> None:
        """A transient cluster that is Active with no job left to run is deleted (Sahara's periodic task); the
        database finds them, in one query whatever the number of clusters and jobs."""
        idle_since = utcnow() - timedelta(seconds=TRANSIENT_IDLE_SECONDS)
        busy = select(Job.id).where(Job.cluster_id == Cluster.id, Job.status.not_in(TERMINAL)).exists()
        with self.db.session() as s:
            for c in s.scalars(select(Cluster).where(
                    Cluster.is_transient, Cluster.status == ClusterStatus.ACTIVE, Cluster.op.is_(None), ~busy,
                    func.coalesce(Cluster.updated_at, Cluster.created_at) < idle_since)):
                c.status, c.op, c.op_step, c.op_target = ClusterStatus.DELETING, ClusterOp.DELETE, None, {}


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("host health check failed", exc_info=task.exception())


def _log_sweep_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the proxy users' clean-up failed; tried again next period", exc_info=task.exception())


def _log_retention_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("job retention failed; tried again next period", exc_info=task.exception())
