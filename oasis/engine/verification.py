"""Cluster verification (Sahara's health checks), run by the engine: the framework itself (the plugin's
`health`: does the scheduler or master answer, which workers has it registered) and the health of the hosts
the instances live on (what oasis/engine/health.py records), into GREEN, YELLOW or RED with a reason per check.

Two ways in, both periodic work claimed per period (`leases.claim_period`), so that each is done by one engine:
- on demand: the API's `PATCH /v2/clusters/{id}` with `{"verification": {"status": "START"}}` writes a
  verification in CHECKING on the cluster (`spec["verification"]`); an engine claims that verification's run
  (`verify:<cluster>:<verification>`, again every REQUEST_RETRY_SECONDS if the engine that ran it died);
- every `OASIS_VERIFICATION_SECONDS` (0: never) for each Active cluster, claimed by shard of the clusters
  (`verify#<shard>`, oasis.engine.leases.Sharded): the engine that wins a shard verifies its clusters.

A verification never changes the cluster's status; a change of its health is an event on the cluster's event
log, and a warning in the engine's log."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update

from oasis.db.health import host_health
from oasis.db.models import Cluster, Host, Instance, ProvisionEvent, ProvisionStep, new_id, utcnow
from oasis.db.session import Database
from oasis.db.states import ClusterStatus
from oasis.engine import leases
from oasis.engine.views import build_view
from oasis.plugins import get_plugin
from oasis.plugins.base import FrameworkHealth
from oasis.remote.hosts import Remotes

log = logging.getLogger(__name__)

GREEN, YELLOW, RED, CHECKING = "GREEN", "YELLOW", "RED", "CHECKING"
FINAL = (GREEN, YELLOW, RED)
ORDER = {GREEN: 0, YELLOW: 1, RED: 2}
CHECK_TIMEOUT = 60.0  # a framework that answers nothing within this is reported as such
# A requested verification still CHECKING this long after an engine took it (that engine died) is run again;
# longer than CHECK_TIMEOUT, so that two runs of one request never overlap.
REQUEST_RETRY_SECONDS = 90.0
STEP_TYPE = "Engine: verify cluster"  # the event log's steps of health changes


# --- the decision (pure) --------------------------------------------------------------------------------------


@dataclass
class HostState:
    """A host that instances of the cluster live on, as its last health check saw it."""

    name: str
    reachable: bool | None  # None: not checked yet
    error: str | None = None
    since: str | None = None  # unreachable since
    masters: list[str] = field(default_factory=list)  # instances here that run the master process
    others: list[str] = field(default_factory=list)  # every other instance here


def framework_checks(fw: FrameworkHealth) -> list[tuple[str, str, str]]:
    """(name, status, description) of the master and of the workers, from what the plugin found."""
    master = fw.master.capitalize()
    out = [(f"{master} alive", GREEN if fw.master_up else RED, fw.detail)]
    missing = [n for n in fw.expected if n not in fw.registered]
    total = len(fw.expected)
    if not fw.master_up:
        out.append(("Workers registered", RED, f"Unknown: the {fw.master} does not answer"))
    elif not total:
        out.append(("Workers registered", YELLOW, "The cluster has no worker instance"))
    elif not missing:
        out.append(("Workers registered", GREEN, f"All {total} workers are registered with the {fw.master}"))
    elif len(missing) == total:
        out.append(("Workers registered", RED, f"No worker is registered with the {fw.master} (0 of {total}); "
                                               f"missing: {', '.join(missing)}"))
    else:
        out.append(("Workers registered", YELLOW, f"{total - len(missing)} of {total} workers are registered with "
                                                  f"the {fw.master}; missing: {', '.join(missing)}"))
    return out


def host_check(master: str, hosts: list[HostState]) -> tuple[str, str, str]:
    """RED if a host that runs the master does not answer, YELLOW if only hosts of workers do not."""
    def why(h: HostState) -> str:
        held = ", ".join(h.masters + h.others)
        since = f" since {h.since}" if h.since else ""
        return f"{h.name} (instances {held}) unreachable{since}: {h.error or 'no answer'}"

    down = [h for h in hosts if h.reachable is False]
    master_down = [h for h in down if h.masters]
    unchecked = [h.name for h in hosts if h.reachable is None]
    if master_down:
        return ("Hosts reachable", RED, f"The {master}'s host does not answer: "
                + "; ".join(why(h) for h in master_down + [h for h in down if not h.masters]))
    if down:
        return ("Hosts reachable", YELLOW, "Hosts of workers do not answer: " + "; ".join(why(h) for h in down))
    note = f" ({len(unchecked)} not checked yet: {', '.join(unchecked)})" if unchecked else ""
    return ("Hosts reachable", GREEN, f"Every host of the cluster's instances answers{note}")


def decide(fw: FrameworkHealth, hosts: list[HostState]) -> tuple[str, list[tuple[str, str, str]]]:
    """The verification's status (its worst check) and its checks."""
    checks = [*framework_checks(fw), host_check(fw.master, hosts)]
    return max((c[1] for c in checks), key=ORDER.__getitem__), checks


