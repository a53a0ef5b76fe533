"""`oasis binary ...`: job binaries (the programs jobs run), stored by the service itself."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from oasis.cli.client import ApiError, OasisError
from oasis.cli.common import client, command, console, record, table

app = typer.Typer(help="Job binaries: scripts and jars that job templates run.", no_args_is_help=True)


@command(app, "list")
def list_binaries(ctx: typer.Context) -> None:
    """List job binaries."""
    table(client(ctx).list("job-binaries"), [("ID", "id"), ("Name", "name"), ("URL", "url"),
                                              ("Description", "description")], ctx=ctx)


@command(app, "upload")
def upload(ctx: typer.Context, file: Path = typer.Argument(..., help="The file to upload"),
           name: Optional[str] = typer.Option(None, help="Binary name (default: the file's name)"),
           description: str = typer.Option("", help="Free text")) -> None:
    """Upload a file into the service and create a job binary for it (url internal-db://...)."""
    try:
        data = file.read_bytes()
    except OSError as e:
        raise OasisError(f"cannot read {file}: {e.strerror or e}") from None
    obj = client(ctx).upload_binary(name or file.name, data, description)
    console.print(f"uploaded [bold]{obj['name']}[/] ({len(data)} bytes) as {obj['url']} ({obj['id']})")


@command(app, "show")
def show(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID")) -> None:
    """Show a job binary."""
    record(client(ctx).find("job-binaries", ref), ctx)


@command(app, "delete")
def delete(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID")) -> None:
    """Delete a job binary (and its stored bytes, for internal-db binaries)."""
    c = client(ctx)
    obj = c.find("job-binaries", ref)
    c.delete(f"/job-binaries/{obj['id']}")
    url = obj.get("url") or ""
    if url.startswith("internal-db://"):
        try:
            c.delete(f"/job-binary-internals/{url.removeprefix('internal-db://')}")
        except ApiError as e:
            if e.code not in (404, 405):
                raise
    console.print(f"deleted job binary {obj['name']}")
