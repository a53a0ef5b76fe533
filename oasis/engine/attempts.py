"""A job's later starts: the next attempt of a job that failed (its retry policy, oasis/edp/retries.py), a
scheduled job's time, and each time of a recurring one (oasis/edp/schedule.py).

A job that waits for a time is PENDING with no operation and `runtime["due"]`; no engine holds it meanwhile.
`start_due`, a periodic task (one engine per period), gives each one whose time has come its `run` operation,
which any engine then claims like any other; a recurring job instead makes a new job for its time (a copy of
its settings, on its trust) and waits for its next one."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from oasis.db import quotas
from oasis.db.models import Job, new_id, shown_time, utcnow
from oasis.db.session import Database
from oasis.db.states import JobOp
from oasis.edp import retries
from oasis.edp import statuses as st
from oasis.edp.schedule import Schedule, show

log = logging.getLogger(__name__)

DUE_SECONDS = 2.0  # how often the jobs whose time has come are looked for
# What a new attempt keeps of the last one's runtime: the rest (its directory, command, access) was that run's.
KEPT = ("attempt", "attempts", "schedule", "shared_trust")


def kept(runtime: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (runtime or {}).items() if k in KEPT}


def close_attempt(job: Job, status: str, return_code: int | None, end: datetime, description: str,
                  host_lost: bool = False) -> dict[str, Any]:
    """The job's runtime with its current attempt recorded as ended (`host_lost`: because its host was lost)."""
    runtime = dict(job.runtime or {})
    number = retries.current_attempt(runtime)
    ended = [a for a in retries.ended_attempts(runtime) if a["number"] != number]
    ended.append(retries.attempt_record(number, status, return_code, shown_time(job.start_time), shown_time(end),
                                        runtime, job.engine_job_id, description, host_lost))
    return {**runtime, "attempts": ended}


def next_attempt(job: Job, status: str, return_code: int | None, end: datetime, description: str,
                 now: datetime, host_lost: bool = False) -> datetime | None:
    """If the job's retry policy runs it again after this attempt, make the row wait for the next one and return
    when it starts; None (the row untouched) if this attempt was its last. `host_lost`: the attempt ended because
    its host was lost (the next one's start then looks elsewhere, oasis/edp/driver.py)."""
    try:
        policy = retries.policy_of((job.job_configs or {}).get("configs"))
    except retries.RetryError:  # validated by the API; a row from before keeps the old behaviour
        return None
    number = retries.current_attempt(job.runtime)
    if not policy.allows(number, status):
        return None
    due = now + timedelta(seconds=policy.delay(number))
    runtime = close_attempt(job, status, return_code, end, description, host_lost)
    how = f"exit code {return_code}" if return_code is not None else (description or status)[:300]
    # No backoff: the next attempt is the run operation at once, not one for the next periodic start to give.
    at_once = due <= now
    job.runtime = {**kept(runtime), "attempt": number + 1, **({} if at_once else {"due": due.isoformat()})}
    job.status, job.return_code, job.start_time, job.end_time, job.engine_job_id = st.PENDING, None, None, None, None
    job.info = {**{k: v for k, v in (job.info or {}).items() if k != "status_description"},
                "status_description": f"attempt {number} ended {status} ({how}); attempt {number + 1} of "
                                      f"{policy.max_retries + 1} starts at {show(due)}"}
    job.op, job.op_step, job.op_target = (JobOp.RUN if at_once else None), None, {}
    return due


def start_due(db: Database, now: datetime | None = None, quota_defaults: Mapping[str, int] | None = None) -> int:
    """Start every job whose time has come; how many it started. A recurring job's run is a new job, checked
    against its project's running_jobs quota (`quota_defaults`: the deployment's limits) in the transaction that
    writes it: over the quota, the recurrence waits, due, and fires at the first period with a free slot (once,
    however many of its times went by meanwhile)."""
    now = now or utcnow()
    started = 0
    with db.session() as s:
        # Locked (PostgreSQL) so that a cancel or delete asked meanwhile waits and then replaces this run.
        waiting = list(s.scalars(select(Job).where(Job.op.is_(None), Job.status == st.PENDING).with_for_update()))
        for job in waiting:
            due = (job.runtime or {}).get("due")
            if not due or datetime.fromisoformat(due) > now:
                continue
            record = (job.runtime or {}).get("schedule")
            if record and Schedule.from_record(record).recurring:
                full = quotas.job_slot(s, job.project_id, quota_defaults or {})
                if full is not None:
                    _wait_for_slot(job, full, datetime.fromisoformat(due))
                    continue
                _fire(s, job, datetime.fromisoformat(due), now)
            else:
                job.runtime = {k: v for k, v in (job.runtime or {}).items() if k != "due"}
                job.info = {**(job.info or {}), "status_description": "starting"}
                job.op, job.op_step, job.op_target = JobOp.RUN, None, {}
            started += 1
    return started


def _wait_for_slot(parent: Job, full: str, due: datetime) -> None:
    said = f"{full}; its run for {show(due)} starts when a job of the project ends"
    if (parent.info or {}).get("status_description") != said:
        log.info("job %s: %s", parent.id, said)
        parent.info = {**(parent.info or {}), "status_description": said}


def _fire(s: Any, parent: Job, fired: datetime, now: datetime) -> None:
    """One time of a recurring job: a new job with its settings (less the schedule), and the next time."""
    schedule = Schedule.from_record(parent.runtime["schedule"])
    child = Job(id=new_id(), project_id=parent.project_id, job_template_id=parent.job_template_id,
                cluster_id=parent.cluster_id, trust_id=parent.trust_id, input_id=parent.input_id,
                output_id=parent.output_id,
                job_configs={k: v for k, v in (parent.job_configs or {}).items() if k != "job_execution_info"},
                interface=dict(parent.interface or {}), status=st.PENDING, engine_job_id=None,
                info={"scheduled_by": parent.id, "status_description": f"started by the schedule of job "
                                                                        f"{parent.id} for {show(fired)}"},
                # the trust is the recurring job's: released when that one is deleted, not when this one ends
                runtime={"shared_trust": True} if parent.trust_id else {},
                is_public=parent.is_public, is_protected=False, op=JobOp.RUN, op_step=None, op_target={})
    s.add(child)
    following = schedule.after(fired)
    while following is not None and following <= now:  # times missed while no engine ran: one run for them all
        following = schedule.after(following)
    runs = int((parent.info or {}).get("runs") or 0) + 1
    info = {**(parent.info or {}), "runs": runs, "last_job_id": child.id}
    log.info("job %s: its schedule started job %s for %s", parent.id, child.id, show(fired))
    if following is None:
        parent.runtime = {k: v for k, v in parent.runtime.items() if k != "due"}
        parent.status, parent.end_time = st.SUCCEEDED, now
        parent.info = {**info, "status_description": f"its schedule is over after {runs} run(s); the last is "
                                                     f"job {child.id}"}
        return
    parent.runtime = {**parent.runtime, "due": following.isoformat()}
    parent.info = {**info, "status_description": f"runs {schedule.describe()}; next at {show(following)} "
                                                 f"(last: job {child.id})"}
