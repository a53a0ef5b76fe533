"""A workflow run, declared as steps of the one operation machine (oasis/engine/machine.py): wait for the run's
cluster (a managed one the API created for it), drive the DAG (start each step's job once its dependencies
SUCCEEDED, record each job's end, stop the dependants of a failed step), then delete a managed cluster.

Every step's state is in the run's row (`steps`) and in its jobs' rows, written in one transaction with the job
that a step starts, so an engine killed at any point loses nothing: the next one resumes the DAG where the rows
say it is. The jobs themselves are the job machine's (oasis/engine/jobs.py); they run on the run's trust."""
from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy.orm import Session

from oasis.db import quotas
from oasis.db.models import Cluster, DataSource, Job, JobTemplate, WorkflowRun, new_id, shown_time, utcnow
from oasis.db.session import Database
from oasis.db.states import ClusterOp, ClusterStatus, JobOp
from oasis.edp import interface
from oasis.edp import statuses as st
from oasis.edp import workflow as wf
from oasis.edp.schedule import CLUSTER_COMING_UP
from oasis.engine.changes import sleep_only
from oasis.engine.machine import Machine, Operation, OperationError, Step, Wait, Work
from oasis.identity import trusts
from oasis.identity.base import Identity, IdentityError
from oasis.identity.proxy import ProxyUsers
from oasis.storage.secrets import Secrets

log = logging.getLogger(__name__)

# How often a run looks at its cluster and its steps' jobs again without being woken: this engine's changes
# (a step's job ending, its cluster coming up) wake it at once (oasis/engine/changes.py); the poll catches what
# other engines and the API change, and a slot of the project's running_jobs quota freed by another job.
POLL_SECONDS = 5.0
Waiter = Callable[[float], Awaitable[None]]


