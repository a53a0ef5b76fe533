"""`oasis keypair ...`: the SSH public keys a cluster may name (`oasis cluster create --keypair`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from oasis.cli.client import OasisError
from oasis.cli.common import client, command, console, record, table

app = typer.Typer(help="Keypairs: your SSH public keys, put on a cluster's hosts.", no_args_is_help=True)


@command(app, "list")
def list_keypairs(ctx: typer.Context) -> None:
    """List the project's keypairs."""
    table(client(ctx).get("/keypairs")["keypairs"], [("Name", "name"), ("Fingerprint", "fingerprint"),
                                                     ("ID", "id")], ctx=ctx)


@command(app, "create")
def create(ctx: typer.Context, name: str,
           public_key: Optional[Path] = typer.Option(None, "--public-key",
                                                     help="Import this public key file (e.g. ~/.ssh/id_ed25519.pub)"),
           private_key: Optional[Path] = typer.Option(None, "--private-key",
                                                      help="Without --public-key: write the generated private key "
                                                           "here (mode 600); the service keeps no copy")) -> None:
    """Import a public key, or generate a keypair and save its private key."""
    body = {"name": name}
    if public_key is not None:
        if private_key is not None:
            raise OasisError("give --public-key or --private-key, not both")
        try:
            body["public_key"] = public_key.expanduser().read_text().strip()
        except OSError as e:
            raise OasisError(f"cannot read {public_key}: {e}") from None
    elif private_key is None:
        raise OasisError("give --public-key FILE to import a key, or --private-key FILE to generate one")
    elif private_key.expanduser().exists():
        raise OasisError(f"{private_key} exists; not overwriting it")
    kp = client(ctx).post("/keypairs", body)["keypair"]
    secret = kp.pop("private_key", None)
    if secret is not None and private_key is not None:
        path = private_key.expanduser()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret)
        console.print(f"private key written to {path}")
    console.print(f"created keypair [bold]{kp['name']}[/] {kp['fingerprint']} ({kp['id']})")


@command(app, "show")
def show(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID")) -> None:
    """Show a keypair."""
    record(client(ctx).get(f"/keypairs/{ref}")["keypair"], ctx)


@command(app, "delete")
def delete(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID")) -> None:
    """Delete a keypair (clusters keep the key line they have until `update_keypair`)."""
    c = client(ctx)
    kp = c.get(f"/keypairs/{ref}")["keypair"]
    c.delete(f"/keypairs/{kp['id']}")
    console.print(f"deleted keypair {kp['name']}")
