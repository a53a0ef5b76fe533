"""`oasis job ...` (executions) and `oasis job template ...`"""
from __future__ import annotations

import codecs
import json
import sys
import time
from pathlib import Path
from typing import IO, Any, Optional

import typer

from oasis.cli.client import OasisClient, OasisError
from oasis.cli.common import client, command, console, err_console, key_values, parse_time, record, seconds, table
from oasis.cli.watch import job_status, wait_jobs

FOLLOW_SECONDS = 0.5  # how often `logs -f` asks for what is new: the log is at most about a second behind

app = typer.Typer(help="Jobs: run job templates on clusters; status, logs, cancel.", no_args_is_help=True)
templates = typer.Typer(help="Job templates: a job type and its main binary.", no_args_is_help=True)
app.add_typer(templates, name="template")


def duration(job: dict[str, Any]) -> str:
    """From the job's start and end times (whole seconds)."""
    start, end = parse_time(job.get("start_time")), parse_time(job.get("end_time"))
    return f"{(end - start).total_seconds():.0f}s" if start and end else ""


@command(templates, "list")
def template_list(ctx: typer.Context) -> None:
    """List job templates."""
    table(client(ctx).list("job-templates"), [
        ("ID", "id"), ("Name", "name"), ("Type", "type"),
        ("Mains", lambda t: [m.get("name") if isinstance(m, dict) else m for m in t.get("mains") or []])], ctx=ctx)


@command(templates, "create")
def template_create(ctx: typer.Context, name: str,
                    type_: str = typer.Option(..., "--type", help="Spark, Dask, Shell or Java"),
                    main: Optional[str] = typer.Option(None, help="Main job binary (name or id)"),
                    lib: list[str] = typer.Option([], help="Library job binary (name or id); repeat for more"),
                    description: str = typer.Option("", help="Free text"),
                    interface: Optional[Path] = typer.Option(None, help="JSON file: the template's interface "
                                                                        "(a list of arguments)")) -> None:
    """Create a job template."""
    c = client(ctx)
    body: dict[str, Any] = {"name": name, "type": type_, "description": description,
                            "mains": [c.find("job-binaries", main)["id"]] if main else [],
                            "libs": [c.find("job-binaries", ref)["id"] for ref in lib]}
    if interface is not None:
        try:
            body["interface"] = json.loads(interface.read_text())
        except (OSError, ValueError) as e:
            raise OasisError(f"--interface {interface}: {e}") from None
    obj = c.create("job-templates", body)
    console.print(f"created job template [bold]{obj['name']}[/] ({obj['id']})")


