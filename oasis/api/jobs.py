"""Job templates and jobs (executions). Running, cancelling and deleting a job only record the wish (`op`) for
an engine; the API never talks to a cluster."""
from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, defer
from starlette.responses import Response

from oasis.api import keystone, schemas, views
from oasis.api import quotas
from oasis.api.errors import bad
from oasis.api.plugins import all_job_types, config_hints, require_enabled
from oasis.api.query import (check_delete_allowed, check_update_allowed, ensure_unique_name, get_visible, listing,
                             page, require_owner)
from oasis.api.routing import Ctx, Reply, Routes
from oasis.db.models import Cluster, DataSource, Flavor, Job, JobBinary, JobTemplate, NodeGroup, new_id, utcnow
from oasis.db.states import ClusterStatus, JobOp
from oasis.edp import access, driver, interface, joblogs, retries, schedule
from oasis.edp import statuses as st
from oasis.edp.shares import ShareError, check_file_sources, shares_for_cluster
from oasis.identity import trusts
from oasis.identity.principal import Principal
from oasis.plugins import get_plugin
from oasis.plugins.base import Plugin
from oasis.storage.secrets import secrets_for

JT, JOB = "Job template", "Job"
# Types that run a main script or application; Java runs a class from its libs (or a main jar).
_NEEDS_MAINS = {"Spark", "Shell", "Dask", "Pig", "Hive"}
LOG_STREAMS = ("stdout", "stderr")
UNSHOWN = (defer(Job.proxy),)  # encrypted, never shown: left unread by the reads that only show jobs


# --- job templates --------------------------------------------------------------------------------------------


def _check_binaries(s: Session, principal: Principal, data: dict[str, Any]) -> None:
    mains, libs = data.get("mains") or [], data.get("libs") or []
    job_type = data["type"]
    if job_type in _NEEDS_MAINS and not mains:
        raise bad("INVALID_DATA", f"{job_type} flow requires main script")
    if job_type == "Java" and not (mains or libs):
        raise bad("INVALID_DATA", "Java flow requires main jar in 'mains' or 'libs'")
    if set(mains) & set(libs):
        raise bad("INVALID_DATA", "'mains' and 'libs' overlap")
    for binary_id in [*mains, *libs]:
        get_visible(s, JobBinary, binary_id, principal, "Job binary", status=400)


