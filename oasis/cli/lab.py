"""`oasis lab up|status|down`: the CLI of the network-namespace lab (oasis/lab), a typer sub-app that the main
CLI mounts as `oasis lab`. `up` hands the manifest to the running service as `oasis site register` does."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from oasis.cli.client import OasisError
from oasis.cli.sites import register_manifest
from oasis.lab import lab as labmod
from oasis.lab.model import LabFileError, load_lab
from oasis.lab.paths import Paths
from oasis.lab.requirements import ensure_packages

lab_app = typer.Typer(help="Build sites of SSH hosts in network namespaces on this machine (needs root).", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

FileOpt = typer.Option(None, "--file", "-f", help="Lab file (YAML); the built-in default lab when omitted.")
StateOpt = typer.Option(
    None, "--state-dir", help="Where keys, sshd files, state and manifest live [env OASIS_LAB_DIR; /var/lib/oasis-lab]."
)


def _fail(msg: str, code: int = 1) -> None:
    # one line, no traceback: these are the user's to fix
    err.print(f"[red]error:[/red] {msg}", highlight=False)
    raise typer.Exit(code)


def _root() -> None:
    if os.geteuid() != 0:
        _fail("oasis lab needs root (it creates network namespaces, links and routes); run it with sudo", 2)


def _lab(file: Optional[Path], state_dir: Path):
    # status/down without --file use the lab file `up` was given, as recorded in the state
    if file is None:
        st = Paths(state_dir).state_file
        if st.exists():
            recorded = json.loads(st.read_text()).get("lab_file")
            if recorded:
                file = Path(recorded)
    try:
        return load_lab(file), (str(file.resolve()) if file else None)
    except LabFileError as exc:
        _fail(str(exc))


@lab_app.command()
def up(ctx: typer.Context, file: Optional[Path] = FileOpt, state_dir: Optional[Path] = StateOpt,
       register: bool = typer.Option(True, "--register/--no-register",
                                     help="Register the lab's sites with the running oasis (found as the CLI finds it)")) -> None:
    """Build the lab (or complete a half-built one); running it again changes nothing."""
    _root()
    sd = labmod.state_dir_from_env(state_dir)
    lab, lab_file = _lab(file, sd)
    try:
        installed = ensure_packages()
        if installed:
            out.print(f"installed: {', '.join(installed)}")
        result = labmod.up(lab, sd, lab_file=lab_file, log=lambda m: out.print(m, highlight=False))
    except (labmod.LabError, RuntimeError) as exc:
        _fail(f"{exc} (run `oasis lab down` to clean up)")
    out.print(f"manifest: {result.manifest}", highlight=False)
    out.print(f"client key: {Paths(sd).client_key}   known_hosts: {Paths(sd).known_hosts}", highlight=False)
    out.print(f"up in {result.seconds:.2f}s", highlight=False)
    if register:
        _register(ctx, result.manifest)


def _register(ctx: typer.Context, manifest: Path) -> None:
    """Hand the manifest to the running service; without one, say how to do it later."""
    try:
        for site in register_manifest(ctx, manifest):
            out.print(f"registered site {site['name']} ({site['access']}, {site['hosts_count']} hosts)", highlight=False)
    except OasisError as exc:
        out.print(f"not registered ({exc}); once oasis runs: oasis site register {manifest}", highlight=False)


@lab_app.command()
def status(file: Optional[Path] = FileOpt, state_dir: Optional[Path] = StateOpt) -> None:
    """Show sites and hosts: namespace present, sshd alive (by recorded pid), ssh port open."""
    _root()
    sd = labmod.state_dir_from_env(state_dir)
    lab, _ = _lab(file, sd)
    rows = labmod.status(lab, sd)
    table = Table(title=f"oasis lab {lab.name!r} ({sd})")
    for col in ("site", "network", "host", "role", "address", "floating", "netns", "sshd", "port 22"):
        table.add_column(col)
    yes, no = "[green]yes[/green]", "[red]no[/red]"
    for r in rows:
        table.add_row(
            r.site, r.leaf, r.host, r.role, r.address, r.floating or "-",
            yes if r.namespace else no,
            f"{r.sshd_pid} up" if r.sshd_alive else (f"{r.sshd_pid} dead" if r.sshd_pid else "-"),
            yes if r.port_open else no,
        )
    # a pipe or CI log gets the whole table rather than 80-column ellipses
    (out if out.is_terminal else Console(width=160)).print(table)
    if not all(r.namespace and r.sshd_alive and r.port_open for r in rows):
        raise typer.Exit(1)


@lab_app.command()
def down(
    file: Optional[Path] = FileOpt,
    state_dir: Optional[Path] = StateOpt,
    purge: bool = typer.Option(False, "--purge", help="Also delete the state dir (keys, host dirs)."),
) -> None:
    """Remove every namespace, link, route, nft table and process of the lab; safe to run twice."""
    _root()
    sd = labmod.state_dir_from_env(state_dir)
    lab, _ = _lab(file, sd)
    try:
        result = labmod.down(sd, lab, purge=purge)
    except labmod.LabError as exc:
        _fail(str(exc))
    out.print(f"removed {len(result.removed)} objects in {result.seconds:.2f}s", highlight=False)
