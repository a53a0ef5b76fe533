"""`oasis cluster ...`"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import typer

from oasis.cli.client import OasisClient, OasisError
from oasis.cli.common import client, command, console, fmt, parse_time, record, seconds, table
from oasis.cli.connect import client_files, connect_url, instructions, write_private
from oasis.cli.plugins import latest_version
from oasis.cli.watch import wait_clusters, wait_gone

app = typer.Typer(help="Clusters: create, watch, scale and delete.", no_args_is_help=True)

MASTER = {"spark": "master", "dask": "scheduler"}


def node_group_spec(spec: str, default_flavor: str) -> dict[str, Any]:
    """NAME:PROC[,PROC...]:COUNT[:FLAVOR] -> a node group."""
    parts = spec.split(":")
    if len(parts) not in (3, 4) or not parts[2].isdigit() or not parts[1]:
        raise OasisError(f"node group '{spec}' is not NAME:PROCESS[,PROCESS...]:COUNT[:FLAVOR]")
    return {"name": parts[0], "node_processes": parts[1].split(","), "count": int(parts[2]),
            "flavor_id": parts[3] if len(parts) == 4 else default_flavor}


def steps_table(cluster: dict[str, Any], title: str | None = None) -> None:
    created = parse_time(cluster.get("created_at"))

    def offset(step: dict[str, Any]) -> str:  # timestamps have whole seconds; durations are precise
        t = parse_time(step.get("created_at"))
        return f"+{(t - created).total_seconds():.0f}s" if t and created else ""

    table(cluster.get("provision_progress") or [], [
        ("Step", "step_name"), ("Type", "step_type"), ("Total", "total"),
        ("OK", lambda s: {True: "yes", False: "FAILED", None: "…"}[s.get("successful")]),
        ("Started", offset), ("Duration", lambda s: seconds(s.get("duration")))], title=title)


@command(app, "list")
def list_clusters(ctx: typer.Context) -> None:
    """List clusters."""
    table(client(ctx).list("clusters"), [
        ("ID", "id"), ("Name", "name"), ("Plugin", "plugin_name"), ("Version", "plugin_version"),
        ("Status", "status"), ("Nodes", lambda c: sum(ng.get("count", 0) for ng in c.get("node_groups") or []))],
        ctx=ctx)


@command(app, "show")
def show(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID"),
         progress: bool = typer.Option(False, "--progress", help="Also show the provisioning steps")) -> None:
    """Show a cluster: fields, node groups and instances (and its provisioning steps)."""
    c = client(ctx)
    cluster = c.find("clusters", ref)
    if progress:
        cluster = c.show("clusters", cluster["id"], show_progress="true")
    record(cluster, ctx, skip=("node_groups", "provision_progress", "management_public_key", "lifecycle",
                               "verification"))
    if ctx.find_root().obj.as_json:
        return
    lifecycle_table(cluster.get("lifecycle") or {})
    verification_table(cluster.get("verification") or {})
    rows = [{"group": ng.get("name"), "processes": ng.get("node_processes"), "flavor": ng.get("flavor_id"), **i}
            for ng in cluster.get("node_groups") or [] for i in ng.get("instances") or []]
    if rows:
        table(rows, [("Node group", "group"), ("Instance", "instance_name"), ("Processes", "processes"),
                     ("Flavor", "flavor"), ("Address", "management_ip")], title="Instances")
    if progress:
        steps_table(cluster, "Provisioning steps")


VERIFIED = ("GREEN", "YELLOW", "RED")  # a verification's final statuses; CHECKING while it runs
VERIFY_POLL_SECONDS = 1.0


def verification_table(v: dict[str, Any]) -> None:
    """The cluster's last verification: the overall status, and each check's with its reason."""
    if not v.get("status"):
        console.print("Verification: none yet (`oasis cluster verify NAME`)")
        return
    when = v.get("updated_at") or v.get("created_at")
    table(v.get("checks") or [], [("Check", "name"), ("Status", "status"), ("Reason", "description")],
          title=f"Verification: {v['status']}" + (f" (at {when} UTC)" if when else ""))


def _wait_verified(c: OasisClient, cluster_id: str, verification_id: str | None, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        v = c.get(f"/clusters/{cluster_id}")["cluster"].get("verification") or {}
        if v.get("status") in VERIFIED and (verification_id is None or v.get("id") == verification_id):
            return v
        if time.monotonic() > deadline:
            raise OasisError(f"the verification of cluster {cluster_id} is still {v.get('status')} after "
                             f"{timeout:g}s")
        time.sleep(VERIFY_POLL_SECONDS)


@command(app, "verify")
def verify(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID"),
           wait: bool = typer.Option(False, "--wait", help="Wait for the outcome (exit code 1 unless GREEN)"),
           timeout: float = typer.Option(300, help="Seconds to wait with --wait")) -> None:
    """Check an Active cluster's health now (Sahara's verification): the framework's own checks and its hosts'.
    Each check is GREEN, YELLOW or RED with its reason; the verification is its worst check."""
    c = client(ctx)
    cluster = c.find("clusters", ref)
    asked = c.patch(f"/clusters/{cluster['id']}", {"verification": {"status": "START"}})
    v = (asked.get("cluster") or {}).get("verification") or {}
    if wait:
        v = _wait_verified(c, cluster["id"], v.get("id"), timeout)
    if ctx.find_root().obj.as_json:
        print(json.dumps(v, indent=2, sort_keys=True))
    elif v.get("status") in VERIFIED:
        verification_table(v)
    else:
        console.print(f"verification of cluster [bold]{cluster['name']}[/] started: {v.get('status')} "
                      f"(`oasis cluster show {cluster['name']}` shows its outcome, or use --wait)")
    if wait and v.get("status") != "GREEN":
        raise typer.Exit(1)


def _left(s: int) -> str:
    d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
    return f"{d}d {h}h {m}m" if d else f"{h}h {m}m {s % 60}s" if h else f"{m}m {s % 60}s"


def lifecycle_table(lc: dict[str, Any]) -> None:
    """The limits in force and when each deletes the cluster, the soonest first."""
    if not lc:
        return
    setting = {"idle_delete_after": f"{lc.get('idle_delete_after')} s idle ({lc.get('idle_delete_after_from')})"
               if lc.get("idle_delete_after") else "never (idle)",
               "max_age": f"{lc.get('max_age')} s after creation", "delete_at": str(lc.get("delete_at")),
               "error_grace": "the deployment's grace for a cluster in Error"}
    rows = [{**d, "setting": setting.get(d["limit"], ""), "left": _left(int(d["seconds_left"]))}
            for d in lc.get("deletes") or []]
    if lc.get("busy") or not lc.get("idle_delete_after"):
        rows.append({"limit": "idle_delete_after", "setting": setting["idle_delete_after"], "at": "",
                     "left": lc.get("busy") or ""})
    table(rows, [("Limit", "limit"), ("Setting", "setting"), ("Deletes at (UTC)", "at"), ("Time left", "left")],
          title="Lifecycle" + (f" (idle since {lc['idle_since']})" if lc.get("idle_since") else ""))


def lifecycle_body(idle: Optional[str], max_age: Optional[str], delete_at: Optional[str]) -> dict[str, Any]:
    """`--idle-delete-after`, `--max-age` (seconds or 2h, 30m, 1d; 'none' removes) and `--delete-at`."""
    given = {"idle_delete_after": idle, "max_age": max_age, "delete_at": delete_at}
    return {k: (None if v.lower() in ("none", "never") else int(v) if v.isdigit() else v)
            for k, v in given.items() if v is not None}


@command(app, "lifecycle")
def set_lifecycle(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID"),
                  idle: Optional[str] = typer.Option(None, "--idle-delete-after",
                                                     help="Delete after this long unused: 3600, 2h, 0 (never)"),
                  max_age: Optional[str] = typer.Option(None, "--max-age",
                                                        help="Delete this long after creation; 'none' removes"),
                  delete_at: Optional[str] = typer.Option(None, "--delete-at",
                                                          help="Delete at this UTC time (ISO 8601); 'none' removes"),
                  reset: bool = typer.Option(False, "--reset", help="Back to the deployment's defaults")) -> None:
    """Change a cluster's lifecycle limits, and show them."""
    c = client(ctx)
    cluster = c.find("clusters", ref)
    body = None if reset else lifecycle_body(idle, max_age, delete_at)
    if body == {}:
        raise OasisError("nothing to change: give --idle-delete-after, --max-age, --delete-at or --reset")
    out = c.patch(f"/clusters/{cluster['id']}", {"lifecycle": body})
    out = out.get("cluster", out) if isinstance(out, dict) else cluster
    if ctx.find_root().obj.as_json:
        print(json.dumps(out.get("lifecycle"), indent=2, sort_keys=True))
        return
    lifecycle_table(out.get("lifecycle") or {})


