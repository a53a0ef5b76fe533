"""Autoscaling: a cluster's worker node groups grow and shrink with the work its framework has.

A cluster's `spec["autoscaling"]` (an oasis extension of cluster create and update, validated by the API,
oasis/api/autoscaling.py) names a policy per worker node group: `min`, `max` and `cooldown` (seconds). Every
AUTOSCALE_SECONDS, for each Active cluster with a policy and no operation in flight, one engine (the period's
claim of the cluster's shard, `autoscale#<shard>`: oasis.engine.leases.Sharded) asks the plugin for the framework's load (`Plugin.load`: pending tasks and busy
cores for Dask, waiting applications and requested cores for Spark), decides (`decide`, pure) and asks for a
scale exactly as the API's scale does: the cluster's `op` SCALE with its target, which the scale operation then
carries out (a scale-down through the plugin's graceful `decommission`). Every decision is an event on the
cluster's event log with its reason.

The idea is dask's Adaptive's (the cores the work asks for, in workers), not its code: the target is the number
of workers whose cores cover the busy cores and the work waiting for one, clamped to [min, max]. It grows at once
(after the cooldown) and shrinks only when nothing waits and only by workers that hold no running work, so that
no task and no stage loses work; the framework moves their data first.

`spec["autoscaler"]` keeps what the autoscaler needs between periods (when it last changed the group, and
whether that scale has ended), on the row: any engine can take the next period.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy import select, update

from oasis.db import quotas
from oasis.db.capacity import Demand
from oasis.db.models import Cluster, Flavor, Instance, NodeGroup, ProvisionEvent, ProvisionStep
from oasis.db.session import Database
from oasis.db.states import ClusterOp, ClusterStatus
from oasis.engine import leases
from oasis.engine.views import build_view
from oasis.plugins import get_plugin
from oasis.plugins.base import Load
from oasis.remote.hosts import Remotes

log = logging.getLogger(__name__)

AUTOSCALE_SECONDS = 2.0  # how often each autoscaled cluster's load is read
LOAD_TIMEOUT = 30.0
STEP_TYPE = "Engine: autoscale"
STATE = "autoscaler"  # the key of the autoscaler's own state in the cluster's spec


# --- the decision (pure) --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    group: str
    min: int
    max: int
    cooldown: float = 0.0


@dataclass(frozen=True)
class Decision:
    group: str
    current: int
    target: int
    reason: str
    remove: list[str] = field(default_factory=list)  # instance names a scale-down removes (idle ones only)


def policies(spec: Mapping[str, Any]) -> list[Policy]:
    """The cluster's policies, from its spec (already validated by the API)."""
    groups = ((spec.get("autoscaling") or {}).get("node_groups") or {})
    return [Policy(name, int(p["min"]), int(p["max"]), float(p.get("cooldown", 0))) for name, p in sorted(groups.items())]


def decide(policy: Policy, load: Load, members: list[str], cores_per_worker: int, other_workers: int = 0,
           now: float = 0.0, last_change: float | None = None) -> Decision | None:
    """The scale the group needs, or None. `members`: the group's instance names, in the order a scale-down
    takes them (the last first); `cores_per_worker`: what one instance of the group brings; `other_workers`:
    workers of the cluster outside the group (their cores serve the same work); `last_change`: when the group
    last changed size (the cooldown counts from there)."""
    current = len(members)
    wanted_cores = load.busy_cores + load.pending
    wanted = math.ceil(wanted_cores / max(1, cores_per_worker)) - other_workers
    target = min(policy.max, max(policy.min, wanted))
    if target == current:
        return None
    if last_change is not None and now - last_change < policy.cooldown and policy.min <= current <= policy.max:
        return None  # cooling down (a group outside its bounds is brought back at once)
    signal = load.describe()
    name = policy.group
    if target > current:
        return Decision(name, current, target, f"scaled {name} {current} → {target}: {signal}")
    if load.pending > 0 and current <= policy.max:
        return None  # work waits for a core: never shrink then
    idle = [m for m in reversed(members) if m not in load.busy]
    remove = idle[:current - target]
    if not remove:
        return None  # every worker that could go holds running work
    target = current - len(remove)
    return Decision(name, current, target, f"scaled {name} {current} → {target}: {signal}; removing idle "
                                           f"{', '.join(remove)}", remove)


# --- the engine's periodic part -------------------------------------------------------------------------------


