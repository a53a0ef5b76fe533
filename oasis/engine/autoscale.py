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

Worst cases, each an event once rather than once a period:
- a scale it asked for fails (the cluster returns to Active with `status_description`): it waits before it asks
  again, FAILURE_BACKOFF doubling with each failure in a row up to FAILURE_BACKOFF_MAX; the first failure of a
  row is an event, the later ones are logged;
- a growth its project's quota refuses: the largest growth the quota allows is asked instead; if none, an event,
  and not another until the load has stopped asking for growth (it is checked again each period, silently);
- the user scales or deletes the cluster meanwhile: the ask is a conditional UPDATE, theirs wins;
- workers that died (members the framework has not registered): see `decide`.
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
FAILURE_BACKOFF = 30.0  # seconds without asks after a failed scale, doubled with each failure in a row ...
FAILURE_BACKOFF_MAX = 600.0  # ... up to this


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
    last changed size (the cooldown counts from there).

    A member the framework has not registered (`load.workers`; a worker that died) brings no cores but counts
    towards `max`: the group grows to replace its cores, never beyond `max` however many die, and a scale-down
    takes such members first (they hold no work). An empty `load.workers` says nothing of registration."""
    current = len(members)
    registered = set(load.workers) if load.workers else set(members)
    dead = [m for m in members if m not in registered]
    wanted_cores = load.busy_cores + load.pending
    needed = math.ceil(wanted_cores / max(1, cores_per_worker)) - other_workers  # registered workers needed
    grow_to = min(policy.max, max(policy.min, needed + len(dead)))
    shrink_to = min(policy.max, max(policy.min, needed))
    target = grow_to if grow_to > current else shrink_to
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
    idle = dead + [m for m in reversed(members) if m not in load.busy and m not in dead]
    remove = idle[:current - target]
    if not remove:
        return None  # every worker that could go holds running work
    target = current - len(remove)
    gone = f" (not registered: {', '.join(m for m in remove if m in dead)})" if set(remove) & set(dead) else ""
    return Decision(name, current, target, f"scaled {name} {current} → {target}: {signal}; removing idle "
                                           f"{', '.join(remove)}{gone}", remove)


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
                self._ended(s, c, state)
                return None
            if time.time() < float(state.get("retry_at") or 0):
                return None  # backing off after a failed scale
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
                return self.ask(cluster_id, decision)
        if state.get("refused"):  # the load no longer asks for the growth the quota refused: a new one is news
            with self.db.session() as s:
                c = s.get(Cluster, cluster_id)
                if c is not None:
                    self._save_state(s, c, {k: v for k, v in ((c.spec or {}).get(STATE) or {}).items()
                                            if k != "refused"})
        return None

    def _ended(self, s, c: Cluster, state: dict[str, Any]) -> None:  # noqa: ANN001
        """Note the end of the scale asked for: the cooldown counts from now; a failure backs off."""
        now = time.time()
        keep = {k: v for k, v in state.items() if k not in ("asked", "retry_at", "failures")}
        if not c.status_description:
            self._save_state(s, c, {**keep, "asked": False, "changed_at": now})
            return
        failures = int(state.get("failures") or 0) + 1
        wait = min(FAILURE_BACKOFF_MAX, FAILURE_BACKOFF * 2 ** (failures - 1))
        group = state.get("group") or "worker"
        if failures == 1:
            self._event(s, c, f"Autoscale: {group} scale failed",
                        f"{state.get('last') or 'the scale'}: failed: {c.status_description[:1500]}; the autoscaler "
                        f"waits {wait:.0f} s before it asks again (longer after each failure in a row)", False)
        log.warning("cluster %s: the autoscaler's scale failed (%d in a row); next ask in %.0f s", c.id, failures,
                    wait)
        self._save_state(s, c, {**keep, "asked": False, "changed_at": now, "failures": failures,
                                "retry_at": now + wait})

    def ask(self, cluster_id: str, d: Decision) -> Decision | None:
        """Write the scale (as the API's scale does) and the decision's event, unless the cluster changed
        meanwhile (another operation, not Active) or no growth fits its project's quota (the largest that fits
        is asked for instead of a larger one). The decision asked for, or None."""
        with self.db.session() as s:
            c = s.scalars(select(Cluster).where(Cluster.id == cluster_id).with_for_update()).first()
            if c is None or c.status != ClusterStatus.ACTIVE or c.op is not None:
                return None
            ng = s.scalars(select(NodeGroup).where(NodeGroup.cluster_id == c.id, NodeGroup.name == d.group)).first()
            if ng is None:
                return None
            state = dict((c.spec or {}).get(STATE) or {})
            if d.target > d.current:
                fits, refusal = self._quota_fit(s, c, ng, d)
                if fits is None:
                    if not state.get("refused"):  # once, until the load stops asking for growth
                        self._event(s, c, f"Autoscale: {d.group} not scaled", f"{d.reason}; not done: {refusal}",
                                    False)
                        self._save_state(s, c, {**state, "refused": True})
                    return None
                if fits != d.target:
                    d = Decision(d.group, d.current, fits, d.reason.replace(f"→ {d.target}:", f"→ {fits}:", 1)
                                 + f" (not {d.target}: {refusal})")
            ids = {i.name: i.id for i in s.scalars(select(Instance).where(Instance.node_group_id == ng.id))}
            target = {"resize": {d.group: d.target}, "add": {}, "remove": [ids[n] for n in d.remove if n in ids]}
            # conditional: an operation the API wrote since (a scale, a delete) wins, and this one is not asked
            asked = s.execute(update(Cluster).where(
                Cluster.id == c.id, Cluster.status == ClusterStatus.ACTIVE, Cluster.op.is_(None)).values(
                status=ClusterStatus.VALIDATING, status_description="", op=ClusterOp.SCALE, op_step=None,
                op_target=target, spec={**c.spec, STATE: {
                    **{k: v for k, v in state.items() if k in ("failures",)}, "asked": True, "changed_at": time.time(),
                    "last": d.reason, "group": d.group}}))
            if asked.rowcount != 1:
                return None
            self._event(s, c, f"Autoscale: {d.group} {d.current} → {d.target}", d.reason, True)
        log.info("cluster %s: %s", cluster_id, d.reason)
        self.on_change()
        return d

    def _quota_fit(self, s, c: Cluster, ng: NodeGroup, d: Decision) -> tuple[int | None, str]:  # noqa: ANN001
        """The largest target up to `d.target` whose growth the project's quota allows (None: not even one more
        instance), and the quota's refusal of the larger ones."""
        flavor = s.get(Flavor, (ng.spec or {}).get("flavor_id"))
        if flavor is None:
            return d.target, ""
        refusal = ""
        for target in range(d.target, d.current, -1):
            grow = [Demand.of(flavor.vcpus, flavor.ram_mb, flavor.disk_gb, ng.spec)] * (target - d.current)
            try:
                quotas.check(s, c.project_id, c.project_id, quotas.demand(grow), self.quota_defaults)
            except quotas.QuotaExceeded as e:
                refusal = refusal or str(e)
                continue
            return target, refusal
        return None, refusal

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