class RunWork(Work):
    model = WorkflowRun

    def __init__(self, db: Database, run_id: str, on_change, identity: Identity | None,  # noqa: ANN001
                 poll: float, wait: Waiter, quota_defaults: Mapping[str, int], secrets: Secrets | None,
                 proxy_users: ProxyUsers | None) -> None:
        super().__init__(db, run_id, on_change)
        self.identity, self.poll, self.wait, self.quota_defaults = identity, poll, wait, quota_defaults
        self.secrets, self.proxy_users = secrets, proxy_users

    # --- the steps --------------------------------------------------------------------------------------------

    async def cluster(self) -> None:
        """The run acts on its creator's trust; a managed cluster must be Active before any step starts."""
        with self.db.session() as s:
            run = self.row(s)
            trust_id, managed, cluster_id = run.trust_id, run.managed, run.cluster_id
            if run.start_time is None:
                run.start_time = utcnow()
        try:
            trusts.act_on(self.identity, trust_id, "run the workflow")
        except trusts.TrustGone as e:
            raise OperationError(str(e)) from None
        while managed:
            with self.db.session() as s:
                cluster = s.get(Cluster, cluster_id or "")
                status = cluster.status if cluster is not None else None
            if status == ClusterStatus.ACTIVE:
                return
            if status is None or status not in CLUSTER_COMING_UP:
                raise OperationError(f"the run's cluster {cluster_id} is {status or 'gone'}: no step was run")
            await self.wait(self.poll)

    async def _until_done(self, look: Callable[[], tuple[bool, bool]]) -> None:
        """Run `look` (done?, changed?) until done; between looks, wait for a change (a step's job ending wakes
        it) or the poll."""
        while True:
            done, changed = look()
            if changed:
                self.on_change()
            if done:
                return
            if not changed:
                await self.wait(self.poll)

    async def drive(self) -> None:
        """Advance the DAG until every step is done; between looks, wait for a change (a step's job ending wakes
        it) or the poll."""
        await self._until_done(self._advance)

    async def cleanup(self) -> None:
        """A managed cluster is deleted once the run is over (the cluster machine does it)."""
        with self.db.session() as s:
            run = self.row(s)
            if run.managed:
                _delete_cluster(s, run.cluster_id)

    async def finish(self) -> None:
        await self._drop_planned_proxies()
        with self.db.session() as s:
            run = self.row(s)
            status = wf.outcome(run.steps or {}) or wf.FAILED
            failed = [n for n, r in (run.steps or {}).items() if r["status"] == wf.FAILED]
            trust_id = run.trust_id
        trusts.release(self.identity, trust_id)
        self.done(status=status, end_time=utcnow(), trust_id=None,
                  status_description="" if status == wf.SUCCEEDED else f"failed step(s): {', '.join(failed)}")

    async def rollback(self, error: Exception) -> None:
        """The run cannot go on (its cluster failed, its trust is gone): what has not run is stopped."""
        await self._drop_planned_proxies()
        with self.db.session() as s:
            run = self.row(s)
            records = copy.deepcopy(run.steps or {})
            for rec in records.values():
                if rec["status"] == wf.PENDING:
                    rec.update(status=wf.SKIPPED, reason=f"not run: {error}"[:500])
            run.steps = records
            if run.managed:
                _delete_cluster(s, run.cluster_id)
            trust_id = run.trust_id
        trusts.release(self.identity, trust_id)
        self.done(status=wf.FAILED, end_time=utcnow(), trust_id=None, status_description=str(error)[:2000])

    # --- a cancel -------------------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Cancel the running steps' jobs (as a job's cancel does: TOBEKILLED and its cancel operation, which the
        job machine drives), mark what has not started as not run, and wait for those jobs to end."""
        await self._until_done(self._stop_look)

    def _stop_look(self) -> tuple[bool, bool]:
        with self.db.session() as s:
            run = self.row(s)
            records = wf.cancelled(copy.deepcopy(run.steps or {}))
            for step in run.spec["steps"]:
                rec = records[step["name"]]
                if rec["status"] != wf.RUNNING:
                    continue
                job = s.get(Job, rec["job_id"] or "")
                _record_job(s, step, rec)
                if rec["status"] == wf.RUNNING and job is not None and job.op not in (JobOp.CANCEL, JobOp.DELETE):
                    job.status, job.op, job.op_step = st.TOBEKILLED, JobOp.CANCEL, None
                    log.info("workflow run %s: cancelling step %s's job %s", run.id, step["name"], job.id)
                elif job is not None and job.status == st.KILLED:
                    rec.update(status=wf.KILLED, reason=f"its job {job.id} was killed: the run was cancelled")
            changed = records != (run.steps or {})
            if changed:
                run.steps = records
            return not any(r["status"] == wf.RUNNING for r in records.values()), changed or bool(s.dirty)

    async def killed(self, error: Exception | None = None) -> None:
        """The cancel's end: the trust released, the run KILLED (a restart takes it from its unfinished steps)."""
        await self._drop_planned_proxies()
        with self.db.session() as s:
            trust_id = self.row(s).trust_id
        trusts.release(self.identity, trust_id)
        why = "cancelled" + (f" (and then: {error})" if error is not None else "")
        self.done(status=wf.KILLED, end_time=utcnow(), trust_id=None, status_description=why[:2000])

    async def _drop_planned_proxies(self) -> None:
        """The proxy users the API made for steps that never got a job: removed once the run is over (a restart
        makes new ones). One Keystone refuses to remove is left to the periodic clean-up (oasis/engine/proxies.py),
        which takes it once the run has ended."""
        with self.db.session() as s:
            planned = wf.planned_proxies(self.row(s).steps or {})
        if not planned:
            return
        for name, proxy in planned.items():
            if self.proxy_users is None or self.secrets is None:
                break
            try:
                await asyncio.to_thread(self.proxy_users.remove, self.secrets.decrypt_dict(proxy.get("user")))
            except IdentityError as e:
                log.warning("workflow run %s: could not remove the unused proxy user of step %s now: %s", self.id,
                            name, e)
        with self.db.session() as s:
            run = self.row(s)
            run.steps = {n: wf.shown(r) for n, r in (run.steps or {}).items()}

    # --- the DAG ----------------------------------------------------------------------------------------------

    def _advance(self) -> tuple[bool, bool]:
        """One look at the run: record the ends of its steps' jobs, stop what a failure stops, start what is
        ready, all in one transaction; (every step done, something changed)."""
        with self.db.session() as s:
            run = self.row(s)
            steps = run.spec["steps"]
            records = copy.deepcopy(run.steps or {})
            for step in steps:
                rec = records[step["name"]]
                if rec["status"] == wf.RUNNING:
                    _record_job(s, step, rec)
            for name, why in wf.stopped(steps, records).items():
                records[name].update(status=wf.SKIPPED, reason=why)
            for name in wf.ready(steps, records):
                step = next(x for x in steps if x["name"] == name)
                self._start_step(s, run, step, records)
            changed = records != (run.steps or {})
            if changed:
                run.steps = records
            return wf.outcome(records) is not None, changed

    def _start_step(self, s: Session, run: WorkflowRun, step: dict[str, Any],
                    records: dict[str, dict[str, Any]]) -> None:
        """Write the step's job (the way `POST /v2/jobs` writes one) with its `{{ ... }}` values filled in; a
        step whose job cannot be made FAILED, with the reason. A project at its running_jobs quota keeps the
        step PENDING, saying so: the check holds the project's lock until this transaction, which writes the
        job, commits (so two runs, or a run and `POST /v2/jobs`, never both take the last slot)."""
        rec = records[step["name"]]
        waiting = quotas.job_slot(s, run.project_id, self.quota_defaults)
        if waiting is not None:
            if rec["reason"] != waiting:
                log.info("workflow run %s: step %s %s", run.id, step["name"], waiting)
            rec["reason"] = waiting
            return
        rec["start_time"] = shown_time(utcnow())
        template = s.get(JobTemplate, step["job_template_id"])
        if template is None:
            rec.update(status=wf.FAILED, end_time=rec["start_time"],
                       reason=f"its job template {step['job_template_id']} is gone")
            return
        try:
            configs = wf.substitute(step.get("job_configs") or {}, run.parameters or {}, records)
            configs = interface.apply(template.interface, None, configs, lambda ds_id: ds_id)
        except (wf.WorkflowError, interface.InterfaceError) as e:
            rec.update(status=wf.FAILED, end_time=rec["start_time"], reason=str(e)[:500])
            return
        # the proxy user the API made for this step (its job id chosen then), as `POST /v2/jobs` gives a job one
        planned = rec.pop(wf.PROXY, None) or {}
        proxy = self.secrets.decrypt_dict(planned.get("user")) if planned and self.secrets is not None else None
        job = Job(id=planned.get("job_id") or new_id(), project_id=run.project_id, job_template_id=template.id,
                  cluster_id=run.cluster_id, proxy=proxy or None,
                  trust_id=run.trust_id, input_id=step.get("input_id"), output_id=step.get("output_id"),
                  job_configs=configs, interface={}, status=st.PENDING, engine_job_id=None,
                  info={"workflow_run_id": run.id, "workflow_step": step["name"]},
                  # the run's trust is released by the run, not by the job's end
                  runtime={"shared_trust": True}, op=JobOp.RUN, op_step=None, op_target={})
        s.add(job)
        rec.update(status=wf.RUNNING, job_id=job.id, reason="")
        log.info("workflow run %s: step %s started as job %s", run.id, step["name"], job.id)


