"""`oasis datasource ...`: where jobs read and write."""
from __future__ import annotations

from pathlib import Path

import typer

from oasis.cli.common import client, command, console, record, table

app = typer.Typer(help="Data sources: input and output locations of jobs.", no_args_is_help=True)


def file_url(url: str) -> str:
    """A plain path becomes file:///absolute/path; URLs are kept as given."""
    return url if "://" in url else Path(url).expanduser().resolve().as_uri()


@command(app, "list")
def list_sources(ctx: typer.Context) -> None:
    """List data sources."""
    table(client(ctx).list("data-sources"), [("ID", "id"), ("Name", "name"), ("Type", "type"), ("URL", "url")],
          ctx=ctx)


@command(app, "create")
def create(ctx: typer.Context, name: str,
           url: str = typer.Option(..., help="file:///path (or a plain path), swift://..., s3://..., hdfs://..."),
           type_: str = typer.Option("file", "--type", help="file, swift, s3, hdfs, manila"),
           description: str = typer.Option("", help="Free text")) -> None:
    """Create a data source."""
    body = {"name": name, "type": type_, "url": file_url(url) if type_ == "file" else url,
            "description": description}
    obj = client(ctx).create("data-sources", body)
    console.print(f"created data source [bold]{obj['name']}[/] {obj['url']} ({obj['id']})")


@command(app, "show")
def show(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID")) -> None:
    """Show a data source."""
    record(client(ctx).find("data-sources", ref), ctx)


@command(app, "delete")
def delete(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID")) -> None:
    """Delete a data source."""
    c = client(ctx)
    obj = c.find("data-sources", ref)
    c.delete(f"/data-sources/{obj['id']}")
    console.print(f"deleted data source {obj['name']}")
