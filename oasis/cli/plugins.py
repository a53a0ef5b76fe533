"""`oasis plugin ...`"""
from __future__ import annotations

from typing import Optional

import typer

from oasis.cli.client import OasisClient, OasisError
from oasis.cli.common import client, command, record, table

app = typer.Typer(help="Plugins: the data frameworks oasis can deploy.", no_args_is_help=True)


@command(app, "list")
def list_plugins(ctx: typer.Context) -> None:
    """List the plugins and their versions."""
    table(client(ctx).list("plugins"), [("Name", "name"), ("Title", "title"), ("Versions", "versions"),
                                         ("Description", "description")], ctx=ctx)


@command(app, "show")
def show(ctx: typer.Context, name: str, version: Optional[str] = typer.Argument(None)) -> None:
    """Show a plugin (and, with VERSION, its node processes and configs)."""
    path = f"/plugins/{name}/{version}" if version else f"/plugins/{name}"
    record(client(ctx).get(path)["plugin"], ctx)


def latest_version(c: OasisClient, plugin: str) -> str:
    """The plugin's newest version, as the service reports it."""
    versions = c.get(f"/plugins/{plugin}")["plugin"].get("versions") or []
    if not versions:
        raise OasisError(f"plugin {plugin} has no versions on this service")
    return sorted(versions, key=_version_key)[-1]


def _version_key(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in str(v).split("."))