def record(cluster_id: str, verification_id: str, status: str, checks: list[tuple[str, str, str]],
           created_at: str | None = None) -> dict[str, Any]:
    """Sahara's verification shape: id, cluster_id, status, checks [{id, name, status, description, ...}]."""
    now = utcnow().strftime("%Y-%m-%dT%H:%M:%S")  # as the API shows times
    return {"id": verification_id, "cluster_id": cluster_id, "status": status,
            "checks": [{"id": new_id(), "verification_id": verification_id, "name": name, "status": st,
                        "description": description, "created_at": now, "updated_at": now}
                       for name, st, description in checks],
            "created_at": created_at or now, "updated_at": now}


# --- one verification -----------------------------------------------------------------------------------------


async def verify(db: Database, remotes: Remotes, cluster_id: str) -> tuple[str, list[tuple[str, str, str]]] | None:
    """Check one cluster now; None if it is gone or not Active any more."""
    with db.session() as s:
        c = s.get(Cluster, cluster_id)
        if c is None or c.status != ClusterStatus.ACTIVE:
            return None
        plugin = get_plugin(c.plugin_name)
        if plugin is None:
            return None
        view = build_view(s, remotes, c, ("active",))
        view.secrets = dict(c.secrets or {})
        insts = list(s.scalars(select(Instance).where(Instance.cluster_id == c.id, Instance.state == "active")))
        masters = {i.name for i in view.having(plugin.master_process)}
        hosts: dict[str, HostState] = {}
        for inst in insts:
            if inst.host_id not in hosts:
                host = s.get(Host, inst.host_id)
                health = host_health(host)
                reachable = health["reachable"]
                if host.status != "up":  # an operator took it out of service
                    reachable, health["error"] = False, f"host status {host.status}"
                hosts[inst.host_id] = HostState(host.name, reachable, health.get("error"),
                                                health.get("unreachable_since"))
            (hosts[inst.host_id].masters if inst.name in masters else hosts[inst.host_id].others).append(inst.name)
    workers = [i.name for i in view.having(plugin.worker_process)]
    try:
        fw = await asyncio.wait_for(plugin.health(view), CHECK_TIMEOUT)
    except asyncio.TimeoutError:
        fw = FrameworkHealth(plugin.master_process, False, f"no answer within {CHECK_TIMEOUT:.0f} s", workers)
    return decide(fw, sorted(hosts.values(), key=lambda h: h.name))


