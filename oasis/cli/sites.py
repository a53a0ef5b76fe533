"""`oasis site ...`: the sites clusters are placed on, their hosts and free capacity."""
from __future__ import annotations

from pathlib import Path

import typer
import yaml

from oasis.cli.common import client, command, console, record, table

app = typer.Typer(help="Sites: groups of hosts (availability zones) that clusters are placed on.",
                  no_args_is_help=True)


@command(app, "list")
def list_sites(ctx: typer.Context) -> None:
    """List sites."""
    table(client(ctx).get("/sites")["sites"], [("Name", "name"), ("Access", "access"), ("Hosts", "hosts_count"),
                                                ("Status", "status"), ("ID", "id")], ctx=ctx)


@command(app, "show")
def show(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID")) -> None:
    """Show a site: its hosts with their free capacity, and its clusters."""
    site = client(ctx).get(f"/sites/{ref}")["site"]
    hosts = site.pop("hosts", [])
    record(site, ctx)
    table([{**h, "free": f"{h['free']['vcpus']:g} vCPU, {h['free']['ram_mb']:g} MB",
            "capacity": f"{h['capacity']['vcpus']} vCPU, {h['capacity']['ram_mb']} MB"} for h in hosts],
          [("Host", "name"), ("Address", "address"), ("Floating", "floating_address"), ("Capacity", "capacity"),
           ("Free", "free"), ("Status", "status")], ctx=ctx)


def register_manifest(ctx: typer.Context, manifest_path: Path) -> list[dict]:
    manifest = yaml.safe_load(manifest_path.read_text())
    key = Path(manifest["controller"]["private_key"]).read_text()
    return client(ctx).post("/sites", {"manifest": manifest, "private_key": key})["sites"]


@command(app, "register")
def register(ctx: typer.Context, manifest: Path = typer.Argument(..., exists=True, dir_okay=False,
                                                                 help="A site manifest, e.g. the one `oasis lab up` writes")) -> None:
    """Register (or update) the sites of a manifest, pinning their hosts' keys (admin only)."""
    for site in register_manifest(ctx, manifest):
        console.print(f"registered site [bold]{site['name']}[/] ({site['access']}, {site['hosts_count']} hosts)")
