"""The engine: finds operations nobody holds, takes their lease, and drives each with its reconciler while
renewing the lease. Any number of engines may run on one database; each operation is driven by one at a time.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import uuid
from datetime import timedelta
from typing import Any, Callable

from sqlalchemy import delete, select

from oasis.config import Settings
from oasis.db.models import Cluster, Heartbeat, Job, Site, utcnow
from oasis.db.session import Database
from oasis.edp.statuses import TERMINAL
from oasis.engine import leases
from oasis.engine.clusters import ClusterReconciler
from oasis.engine.health import check_hosts
from oasis.engine.jobs import JobReconciler
from oasis.engine.sites import SiteReconciler
from oasis.remote.hosts import Remotes
from oasis.storage.base import ObjectStore
from oasis.storage.secrets import secrets_for

log = logging.getLogger(__name__)

TRANSIENT_IDLE_SECONDS = 30.0  # Sahara's min_transient_cluster_active_time
PERIODIC_SECONDS = 10.0


class Engine:
    def __init__(self, settings: Settings, db: Database, store: ObjectStore) -> None:
        self.settings, self.db = settings, db
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.remotes = Remotes()
        self.reconcilers: list[tuple[Any, Callable]] = [
            (Cluster, ClusterReconciler(db, self.remotes, self.wake,
                                        unreachable_grace=settings.unreachable_grace_seconds)),
            (Job, JobReconciler(db, self.remotes, store, self.wake, secrets_for(settings.state_dir),
                               access_ttl=settings.s3_access_ttl_seconds,
                               unreachable_grace=settings.unreachable_grace_seconds)),
            (Site, SiteReconciler(db, self.remotes, self.wake)),
        ]
        self.tasks: dict[str, asyncio.Task] = {}
        self.driving: dict[str, tuple[Any, str]] = {}  # row id -> (model, the op being driven)
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_periodic = 0.0
        self._health: asyncio.Task | None = None  # the host health check in progress, if any

    def wake(self) -> None:
        """Look for work now rather than at the next poll; callable from any thread."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        stop = stop or asyncio.Event()
        log.info("engine %s started", self.id)
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    self._tick()
                except Exception:  # a database hiccup must not end the engine
                    log.exception("engine %s: scheduling failed; retrying", self.id)
                waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
                await asyncio.wait(waiters, timeout=self.settings.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
        finally:
            if self._health is not None:
                self._health.cancel()
            for task in list(self.tasks.values()):
                task.cancel()
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            with self.db.session() as s:
                s.execute(delete(Heartbeat).where(Heartbeat.engine_id == self.id))
            await self.remotes.close()

    def _tick(self) -> None:
        for model, reconciler in self.reconcilers:
            # An operation that another one replaced (a delete or cancel asked for meanwhile) stops now; its
            # lease is released once it has, and the new operation is claimed then: the two never overlap.
            mine = {i: op for i, (m, op) in self.driving.items() if m is model}
            for row_id in leases.superseded(self.db, model, mine, self.id):
                self.tasks[row_id].cancel()
            for row_id, op in leases.claimable(self.db, model, set(self.tasks)):
                if leases.claim(self.db, model, row_id, op, self.id, self.settings.lease_seconds):
                    self.driving[row_id] = (model, op)
                    self.tasks[row_id] = asyncio.create_task(self._drive(model, reconciler, row_id))
        now = asyncio.get_running_loop().time()
        if now - self._last_periodic >= PERIODIC_SECONDS:
            self._last_periodic = now
            self._periodic()

    async def _drive(self, model: Any, reconciler: Callable, row_id: str) -> None:
        me = asyncio.current_task()
        keeper = asyncio.create_task(self._keep_lease(model, row_id, me))
        release = True
        try:
            await reconciler(row_id)
        except asyncio.CancelledError:
            pass  # the lease was lost (another operation preempted this one) or the engine is stopping
        except Exception:
            # An engine bug, not a user error: keep the lease until it expires, so that the retry is not a
            # hot loop, and let whichever engine takes it next try again from the recorded step.
            log.exception("engine %s: %s %s failed; it will be retried", self.id, model.__tablename__, row_id)
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

    # --- periodic work, sharded over the engines alive ------------------------------------------------------

    def _periodic(self) -> None:
        now = utcnow()
        with self.db.session() as s:
            beat = s.get(Heartbeat, self.id)
            if beat is None:
                s.add(Heartbeat(engine_id=self.id, seen_at=now))
            else:
                beat.seen_at = now
            stale = now - timedelta(seconds=max(30.0, 3 * PERIODIC_SECONDS))
            s.execute(delete(Heartbeat).where(Heartbeat.seen_at < stale))
        with self.db.session() as s:
            engines = sorted(s.scalars(select(Heartbeat.engine_id)))
        self._delete_idle_transient(engines)
        self._check_health(engines)

    def _check_health(self, engines: list[str]) -> None:
        """Check the hosts of this engine's share of the sites, unless the previous check still runs (a site
        cut off makes a check last up to its timeout)."""
        if self._health is not None and not self._health.done():
            return
        with self.db.session() as s:
            sites = [i for i in s.scalars(select(Site.id)) if self._mine(i, engines)]
        self._health = asyncio.create_task(check_hosts(self.db, self.remotes, sites))
        self._health.add_done_callback(_log_failure)

    def _mine(self, row_id: str, engines: list[str]) -> bool:
        if self.id not in engines:
            return True
        digest = int(hashlib.md5(row_id.encode()).hexdigest(), 16)
        return engines[digest % len(engines)] == self.id

    def _delete_idle_transient(self, engines: list[str]) -> None:
        """A transient cluster that is Active with no job left to run is deleted (Sahara's periodic task)."""
        idle_since = utcnow() - timedelta(seconds=TRANSIENT_IDLE_SECONDS)
        with self.db.session() as s:
            for c in s.scalars(select(Cluster).where(Cluster.is_transient, Cluster.status == "Active",
                                                     Cluster.op.is_(None))):
                if not self._mine(c.id, engines):
                    continue
                busy = s.scalars(select(Job.id).where(Job.cluster_id == c.id, Job.status.not_in(TERMINAL))).first()
                if busy is None and (c.updated_at or c.created_at) < idle_since:
                    c.status, c.op, c.op_step, c.op_target = "Deleting", "delete", None, {}


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("host health check failed", exc_info=task.exception())
