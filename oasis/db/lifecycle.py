"""A cluster's lifecycle limits (Dataproc's scheduled deletion): what a request may set, when each limit fires,
and how the cluster's view shows it. Pure, except `activity`, a read-only query; shared by the API (validation,
the view) and the engine (oasis/engine/lifecycle.py, which deletes clusters past a limit).

The limits, kept in the cluster's `spec["lifecycle"]` (only the keys the cluster set):
- `idle_delete_after`: seconds with no job running or pending and no client connected (a Dask client, a Spark
  application, as the engine samples them); 0 is never. Unset: the deployment's default
  (OASIS_IDLE_DELETE_AFTER_SECONDS).
- `max_age`: seconds since the cluster was created (Dataproc's `auto_delete_ttl` counts from the create
  request, so a create that hangs is bounded too).
- `delete_at`: a UTC time.
What the engine last saw of the framework's own activity is in `spec["activity"]` (`seen_at`, `what`)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from oasis.db.models import Cluster, Job, shown_time
from oasis.db.quotas import JOB_ENDED
from oasis.db.states import ClusterStatus

KEYS = ("idle_delete_after", "max_age", "delete_at")
MAX_SECONDS = 10 * 366 * 86400  # ten years: beyond it a limit is a typo, and datetime arithmetic stays in range
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)([smhd])")


class LimitError(ValueError):
    """A limit a request gave is not one: the message says which and why (the API's 400)."""


def duration(name: str, value: Any, allow_zero: bool) -> int:
    """Seconds from a number of seconds or a string of amounts with units (`90s`, `30m`, `2h`, `1d`, `1h30m`)."""
    if isinstance(value, bool):
        raise LimitError(f"lifecycle.{name} must be a number of seconds or a duration such as '2h', not {value}")
    if isinstance(value, str):
        text = value.strip().lower()
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            if not re.fullmatch(r"\d+", text):
                raise LimitError(f"lifecycle.{name} must be a number of seconds or a duration such as '2h', "
                                 f"'30m' or '1d', not '{value}'")
            parts = [(text, "s")]
        value = sum(int(n) * _UNITS[u] for n, u in parts)
    if not isinstance(value, (int, float)) or value != value:  # NaN
        raise LimitError(f"lifecycle.{name} must be a number of seconds")
    if value < 0 or (value == 0 and not allow_zero):
        raise LimitError(f"lifecycle.{name} must be a positive number of seconds"
                         + (" (or 0 for never)" if allow_zero else "") + f", not {value}")
    if value > MAX_SECONDS:
        raise LimitError(f"lifecycle.{name} is more than ten years ({value} s)")
    return int(value)


def timestamp(name: str, value: Any, now: datetime) -> str:
    """An ISO 8601 time in the future, as UTC `YYYY-MM-DDTHH:MM:SSZ`; one without a zone is taken as UTC."""
    try:
        when = datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise LimitError(f"lifecycle.{name} must be an ISO 8601 time such as '2030-01-31T18:00:00Z', "
                         f"not '{value}'") from None
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    if when <= now:
        raise LimitError(f"lifecycle.{name} must be in the future (it is {iso(when)}, now is {iso(now)})")
    if when > now + timedelta(seconds=MAX_SECONDS):
        raise LimitError(f"lifecycle.{name} is more than ten years ahead ({iso(when)})")
    return iso(when)


def parse(body: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """What a request's `lifecycle` sets, normalised: seconds, and `delete_at` as UTC. A null removes the limit
    (for idle: never, as 0 is, not the deployment's default)."""
    out: dict[str, Any] = {}
    for key, value in (body or {}).items():
        if key == "idle_delete_after":
            out[key] = 0 if value is None else duration(key, value, allow_zero=True)
        elif key == "max_age":
            out[key] = None if value is None else duration(key, value, allow_zero=False)
        elif key == "delete_at":
            out[key] = None if value is None else timestamp(key, value, now)
        else:
            raise LimitError(f"lifecycle has no limit '{key}' (limits: {', '.join(KEYS)})")
    return out


def merged(current: dict[str, Any] | None, change: dict[str, Any]) -> dict[str, Any]:
    """A cluster's limits after an update: the change's keys over the current ones; a removed one goes."""
    out = {**(current or {}), **change}
    return {k: v for k, v in out.items() if v is not None}


def iso(when: datetime) -> str:
    return f"{shown_time(when)}Z"


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).rstrip("Z")) if value else None
    except ValueError:
        return None


# --- when each limit fires ----------------------------------------------------------------------------------


@dataclass
class Activity:
    """What the rows say of a cluster's use: the jobs not ended, and the latest moment anything happened."""

    jobs_running: int = 0
    last_job: datetime | None = None  # the latest start, end or creation of one of its jobs


