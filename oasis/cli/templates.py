"""`oasis template ngt ...` and `oasis template ct ...`"""
from __future__ import annotations

from typing import Optional

import typer

from oasis.cli.client import OasisError
from oasis.cli.common import client, command, console, record, table
from oasis.cli.plugins import latest_version

app = typer.Typer(help="Node group templates (ngt) and cluster templates (ct).", no_args_is_help=True)
ngt = typer.Typer(help="Node group templates: a flavor and the processes each node runs.", no_args_is_help=True)
ct = typer.Typer(help="Cluster templates: node groups and their counts.", no_args_is_help=True)
app.add_typer(ngt, name="ngt")
app.add_typer(ct, name="ct")

COLUMNS = [("ID", "id"), ("Name", "name"), ("Plugin", "plugin_name"), ("Version", "plugin_version")]


@command(ngt, "list")
def ngt_list(ctx: typer.Context, plugin: Optional[str] = typer.Option(None, help="Only this plugin's")) -> None:
    """List node group templates."""
    rows = [r for r in client(ctx).list("node-group-templates") if not plugin or r.get("plugin_name") == plugin]
    table(rows, COLUMNS + [("Flavor", "flavor_id"), ("Processes", "node_processes")], ctx=ctx)


@command(ngt, "create")
def ngt_create(ctx: typer.Context, name: str,
               plugin: str = typer.Option(..., help="spark or dask"),
               version: Optional[str] = typer.Option(None, help="Plugin version (default: the newest)"),
               flavor: str = typer.Option("2", help="Flavor id or name (2 = m1.small)"),
               process: list[str] = typer.Option(..., "--process", "-p", help="A node process; repeat for more"),
               description: str = typer.Option("", help="Free text")) -> None:
    """Create a node group template."""
    c = client(ctx)
    body = {"name": name, "plugin_name": plugin, "plugin_version": version or latest_version(c, plugin),
            "flavor_id": flavor, "node_processes": process, "description": description}
    obj = c.create("node-group-templates", body)
    console.print(f"created node group template [bold]{obj['name']}[/] ({obj['id']})")


@command(ngt, "show")
def ngt_show(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID")) -> None:
    """Show a node group template."""
    record(client(ctx).find("node-group-templates", ref), ctx)


@command(ngt, "delete")
def ngt_delete(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID")) -> None:
    """Delete a node group template."""
    c = client(ctx)
    obj = c.find("node-group-templates", ref)
    c.delete(f"/node-group-templates/{obj['id']}")
    console.print(f"deleted node group template {obj['name']}")


@command(ct, "list")
def ct_list(ctx: typer.Context, plugin: Optional[str] = typer.Option(None, help="Only this plugin's")) -> None:
    """List cluster templates."""
    rows = [r for r in client(ctx).list("cluster-templates") if not plugin or r.get("plugin_name") == plugin]
    table(rows, COLUMNS + [("Node groups", lambda r: ", ".join(
        f"{ng.get('name')}×{ng.get('count')}" for ng in r.get("node_groups") or []))], ctx=ctx)


@command(ct, "create")
def ct_create(ctx: typer.Context, name: str,
              plugin: str = typer.Option(..., help="spark or dask"),
              version: Optional[str] = typer.Option(None, help="Plugin version (default: the newest)"),
              node_group: list[str] = typer.Option(..., "--node-group", "-n",
                                                   help="NAME:NODE_GROUP_TEMPLATE:COUNT; repeat for more"),
              description: str = typer.Option("", help="Free text")) -> None:
    """Create a cluster template from node group templates."""
    c = client(ctx)
    groups = []
    for spec in node_group:
        parts = spec.split(":")
        if len(parts) != 3 or not parts[2].isdigit():
            raise OasisError(f"--node-group '{spec}' is not NAME:NODE_GROUP_TEMPLATE:COUNT")
        template = c.find("node-group-templates", parts[1])
        groups.append({"name": parts[0], "node_group_template_id": template["id"], "count": int(parts[2])})
    body = {"name": name, "plugin_name": plugin, "plugin_version": version or latest_version(c, plugin),
            "node_groups": groups, "description": description}
    obj = c.create("cluster-templates", body)
    console.print(f"created cluster template [bold]{obj['name']}[/] ({obj['id']})")


@command(ct, "show")
def ct_show(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID")) -> None:
    """Show a cluster template."""
    obj = client(ctx).find("cluster-templates", ref)
    record(obj, ctx, skip=("node_groups",))
    if obj.get("node_groups"):
        table(obj["node_groups"], [("Node group", "name"), ("Count", "count"), ("Flavor", "flavor_id"),
                                   ("Processes", "node_processes"), ("Template", "node_group_template_id")])


@command(ct, "delete")
def ct_delete(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID")) -> None:
    """Delete a cluster template."""
    c = client(ctx)
    obj = c.find("cluster-templates", ref)
    c.delete(f"/cluster-templates/{obj['id']}")
    console.print(f"deleted cluster template {obj['name']}")
