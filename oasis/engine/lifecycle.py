"""Lifecycle limits, enforced: periodic work (claimed per period, so one engine runs each period's sweep) that
finds clusters past a limit (oasis/db/lifecycle.py: `delete_at`, `max_age`, `idle_delete_after`, and the grace of
a cluster left in Error) and asks for their deletion as the transient-cluster task and the API do (status
DELETING, op DELETE); the deletion then runs on the cluster's trust, like any other. Each such deletion is an
event on the cluster's event log (and a line in the engine's log) naming the limit and why it fired.

Idle means no job running or pending (the rows say) and nothing using the framework: a Dask client connected or
tasks processing, a Spark application running (the plugin's `activity`, asked from the scheduler or master with
the cluster's credentials). That is sampled: each cluster with an idle limit is asked every tenth of its limit
(10 s to 5 min), and once more just before the limit would delete it; what it found is kept on the cluster
(`spec["activity"]`) and counts as use at that moment."""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import load_only

from oasis.db import lifecycle
from oasis.db.models import Cluster, ProvisionEvent, ProvisionStep, utcnow
from oasis.db.session import Database
from oasis.db.states import ClusterOp, ClusterStatus
from oasis.engine import leases
from oasis.engine.views import build_view
from oasis.plugins import get_plugin
from oasis.remote.hosts import Remotes

log = logging.getLogger(__name__)

PERIOD_SECONDS = 5.0  # a limit fires at most this late (plus the deletion itself)
PROBE_TIMEOUT = 40.0  # a framework that does not answer within this is taken as unused
PROBES_AT_ONCE = 8
STEP_TYPE = "Engine: lifecycle"
# The columns a sweep reads of every cluster (oasis.db.lifecycle.deadlines)
SWEPT = (Cluster.id, Cluster.spec, Cluster.status, Cluster.op, Cluster.is_protected, Cluster.created_at,
         Cluster.updated_at)


def probe_every(idle: int) -> float:
    """How often a cluster's framework is asked whether something uses it: a tenth of its idle limit, so that
    a client gone just after a look costs at most that much of the limit, within 10 s and 5 min."""
    return min(300.0, max(10.0, idle / 10))


