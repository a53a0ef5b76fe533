"""The periodic clean-up of proxy users (oasis.identity.proxy): whatever a crash left in the proxy domain, the
user of a job that has ended or of a job that never came to be, is removed by one engine per period."""
from __future__ import annotations

import logging

from sqlalchemy import select

from oasis.db.models import Job, WorkflowRun
from oasis.db.session import Database
from oasis.edp.statuses import TERMINAL
from oasis.edp.workflow import planned_proxies
from oasis.identity.base import IdentityError
from oasis.identity.proxy import ProxyUsers, to_remove

log = logging.getLogger(__name__)

SWEEP_SECONDS = 30.0  # how often the proxy domain is looked through


def sweep(db: Database, proxy_users: ProxyUsers) -> list[str]:
    """Remove the proxy domain's leftover users; the job ids whose user went. Blocking (Keystone calls)."""
    users = proxy_users.listed()
    ids = [u.job_id for u in users if u.job_id]
    if not ids:
        return []
    with db.session() as s:
        rows = s.execute(select(Job.id, Job.status).where(Job.id.in_(ids))).all()
        # a workflow run in progress holds proxy users for steps whose job is not written yet (their ids chosen)
        planned = {p["job_id"] for steps in s.scalars(select(WorkflowRun.steps).where(WorkflowRun.op.is_not(None)))
                   for p in planned_proxies(steps or {}).values()}
    known = {job_id for job_id, _ in rows}
    live = {job_id for job_id, status in rows if status not in TERMINAL} | planned
    removed = []
    for user in to_remove(users, live, known):
        try:
            proxy_users.remove({"user_id": user.user_id})
        except IdentityError as e:
            log.warning("could not remove the leftover proxy user of job %s: %s", user.job_id, e)
            continue
        log.info("removed the leftover proxy user of job %s", user.job_id)
        removed.append(str(user.job_id))
    if removed:
        with db.session() as s:  # an ended job whose engine died before it removed the user: nothing to keep
            for job in s.scalars(select(Job).where(Job.id.in_(removed))):
                job.proxy = None
    return removed