@command(templates, "show")
def template_show(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID")) -> None:
    """Show a job template."""
    record(client(ctx).find("job-templates", ref), ctx)


@command(templates, "delete")
def template_delete(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID")) -> None:
    """Delete a job template."""
    c = client(ctx)
    obj = c.find("job-templates", ref)
    c.delete(f"/job-templates/{obj['id']}")
    console.print(f"deleted job template {obj['name']}")


@command(app, "list")
def list_jobs(ctx: typer.Context, status: Optional[str] = typer.Option(None, help="Only jobs in this status")
              ) -> None:
    """List jobs."""
    c = client(ctx)
    names = {t["id"]: t["name"] for t in c.list("job-templates")}
    clusters = {cl["id"]: cl["name"] for cl in c.list("clusters")}
    table(c.list("jobs", status=status), [
        ("ID", "id"), ("Template", lambda j: names.get(j.get("job_template_id"), j.get("job_template_id"))),
        ("Cluster", lambda j: clusters.get(j.get("cluster_id"), j.get("cluster_id"))),
        ("Status", job_status), ("Started", "start_time"), ("Duration", duration)], ctx=ctx)


@command(app, "run")
def run(ctx: typer.Context,
        template: str = typer.Option(..., help="Job template name or id"),
        cluster: str = typer.Option(..., help="Cluster name or id"),
        input_: Optional[str] = typer.Option(None, "--input", help="Input data source (name or id)"),
        output: Optional[str] = typer.Option(None, help="Output data source (name or id)"),
        arg: list[str] = typer.Option([], "--arg", help="An argument; datasource://NAME becomes its URL"),
        config: list[str] = typer.Option([], "--config", help="KEY=VALUE job config; repeat for more"),
        param: list[str] = typer.Option([], "--param", help="KEY=VALUE parameter (Shell: environment)"),
        value: list[str] = typer.Option([], "--value", help="NAME=VALUE of the template's interface (a "
                                                             "data_source argument takes a data source's name)"),
        wait: bool = typer.Option(False, "--wait", help="Wait for the end and print its stdout"),
        timeout: float = typer.Option(1800, help="Seconds to wait with --wait")) -> None:
    """Run a job template on a cluster."""
    c = client(ctx)
    configs: dict[str, Any] = {"edp.substitute_data_source_for_name": True, **key_values(config, "--config")}
    jt = c.find("job-templates", template)
    sources = {a["name"] for a in jt.get("interface") or [] if a.get("value_type") == "data_source"}
    values = {k: c.find("data-sources", v)["id"] if k in sources else v
              for k, v in key_values(value, "--value").items()}
    body: dict[str, Any] = {"job_template_id": jt["id"], "cluster_id": c.find("clusters", cluster)["id"],
                            "job_configs": {"configs": configs, "args": arg, "params": key_values(param, "--param")},
                            "interface": values}
    if input_:
        body["input_id"] = c.find("data-sources", input_)["id"]
    if output:
        body["output_id"] = c.find("data-sources", output)["id"]
    job = c.create("jobs", body)
    console.print(f"job {job['id']}: {job_status(job)}")
    if not wait:
        return
    done = wait_jobs(c, {job["id"]: template}, timeout=timeout)[job["id"]]
    status = job_status(done)
    sys.stdout.write(c.logs(job["id"]))
    sys.stdout.flush()
    if status != "SUCCEEDED":
        tail = c.logs(job["id"], "stderr")[-2000:]
        raise OasisError(f"job {job['id']} ended {status}" + (f"; end of its stderr:\n{tail}" if tail else ""))
    console.print(f"job {job['id']}: SUCCEEDED in {duration(done) or seconds(done['_seconds'])}")


@command(app, "show")
def show(ctx: typer.Context, job_id: str) -> None:
    """Show a job."""
    record(client(ctx).show("jobs", job_id), ctx)


@command(app, "cancel")
def cancel(ctx: typer.Context, job_id: str) -> None:
    """Cancel a running job."""
    c = client(ctx)
    c.patch(f"/jobs/{job_id}", {"info": {"status": "cancel"}})
    console.print(f"cancelling job {job_id}")


@command(app, "suspend")
def suspend(ctx: typer.Context, job_id: str) -> None:
    """Suspend a running job (its processes stop where they are)."""
    client(ctx).patch(f"/jobs/{job_id}", {"info": {"status": "suspend"}})
    console.print(f"suspending job {job_id}")


@command(app, "resume")
def resume(ctx: typer.Context, job_id: str) -> None:
    """Resume a suspended job."""
    client(ctx).patch(f"/jobs/{job_id}", {"info": {"status": "resume"}})
    console.print(f"resuming job {job_id}")


@command(app, "delete")
def delete(ctx: typer.Context, job_id: str) -> None:
    """Delete a job (cancelling it first if it runs)."""
    client(ctx).delete(f"/jobs/{job_id}")
    console.print(f"deleted job {job_id}")


@command(app, "logs")
def logs(ctx: typer.Context, job_id: str,
         stderr: bool = typer.Option(False, "--stderr", help="The job's stderr instead of its stdout"),
         follow: bool = typer.Option(False, "-f", "--follow",
                                     help="Print new output as it comes, until the job ends")) -> None:
    """Print a job's stdout (or stderr); with -f, follow it while the job runs."""
    stream = "stderr" if stderr else "stdout"
    c = client(ctx)
    if not follow:
        sys.stdout.write(c.logs(job_id, stream))
        sys.stdout.flush()
        return
    try:
        follow_log(c, job_id, stream)
    except KeyboardInterrupt:  # the user stopped following; the job goes on
        raise typer.Exit(130) from None
    job = c.show("jobs", job_id)
    status = job_status(job)
    rc = job.get("return_code")
    err_console.print(f"job {job_id} ended {status}" + (f" (exit code {rc})" if rc is not None else ""))
    if status != "SUCCEEDED":
        raise typer.Exit(1)


def follow_log(c: OasisClient, job_id: str, stream: str, interval: float = FOLLOW_SECONDS,
               out: IO[str] | None = None) -> None:
    """Print a job's log as it grows, asking for the bytes past what was printed, until it is complete."""
    out = out or sys.stdout
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character split across two reads
    offset = 0
    while True:
        data, size, complete = c.log_piece(job_id, stream, offset)
        offset += len(data)
        text = decoder.decode(data, final=complete and offset >= size)
        if text:
            out.write(text)
            out.flush()
        if complete and offset >= size:
            return
        if offset >= size:  # nothing more yet: poll again soon; more waiting means bytes are known already
            time.sleep(interval)