@command(app, "connect")
def connect(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID"),
            directory: Optional[Path] = typer.Option(None, "--dir", help="Where to write the client's files "
                                                     "(default: ~/.oasis/clusters/NAME)"),
            show_token: bool = typer.Option(False, "--show-token", help="Put your current token into the "
                                            "printed Spark Connect string (printed only, never written)")) -> None:
    """Write what a Dask Client or a spark-submit needs to reach the cluster (its CA, a client certificate,
    Spark's secret) into a directory only you read, and print how to use it (a Spark cluster's Spark Connect
    string too)."""
    c = client(ctx)
    cluster = c.find("clusters", ref)
    cfg = c.client_config(cluster["id"])
    target = (directory or Path.home() / ".oasis" / "clusters" / cluster["name"]).expanduser().absolute()
    write_private(target, client_files(cfg, target))
    if ctx.find_root().obj.as_json:
        shown = {k: cfg[k] for k in ("plugin", "scheduler_address", "dashboard", "master_url", "web_ui") if k in cfg}
        if connect_url(cfg):
            shown["spark_connect"] = connect_url(cfg, c.token if show_token else None)
        print(json.dumps({"directory": str(target), **shown}, indent=2, sort_keys=True))
        return
    console.print(f"Wrote the client configuration of {cluster['name']} to {target} (mode 0700, files 0600)")
    console.print(instructions(cfg, target, c.token if show_token else None), markup=False, highlight=False)