class Autoscaler:
    """What one engine runs of autoscaling: the clusters whose period it claimed, one at a time per cluster."""

    def __init__(self, db: Database, remotes: Remotes, engine_id: str, quota_defaults: Mapping[str, int],
                 on_change: Callable[[], None]) -> None:
        self.db, self.remotes, self.engine_id = db, remotes, engine_id
        self.quota_defaults, self.on_change = dict(quota_defaults), on_change
        self.tasks: dict[str, asyncio.Task] = {}
        self.shards = leases.Sharded("autoscale", AUTOSCALE_SECONDS)

    def tick(self) -> None:
        """Claim and start this period's look at each autoscaled Active cluster (from the engine's periodic loop):
        once per period, the clusters with a policy found by the database (not every cluster's spec read here),
        claimed by shard (oasis.engine.leases.Sharded)."""
        self.tasks = {cid: t for cid, t in self.tasks.items() if not t.done()}
        if not self.shards.due():
            return
        with self.db.session() as s:
            ids = [i for i in s.scalars(select(Cluster.id).where(
                Cluster.status == ClusterStatus.ACTIVE, Cluster.op.is_(None),
                Cluster.spec["autoscaling"].as_string().is_not(None))) if i not in self.tasks]
        for cluster_id in self.shards.claim(self.db, self.engine_id, ids):
            self.tasks[cluster_id] = asyncio.create_task(self._run(cluster_id))

    async def _run(self, cluster_id: str) -> None:
        try:
            await self.look(cluster_id)
        except Exception:  # noqa: BLE001 - an engine bug: logged; the next period looks again
            log.exception("autoscaling of cluster %s failed", cluster_id)

    async def look(self, cluster_id: str) -> Decision | None:
        """Read the cluster's load, decide, and ask for the scale the decision wants."""
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
            if c is None or c.status != ClusterStatus.ACTIVE or c.op is not None:
                return None
            state = dict((c.spec or {}).get(STATE) or {})
            if state.get("asked"):
                # the scale asked for has ended: the cooldown counts from now
                self._save_state(s, c, {**state, "asked": False, "changed_at": time.time()})
                return None
            plugin = get_plugin(c.plugin_name)
            pols = policies(c.spec or {})
            if plugin is None or not pols:
                return None
            view = build_view(s, self.remotes, c, ("active",))
            view.secrets = dict(c.secrets or {})
            groups = {ng.name: ng for ng in s.scalars(select(NodeGroup).where(NodeGroup.cluster_id == c.id))}
            members = {name: [i.name for i in sorted(s.scalars(select(Instance).where(
                Instance.node_group_id == ng.id)), key=lambda i: i.index)] for name, ng in groups.items()}
        try:
            load = await asyncio.wait_for(plugin.load(view), LOAD_TIMEOUT)
        except asyncio.TimeoutError:
            load = None
        if load is None:
            return None
        workers = {i.name: i for i in view.having(plugin.worker_process)}
        for p in pols:
            mine = [m for m in members.get(p.group, []) if m in workers]
            if p.group not in groups:
                continue
            cores = workers[mine[0]].vcpus if mine else _flavor_vcpus(self.db, groups[p.group])
            others = sum(1 for w in workers.values() if w.node_group != p.group)
            decision = decide(p, load, mine, cores, others, time.time(), state.get("changed_at"))
            if decision is not None:
                self.ask(cluster_id, decision)
                return decision
        return None

    def ask(self, cluster_id: str, d: Decision) -> bool:
        """Write the scale (as the API's scale does) and the decision's event, unless the cluster changed
        meanwhile (another operation, not Active) or a growth would take its project over its quota."""
        with self.db.session() as s:
            c = s.scalars(select(Cluster).where(Cluster.id == cluster_id).with_for_update()).first()
            if c is None or c.status != ClusterStatus.ACTIVE or c.op is not None:
                return False
            ng = s.scalars(select(NodeGroup).where(NodeGroup.cluster_id == c.id, NodeGroup.name == d.group)).first()
            if ng is None:
                return False
            if d.target > d.current:
                flavor = s.get(Flavor, ng.spec.get("flavor_id"))
                try:
                    if flavor is not None:
                        grow = [Demand.of(flavor.vcpus, flavor.ram_mb, flavor.disk_gb, ng.spec)] * (d.target - d.current)
                        quotas.check(s, c.project_id, c.project_id, quotas.demand(grow), self.quota_defaults)
                except quotas.QuotaExceeded as e:
                    self._event(s, c, f"Autoscale: {d.group} not scaled", f"{d.reason}; not done: {e}", False)
                    self._save_state(s, c, {"asked": False, "changed_at": time.time()})
                    return False
            ids = {i.name: i.id for i in s.scalars(select(Instance).where(Instance.node_group_id == ng.id))}
            target = {"resize": {d.group: d.target}, "add": {}, "remove": [ids[n] for n in d.remove if n in ids]}
            # conditional: an operation the API wrote since (a scale, a delete) wins, and this one is not asked
            asked = s.execute(update(Cluster).where(
                Cluster.id == c.id, Cluster.status == ClusterStatus.ACTIVE, Cluster.op.is_(None)).values(
                status=ClusterStatus.VALIDATING, status_description="", op=ClusterOp.SCALE, op_step=None,
                op_target=target, spec={**c.spec, STATE: {"asked": True, "changed_at": time.time(), "last": d.reason}}))
            if asked.rowcount != 1:
                return False
            self._event(s, c, f"Autoscale: {d.group} {d.current} → {d.target}", d.reason, True)
        log.info("cluster %s: %s", cluster_id, d.reason)
        self.on_change()
        return True

    @staticmethod
    def _save_state(s, c: Cluster, state: dict[str, Any]) -> None:  # noqa: ANN001
        # the cluster's `updated_at` is left alone: idle and transient limits count from it
        s.execute(update(Cluster).where(Cluster.id == c.id).values(spec={**c.spec, STATE: state},
                                                                   updated_at=Cluster.updated_at))

    @staticmethod
    def _event(s, c: Cluster, name: str, info: str, ok: bool) -> None:  # noqa: ANN001
        step = ProvisionStep(cluster_id=c.id, project_id=c.project_id, step_name=name, step_type=STEP_TYPE,
                             total=1, successful=ok, duration=0.0)
        s.add(step)
        s.flush()
        s.add(ProvisionEvent(step_id=step.id, event_info=info[:4000], successful=ok))

    async def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


def _flavor_vcpus(db: Database, ng: NodeGroup) -> int:
    with db.session() as s:
        f = s.get(Flavor, (ng.spec or {}).get("flavor_id"))
        return int(f.vcpus) if f is not None else 1
