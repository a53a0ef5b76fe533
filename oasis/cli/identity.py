"""`oasis project ...` and `oasis user ...`: the built-in identity's projects and users (admin only)."""
from __future__ import annotations

from typing import Optional
from urllib.parse import urlsplit

import typer

from oasis.cli.client import OasisClient
from oasis.cli.common import client, command, console, table

projects = typer.Typer(help="Projects of the built-in identity (admin only).", no_args_is_help=True)
users = typer.Typer(help="Users of the built-in identity (admin only).", no_args_is_help=True)


def _v3(c: OasisClient, path: str) -> str:
    """Identity calls live beside the data-processing API, under /v3."""
    parts = urlsplit(c.endpoint)
    return f"{parts.scheme}://{parts.netloc}/v3{path}"


@command(projects, "create")
def create_project(ctx: typer.Context, name: str) -> None:
    """Create a project."""
    c = client(ctx)
    project = c.post(_v3(c, "/projects"), {"project": {"name": name}})["project"]
    console.print(f"created project [bold]{project['name']}[/] ({project['id']})")


@command(projects, "list")
def list_projects(ctx: typer.Context) -> None:
    """List projects."""
    c = client(ctx)
    table(c.get(_v3(c, "/projects"))["projects"], [("Name", "name"), ("ID", "id")], ctx=ctx)


@command(users, "create")
def create_user(ctx: typer.Context, name: str,
                password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True),
                project: Optional[str] = typer.Option(None, help="Project id to make the user a member of"),
                role: str = typer.Option("member", help="Role on that project: admin, member or reader")) -> None:
    """Create a user, optionally with a role on a project."""
    c = client(ctx)
    user = c.post(_v3(c, "/users"), {"user": {"name": name, "password": password}})["user"]
    if project:
        c.request("PUT", _v3(c, f"/projects/{project}/users/{user['id']}/roles/{role}"))
    console.print(f"created user [bold]{user['name']}[/] ({user['id']})" + (f", {role} of {project}" if project else ""))


@command(users, "list")
def list_users(ctx: typer.Context) -> None:
    """List users."""
    c = client(ctx)
    table(c.get(_v3(c, "/users"))["users"], [("Name", "name"), ("ID", "id")], ctx=ctx)