class Lifecycle:
    """What one engine runs of the lifecycle limits: a sweep per period it claims, never two at once."""

    def __init__(self, db: Database, remotes: Remotes, engine_id: str, idle_default: float,
                 error_grace: float) -> None:
        self.db, self.remotes, self.engine_id = db, remotes, engine_id
        self.idle_default, self.error_grace = idle_default, error_grace
        self._probed: dict[str, float] = {}  # cluster -> when this engine last asked its framework (monotonic)
        self._task: asyncio.Task | None = None

    def tick(self) -> None:
        if self._task is not None and not self._task.done():
            return
        if leases.claim_period(self.db, "lifecycle", PERIOD_SECONDS, self.engine_id) is None:
            return
        self._task = asyncio.create_task(self.sweep())
        self._task.add_done_callback(_log_failure)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def sweep(self, now: datetime | None = None) -> list[tuple[str, str]]:
        """One look at every cluster: (cluster id, limit) of those whose deletion it asked for."""
        now = now or utcnow()
        fired: dict[str, lifecycle.Due] = {}
        to_probe: list[str] = []
        with self.db.session() as s:
            # what the limits read, not the whole row: the secrets (decrypted on load) and the key stay unread
            rows = list(s.scalars(select(Cluster).options(load_only(*SWEPT)).where(
                Cluster.status != ClusterStatus.DELETING,
                or_(Cluster.op.is_(None), Cluster.op != ClusterOp.DELETE))))
            used = lifecycle.activity(s, [c.id for c in rows])
            for c in rows:
                dues = lifecycle.deadlines(c, used[c.id], self.idle_default, self.error_grace)
                past = [d for d in dues if d.at <= now]
                hard = [d for d in past if d.limit != "idle_delete_after"]
                if hard:
                    fired[c.id] = hard[0]
                elif past:  # idle by the rows: unless its framework is in use
                    fired[c.id] = past[0]
                    to_probe.append(c.id)
                elif any(d.limit == "idle_delete_after" for d in dues):
                    idle = lifecycle.limits(c.spec or {}, self.idle_default).idle or 0
                    if time.monotonic() - self._probed.get(c.id, float("-inf")) >= probe_every(idle):
                        to_probe.append(c.id)
        in_use = await self._probe_all(to_probe)
        for cluster_id, what in in_use.items():
            self._record(cluster_id, what, now)
            if fired.get(cluster_id) is not None and fired[cluster_id].limit == "idle_delete_after":
                del fired[cluster_id]
        done = []
        for cluster_id, due in fired.items():
            if self._delete(cluster_id, due.limit, now):
                done.append((cluster_id, due.limit))
        swept = {c.id for c in rows}  # once, not per entry: the clean-up stays linear in the clusters
        self._probed = {k: v for k, v in self._probed.items() if k in swept}
        return done

    # --- is the framework in use -----------------------------------------------------------------------------

    async def _probe_all(self, cluster_ids: list[str]) -> dict[str, str]:
        gate = asyncio.Semaphore(PROBES_AT_ONCE)

        async def one(cluster_id: str) -> tuple[str, str | None]:
            async with gate:
                self._probed[cluster_id] = time.monotonic()
                return cluster_id, await self._probe(cluster_id)

        found = await asyncio.gather(*(one(cid) for cid in cluster_ids))
        return {cid: what for cid, what in found if what}

    async def _probe(self, cluster_id: str) -> str | None:
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
            plugin = get_plugin(c.plugin_name) if c is not None else None
            if c is None or plugin is None or c.status != ClusterStatus.ACTIVE or not c.secrets:
                return None
            view = build_view(s, self.remotes, c, ("active",))
            view.secrets = dict(c.secrets)
        try:
            return await asyncio.wait_for(plugin.activity(view), PROBE_TIMEOUT)
        except asyncio.TimeoutError:
            return None
        except Exception:  # noqa: BLE001 - a plugin bug must not stop the sweep; the rows still decide
            log.exception("cluster %s: asking its framework whether it is in use failed", cluster_id)
            return None

    def _record(self, cluster_id: str, what: str, now: datetime) -> None:
        """Use seen now; the cluster's `updated_at` is left alone (it is the row's own change time)."""
        with self.db.session() as s:
            c = s.scalars(select(Cluster).where(Cluster.id == cluster_id).with_for_update()).first()
            if c is not None:
                s.execute(update(Cluster).where(Cluster.id == cluster_id).values(
                    spec={**c.spec, "activity": {"seen_at": lifecycle.iso(now), "what": what}},
                    updated_at=Cluster.updated_at))

    # --- deletion -----------------------------------------------------------------------------------------------

    def _delete(self, cluster_id: str, limit: str, now: datetime) -> bool:
        """Ask for the deletion if the limit still holds under the row's lock (a job may have started, the user
        may have changed the limit or deleted the cluster meanwhile)."""
        with self.db.session() as s:
            c = s.scalars(select(Cluster).where(Cluster.id == cluster_id).with_for_update()).first()
            if c is None or c.status == ClusterStatus.DELETING or c.op == ClusterOp.DELETE:
                return False
            dues = lifecycle.deadlines(c, lifecycle.activity(s, [c.id])[c.id], self.idle_default, self.error_grace)
            due = next((d for d in dues if d.limit == limit and d.at <= now), None)
            if due is None:
                return False
            message = f"Deleted by its {limit} limit: {due.why}"
            # A deletion replaces what was in flight (a create that outlived max_age), as the API's does: the
            # engine driving that operation stops and lets go first.
            c.status, c.status_description = ClusterStatus.DELETING, message[:2000]
            c.op, c.op_step, c.op_target = ClusterOp.DELETE, None, {"force": False}
            step = ProvisionStep(cluster_id=c.id, project_id=c.project_id, step_name=f"Lifecycle: {limit}",
                                 step_type=STEP_TYPE, total=1, successful=True, duration=0.0)
            s.add(step)
            s.flush()
            s.add(ProvisionEvent(step_id=step.id, event_info=message[:4000], successful=True))
            log.warning("cluster %s (%s): %s", c.name, c.id, message)
        return True


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the lifecycle sweep failed; tried again next period", exc_info=task.exception())
