"""Per-project quotas: what a project may hold (clusters, instances, vCPUs, RAM, volume GB, running jobs), what it
holds now, and the one atomic check that every create, scale and job run goes through.

How the check is atomic, on SQLite and PostgreSQL alike, through any number of API replicas: a request that a
limit bounds first locks its project's `project_quotas` row (made if missing, then a no-op UPDATE: a row lock
on PostgreSQL, the database's write lock on SQLite, as placement locks a site's hosts), then counts the
project's usage from the real rows, compares, and writes its own rows in the same transaction. A second request
for the project waits at the lock until the first commits, and then counts what the first wrote.

Why a lock row and counting rather than a usage counter kept beside the limits (`used = used + n WHERE used + n
<= limit`): a counter must be given back by every path that frees something (a delete, a scale-down, a failed
scale's rollback, a job's end, the engine's clean-ups), and one path that forgets makes it drift for good.
Counted from the rows under the lock, usage is released by the rows going away, whoever removes them."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from oasis.db import volumes
from oasis.db.capacity import Demand
from oasis.db.models import Cluster, Flavor, Instance, Job, NodeGroup, ProjectQuota
from oasis.db.states import ClusterOp, ClusterStatus

KEYS = ("clusters", "instances", "vcpus", "ram_mb", "volume_gb", "running_jobs")
UNLIMITED = -1
# Sahara's terminal job statuses: oasis.edp.statuses.TERMINAL, which the database layer may not import (a unit
# test keeps the two equal). A job in any other status counts as running.
JOB_ENDED = frozenset({"SUCCEEDED", "FAILED", "KILLED", "DONEWITHERROR", "SUSPENDFAILED"})


class QuotaExceeded(Exception):
    """A request would take the project over one of its limits; the message names each: requested, used, limit."""

    def __init__(self, project: str, over: list[tuple[str, int, int, int]]) -> None:
        self.over = over
        super().__init__(f"Quota exceeded for project '{project}': " + "; ".join(
            f"{key}: requested {requested}, used {used}, limit {limit}" for key, requested, used, limit in over))


def demand(instances: Iterable[Demand], clusters: int = 0) -> dict[str, int]:
    """What new clusters (or a scale's new instances) ask of the project's quota."""
    wanted = list(instances)
    return {"clusters": clusters, "instances": len(wanted), "vcpus": sum(d.vcpus for d in wanted),
            "ram_mb": sum(d.ram_mb for d in wanted), "volume_gb": sum(d.volume_gb for d in wanted)}


def limits(s: Session, project_id: str, defaults: Mapping[str, int]) -> dict[str, int]:
    """The project's limits: its own where an administrator set them, else the deployment's; -1 is unlimited."""
    row = s.get(ProjectQuota, project_id, populate_existing=True)
    own = {key: getattr(row, key) for key in KEYS} if row is not None else {}
    return {key: own[key] if own.get(key) is not None else int(defaults.get(key, UNLIMITED)) for key in KEYS}


def usage(s: Session, project_id: str) -> dict[str, int]:
    """What the project holds now, from its rows. A cluster counts from its create until its delete is asked for
    (in Error too: its node groups still claim their instances until it is deleted), each node group at the
    most of its count, a scale's target for it and the instances it has (so a scale-down frees its instances
    once they are gone, and a failed scale that keeps them still counts them). A job counts until it ends."""
    live = select(Cluster.id).where(Cluster.project_id == project_id, Cluster.status != ClusterStatus.DELETING)
    clusters = {cid: (op, target) for cid, op, target in s.execute(
        select(Cluster.id, Cluster.op, Cluster.op_target).where(Cluster.id.in_(live)))}
    have = dict(s.execute(select(Instance.node_group_id, func.count(Instance.id))
                          .where(Instance.cluster_id.in_(live)).group_by(Instance.node_group_id)).all())
    flavors = {f.id: f for f in s.scalars(select(Flavor))}
    out = dict.fromkeys(KEYS, 0)
    out["clusters"] = len(clusters)
    for ng_id, cluster_id, name, count, spec in s.execute(
            select(NodeGroup.id, NodeGroup.cluster_id, NodeGroup.name, NodeGroup.count, NodeGroup.spec)
            .where(NodeGroup.cluster_id.in_(live))):
        op, target = clusters.get(cluster_id, (None, None))
        n = max(count or 0, have.get(ng_id, 0), _scale_target(op, target or {}).get(name, 0))
        flavor = flavors.get(str((spec or {}).get("flavor_id")))
        out["instances"] += n
        if flavor is not None:
            out["vcpus"] += n * flavor.vcpus
            out["ram_mb"] += n * flavor.ram_mb
        out["volume_gb"] += n * volumes.of_node_group(spec or {}).total_gb
    out["running_jobs"] = int(s.scalar(select(func.count(Job.id)).where(
        Job.project_id == project_id, Job.status.not_in(JOB_ENDED))) or 0) - _recurring(s, project_id)
    return out


def _recurring(s: Session, project_id: str) -> int:
    """How many of the project's open jobs are recurring jobs between their times: such a row never runs
    itself (each time makes a job of its own, which counts), so it holds no slot. They wait with no operation,
    PENDING, with a schedule that has a frequency or a cron expression (oasis/edp/schedule.py's record, read
    here as data: the database layer imports no edp module)."""
    waiting = s.scalars(select(Job.runtime).where(Job.project_id == project_id, Job.status == "PENDING",
                                                  Job.op.is_(None)))
    return sum(1 for runtime in waiting if _is_recurring((runtime or {}).get("schedule")))


def _is_recurring(schedule: Any) -> bool:
    return isinstance(schedule, dict) and (schedule.get("frequency") is not None or schedule.get("cron") is not None)


def _scale_target(op: str | None, target: dict[str, Any]) -> dict[str, int]:
    if op != ClusterOp.SCALE:
        return {}
    return {**(target.get("resize") or {}), **(target.get("add") or {})}


def over_limits(limit: Mapping[str, int], used: Mapping[str, int],
                requested: Mapping[str, int]) -> list[tuple[str, int, int, int]]:
    """(key, requested, used, limit) for every key the request would take past its limit. A key the request does
    not add to is never over, even where usage already exceeds a limit lowered since."""
    return [(key, requested[key], used[key], limit[key]) for key in KEYS
            if requested.get(key, 0) > 0 and limit[key] != UNLIMITED and used[key] + requested[key] > limit[key]]


def lock(s: Session, project_id: str) -> None:
    """Hold the project's quota row until the session commits (made first if the project has none)."""
    insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
    s.execute(insert(ProjectQuota).values(project_id=project_id).on_conflict_do_nothing(
        index_elements=["project_id"]))
    s.execute(update(ProjectQuota).where(ProjectQuota.project_id == project_id)
              .values(project_id=ProjectQuota.project_id, updated_at=ProjectQuota.updated_at))