def list_job_templates(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        rows, markers = page(ctx, s, JobTemplate, JT, filters={"type": JobTemplate.type, "name": JobTemplate.name},
                             sorts={"id": JobTemplate.id, "name": JobTemplate.name, "type": JobTemplate.type,
                                    "created_at": JobTemplate.created_at, "updated_at": JobTemplate.updated_at})
        return Reply(200, listing("job_templates", [views.job_template(s, r) for r in rows], markers))


def create_job_template(ctx: Ctx) -> Reply:
    data = ctx.body
    with ctx.db.session() as s:
        _check_binaries(s, ctx.principal, data)
        ensure_unique_name(s, JobTemplate, ctx.principal.project_id, data["name"], JT)
        row = JobTemplate(project_id=ctx.principal.project_id, name=data["name"], type=data["type"],
                          description=data.get("description") or "", mains=data.get("mains") or [],
                          libs=data.get("libs") or [], interface=_template_interface(s, ctx.principal, data),
                          is_public=data.get("is_public", False), is_protected=data.get("is_protected", False))
        s.add(row)
        s.flush()
        return Reply(202, {"job_template": views.job_template(s, row)})


def show_job_template(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        row = get_visible(s, JobTemplate, ctx.path["id"], ctx.principal, JT)
        return Reply(200, {"job_template": views.job_template(s, row)})


def update_job_template(ctx: Ctx) -> Reply:
    data = ctx.body
    with ctx.db.session() as s:
        row = get_visible(s, JobTemplate, ctx.path["id"], ctx.principal, JT)
        check_update_allowed(row, data, ctx.principal, JT, {"name": row.name, "description": row.description})
        if "name" in data:
            ensure_unique_name(s, JobTemplate, row.project_id, data["name"], JT, exclude_id=row.id)
        for key, value in data.items():
            setattr(row, key, value if value is not None else "")
        s.flush()
        return Reply(202, {"job_template": views.job_template(s, row)})


def delete_job_template(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        row = get_visible(s, JobTemplate, ctx.path["id"], ctx.principal, JT)
        check_delete_allowed(row, ctx.principal, JT)
        used = s.scalars(select(Job.id).where(Job.job_template_id == row.id)).first()
        if used:
            raise bad("DELETION_FAILED", f"Job template {row.id} is used by job {used}; delete its jobs first")
        s.delete(row)
    return Reply(204)


def job_template_hints(ctx: Ctx) -> Reply:
    job_type = ctx.path["type"]
    if job_type not in all_job_types():
        raise bad("INVALID_DATA", f"Unknown job type '{job_type}'; known types are {', '.join(all_job_types())}")
    return Reply(200, {"job_config": config_hints(job_type)})


# --- jobs -----------------------------------------------------------------------------------------------------


def _data_source(s: Session, principal: Principal, ds_id: str | None) -> DataSource | None:
    return get_visible(s, DataSource, ds_id, principal, "Data source", status=400) if ds_id else None


def _source_check(s: Session, principal: Principal) -> interface.DataSourceCheck:
    return lambda ds_id: get_visible(s, DataSource, ds_id, principal, "Data source", status=400).id


def _template_interface(s: Session, principal: Principal, data: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        return interface.check_template(data["type"], data.get("interface"), _source_check(s, principal))
    except interface.InterfaceError as e:
        raise bad("INVALID_DATA", str(e)) from None


def _with_interface(s: Session, principal: Principal, template: JobTemplate, data: dict[str, Any]) -> dict[str, Any]:
    """The job's job_configs with its interface values mapped in (the row keeps the values as given)."""
    try:
        return interface.apply(template.interface, data.get("interface"), data.get("job_configs") or {},
                               _source_check(s, principal))
    except interface.InterfaceError as e:
        raise bad("INVALID_DATA", str(e)) from None


def create_job(ctx: Ctx) -> Reply:
    with keystone.trusts_undone_on_failure(ctx) as made, keystone.proxies_undone_on_failure(ctx) as proxies:
        return _create_job(ctx, made, proxies)


def _create_job(ctx: Ctx, made: list[str], proxies: list[dict[str, Any]]) -> Reply:
    data = ctx.body
    principal = ctx.principal
    with ctx.db.session() as s:
        if ctx.version == "v2":
            template = get_visible(s, JobTemplate, data["job_template_id"], principal, JT, status=400)
        else:  # v1.1 `/jobs/{id}/execute`: the template is in the URL
            template = get_visible(s, JobTemplate, ctx.path["id"], principal, JT)
        cluster = get_visible(s, Cluster, data["cluster_id"], principal, "Cluster", status=400)
        require_enabled(s, cluster.plugin_name, cluster.plugin_version)
        # A cluster on its way to Active takes the job, which waits for it (Sahara kept such a job PENDING).
        if cluster.status != ClusterStatus.ACTIVE and cluster.status not in schedule.CLUSTER_COMING_UP:
            raise bad("INVALID_DATA", f"Cluster with id '{cluster.id}' is {cluster.status}: a job runs on a cluster "
                                      f"that is Active or on its way to it")
        plugin = get_plugin(cluster.plugin_name)
        if plugin is None or template.type not in plugin.job_types:
            raise bad("INVALID_REFERENCE", f"Cluster with id '{cluster.id}' doesn't support job type "
                                           f"'{template.type}'")
        job_configs = _with_interface(s, principal, template, data)
        if template.type == "Java" and not (job_configs.get("configs") or {}).get("edp.java.main_class"):
            raise bad("INVALID_DATA", "Java job must specify edp.java.main_class")
        policy, when = _policy_and_schedule(job_configs)
        _check_driver(plugin, job_configs)
        problem = plugin.job_problem(cluster.spec.get("cluster_configs") or {}, _group_shapes(s, cluster), job_configs)
        if problem:
            raise bad("INVALID_DATA", problem)
        source = _data_source(s, principal, data.get("input_id"))
        target = _data_source(s, principal, data.get("output_id"))
        if source is not None and target is not None and (source.id == target.id or source.url == target.url):
            raise bad("INVALID_DATA", f"Provided input and output DataSources reference the same location: "
                                      f"{source.url}")
        try:  # file:// data on a multi-host site: under one of its shares (the engine checks again at prepare)
            check_file_sources([(d.url, mode) for d, mode in ((source, "r"), (target, "rw")) if d is not None],
                               *shares_for_cluster(s, cluster))
        except ShareError as e:
            raise bad("INVALID_DATA", str(e)) from None
        later = policy.max_retries > 0 or when is not None or cluster.status != ClusterStatus.ACTIVE
        if trusts.job_needs_trust(cluster.is_transient, starts_later=later):
            made.append(keystone.trust_for_work(ctx))
        job = Job(id=new_id(), project_id=principal.project_id, job_template_id=template.id, cluster_id=cluster.id,
                  trust_id=made[0] if made else None,
                  input_id=data.get("input_id"), output_id=data.get("output_id"), job_configs=job_configs,
                  interface=data.get("interface") or {}, status=st.PENDING, engine_job_id=None, info={},
                  is_public=data.get("is_public", False), is_protected=data.get("is_protected", False),
                  op=JobOp.RUN, op_step=None, op_target={})
        if when is not None:  # no operation until its time: the engine's periodic start gives it one then
            first = when.first(utcnow())
            assert first is not None  # schedule.parse refuses a schedule that never starts
            job.op, job.runtime = None, {"schedule": when.record(), "due": first.isoformat()}
            job.info = {"status_description": f"scheduled to start at {schedule.show(first)}" if not when.recurring
                        else f"runs {when.describe()}; first at {schedule.show(first)}"}
        # Its own user in the proxy domain, for a job that reaches its project's Swift without credentials.
        if ctx.deps.proxy_users is not None and access.reaches_swift_on_trust(
                s, job, secrets_for(ctx.deps.settings.state_dir)):
            proxies.append(keystone.proxy_for_job(ctx, job.id))
            job.proxy = proxies[-1]
        # running_jobs: last before the row, as it holds the project's quota lock until the row is committed
        quotas.check_job(ctx, s)
        s.add(job)
        s.flush()
        out = views.job(job)
    ctx.notify()
    return Reply(202, {"job": out})


def _policy_and_schedule(job_configs: dict[str, Any]) -> tuple[retries.RetryPolicy, schedule.Schedule | None]:
    """The job's retry policy (oasis's `edp.oasis.*` configs) and its schedule (Sahara's job_execution_info)."""
    try:
        return (retries.policy_of(job_configs.get("configs")),
                schedule.parse(job_configs.get("job_execution_info"), utcnow()))
    except (retries.RetryError, schedule.ScheduleError) as e:
        raise bad("INVALID_DATA", str(e)) from None


def _group_shapes(s: Session, cluster: Cluster) -> list[tuple[list[str], int]]:
    """(processes, flavor RAM in MB) of each of the cluster's node groups that has instances."""
    shapes = []
    for ng in s.scalars(select(NodeGroup).where(NodeGroup.cluster_id == cluster.id, NodeGroup.count > 0)):
        flavor = s.get(Flavor, str(ng.spec.get("flavor_id")))
        if flavor is not None:  # a flavor deleted since: nothing to compare with
            shapes.append((list(ng.spec.get("node_processes") or []), flavor.ram_mb))
    return shapes


def _check_driver(plugin: Plugin, job_configs: dict[str, Any]) -> None:
    """Where the job's driver runs (`edp.oasis.driver`): a placement oasis knows, and one the plugin allows."""
    try:
        placement = driver.placement_of(job_configs.get("configs"))
    except driver.DriverError as e:
        raise bad("INVALID_DATA", str(e)) from None
    if placement == driver.WORKER and not plugin.drivers_on_workers:
        raise bad("INVALID_DATA", f"{plugin.title} runs a job's driver on the master instance only: "
                                  f"'{driver.DRIVER}' must be {driver.MASTER}")


def list_jobs(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        rows, markers = page(ctx, s, Job, JOB, filters={"status": Job.status}, load=UNSHOWN,
                             sorts={"id": Job.id, "job_template": Job.job_template_id, "cluster": Job.cluster_id,
                                    "status": Job.status, "created_at": Job.created_at, "updated_at": Job.updated_at})
        return Reply(200, listing("jobs", [views.job(r) for r in rows], markers))


def show_job(ctx: Ctx) -> Reply:
    # `refresh_status` is what saharaclient sends (upstream v2 refused it); statuses are kept current by the
    # engine, so it changes nothing.
    ctx.check_params({"refresh_status"})
    with ctx.db.session() as s:
        return Reply(200, {"job": views.job(get_visible(s, Job, ctx.path["id"], ctx.principal, JOB, load=UNSHOWN))})


def refresh_job(ctx: Ctx) -> Reply:
    """v1.1 `refresh-status`: the execution as it is now (the engine keeps statuses current)."""
    ctx.check_params(set())
    return show_job(ctx)


def cancel_job(ctx: Ctx) -> Reply:
    """v1.1 `GET /job-executions/{id}/cancel`."""
    ctx.check_params(set())
    with ctx.db.session() as s:
        job = get_visible(s, Job, ctx.path["id"], ctx.principal, JOB)
        require_owner(job, ctx.principal, JOB)
        _cancel(job)
        woke = job.op == JobOp.CANCEL
        s.flush()
        out = views.job(job)
    if woke:
        ctx.notify()
    return Reply(200, {"job": out})


def _cancel(job: Job) -> None:
    if job.is_protected:
        raise bad("CANCELING_FAILED", f"Job with id '{job.id}' cannot be canceled because it's marked as protected")
    if job.status in st.TERMINAL:
        raise bad("CANCELING_FAILED", f"Job with id '{job.id}' has already finished ({job.status})")
    if job.op in (JobOp.CANCEL, JobOp.DELETE):
        return
    job.status = st.TOBEKILLED
    # Taken from whichever engine runs it: the cancel is a new operation any engine may claim at once.
    job.op, job.op_step = JobOp.CANCEL, None


def _suspend(s: Session, job: Job) -> None:
    """Sahara's suspend: the engine stops the job's whole process group (SIGSTOP) where it runs; meanwhile the
    job is TOBESUSPENDED, then SUSPENDED."""
    _require_active_cluster(s, job, "Suspending")
    if job.status not in st.SUSPENDIBLE:
        raise bad("SUSPENDING_FAILED", f"Suspending operation can not be performed on status: {job.status}")
    if not (job.runtime or {}).get("dir"):
        raise bad("SUSPENDING_FAILED", f"Job with id '{job.id}' has not been launched yet")
    job.status = st.TOBESUSPENDED
    job.op, job.op_step, job.op_target = JobOp.SUSPEND, None, {}


def _resume(s: Session, job: Job) -> None:
    """oasis's extension `{"info": {"status": "resume"}}`: continue a suspended job (SIGCONT), back to RUNNING."""
    _require_active_cluster(s, job, "Resuming")
    if job.status != st.SUSPENDED:
        raise bad("INVALID_JOB_STATUS", f"Resuming operation can only be performed on status {st.SUSPENDED}, "
                                        f"not on {job.status}")
    job.op, job.op_step, job.op_target = JobOp.RESUME, None, {}


def _require_active_cluster(s: Session, job: Job, what: str) -> None:
    cluster = s.get(Cluster, job.cluster_id) if job.cluster_id else None
    if cluster is None or cluster.status != ClusterStatus.ACTIVE:
        raise bad("INVALID_DATA", f"{what} operation can not be performed on an inactive or non-existent cluster")


def update_job(ctx: Ctx) -> Reply:
    data = ctx.body
    with ctx.db.session() as s:
        job = get_visible(s, Job, ctx.path["id"], ctx.principal, JOB)
        require_owner(job, ctx.principal, JOB)
        woke = False
        if "info" in data:
            if len(data) > 1:
                raise bad("INVALID_DATA", "A status update must carry only 'info'")
            action = data["info"]["status"]
            if action == "suspend":
                _suspend(s, job)
            elif action == "resume":
                _resume(s, job)
            else:
                _cancel(job)
            woke = job.op in ("cancel", "suspend", "resume")
        else:
            check_update_allowed(job, data, ctx.principal, JOB)
            for key in ("is_public", "is_protected"):
                if key in data:
                    setattr(job, key, data[key])
        s.flush()
        out = views.job(job)
    if woke:
        ctx.notify()
    return Reply(202, {"job": out})


def delete_job(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        job = get_visible(s, Job, ctx.path["id"], ctx.principal, JOB)
        check_delete_allowed(job, ctx.principal, JOB)
        # The engine cancels a running job, then removes the row and its logs.
        job.op, job.op_step = JobOp.DELETE, None
    ctx.notify()
    return Reply(204)


def job_logs(ctx: Ctx) -> Response:
    """A job's stdout or stderr from byte `offset` (the whole log without it), while it runs and after it
    ended, also once its cluster is gone. `X-Oasis-Log-Size` is the bytes known so far (the next offset to ask
    for); `X-Oasis-Log-Complete` is true once the job is final and its log is whole."""
    ctx.check_params({"stream", "offset", "attempt"})
    stream = ctx.query.get("stream", "stdout")
    if stream not in LOG_STREAMS:
        raise bad("INVALID_DATA", f"stream must be one of {', '.join(LOG_STREAMS)}")
    offset = _offset(ctx.query.get("offset"))
    with ctx.db.session() as s:
        job = get_visible(s, Job, ctx.path["id"], ctx.principal, JOB)
        current = retries.current_attempt(job.runtime)
        attempt = _attempt(ctx.query.get("attempt"), current)
        # an earlier attempt is over: its logs are whole
        job_id, ended = job.id, job.status in st.TERMINAL or attempt < current
    # The row before the store: an ended job's engine wrote all it will ever copy before it marked the end (a
    # job killed with its cluster keeps the parts it had as its log), so what the store holds next is whole.
    data, snap = joblogs.read(ctx.store, joblogs.log_id(job_id, attempt), stream, offset)
    return Response(data, media_type="text/plain; charset=utf-8",
                    headers={"X-Oasis-Log-Size": str(snap.size), "X-Oasis-Log-Complete": str(ended).lower()})


def _attempt(value: str | None, current: int) -> int:
    """Which attempt's logs (`attempt=N`, 1 the first run); the current one by default."""
    if value is None:
        return current
    if not re.fullmatch(r"[0-9]{1,6}", value) or not 1 <= int(value) <= current:
        raise bad("INVALID_DATA", f"attempt must be a number from 1 to {current} (the job's attempts so far), "
                                  f"not {value[:40]!r}")
    return int(value)


def _offset(value: str | None) -> int:
    if value is None:
        return 0
    if re.fullmatch(r"-[0-9]+", value):
        raise bad("INVALID_DATA", f"offset must not be negative, not {value[:40]}")
    if not re.fullmatch(r"[0-9]+", value):
        raise bad("INVALID_DATA", f"offset must be a whole number of bytes, not {value[:40]!r}")
    return int(value)


def register(routes: Routes) -> None:
    v1 = ("v1.1",)
    # v2 job templates; v1.1 calls them jobs.
    for prefix, versions, single, plural in (("/job-templates", ("v2",), "job_template", "job_templates"),
                                             ("/jobs", v1, "job", "jobs")):
        envelope = {"job_template": single, "job_templates": plural}
        routes.add("GET", prefix, list_job_templates, "job-template:list", versions=versions,
                   returns=f"{plural}[]:job_template", envelope=envelope)
        routes.add("POST", prefix, create_job_template, "job-template:create", versions=versions,
                   schema=lambda: schemas.job_template_create(all_job_types()), returns=f"{single}:job_template",
                   envelope=envelope)
        routes.add("GET", f"{prefix}/config-hints/{{type}}", job_template_hints, "job-template:get-config-hints",
                   versions=versions, returns="job_config")
        routes.add("GET", f"{prefix}/{{id}}", show_job_template, "job-template:get", versions=versions,
                   returns=f"{single}:job_template", envelope=envelope)
        routes.add("PATCH", f"{prefix}/{{id}}", update_job_template, "job-template:update", versions=versions,
                   schema=schemas.JOB_TEMPLATE_UPDATE, returns=f"{single}:job_template", envelope=envelope)
        routes.add("DELETE", f"{prefix}/{{id}}", delete_job_template, "job-template:delete", versions=versions)

    # v2 jobs; v1.1 job executions.
    routes.add("GET", "/jobs", list_jobs, "job:list", returns="jobs[]")
    routes.add("POST", "/jobs", create_job, "job:execute", schema=schemas.JOB_CREATE, returns="job")
    routes.add("GET", "/jobs/{id}", show_job, "job:get", returns="job")
    routes.add("PATCH", "/jobs/{id}", update_job, "job:update", schema=schemas.JOB_UPDATE, returns="job")
    routes.add("DELETE", "/jobs/{id}", delete_job, "job:delete")
    routes.add("GET", "/jobs/{id}/logs", job_logs, "job:get-logs", media="text/plain")

    ex = {"job": "job_execution", "jobs": "job_executions"}
    routes.add("POST", "/jobs/{id}/execute", create_job, "job:execute", versions=v1, schema=schemas.JOB_EXECUTE_V1,
               returns="job_execution", envelope=ex)
    routes.add("GET", "/job-executions", list_jobs, "job:list", versions=v1, returns="job_executions[]", envelope=ex)
    routes.add("GET", "/job-executions/{id}", show_job, "job:get", versions=v1, returns="job_execution",
               envelope=ex)
    routes.add("GET", "/job-executions/{id}/refresh-status", refresh_job, "job:get", versions=v1,
               returns="job_execution", envelope=ex)
    routes.add("GET", "/job-executions/{id}/cancel", cancel_job, "job:update", versions=v1,
               returns="job_execution", envelope=ex)
    routes.add("PATCH", "/job-executions/{id}", update_job, "job:update", versions=v1, schema=schemas.JOB_UPDATE,
               returns="job_execution", envelope=ex)
    routes.add("DELETE", "/job-executions/{id}", delete_job, "job:delete", versions=v1)
    routes.add("GET", "/job-executions/{id}/logs", job_logs, "job:get-logs", versions=v1, media="text/plain")
