"""Workflows (an oasis extension at `/v2/workflows` and `/v2/workflow-runs`): DAGs of job templates, run on a
named cluster or on one the run creates and deletes. The API validates the template, writes the run with its
trust (and its managed cluster, made here the way `POST /v2/clusters` makes one) and leaves the rest to the
engine (oasis/engine/workflows.py); the DAG logic is oasis/edp/workflow.py."""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from oasis.api import clusters, keystone, schemas
from oasis.api.errors import ApiError, bad
from oasis.api.query import check_delete_allowed, ensure_unique_name, get_visible, listing, page, require_owner
from oasis.api.routing import Ctx, Reply, Routes, validate
from oasis.api.topology import plugin_for
from oasis.api.views import ts
from oasis.db.models import Cluster, ClusterTemplate, DataSource, Job, JobTemplate, Workflow, WorkflowRun, new_id
from oasis.edp import access
from oasis.edp import workflow as wf
from oasis.identity.principal import Principal
from oasis.plugins import get_plugin
from oasis.storage.secrets import secrets_for

WF, RUN = "Workflow", "Workflow run"

_STEP = {
    "type": "object", "additionalProperties": False, "required": ["name", "job_template_id"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 80},
        "job_template_id": schemas.object_id,
        "depends_on": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
        "job_configs": {"type": "object", "additionalProperties": False, "properties": {
            "configs": schemas.simple_config, "params": schemas.simple_config, "args": {"type": "array"}}},
        "input_id": schemas.optional_id, "output_id": schemas.optional_id,
    },
}
WORKFLOW_CREATE = {
    "type": "object", "additionalProperties": False, "required": ["name", "steps", "placement"],
    "properties": {
        "name": schemas.edp_name, "description": schemas.text,
        "steps": {"type": "array", "items": _STEP, "minItems": 1, "maxItems": 100},
        "placement": {"type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
                      "properties": {"cluster_id": schemas.object_id,
                                     "managed_cluster": {"type": "object"}}},
        "parameters": {"type": "object", "maxProperties": 100,
                       "additionalProperties": {"type": ["string", "number", "boolean", "null"]}},
        "is_public": schemas.flag, "is_protected": schemas.flag,
    },
}
WORKFLOW_RUN = {
    "type": "object", "additionalProperties": False,
    "properties": {"parameters": {"type": "object",
                                  "additionalProperties": {"type": ["string", "number", "boolean"]}}},
}
RESTART = {"type": "object", "additionalProperties": False, "properties": {}}
CANCEL = RESTART


def _invalid(e: wf.WorkflowError):  # noqa: ANN202
    return bad("INVALID_DATA", str(e))


# --- views ----------------------------------------------------------------------------------------------------


def workflow_view(row: Workflow) -> dict[str, Any]:
    spec = row.spec or {}
    return {"id": row.id, "name": row.name, "description": row.description, "project_id": row.project_id,
            "is_public": row.is_public, "is_protected": row.is_protected, "steps": spec.get("steps") or [],
            "placement": spec.get("placement") or {}, "parameters": spec.get("parameters") or {},
            "created_at": ts(row.created_at), "updated_at": ts(row.updated_at)}


def run_view(row: WorkflowRun) -> dict[str, Any]:
    steps = []
    for step in (row.spec or {}).get("steps") or []:
        record = (row.steps or {}).get(step["name"]) or wf.record()
        steps.append({"name": step["name"], "job_template_id": step["job_template_id"],
                      "depends_on": step.get("depends_on") or [], **wf.shown(record)})
    return {"id": row.id, "workflow_id": row.workflow_id, "workflow_name": row.workflow_name,
            "project_id": row.project_id, "status": row.status, "status_description": row.status_description,
            "parameters": row.parameters or {}, "cluster_id": row.cluster_id, "managed_cluster": row.managed,
            "steps": steps, "start_time": ts(row.start_time), "end_time": ts(row.end_time),
            "created_at": ts(row.created_at), "updated_at": ts(row.updated_at)}