@command(app, "create")
def create(ctx: typer.Context, name: str,
           template: Optional[str] = typer.Option(None, "--template", "-t", help="Cluster template name or id"),
           plugin: Optional[str] = typer.Option(None, help="spark or dask (without --template)"),
           version: Optional[str] = typer.Option(None, help="Plugin version (default: the newest)"),
           workers: int = typer.Option(2, help="Workers, when no --node-group is given"),
           flavor: str = typer.Option("2", help="Flavor for the default node groups"),
           node_group: list[str] = typer.Option([], "--node-group", "-n",
                                                help="NAME:PROCESS[,PROCESS]:COUNT[:FLAVOR]; repeat for more"),
           transient: bool = typer.Option(False, help="Delete the cluster once its jobs are done"),
           idle: Optional[str] = typer.Option(None, "--idle-delete-after",
                                              help="Delete after this long unused: 3600, 2h, 0 (never); "
                                                   "default: the deployment's"),
           max_age: Optional[str] = typer.Option(None, "--max-age", help="Delete this long after creation: 1d"),
           delete_at: Optional[str] = typer.Option(None, "--delete-at", help="Delete at this UTC time (ISO 8601)"),
           availability_zone: Optional[str] = typer.Option(None, "--availability-zone", "--site",
                                                           help="The site to place it on (default: local)"),
           description: str = typer.Option("", help="Free text"),
           keypair: Optional[str] = typer.Option(None, "--keypair",
                                                 help="Name of your keypair (`oasis keypair`) to put on its hosts"),
           wait: bool = typer.Option(False, "--wait", help="Wait for Active, showing progress"),
           timeout: float = typer.Option(600, help="Seconds to wait with --wait")) -> None:
    """Create a cluster from a cluster template, or from a plugin and node groups."""
    c = client(ctx)
    body: dict[str, Any] = {"name": name, "description": description, "is_transient": transient}
    if availability_zone:
        body["availability_zone"] = availability_zone
    if keypair:
        body["user_keypair_id"] = keypair
    if lifecycle_body(idle, max_age, delete_at):
        body["lifecycle"] = lifecycle_body(idle, max_age, delete_at)
    if template:
        t = c.find("cluster-templates", template)
        body.update(cluster_template_id=t["id"], plugin_name=t["plugin_name"], plugin_version=t["plugin_version"])
        if node_group:
            body["node_groups"] = [node_group_spec(s, flavor) for s in node_group]
    elif plugin:
        body.update(plugin_name=plugin, plugin_version=version or latest_version(c, plugin))
        groups = [node_group_spec(s, flavor) for s in node_group]
        if not groups:
            if plugin not in MASTER:
                raise OasisError(f"give --node-group for plugin {plugin}")
            groups = [{"name": "master", "node_processes": [MASTER[plugin]], "count": 1, "flavor_id": flavor},
                      {"name": "worker", "node_processes": ["worker"], "count": workers, "flavor_id": flavor}]
        body["node_groups"] = groups
    else:
        raise OasisError("give --template, or --plugin (with --node-group or --workers)")
    t0 = time.monotonic()
    cluster = c.create("clusters", body)
    console.print(f"cluster [bold]{cluster['name']}[/] ({cluster['id']}): {cluster['status']}")
    if wait:
        done = wait_clusters(c, {cluster["id"]: cluster["name"]}, timeout=timeout,
                             started={cluster["id"]: t0})[cluster["id"]]
        console.print(f"cluster [bold]{done['name']}[/] is Active after {done['_seconds']:.1f}s")
        _print_info(done)


