"""`oasis pool ...`: warm pools of ready clusters of a cluster template (docs/pools.md)."""
from __future__ import annotations

from typing import Any, Optional

import typer

from oasis.cli.common import client, command, console, options, record, table

app = typer.Typer(help="Warm pools: ready clusters of a template, taken at once by a matching cluster create.",
                  no_args_is_help=True)


def _columns() -> list[tuple[str, Any]]:
    return [("ID", "id"), ("Name", "name"), ("Template", "cluster_template_id"), ("Site", "availability_zone"),
            ("Size", "size"), ("Ready", "ready"), ("Starting", "starting"), ("Status", "status")]


@command(app, "create")
def create(ctx: typer.Context, name: str,
           template: str = typer.Option(..., "--template", "-t", help="Cluster template (name or id)"),
           size: int = typer.Option(..., "--size", "-n", help="Ready clusters to keep (0-100)"),
           site: Optional[str] = typer.Option(None, "--site", help="Availability zone (default: the template's "
                                                                    "or the default site)"),
           max_age: Optional[str] = typer.Option(None, "--max-age", help="Replace a pooled cluster after this "
                                                                         "long ('6h', seconds)")) -> None:
    """Create a warm pool; the engine fills it in the background."""
    c = client(ctx)
    tmpl = c.find("cluster-templates", template)
    body: dict[str, Any] = {"name": name, "cluster_template_id": tmpl["id"], "size": size}
    if site:
        body["availability_zone"] = site
    if max_age:
        body["max_age"] = int(max_age) if max_age.isdigit() else max_age
    pool = c.create("pools", {"pool": body})
    if options(ctx).as_json:
        record(pool, ctx)
        return
    console.print(f"pool [bold]{pool['name']}[/] ({pool['id']}): {size} cluster(s) of template {tmpl['name']} "
                  f"on {pool['availability_zone']}, filling")


@command(app, "list")
def list_pools(ctx: typer.Context) -> None:
    """List the project's warm pools."""
    table(client(ctx).list("pools"), _columns(), ctx=ctx)


@command(app, "show")
def show(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID")) -> None:
    """Show a pool: its size, what is ready and starting, and its clusters."""
    pool = client(ctx).find("pools", ref)
    record(pool, ctx, skip=("clusters",))
    if not options(ctx).as_json:
        table(pool.get("clusters") or [], [("ID", "id"), ("Name", "name"), ("Status", "status")],
              title="Pooled clusters")


@command(app, "resize")
def resize(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID"),
           size: int = typer.Option(..., "--size", "-n", help="Ready clusters to keep (0-100)")) -> None:
    """Change a pool's size: the refill makes or removes pooled clusters to reach it."""
    c = client(ctx)
    pool = c.find("pools", ref)
    c.patch(f"/pools/{pool['id']}", {"pool": {"size": size}})
    console.print(f"pool [bold]{pool['name']}[/]: size {size}")


@command(app, "delete")
def delete(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID")) -> None:
    """Delete a pool and its unclaimed clusters (clusters taken from it stay)."""
    c = client(ctx)
    pool = c.find("pools", ref)
    c.delete(f"/pools/{pool['id']}")
    console.print(f"pool [bold]{pool['name']}[/] deleted; its {len(pool.get('clusters') or [])} unclaimed "
                  f"cluster(s) are being deleted")