# --- workflows ------------------------------------------------------------------------------------------------


def _check_steps(s: Session, principal: Principal, steps: list[dict[str, Any]], job_types: set[str] | None) -> None:
    for step in steps:
        template = get_visible(s, JobTemplate, step["job_template_id"], principal, "Job template", status=400)
        if job_types is not None and template.type not in job_types:
            raise bad("INVALID_REFERENCE", f"step '{step['name']}': the workflow's cluster doesn't support job "
                                           f"type '{template.type}'")
        for key in ("input_id", "output_id"):
            if step.get(key):
                get_visible(s, DataSource, step[key], principal, "Data source", status=400)
        if step.get("input_id") and step.get("input_id") == step.get("output_id"):
            raise bad("INVALID_DATA", f"step '{step['name']}': its input and output are the same data source")


def _placement_job_types(s: Session, principal: Principal, placement: dict[str, Any]) -> set[str]:
    """The job types the placement's cluster runs; a managed cluster's body is checked as a cluster create's."""
    if "cluster_id" in placement:
        cluster = get_visible(s, Cluster, placement["cluster_id"], principal, "Cluster", status=400)
        plugin_name = cluster.plugin_name
    else:
        body = placement["managed_cluster"]
        validate(schemas.CLUSTER_CREATE, body)
        plugin_for(body["plugin_name"], body["plugin_version"])
        if body.get("cluster_template_id"):
            get_visible(s, ClusterTemplate, body["cluster_template_id"], principal, "Cluster template", status=400)
        plugin_name = body["plugin_name"]
    plugin = get_plugin(plugin_name)
    return set(plugin.job_types) if plugin is not None else set()


def create_workflow(ctx: Ctx) -> Reply:
    data = ctx.body
    steps = [{"depends_on": [], "job_configs": {}, "input_id": None, "output_id": None, **step}
             for step in data["steps"]]
    parameters = data.get("parameters") or {}
    try:
        wf.order(steps)
        wf.check_references(steps, parameters)
    except wf.WorkflowError as e:
        raise _invalid(e) from None
    with ctx.db.session() as s:
        job_types = _placement_job_types(s, ctx.principal, data["placement"])
        _check_steps(s, ctx.principal, steps, job_types)
        ensure_unique_name(s, Workflow, ctx.principal.project_id, data["name"], WF)
        row = Workflow(project_id=ctx.principal.project_id, name=data["name"], description=data.get("description")
                       or "", spec={"steps": steps, "placement": data["placement"], "parameters": parameters},
                       is_public=data.get("is_public", False), is_protected=data.get("is_protected", False))
        s.add(row)
        s.flush()
        return Reply(202, {"workflow": workflow_view(row)})