def check(s: Session, project_id: str, project_name: str, requested: Mapping[str, int],
          defaults: Mapping[str, int]) -> None:
    """Raise QuotaExceeded if the request would take the project over a limit; otherwise return with the
    project's lock held, so that the rows the caller then writes in this session are counted by the next check.
    A request no limit bounds takes no lock: unlimited projects never wait on each other's creates."""
    if not any(requested.get(k, 0) > 0 and v != UNLIMITED for k, v in limits(s, project_id, defaults).items()):
        return
    lock(s, project_id)
    over = over_limits(limits(s, project_id, defaults), usage(s, project_id), requested)
    if over:
        raise QuotaExceeded(project_name, over)


def job_slot(s: Session, project_id: str, defaults: Mapping[str, int]) -> str | None:
    """For a job the engine starts (a workflow step's, a recurring job's run): None if the project may run one
    more, with its lock held until the session commits (write the job in it); else why it must wait."""
    try:
        check(s, project_id, project_id, {"running_jobs": 1}, defaults)
    except QuotaExceeded as e:
        _, _, used, limit = e.over[0]
        return f"waiting: project over its running_jobs quota (used {used} of {limit})"
    return None


def set_limits(s: Session, project_id: str, changes: Mapping[str, int | None]) -> None:
    """An administrator's new limits for some keys (None or -1: unlimited); the other keys keep theirs."""
    lock(s, project_id)
    values = {key: UNLIMITED if value is None else int(value) for key, value in changes.items()}
    if values:
        s.execute(update(ProjectQuota).where(ProjectQuota.project_id == project_id).values(**values))