def _record_job(s: Session, step: dict[str, Any], rec: dict[str, Any]) -> None:
    job = s.get(Job, rec["job_id"] or "")
    if job is None:
        rec.update(status=wf.FAILED, end_time=shown_time(utcnow()), reason="its job was deleted")
        return
    if job.status not in st.TERMINAL:
        return
    rec["end_time"] = shown_time(job.end_time or utcnow())
    if job.status == st.SUCCEEDED:
        rec["status"] = wf.SUCCEEDED
        output = step.get("output_id")
        if output:
            url = (job.data_source_urls or {}).get(output)
            if url is None:  # a job that ran before its URLs were recorded: the data source as it is now
                ds = s.get(DataSource, output)
                url = ds.url if ds is not None else None
            rec["output_url"] = url
    else:
        why = (job.info or {}).get("status_description") or ""
        rec.update(status=wf.FAILED, reason=f"its job {job.id} ended {job.status}{': ' + why if why else ''}"[:500])


def _delete_cluster(s: Session, cluster_id: str | None) -> None:
    cluster = s.get(Cluster, cluster_id or "")
    if cluster is not None and cluster.op != ClusterOp.DELETE:
        cluster.status, cluster.op, cluster.op_step, cluster.op_target = (
            ClusterStatus.DELETING, ClusterOp.DELETE, None, {})


OPERATIONS: dict[str, Operation[RunWork]] = {
    # Each step is idempotent: `cluster` only looks, `drive` starts a step's job in the transaction that records
    # it, `cleanup` asks for a delete once.
    wf.RUN_OP: Operation(
        steps=(Step("cluster", RunWork.cluster, status=wf.RUNNING, wait=Wait.NO),
               Step("steps", RunWork.drive, wait=Wait.NO),
               Step("cleanup", RunWork.cleanup, wait=Wait.NO)),
        finish=RunWork.finish, rollback=RunWork.rollback),
    # `stop` asks each running job's cancel once and then only looks; `cleanup` is the run's own.
    wf.CANCEL_OP: Operation(
        steps=(Step("stop", RunWork.stop, status=wf.TOBEKILLED, wait=Wait.NO),
               Step("cleanup", RunWork.cleanup, wait=Wait.NO)),
        finish=RunWork.killed, rollback=RunWork.killed),
}


def workflow_machine(db: Database, on_change=lambda: None, *, identity: Identity | None = None,  # noqa: ANN001
                     poll: float = POLL_SECONDS, probe=None, wait: Waiter = sleep_only,  # noqa: ANN001
                     quota_defaults: Mapping[str, int] | None = None, secrets: Secrets | None = None,
                     proxy_users: ProxyUsers | None = None) -> Machine[RunWork]:
    """`wait`: how a run waits between looks (the engine's Changes.wait: woken by its changes, else the poll);
    `secrets` open the proxy users the API made for steps, `proxy_users` remove those never used."""
    defaults = dict(quota_defaults or {})
    return Machine(lambda rid: RunWork(db, rid, on_change, identity, poll, wait, defaults, secrets, proxy_users),
                   OPERATIONS, (), 0.0, probe)