def list_workflows(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        rows, markers = page(ctx, s, Workflow, WF, filters={"name": Workflow.name},
                             sorts={"id": Workflow.id, "name": Workflow.name, "created_at": Workflow.created_at})
        return Reply(200, listing("workflows", [workflow_view(r) for r in rows], markers))


def show_workflow(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        return Reply(200, {"workflow": workflow_view(get_visible(s, Workflow, ctx.path["id"], ctx.principal, WF))})


def delete_workflow(ctx: Ctx) -> Reply:
    """A workflow with a run in progress stays; its ended runs are kept (each has the template as it ran)."""
    with ctx.db.session() as s:
        row = get_visible(s, Workflow, ctx.path["id"], ctx.principal, WF)
        check_delete_allowed(row, ctx.principal, WF)
        busy = s.scalars(select(WorkflowRun.id).where(WorkflowRun.workflow_id == row.id,
                                                      WorkflowRun.op.is_not(None))).first()
        if busy:
            raise bad("DELETION_FAILED", f"Workflow {row.id} has run {busy} in progress; wait for it to end")
        s.delete(row)
    return Reply(204)


# --- runs -----------------------------------------------------------------------------------------------------


def _managed_cluster(ctx: Ctx, spec: dict[str, Any], run_id: str) -> str:
    """Create the run's own cluster as `POST /v2/clusters` does (its validation, quota and trust), named after
    the run so that runs never collide; its id."""
    body = {**spec["placement"]["managed_cluster"]}
    body["name"] = f"{body['name']}-{run_id[:8]}"
    reply = clusters.create_cluster(dataclasses.replace(ctx, body=body))
    return str(reply.body["cluster"]["id"])


def _start(ctx: Ctx, run: WorkflowRun, made: list[str]) -> None:
    """Give a (new or restarted) run what its work needs: its trust, its managed cluster, the operation."""
    made.append(keystone.trust_for_work(ctx))
    run.trust_id = made[-1]
    placement = run.spec["placement"]
    run.managed = "managed_cluster" in placement
    run.cluster_id = _managed_cluster(ctx, run.spec, run.id) if run.managed else placement["cluster_id"]
    run.status, run.status_description, run.end_time = wf.PENDING, "", None
    run.op, run.op_step, run.op_target = wf.RUN_OP, None, {}


def _step_proxies(ctx: Ctx, s: Session, run: WorkflowRun, records: dict[str, dict[str, Any]],
                  made: list[dict[str, Any]]) -> None:
    """Where the deployment has a proxy domain: each step still to run whose data sources are swift:// without
    stored credentials gets its own proxy user now, while the request holds the user's token, as `POST /v2/jobs`
    gives a job one (for the job id the step's job will have). The record keeps it encrypted until the engine
    writes the job; the engine removes those of steps that never ran once the run ends."""
    if ctx.deps.proxy_users is None:
        return
    secrets = secrets_for(ctx.deps.settings.state_dir)
    for step in run.spec["steps"]:
        rec = records[step["name"]]
        if rec["status"] != wf.PENDING:
            continue
        job = Job(id=new_id(), project_id=run.project_id, input_id=step.get("input_id"),
                  output_id=step.get("output_id"), job_configs=step.get("job_configs") or {})
        if access.reaches_swift_on_trust(s, job, secrets):
            made.append(keystone.proxy_for_job(ctx, job.id))
            rec[wf.PROXY] = {"job_id": job.id, "user": secrets.encrypt_dict(made[-1])}


def run_workflow(ctx: Ctx) -> Reply:
    with keystone.trusts_undone_on_failure(ctx) as made, keystone.proxies_undone_on_failure(ctx) as proxies:
        with ctx.db.session() as s:
            row = get_visible(s, Workflow, ctx.path["id"], ctx.principal, WF)
            try:
                values = wf.parameter_values((row.spec or {}).get("parameters") or {},
                                             (ctx.body or {}).get("parameters"))
            except wf.WorkflowError as e:
                raise _invalid(e) from None
            spec = dict(row.spec)
            if "cluster_id" in spec["placement"]:  # the cluster may have gone since the workflow was made
                get_visible(s, Cluster, spec["placement"]["cluster_id"], ctx.principal, "Cluster", status=400)
            run = WorkflowRun(id=new_id(), project_id=ctx.principal.project_id, workflow_id=row.id,
                              workflow_name=row.name, spec=spec, parameters=values,
                              steps=wf.new_records(spec["steps"]), op_target={})
        _start(ctx, run, made)
        with ctx.db.session() as s:
            records = copy.deepcopy(run.steps)
            _step_proxies(ctx, s, run, records, proxies)
            run.steps = records
            s.add(run)
            s.flush()
            out = run_view(run)
    ctx.notify()
    return Reply(202, {"workflow_run": out})


def restart_run(ctx: Ctx) -> Reply:
    """A failed or cancelled run again, from its unfinished steps: those that SUCCEEDED are kept."""
    with keystone.trusts_undone_on_failure(ctx) as made, keystone.proxies_undone_on_failure(ctx) as proxies:
        with ctx.db.session() as s:
            run = get_visible(s, WorkflowRun, ctx.path["id"], ctx.principal, RUN)
            require_owner(run, ctx.principal, RUN)
            if run.op is not None or run.status not in wf.RESTARTABLE:
                raise bad("INVALID_DATA", f"Workflow run {run.id} is {run.status}: only a FAILED or KILLED run "
                                          f"that has ended can be restarted")
            try:
                records = wf.for_restart(run.steps or {})
            except wf.WorkflowError as e:
                raise _invalid(e) from None
            s.expunge(run)
        _start(ctx, run, made)
        with ctx.db.session() as s:
            row = s.get(WorkflowRun, run.id)
            _step_proxies(ctx, s, run, records, proxies)
            row.steps, row.trust_id, row.managed, row.cluster_id = records, run.trust_id, run.managed, run.cluster_id
            row.status, row.status_description, row.end_time = run.status, "", None
            row.op, row.op_step, row.op_target = run.op, None, {}
            s.flush()
            out = run_view(row)
    ctx.notify()
    return Reply(202, {"workflow_run": out})


def cancel_run(ctx: Ctx) -> Reply:
    """Cancel a run in progress: the engine kills its running steps' jobs (as a job's cancel does), runs nothing
    more and deletes a managed cluster; the run ends KILLED. Asking again while it is being cancelled changes
    nothing (202); a run that has ended is a 409."""
    with ctx.db.session() as s:
        run = get_visible(s, WorkflowRun, ctx.path["id"], ctx.principal, RUN)
        require_owner(run, ctx.principal, RUN)
        if run.op is None:
            raise ApiError(409, "INVALID_STATE", f"Workflow run {run.id} has ended ({run.status}): there is "
                                                 f"nothing to cancel")
        if run.op != wf.CANCEL_OP:
            # The run's engine lets go of the run operation (superseded) and an engine takes the cancel.
            run.status, run.status_description = wf.TOBEKILLED, "cancel asked"
            run.op, run.op_step, run.op_target = wf.CANCEL_OP, None, {}
        s.flush()
        out = run_view(run)
    ctx.notify()
    return Reply(202, {"workflow_run": out})


def list_runs(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        rows, markers = page(ctx, s, WorkflowRun, RUN,
                             filters={"status": WorkflowRun.status, "workflow_id": WorkflowRun.workflow_id},
                             sorts={"id": WorkflowRun.id, "status": WorkflowRun.status,
                                    "created_at": WorkflowRun.created_at})
        return Reply(200, listing("workflow_runs", [run_view(r) for r in rows], markers))


def show_run(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        return Reply(200, {"workflow_run": run_view(get_visible(s, WorkflowRun, ctx.path["id"], ctx.principal, RUN))})


def register(routes: Routes) -> None:
    routes.add("GET", "/workflows", list_workflows, "workflow:list", returns="workflows[]")
    routes.add("POST", "/workflows", create_workflow, "workflow:create", schema=WORKFLOW_CREATE, returns="workflow")
    routes.add("GET", "/workflows/{id}", show_workflow, "workflow:get", returns="workflow")
    routes.add("DELETE", "/workflows/{id}", delete_workflow, "workflow:delete")
    routes.add("POST", "/workflows/{id}/run", run_workflow, "workflow:run", schema=WORKFLOW_RUN,
               returns="workflow_run")
    routes.add("GET", "/workflow-runs", list_runs, "workflow-run:list", returns="workflow_runs[]")
    routes.add("GET", "/workflow-runs/{id}", show_run, "workflow-run:get", returns="workflow_run")
    routes.add("POST", "/workflow-runs/{id}/restart", restart_run, "workflow-run:restart", schema=RESTART,
               returns="workflow_run")
    routes.add("POST", "/workflow-runs/{id}/cancel", cancel_run, "workflow-run:cancel", schema=CANCEL,
               returns="workflow_run", errors=(409,))
