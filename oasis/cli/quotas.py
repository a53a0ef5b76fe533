"""`oasis quota ...`: a project's limits beside what it uses (`show`), and an administrator's `set`."""
from __future__ import annotations

import json
from typing import Any, Optional

import typer

from oasis.cli.client import OasisError
from oasis.cli.common import client, command, console, options, table

app = typer.Typer(help="Quotas: what a project may hold (clusters, instances, vCPUs, RAM, volume GB, running "
                       "jobs) and what it holds now.", no_args_is_help=True)

KEYS = ("clusters", "instances", "vcpus", "ram_mb", "volume_gb", "running_jobs")
_HELP = "The most the project may hold; -1: unlimited"


def _show(ctx: typer.Context, answer: dict[str, Any]) -> None:
    if options(ctx).as_json:
        print(json.dumps(answer, indent=2, sort_keys=True))
        return
    quota, usage = answer["quota"], answer["usage"]
    rows = [{"key": k, "used": usage.get(k, 0), "limit": "unlimited" if quota.get(k, -1) == -1 else quota[k]}
            for k in KEYS]
    table(rows, [("Quota", "key"), ("Used", "used"), ("Limit", "limit")], title=f"project {answer['project_id']}")


@command(app, "show")
def show(ctx: typer.Context, project: Optional[str] = typer.Argument(
        None, metavar="[PROJECT]", help="A project's name or id (default: your own; another's: administrators)")) -> None:
    """Show a project's limits and usage."""
    _show(ctx, client(ctx).get(f"/quotas/{project}" if project else "/quotas"))


@command(app, "set")
def set_quota(ctx: typer.Context, project: str = typer.Argument(..., metavar="PROJECT",
                                                                help="The project's name or id"),
              clusters: Optional[int] = typer.Option(None, "--clusters", help=_HELP),
              instances: Optional[int] = typer.Option(None, "--instances", help=_HELP),
              vcpus: Optional[int] = typer.Option(None, "--vcpus", help=_HELP),
              ram_mb: Optional[int] = typer.Option(None, "--ram-mb", help=_HELP),
              volume_gb: Optional[int] = typer.Option(None, "--volume-gb", help=_HELP),
              running_jobs: Optional[int] = typer.Option(None, "--running-jobs", help=_HELP)) -> None:
    """Set some of a project's limits (administrators); the others keep theirs."""
    given = {"clusters": clusters, "instances": instances, "vcpus": vcpus, "ram_mb": ram_mb,
             "volume_gb": volume_gb, "running_jobs": running_jobs}
    body = {k: v for k, v in given.items() if v is not None}
    if not body:
        raise OasisError("give at least one limit, e.g. --instances 20 (-1: unlimited)")
    answer = client(ctx).put(f"/quotas/{project}", {"quota": body})
    if not options(ctx).as_json:
        console.print(f"quota of project {project} set: " + ", ".join(f"{k} {v}" for k, v in body.items()))
    _show(ctx, answer)
