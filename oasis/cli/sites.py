"""`oasis site ...`: the sites clusters are placed on, their hosts and free capacity."""
from __future__ import annotations

import time
from pathlib import Path

import typer
import yaml

from oasis.cli.client import OasisError
from oasis.cli.common import client, command, console, fail, options, record, table

app = typer.Typer(help="Sites: groups of hosts (availability zones) that clusters are placed on.",
                  no_args_is_help=True)


@command(app, "list")
def list_sites(ctx: typer.Context) -> None:
    """List sites."""
    table(client(ctx).get("/sites")["sites"], [("Name", "name"), ("Access", "access"), ("Hosts", "hosts_count"),
                                                ("Status", "status"),
                                                ("Health", lambda r: (r.get("health") or {}).get("status")),
                                                ("ID", "id")], ctx=ctx)


@command(app, "show")
def show(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID")) -> None:
    """Show a site: its health, quotas and usage, its hosts with their free capacity and health, its clusters."""
    site = client(ctx).get(f"/sites/{ref}")["site"]
    if options(ctx).as_json:
        record(site, ctx)
        return
    hosts = site.pop("hosts", [])
    events = site.pop("events", [])
    health = site.pop("health", {})
    site["health"] = f"{health.get('status')} ({health.get('reachable')}/{health.get('hosts')} hosts answer)"
    quotas, usage = site.pop("quotas", {}), site.pop("usage", {})
    site["quotas"] = ", ".join(f"{k} {usage.get(k, 0)}/{quotas.get(k, 'unlimited')}"
                               for k in ("instances", "vcpus", "ram_mb"))
    if site.get("single_user"):  # said in words: a project's jobs there are not kept from each other's files
        site["single_user"] = ("yes: instances of the hosts marked single-user run as the agent's own user, "
                               "not as their project's")
    record(site, ctx)

    def reach(h: dict) -> str:
        hh = h.get("health") or {}
        if hh.get("reachable") is None:
            return "not checked yet"
        if hh["reachable"]:
            return "yes"
        return f"no, since {hh.get('unreachable_since')} ({hh.get('error')}); last seen {hh.get('last_seen') or 'never'}"

    table([{**h, "free": f"{h['free']['vcpus']:g} vCPU, {h['free']['ram_mb']:g} MB",
            "capacity": f"{h['capacity']['vcpus']} vCPU, {h['capacity']['ram_mb']} MB", "reachable": reach(h)}
           for h in hosts],
          [("Host", "name"), ("Address", "address"), ("Floating", "floating_address"), ("Capacity", "capacity"),
           ("Free", "free"), ("Status", "status"), ("Reachable", "reachable"),
           ("Single-user", lambda h: "yes" if h.get("single_user") else "no")], ctx=ctx)
    if events:
        table(events[-20:], [("Gen", "generation"), ("Step", "step"), ("Host", "host"),
                             ("OK", "successful"), ("Info", "info"), ("At", "created_at")], ctx=ctx)


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


# --- site operations ------------------------------------------------------------------------------------------

BUSY = ("Deploying", "Scaling", "Updating", "Deleting")


def wait_site(ctx: typer.Context, names: list[str], timeout: float = 600, interval: float = 0.5) -> dict[str, dict]:
    """Poll until no named site is busy; a site that is gone after a delete counts as done."""
    c, deadline, done = client(ctx), time.monotonic() + timeout, {}
    while True:
        for name in [n for n in names if n not in done]:
            try:
                site = c.get(f"/sites/{name}")["site"]
            except OasisError as e:
                if "not found" in str(e).lower():
                    done[name] = {"name": name, "status": "Deleted", "status_description": ""}
                    continue
                raise
            if site["status"] not in BUSY and site.get("operation") is None:
                done[name] = site
        if len(done) == len(names):
            return done
        if time.monotonic() > deadline:
            raise fail(f"timed out after {timeout:.0f}s waiting for {', '.join(sorted(set(names) - set(done)))}")
        time.sleep(interval)


def _report(ctx: typer.Context, names: list[str], wait: bool) -> None:
    if not wait:
        return
    failed = False
    for name, site in wait_site(ctx, names).items():
        failed |= site["status"] == "Error"
        reason = f": {site['status_description']}" if site.get("status_description") else ""
        console.print(f"site [bold]{name}[/]: {site['status']}{reason}")
    if failed:
        raise typer.Exit(1)


def _key(manifest: dict, key_file: Path | None) -> str:
    path = key_file or Path(manifest["controller"]["private_key"])
    return path.read_text()


@command(app, "deploy")
def deploy(ctx: typer.Context,
           manifest_arg: Path | None = typer.Argument(None, metavar="MANIFEST", exists=True, dir_okay=False),
           site: list[str] | None = typer.Option(None, "--site", help="Only this site (repeatable); default all"),
           bundle_version: int | None = typer.Option(None, "--bundle-version",
                                                        help="Export version to deploy with (default the latest)"),
           key_file: Path | None = typer.Option(None, "--private-key", help="SSH key to the hosts (default: the "
                                                   "manifest's controller.private_key)"),
           wait: bool = typer.Option(False, "--wait", help="Wait until every site is Active or Error"),
           standalone: bool = typer.Option(False, "--standalone", help="Run at the site from the bundle and the "
                                           "manifest alone, then join the control plane (no control-plane login)"),
           bundle: Path | None = typer.Option(None, "--bundle", exists=True, dir_okay=False,
                                              help="With --standalone: the bundle `oasis export` wrote"),
           manifest_opt: Path | None = typer.Option(None, "--manifest", exists=True, dir_okay=False,
                                                    help="The site manifest (instead of MANIFEST)")) -> None:
    """Deploy the sites of a manifest, each on its own: enroll the hosts, write the bundle's files (admin only).
    With --standalone, do it at the site itself and join the control plane with the bundle's join token."""
    manifest_path = manifest_opt or manifest_arg
    if manifest_path is None:
        raise fail("give the site manifest (MANIFEST or --manifest)")
    if standalone:
        _deploy_standalone(bundle, manifest_path, site, key_file)
        return
    if bundle is not None:
        raise fail("--bundle goes with --standalone; from the control plane, use --bundle-version")
    manifest = yaml.safe_load(manifest_path.read_text())
    key = _key(manifest, key_file)
    names = [s["name"] for s in manifest["sites"] if not site or s["name"] in site]
    if not names:
        raise fail(f"no site {', '.join(site or [])} in {manifest_path}")
    c = client(ctx)
    for name in names:
        body = {"manifest": manifest, "private_key": key}
        if bundle_version is not None:
            body["bundle_version"] = bundle_version
        out = c.post(f"/sites/{name}/deploy", body)["site"]
        console.print(f"site [bold]{name}[/]: {out['status']} (generation {out['generation']}, "
                      f"bundle version {out['bundle_version'] or '-'} -> {bundle_version or 'latest'})")
    _report(ctx, names, wait)


def _deploy_standalone(bundle: Path | None, manifest_path: Path, site: list[str] | None,
                       key_file: Path | None) -> None:
    """Enrollment runs here, to the end, before the join: the command always waits (--wait changes nothing)."""
    from oasis.cli import standalone  # lazy for start-up: the engine's modules load for this command only

    if bundle is None:
        raise fail("--standalone needs --bundle (the file `oasis export` wrote)")
    if site and len(site) > 1:
        raise fail("--standalone deploys one site: give --site once")
    try:
        enrollment, joined = standalone.deploy(bundle, manifest_path, site[0] if site else None, key_file)
    except standalone.StandaloneError as e:
        raise fail(str(e)) from None
    console.print(f"site [bold]{joined['name']}[/]: enrolled {len(enrollment.hosts)} host(s) at the site, joined "
                  f"the control plane: {joined['status']} (generation {joined['generation']}, bundle version "
                  f"{joined['bundle_version']})")


@command(app, "scale")
def scale(ctx: typer.Context, name: str = typer.Argument(..., metavar="NAME"),
          add: list[str] | None = typer.Option(None, "--add", help="Host to add, from --manifest (repeatable)"),
          remove: list[str] | None = typer.Option(None, "--remove", help="Host to remove (repeatable)"),
          manifest_path: Path | None = typer.Option(None, "--manifest", exists=True, dir_okay=False,
                                                       help="Manifest with the added hosts' entries"),
          wait: bool = typer.Option(False, "--wait")) -> None:
    """Add or remove hosts of one site; a host holding instances is not removed (admin only)."""
    body: dict = {}
    if add:
        if manifest_path is None:
            raise fail("--add needs --manifest, where the hosts' entries are")
        manifest = yaml.safe_load(manifest_path.read_text())
        entry = next((s for s in manifest["sites"] if s["name"] == name), None)
        hosts = {h["name"]: h for h in (entry or {}).get("hosts", [])}
        missing = [h for h in add if h not in hosts]
        if missing:
            raise fail(f"no host {', '.join(missing)} for site {name} in {manifest_path}")
        body["add_hosts"] = [hosts[h] for h in add]
    if remove:
        body["remove_hosts"] = list(remove)
    out = client(ctx).patch(f"/sites/{name}", body)["site"]
    console.print(f"site [bold]{name}[/]: {out['status']} (generation {out['generation']})")
    _report(ctx, [name], wait)


@command(app, "update")
def update(ctx: typer.Context, name: str = typer.Argument(..., metavar="NAME"),
           bundle_version: int = typer.Option(..., "--bundle-version", help="Export version to apply"),
           wait: bool = typer.Option(False, "--wait")) -> None:
    """Apply an export version to one site's hosts (admin only)."""
    out = client(ctx).post(f"/sites/{name}/update", {"bundle_version": bundle_version})["site"]
    console.print(f"site [bold]{name}[/]: {out['status']} (generation {out['generation']})")
    _report(ctx, [name], wait)


@command(app, "delete")
def delete(ctx: typer.Context, name: str = typer.Argument(..., metavar="NAME"),
           wait: bool = typer.Option(False, "--wait")) -> None:
    """Delete a site (refused while clusters live there) (admin only)."""
    out = client(ctx).delete(f"/sites/{name}")["site"]
    console.print(f"site [bold]{name}[/]: {out['status']} (generation {out['generation']})")
    _report(ctx, [name], wait)