def _print_info(cluster: dict[str, Any]) -> None:
    for service, urls in (cluster.get("info") or {}).items():
        for k, v in (urls or {}).items():
            console.print(f"  {service} {k}: {fmt(v)}")


@command(app, "scale")
def scale(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID"),
          resize: list[str] = typer.Option([], "--resize", "-r", help="NODE_GROUP=COUNT; repeat for more"),
          add: list[str] = typer.Option([], "--add", "-a", help="NAME:PROCESS[,PROCESS]:COUNT[:FLAVOR]"),
          remove_instance: list[str] = typer.Option([], "--remove-instance",
                                                    help="NODE_GROUP=INSTANCE: which instance a shrink removes"),
          flavor: str = typer.Option("2", help="Flavor for --add node groups without one"),
          wait: bool = typer.Option(False, "--wait", help="Wait until the cluster is Active again"),
          timeout: float = typer.Option(600, help="Seconds to wait with --wait")) -> None:
    """Resize node groups or add new ones."""
    c = client(ctx)
    cluster = c.find("clusters", ref)
    chosen: dict[str, list[str]] = {}
    for item in remove_instance:
        group, _, inst = item.partition("=")
        chosen.setdefault(group, []).append(inst)
    body: dict[str, Any] = {}
    for item in resize:
        group, _, count = item.partition("=")
        if not count.isdigit():
            raise OasisError(f"--resize '{item}' is not NODE_GROUP=COUNT")
        ng: dict[str, Any] = {"name": group, "count": int(count)}
        if group in chosen:
            ng["instances"] = chosen[group]
        body.setdefault("resize_node_groups", []).append(ng)
    if add:
        body["add_node_groups"] = [node_group_spec(s, flavor) for s in add]
    if not body:
        raise OasisError("nothing to do: give --resize or --add")
    c.put(f"/clusters/{cluster['id']}", body)
    console.print(f"scaling cluster [bold]{cluster['name']}[/]")
    if wait:
        _wait_scaled(c, cluster, timeout)


def _wait_scaled(c: OasisClient, cluster: dict[str, Any], timeout: float) -> None:
    # The status leaves Active first; a scale that fails returns to Active with a status_description.
    done = wait_clusters(c, {cluster["id"]: cluster["name"]}, timeout=timeout)[cluster["id"]]
    groups = ", ".join(f"{ng['name']}×{ng['count']}" for ng in done.get("node_groups") or [])
    if done.get("status_description"):
        console.print(f"[yellow]cluster {done['name']}: {done['status_description']}[/]")
    console.print(f"cluster [bold]{done['name']}[/] is Active: {groups}")


@command(app, "delete")
def delete(ctx: typer.Context, ref: str = typer.Argument(..., metavar="NAME_OR_ID"),
           force: bool = typer.Option(False, "--force", help="Delete even if stopping its processes fails"),
           wait: bool = typer.Option(False, "--wait", help="Wait until it is gone"),
           timeout: float = typer.Option(300, help="Seconds to wait with --wait")) -> None:
    """Delete a cluster."""
    c = client(ctx)
    cluster = c.find("clusters", ref)
    c.delete(f"/clusters/{cluster['id']}", {"force": True} if force else None)
    console.print(f"deleting cluster [bold]{cluster['name']}[/]")
    if wait:
        wait_gone(c, {cluster["id"]: cluster["name"]}, timeout=timeout)
        console.print(f"cluster {cluster['name']} is gone")