def activity(s: Session, cluster_ids: list[str]) -> dict[str, Activity]:
    """Per cluster, in two queries whatever their number (the list page shows every cluster's limits)."""
    out = {cid: Activity() for cid in cluster_ids}
    if not cluster_ids:
        return out
    running = select(Job.cluster_id, func.count()).where(Job.cluster_id.in_(cluster_ids),
                                                          Job.status.not_in(JOB_ENDED)).group_by(Job.cluster_id)
    for cid, n in s.execute(running):
        out[cid].jobs_running = int(n)
    latest = select(Job.cluster_id, func.max(Job.created_at), func.max(Job.start_time), func.max(Job.end_time)) \
        .where(Job.cluster_id.in_(cluster_ids)).group_by(Job.cluster_id)
    for cid, *times in s.execute(latest):
        seen = [t for t in times if t is not None]
        out[cid].last_job = max(seen) if seen else None
    return out


@dataclass
class Limits:
    idle: int | None  # seconds; None: never
    idle_from: str  # "cluster" or "deployment": who set it
    max_age: int | None
    delete_at: datetime | None


def limits(spec: dict[str, Any], default_idle: float) -> Limits:
    mine = spec.get("lifecycle") or {}
    if "idle_delete_after" in mine:
        idle, source = mine["idle_delete_after"], "cluster"
    else:
        idle, source = default_idle, "deployment"
    return Limits(int(idle) if idle else None, source, mine.get("max_age") or None, _time(mine.get("delete_at")))


def idle_since(cluster: Cluster, act: Activity) -> datetime | None:
    """Since when nothing has used the cluster, None while a job runs or waits. The cluster's own `updated_at`
    counts (it becoming Active, a user's update); the engine's verification leaves it alone."""
    if act.jobs_running:
        return None
    seen = _time(((cluster.spec or {}).get("activity") or {}).get("seen_at"))
    moments = [t for t in (cluster.created_at, cluster.updated_at, act.last_job, seen) if t is not None]
    return max(moments)


@dataclass
class Due:
    limit: str  # idle_delete_after, max_age, delete_at, error_grace
    at: datetime
    why: str  # what the event says


def deadlines(cluster: Cluster, act: Activity, default_idle: float, error_grace: float) -> list[Due]:
    """When each of the cluster's limits fires, the soonest first (past ones included). Idle counts only for an
    Active cluster with no operation; the error grace only for one in Error with none. A protected cluster
    (Sahara's `is_protected`: it may not be deleted) is deleted by no limit."""
    if cluster.is_protected:
        return []
    lim = limits(cluster.spec or {}, default_idle)
    out = []
    if lim.delete_at is not None:
        out.append(Due("delete_at", lim.delete_at, f"its delete_at time {iso(lim.delete_at)} has come"))
    if lim.max_age is not None:
        at = cluster.created_at + timedelta(seconds=lim.max_age)
        out.append(Due("max_age", at, f"it is older than its max_age of {lim.max_age} s (created "
                                      f"{iso(cluster.created_at)})"))
    since = idle_since(cluster, act)
    if lim.idle is not None and since is not None and cluster.status == ClusterStatus.ACTIVE and cluster.op is None:
        source = "" if lim.idle_from == "cluster" else " (the deployment's default)"
        out.append(Due("idle_delete_after", since + timedelta(seconds=lim.idle),
                       f"it has been idle (no job running or pending, no client connected) since {iso(since)}, "
                       f"longer than its idle_delete_after of {lim.idle} s{source}"))
    if error_grace > 0 and cluster.status == ClusterStatus.ERROR and cluster.op is None:
        since = cluster.updated_at or cluster.created_at
        out.append(Due("error_grace", since + timedelta(seconds=error_grace),
                       f"it has been in Error since {iso(since)}, longer than the deployment's grace of "
                       f"{error_grace:.0f} s for failed clusters"))
    return sorted(out, key=lambda d: d.at)


def view(cluster: Cluster, act: Activity, default_idle: float, error_grace: float, now: datetime) -> dict[str, Any]:
    """The cluster's `lifecycle` field: the limits in force, who set idle, since when it is idle (or what keeps
    it busy), and when each limit deletes it, the soonest first."""
    lim = limits(cluster.spec or {}, default_idle)
    since = idle_since(cluster, act)
    seen = (cluster.spec or {}).get("activity") or {}
    busy = f"{act.jobs_running} job(s) running or pending" if act.jobs_running else None
    return {
        "idle_delete_after": lim.idle, "idle_delete_after_from": lim.idle_from, "max_age": lim.max_age,
        "delete_at": iso(lim.delete_at) if lim.delete_at else None,
        "idle_since": iso(since) if since else None, "busy": busy, "last_seen_in_use": seen.get("what"),
        "deletes": [{"limit": d.limit, "at": iso(d.at), "seconds_left": max(0, int((d.at - now).total_seconds()))}
                    for d in deadlines(cluster, act, default_idle, error_grace)],
    }
