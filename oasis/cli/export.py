"""`oasis export`: the control plane's bundle for sites, as one YAML file (mode 0600: it holds the join token)."""
from __future__ import annotations

import os
from pathlib import Path

import typer
import yaml

from oasis.cli.common import client, command, console, fail

DEFAULT_NAME = "oasis-export-v{version}.yaml"


def write_private(path: Path, text: str, force: bool) -> None:
    """Write `text` to `path` mode 0600; an existing file is replaced only with `force` (atomically)."""
    if path.exists() and not force:
        raise FileExistsError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if the file appeared meanwhile: never overwritten without --force
            os.unlink(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def register(app: typer.Typer) -> None:
    @command(app, "export")
    def export(ctx: typer.Context,
               output: Path | None = typer.Option(None, "--output", "-o",
                                                     help="File to write (default oasis-export-v<N>.yaml)"),
               force: bool = typer.Option(False, "--force", "-f", help="Overwrite FILE if it exists"),
               version: int | None = typer.Option(None, "--version",
                                                     help="Write this existing version instead of a new one")
               ) -> None:
        """Export the control plane's bundle for sites (EndpointMap, HostsEntry, GlobalConfig, AllNodesConfig,
        join secrets) as a new version; earlier versions stay retrievable with --version (admin only)."""
        if output is not None and output.exists() and not force:
            raise fail(f"{output} exists; use --force to overwrite it")
        c = client(ctx)
        if version is None:
            exp = c.post("/exports", {})["export"]
        else:
            exp = c.get(f"/exports/{version}")["export"]
        path = output or Path(DEFAULT_NAME.format(version=exp["version"]))
        header = f"# oasis control plane export, version {exp['version']} ({exp['created_at']}): keep it private\n"
        text = header + yaml.safe_dump({"version": exp["version"], **exp["bundle"]}, sort_keys=False)
        try:
            write_private(path, text, force)
        except FileExistsError:
            raise fail(f"{path} exists; use --force to overwrite it") from None
        console.print(f"exported version [bold]{exp['version']}[/] to {path}")
        transport = exp["bundle"].get("Transport") or {}
        if transport.get("join_use_tls"):
            how = "the CA in the bundle" if transport.get("ca_cert") else "their system's CAs"
            console.print(f"sites reach the control plane at {transport['api_url']} over TLS, verified with {how}")