def save(db: Database, cluster_id: str, requested: str | None, status: str,
         checks: list[tuple[str, str, str]]) -> bool:
    """Write the outcome on the cluster, unless it is not wanted any more: a requested verification that another
    one replaced, or a periodic one while a request is CHECKING (that request writes its own). The cluster's
    `updated_at` is left alone (idle and transient limits count from it). An event if the health changed."""
    with db.session() as s:
        # The row's lock before the read: a no-op UPDATE (SQLite's write lock; PostgreSQL's row lock, as FOR
        # UPDATE takes too). A bare SELECT on SQLite runs outside any transaction, so a verification asked for
        # between it and the write below was overwritten by a periodic outcome, and never answered.
        s.execute(update(Cluster).where(Cluster.id == cluster_id).values(updated_at=Cluster.updated_at))
        c = s.scalars(select(Cluster).where(Cluster.id == cluster_id).with_for_update()).first()
        if c is None:
            return False
        current = (c.spec or {}).get("verification") or {}
        if requested is not None and current.get("id") != requested:
            return False
        if requested is None and current.get("status") == CHECKING:
            return False
        out = record(cluster_id, requested or new_id(), status, checks,
                     current.get("created_at") if requested else None)
        s.execute(update(Cluster).where(Cluster.id == cluster_id).values(
            spec={**c.spec, "verification": out}, updated_at=Cluster.updated_at))
        before = _last_health(s, cluster_id)
        if before != status:
            # a first verification that finds the cluster well is no news
            level = logging.INFO if before is None and status == GREEN else logging.WARNING
            log.log(level, "cluster %s: health %s -> %s", c.name, before or "unknown", status)
            step = ProvisionStep(cluster_id=cluster_id, project_id=c.project_id, step_name=f"Health: {status}",
                                 step_type=STEP_TYPE, total=len(checks), successful=status != RED, duration=0.0)
            s.add(step)
            s.flush()
            for name, st, description in checks:
                s.add(ProvisionEvent(step_id=step.id, event_info=f"{name}: {st}: {description}"[:4000],
                                     successful=st != RED))
    return True


def _last_health(s, cluster_id: str) -> str | None:  # noqa: ANN001
    name = s.scalars(select(ProvisionStep.step_name).where(
        ProvisionStep.cluster_id == cluster_id, ProvisionStep.step_type == STEP_TYPE)
        .order_by(ProvisionStep.created_at.desc())).first()
    return name.split(": ", 1)[1] if name else None


# --- the engine's periodic part -------------------------------------------------------------------------------


class Verifications:
    """What one engine runs of the verifications: those it claimed, one at a time per cluster."""

    def __init__(self, db: Database, remotes: Remotes, engine_id: str, period: float) -> None:
        self.db, self.remotes, self.engine_id, self.period = db, remotes, engine_id, period
        self.tasks: dict[str, asyncio.Task] = {}
        self.shards = leases.Sharded("verify", period) if period > 0 else None

    def tick(self) -> None:
        """Claim and start the verifications that are due: requested ones, and each Active cluster's periodic
        one. Called from the engine's periodic loop (every second): the requested ones are found by the
        database (their status, not every cluster's spec read here); the periodic ones are looked for once per
        period, claimed by shard (oasis.engine.leases.Sharded)."""
        self.tasks = {cid: t for cid, t in self.tasks.items() if not t.done()}
        active = (Cluster.status == ClusterStatus.ACTIVE, Cluster.op.is_(None))
        with self.db.session() as s:
            requested = {cid: vid for cid, vid in s.execute(select(
                Cluster.id, Cluster.spec[("verification", "id")].as_string()).where(
                *active, Cluster.spec[("verification", "status")].as_string() == CHECKING)) if vid}
        for cluster_id, verification_id in requested.items():
            if cluster_id in self.tasks:
                continue
            if leases.claim_period(self.db, f"verify:{cluster_id}:{verification_id}", REQUEST_RETRY_SECONDS,
                                   self.engine_id) is not None:
                self._start(cluster_id, verification_id)
        if self.shards is None or not self.shards.due():
            return
        with self.db.session() as s:
            ids = [i for i in s.scalars(select(Cluster.id).where(*active))
                   if i not in requested and i not in self.tasks]
        for cluster_id in self.shards.claim(self.db, self.engine_id, ids):
            self._start(cluster_id, None)

    def _start(self, cluster_id: str, requested: str | None) -> None:
        self.tasks[cluster_id] = asyncio.create_task(self._run(cluster_id, requested))

    async def _run(self, cluster_id: str, requested: str | None) -> None:
        try:
            outcome = await verify(self.db, self.remotes, cluster_id)
            if outcome is not None:
                save(self.db, cluster_id, requested, *outcome)
        except Exception:  # noqa: BLE001 - an engine bug: logged; a request is tried again after its retry period
            log.exception("verification of cluster %s failed", cluster_id)

    async def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
