"""`oasis workflow ...`: DAGs of job templates (`create FILE`, `list`), their runs (`run NAME`, `restart RUN_ID`,
`cancel RUN_ID`) and each step's status (`show NAME|RUN_ID`)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import typer
import yaml

from oasis.cli.client import ApiError, OasisClient, OasisError
from oasis.cli.common import client, command, console, key_values, options, table

app = typer.Typer(help="Workflows: DAGs of job templates with dependencies and parameters, run on a named cluster "
                       "or on one the run creates and deletes.", no_args_is_help=True)

ENDED = ("SUCCEEDED", "FAILED", "KILLED")
POLL_SECONDS = 1.0


def _by_name(c: OasisClient, resource: str, ref: str) -> str:
    """The id of a template, cluster or data source given by name (or id)."""
    return str(c.find(resource, ref)["id"])


def _resolve(c: OasisClient, data: dict[str, Any]) -> dict[str, Any]:
    """The file may name what the API wants as ids: `job_template`, `input`, `output`, placement `cluster`."""
    steps = []
    for step in data.get("steps") or []:
        step = dict(step)
        for name, resource, key in (("job_template", "job-templates", "job_template_id"),
                                    ("input", "data-sources", "input_id"), ("output", "data-sources", "output_id")):
            if name in step:
                step[key] = _by_name(c, resource, str(step.pop(name)))
        steps.append(step)
    placement = dict(data.get("placement") or {})
    if "cluster" in placement:
        placement["cluster_id"] = _by_name(c, "clusters", str(placement.pop("cluster")))
    return {**data, "steps": steps, "placement": placement}


def _workflow(c: OasisClient, ref: str) -> dict[str, Any]:
    found = [w for w in c.get("/workflows").get("workflows") or [] if ref in (w["id"], w["name"])]
    if not found:
        raise OasisError(f"no workflow named or with id '{ref}'")
    return found[0]


def _run_or_none(c: OasisClient, ref: str) -> dict[str, Any] | None:
    try:
        return c.get(f"/workflow-runs/{ref}")["workflow_run"]
    except ApiError as e:
        if e.code == 404:
            return None
        raise


def _show_run(ctx: typer.Context, run: dict[str, Any]) -> None:
    if options(ctx).as_json:
        print(json.dumps(run, indent=2, sort_keys=True))
        return
    table(run["steps"], [("Step", "name"), ("Depends on", lambda s: ", ".join(s["depends_on"])),
                         ("Status", "status"), ("Job", "job_id"), ("Start", "start_time"), ("End", "end_time"),
                         ("Reason", "reason")],
          title=f"run {run['id']} of {run['workflow_name']}: {run['status']}"
                + (f" ({run['status_description']})" if run.get("status_description") else ""))


@command(app, "create")
def create(ctx: typer.Context, file: Path = typer.Argument(..., help="The workflow as YAML or JSON: name, steps "
                                                                     "(name, job_template, depends_on, job_configs, "
                                                                     "input, output), placement, parameters")) -> None:
    """Create a workflow from a file."""
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise OasisError(f"cannot read {file}: {e}") from None
    if not isinstance(data, dict):
        raise OasisError(f"{file} must hold one workflow (a mapping with name, steps and placement)")
    c = client(ctx)
    made = c.post("/workflows", _resolve(c, data))["workflow"]
    if options(ctx).as_json:
        print(json.dumps(made, indent=2, sort_keys=True))
        return
    console.print(f"workflow {made['name']} created: {made['id']}")


@command(app, "list")
def list_workflows(ctx: typer.Context) -> None:
    """List the workflows."""
    rows = client(ctx).get("/workflows").get("workflows") or []
    if options(ctx).as_json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return
    table(rows, [("Name", "name"), ("Id", "id"), ("Steps", lambda w: len(w["steps"]))], title="workflows")


def _wait(c: OasisClient, run_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = c.get(f"/workflow-runs/{run_id}")["workflow_run"]
        if run["status"] in ENDED:
            return run
        if time.monotonic() > deadline:
            raise OasisError(f"run {run_id} is still {run['status']} after {timeout:g}s")
        time.sleep(POLL_SECONDS)


def _after(ctx: typer.Context, c: OasisClient, run: dict[str, Any], wait: bool, timeout: float) -> None:
    if wait:
        run = _wait(c, run["id"], timeout)
    _show_run(ctx, run)
    if wait and run["status"] != "SUCCEEDED":
        raise typer.Exit(1)


@command(app, "run")
def run(ctx: typer.Context, name: str = typer.Argument(..., help="The workflow's name or id"),
        param: Optional[list[str]] = typer.Option(None, "--param", help="A parameter's value, KEY=VALUE"),
        wait: bool = typer.Option(False, "--wait", help="Wait for the run's end (exit code 1 if it FAILED)"),
        timeout: float = typer.Option(3600, help="Seconds to wait with --wait")) -> None:
    """Run a workflow."""
    c = client(ctx)
    found = _workflow(c, name)
    started = c.post(f"/workflows/{found['id']}/run", {"parameters": key_values(param, "parameter")})
    _after(ctx, c, started["workflow_run"], wait, timeout)


@command(app, "restart")
def restart(ctx: typer.Context, run_id: str = typer.Argument(..., help="The failed run's id"),
            wait: bool = typer.Option(False, "--wait", help="Wait for the run's end (exit code 1 if it FAILED)"),
            timeout: float = typer.Option(3600, help="Seconds to wait with --wait")) -> None:
    """Run a failed or cancelled run again from its unfinished steps (those that SUCCEEDED are kept)."""
    c = client(ctx)
    _after(ctx, c, c.post(f"/workflow-runs/{run_id}/restart", {})["workflow_run"], wait, timeout)


@command(app, "cancel")
def cancel(ctx: typer.Context, run_id: str = typer.Argument(..., help="The run's id"),
           wait: bool = typer.Option(False, "--wait", help="Wait until the run is KILLED"),
           timeout: float = typer.Option(600, help="Seconds to wait with --wait")) -> None:
    """Cancel a run: its running steps' jobs are killed, the steps not started are not run, a managed cluster is
    deleted; the run ends KILLED (`restart` takes it up again from its unfinished steps)."""
    c = client(ctx)
    run = c.post(f"/workflow-runs/{run_id}/cancel", {})["workflow_run"]
    if wait:
        run = _wait(c, run["id"], timeout)
    _show_run(ctx, run)


@command(app, "show")
def show(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME|RUN_ID",
                                                       help="A run's id, or a workflow (its latest run)")) -> None:
    """Show a run's steps with their statuses (a workflow's name: its latest run, or its steps if it never ran)."""
    c = client(ctx)
    found = _run_or_none(c, ref)
    if found is not None:
        _show_run(ctx, found)
        return
    flow = _workflow(c, ref)
    runs = c.get("/workflow-runs", workflow_id=flow["id"], sort_by="-created_at").get("workflow_runs") or []
    if runs:
        _show_run(ctx, runs[0])
        return
    if options(ctx).as_json:
        print(json.dumps(flow, indent=2, sort_keys=True))
        return
    table(flow["steps"], [("Step", "name"), ("Depends on", lambda s: ", ".join(s["depends_on"])),
                          ("Job template", "job_template_id")], title=f"workflow {flow['name']}: never run")
