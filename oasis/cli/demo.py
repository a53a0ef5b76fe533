"""`oasis demo`: templates, a Dask and a Spark cluster side by side, a wordcount on each, the provisioning steps
with their durations, and cleanup. Everything goes through the public API, as any client's would."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from rich.table import Table

import oasis.demo
from oasis.cli.client import (
    ApiError,
    ConfigError,
    OasisClient,
    OasisError,
    authenticate,
    endpoint_for,
    load_cloud,
)
from oasis.cli.clusters import steps_table
from oasis.cli.common import console, err_console, parse_time, seconds
from oasis.cli.embedded import EmbeddedService, answers
from oasis.cli.plugins import latest_version
from oasis.cli.watch import job_status, wait_clusters, wait_gone, wait_jobs
from oasis.procs import processes_under
from oasis.storage import store_for

DEMO_DIR = Path(oasis.demo.__file__).parent
DATA = DEMO_DIR / "data" / "rivers-cities-and-data.txt"
PLUGINS = {
    "dask": {"master": "scheduler", "job_type": "Dask", "script": "wordcount_dask.py", "title": "Dask"},
    "spark": {"master": "master", "job_type": "Spark", "script": "wordcount_spark.py", "title": "Spark"},
}
WORD_LINE = re.compile(r"^(\S+)\t(\d+)$")
FLAVOR = "2"  # m1.small


def top_words(stdout: str) -> list[tuple[str, int]]:
    return [(m.group(1), int(m.group(2))) for m in map(WORD_LINE.match, stdout.splitlines()) if m]


class DevSwift:
    """`--object-store swift`: the development Swift of a source checkout (devtools/devswift.py, beside the
    `oasis` package and not installed with it), run in a process of its own and stopped by its PID."""

    def __init__(self) -> None:
        launcher = Path(oasis.__file__).resolve().parent.parent / "devtools" / "devswift.py"
        if not launcher.exists():
            raise OasisError("--object-store swift starts the development Swift of a source checkout "
                             "(devtools/devswift.py), and this oasis does not run from one")
        self.proc = subprocess.Popen([sys.executable, str(launcher), "--json"], stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # one JSON line once Swift answers (or EOF if it could not start)
        if not line:
            raise OasisError(f"the development Swift did not start (exit status {self.proc.wait()})")
        info = json.loads(line)
        self.pid: int = self.proc.pid
        self.auth_url, self.user, self.key = info["auth_url"], info["user"], info["key"]
        self.url = info["endpoint"]

    def store_spec(self, container: str) -> str:
        """The deployment's --object-store for this Swift."""
        user = self.user.replace(":", "%3A")
        return f"swift+http://{user}:{self.key}@{self.url.removeprefix('http://')}/auth/v1.0?container={container}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def leftover_pids(state_dir: Path) -> list[int]:
    """Processes still running in the state dir (cluster daemons and jobs run in their instances' dirs)."""
    return processes_under(state_dir)


class Demo:
    def __init__(self, os_cloud: str = "oasis", explicit_cloud: bool = False, url: str | None = None,
                 token: str | None = None, state_dir: Path | None = None, keep: bool = False, workers: int = 2,
                 only: str | None = None, object_store: str = "file") -> None:
        self.os_cloud, self.explicit_cloud, self.url, self.token = os_cloud, explicit_cloud, url, token
        self.state_dir, self.keep, self.workers = state_dir, keep, workers
        if only and only not in PLUGINS:
            raise OasisError(f"--only takes one of {', '.join(PLUGINS)}")
        self.plugins = [only] if only else list(PLUGINS)
        if object_store not in ("file", "swift"):
            raise OasisError("--object-store takes file or swift")
        self.object_store = object_store
        self.swift: DevSwift | None = None  # the demo's own Swift, with --object-store swift
        self.service: EmbeddedService | None = None
        self.temp_dir: Path | None = None
        self.client: OasisClient | None = None
        self.clusters: dict[str, dict[str, Any]] = {}  # plugin -> cluster
        self.cleaned = False

    # --- the whole run --------------------------------------------------------------------------------------------

    def run(self) -> None:
        t0 = time.monotonic()
        try:
            self.client = self.connect()
            versions = self.versions()
            templates = {p: self.templates(p, versions[p]) for p in self.plugins}
            active = self.bring_up(templates)
            jobs = self.wordcount(active)
            self.report(active, jobs)
            self.cleanup()
            console.rule("[bold]Done")
            console.print(f"demo finished in {time.monotonic() - t0:.1f}s")
        finally:
            self.finish()

    # --- 1. the service -------------------------------------------------------------------------------------------

    def connect(self) -> OasisClient:
        console.rule("[bold]1. Service")
        if self.url:
            if not answers(self.url, 3):
                raise OasisError(f"no oasis service answers at {self.url}")
            client = OasisClient.connect(self.os_cloud, self.url, self.token, self.state_dir)
            console.print(f"using the oasis service at [bold]{self.url}[/]")
            return client
        try:
            cloud = load_cloud(self.os_cloud, self.state_dir)
        except ConfigError:
            if self.explicit_cloud:
                raise
            cloud = None
        if cloud is not None:
            auth_url = (cloud.get("auth") or {}).get("auth_url", "")
            origin = "{0.scheme}://{0.netloc}".format(urlsplit(auth_url)) if auth_url else ""
            if origin and answers(origin, 2):
                session = authenticate(cloud)
                console.print(f"using cloud [bold]{self.os_cloud}[/] from {cloud['_path']}: {session.endpoint}")
                return OasisClient(session.endpoint, session.token)
            console.print(f"cloud [bold]{self.os_cloud}[/] ({cloud['_path']}) does not answer at {origin or '?'}")
        return self.start_embedded()

    def start_embedded(self) -> OasisClient:
        if self.state_dir is None:
            self.temp_dir = Path(tempfile.mkdtemp(prefix="oasis-demo-"))
        state_dir = self.state_dir or self.temp_dir
        env = {}
        if self.object_store == "swift":
            env["OASIS_OBJECT_STORE"] = self.start_swift()
        self.service = EmbeddedService(state_dir, env=env)
        with console.status(f"starting an embedded oasis (state in {state_dir}) ..."):
            t0 = time.monotonic()
            self.service.start()
        console.print(f"started an embedded oasis at [bold]{self.service.url}[/] (pid {self.service.pid}) "
                      f"in {time.monotonic() - t0:.1f}s; state in {state_dir}")
        session = authenticate(self.service.credentials())
        return OasisClient(endpoint_for(self.service.url), session.token)

    def start_swift(self) -> str:
        """A real OpenStack Swift for the demo: the service keeps its binaries there, and the wordcounts read
        their input from it through per-job temporary URLs."""
        with console.status("starting OpenStack Swift (tempauth, s3api) ..."):
            t0 = time.monotonic()
            self.swift = DevSwift()
        console.print(f"started OpenStack Swift at [bold]{self.swift.url}[/] (pid {self.swift.pid}) "
                      f"in {time.monotonic() - t0:.1f}s")
        return self.swift.store_spec("oasis")

    def swift_source(self) -> dict[str, Any]:
        """The demo text as an object in the demo's Swift, and a swift:// data source naming it."""
        c = self.client
        assert c is not None and self.swift is not None
        creds = {"user": self.swift.user, "password": self.swift.key, "auth_url": self.swift.auth_url}
        store_for("swift://demo/", creds, create=True).put(f"input/{DATA.name}", DATA.read_bytes())
        url = f"swift://demo/input/{DATA.name}"
        source = c.find_optional("data-sources", "demo-text-swift")
        return source or c.create("data-sources", {"name": "demo-text-swift", "type": "swift", "url": url,
                                                   "credentials": creds,
                                                   "description": "oasis demo: the essay, in Swift"})

    def versions(self) -> dict[str, str]:
        c = self.client
        assert c is not None
        available = {p["name"]: p for p in c.list("plugins")}
        versions = {}
        for p in self.plugins:
            if p not in available:
                raise OasisError(f"the service has no {p} plugin (it has: {', '.join(available) or 'none'})")
            versions[p] = latest_version(c, p)
        console.print("plugins: " + ", ".join(f"{p} {v}" for p, v in versions.items()))
        return versions

    # --- 2. templates ---------------------------------------------------------------------------------------------

    def reuse_or_create(self, resource: str, body: dict[str, Any], fits: Callable[[dict[str, Any]], bool]
                        ) -> dict[str, Any]:
        c = self.client
        assert c is not None
        existing = c.find_optional(resource, body["name"])
        if existing is not None and fits(existing):
            console.print(f"  reusing {resource[:-1].replace('-', ' ')} [bold]{body['name']}[/]")
            return existing
        if existing is not None:  # made by an older demo or another version: replace it
            c.delete(f"/{resource}/{existing['id']}")
        obj = c.create(resource, body)
        console.print(f"  created {resource[:-1].replace('-', ' ')} [bold]{body['name']}[/]")
        return obj

    def templates(self, plugin: str, version: str) -> dict[str, Any]:
        if plugin == self.plugins[0]:
            console.rule("[bold]2. Templates")
        groups = {}
        for role, procs in (("master", [PLUGINS[plugin]["master"]]), ("worker", ["worker"])):
            body = {"name": f"demo-{plugin}-{role}", "plugin_name": plugin, "plugin_version": version,
                    "flavor_id": FLAVOR, "node_processes": procs,
                    "description": f"oasis demo: {PLUGINS[plugin]['title']} {role} on m1.small"}
            groups[role] = self.reuse_or_create(
                "node-group-templates", body,
                lambda o, procs=procs: (o.get("plugin_version"), o.get("node_processes"), str(o.get("flavor_id")))
                == (version, procs, FLAVOR))
        node_groups = [{"name": "master", "node_group_template_id": groups["master"]["id"], "count": 1},
                       {"name": "worker", "node_group_template_id": groups["worker"]["id"], "count": self.workers}]
        body = {"name": f"demo-{plugin}", "plugin_name": plugin, "plugin_version": version,
                "node_groups": node_groups,
                "description": f"oasis demo: 1 {PLUGINS[plugin]['master']} + {self.workers} workers"}

        def fits(o: dict[str, Any]) -> bool:
            have = sorted((ng.get("name"), ng.get("node_group_template_id"), ng.get("count"))
                          for ng in o.get("node_groups") or [])
            want = sorted((ng["name"], ng["node_group_template_id"], ng["count"]) for ng in node_groups)
            return o.get("plugin_version") == version and have == want

        return self.reuse_or_create("cluster-templates", body, fits)

    # --- 3. clusters ----------------------------------------------------------------------------------------------

    def bring_up(self, templates: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        c = self.client
        assert c is not None
        console.rule("[bold]3. Clusters")
        started: dict[str, float] = {}
        for plugin, template in templates.items():
            name = f"demo-{plugin}"
            existing = c.find_optional("clusters", name)
            if existing is not None and existing["status"] in ("Error", "Deleting"):
                console.print(f"  removing the earlier cluster {name} ({existing['status']})")
                if existing["status"] == "Error":
                    c.delete(f"/clusters/{existing['id']}")
                wait_gone(c, {existing["id"]: name})
                existing = None
            if existing is not None:
                console.print(f"  reusing cluster [bold]{name}[/] ({existing['status']})")
                cluster = existing
            else:
                started[plugin] = time.monotonic()
                cluster = c.create("clusters", {
                    "name": name, "plugin_name": plugin, "plugin_version": template["plugin_version"],
                    "cluster_template_id": template["id"],
                    "description": "oasis demo cluster"})
                console.print(f"  creating cluster [bold]{name}[/] from template {template['name']}")
            self.clusters[plugin] = cluster
        ids = {cl["id"]: cl["name"] for cl in self.clusters.values()}
        done = wait_clusters(c, ids, started={self.clusters[p]["id"]: t for p, t in started.items()})
        active = {}
        for plugin, cluster in self.clusters.items():
            view = done[cluster["id"]]
            view["_fresh"] = plugin in started
            active[plugin] = view
            urls = "; ".join(f"{k}: {v}" for section in (view.get("info") or {}).values()
                             for k, v in (section or {}).items())
            console.print(f"  [green]{view['name']} is Active[/] after {view['_seconds']:.1f}s  [dim]{urls}[/]")
        return active

    # --- 4. jobs --------------------------------------------------------------------------------------------------

    def wordcount(self, active: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        c = self.client
        assert c is not None
        console.rule("[bold]4. Wordcount")
        size = DATA.stat().st_size
        if self.swift is not None:
            source = self.swift_source()
        else:
            source = c.find_optional("data-sources", "demo-text")
            if source is not None and source.get("url") != DATA.as_uri():
                c.delete(f"/data-sources/{source['id']}")
                source = None
            if source is None:
                source = c.create("data-sources", {"name": "demo-text", "type": "file", "url": DATA.as_uri(),
                                                   "description": "oasis demo: an essay on rivers, cities and data"})
        console.print(f"  data source [bold]{source['name']}[/]: {source['url']} ({size / 1024:.0f} KiB)")
        submitted: dict[str, str] = {}
        posted: dict[str, float] = {}  # job id -> when it was submitted
        for plugin, cluster in active.items():
            spec = PLUGINS[plugin]
            # Over object storage, the jobs read through oasis.jobkit and their per-job temporary URLs.
            script = DEMO_DIR / (spec["script"].replace(".py", "_objects.py") if self.swift else spec["script"])
            data = script.read_bytes()
            digest = hashlib.sha256(data).hexdigest()[:8]
            stem = Path(spec["script"]).stem
            name = f"{stem}-{digest}.py"
            binary = c.find_optional("job-binaries", name)
            if binary is None:
                binary = c.upload_binary(name, data, f"oasis demo: {spec['title']} wordcount")
                console.print(f"  uploaded [bold]{name}[/] ({len(data)} bytes) as {binary['url']}")
            template_name = f"demo-wordcount-{plugin}-{digest}"
            template = c.find_optional("job-templates", template_name) or c.create("job-templates", {
                "name": template_name, "type": spec["job_type"], "mains": [binary["id"]],
                "description": f"oasis demo: {spec['title']} wordcount"})
            t_post = time.monotonic()
            job = c.create("jobs", {
                "job_template_id": template["id"], "cluster_id": cluster["id"], "input_id": source["id"],
                "job_configs": {"configs": {"edp.substitute_data_source_for_name": True},
                                "args": [f"datasource://{source['name']}"]}})
            submitted[job["id"]] = plugin
            posted[job["id"]] = t_post
            console.print(f"  running {template_name} on {cluster['name']}: job {job['id']}")
        done = wait_jobs(c, {jid: f"wordcount-{p}" for jid, p in submitted.items()}, started=posted)
        results = {}
        for jid, plugin in submitted.items():
            job = done[jid]
            if job_status(job) != "SUCCEEDED":
                tail = c.logs(jid, "stderr")[-3000:]
                raise OasisError(f"the {plugin} wordcount ended {job_status(job)}"
                                 + (f"; end of its stderr:\n{tail}" if tail else ""))
            job["_words"] = top_words(c.logs(jid))
            results[plugin] = job
        self.words_table(results)
        return results

    def words_table(self, jobs: dict[str, dict[str, Any]]) -> None:
        t = Table(title="Top 10 words", title_justify="left", header_style="bold")
        t.add_column("#", justify="right")
        for plugin in jobs:
            t.add_column(f"{PLUGINS[plugin]['title']} word")
            t.add_column("count", justify="right")
        n = max((len(j["_words"]) for j in jobs.values()), default=0)
        for i in range(min(n, 10)):
            row = [str(i + 1)]
            for job in jobs.values():
                w = job["_words"][i] if i < len(job["_words"]) else ("", "")
                row += [w[0], str(w[1])]
            t.add_row(*row)
        console.print(t)
        lists = [j["_words"][:10] for j in jobs.values()]
        if len(lists) > 1:
            agree = all(lst == lists[0] for lst in lists)
            console.print("  [green]both clusters agree[/]" if agree else "  [yellow]the clusters disagree![/]")
        if not any(lists):
            raise OasisError("the wordcount printed no words")

    # --- 5. timings -----------------------------------------------------------------------------------------------

    def report(self, active: dict[str, dict[str, Any]], jobs: dict[str, dict[str, Any]]) -> None:
        c = self.client
        assert c is not None
        console.rule("[bold]5. Provisioning steps and timings")
        summary = Table(title="Summary", title_justify="left", header_style="bold")
        for col in ("Cluster", "Nodes", "create → Active (seen)", "sum of steps", "wordcount job (server)",
                    "job submit → SUCCEEDED (seen)"):
            summary.add_column(col, justify="right" if col != "Cluster" else "left")
        for plugin, cluster in active.items():
            view = c.show("clusters", cluster["id"], show_progress="true")
            steps_table(view, f"{view['name']}: provisioning steps")
            durations = [s["duration"] for s in view.get("provision_progress") or [] if s.get("duration") is not None]
            job = jobs[plugin]
            start, end = parse_time(job.get("start_time")), parse_time(job.get("end_time"))
            nodes = sum(ng.get("count", 0) for ng in view.get("node_groups") or [])
            summary.add_row(view["name"], str(nodes),
                            seconds(cluster["_seconds"]) if cluster.get("_fresh") else "(reused)",
                            seconds(sum(durations)) if durations else "",
                            f"{(end - start).total_seconds():.0f}s" if start and end else "",
                            seconds(job.get("_seconds")))
        console.print(summary)

    # --- 6. cleanup -----------------------------------------------------------------------------------------------

    def cleanup(self) -> None:
        self.cleaned = True
        c = self.client
        if c is None or not self.clusters:
            return
        if self.keep:
            console.rule("[bold]6. Keeping the clusters")
            for cl in self.clusters.values():
                console.print(f"  {cl['name']} ({cl['id']})")
            return
        console.rule("[bold]6. Cleanup")
        ids = {}
        for cl in self.clusters.values():
            try:
                c.delete(f"/clusters/{cl['id']}")
                ids[cl["id"]] = cl["name"]
            except ApiError as e:
                if e.code != 404:
                    raise
        t0 = time.monotonic()
        wait_gone(c, ids)
        console.print(f"  deleted {', '.join(ids.values())} in {time.monotonic() - t0:.1f}s")
        self.clusters = {}

    def finish(self) -> None:
        """Always: delete what the demo made (unless --keep), then stop the embedded service."""
        if not self.cleaned and self.clusters and not self.keep:
            try:
                self.cleanup()
            except (OasisError, KeyboardInterrupt) as e:
                err_console.print(f"[yellow]cleanup: could not delete the demo clusters: {e}[/]")
        if self.client is not None:
            self.client.close()
        if self.service is None:
            return
        if self.keep:
            console.print(f"the embedded oasis keeps running at [bold]{self.service.url}[/] (pid {self.service.pid}); "
                          f"state in {self.service.state_dir}\n"
                          f"  try: oasis --url {self.service.url} --state-dir {self.service.state_dir}"
                          f" cluster list\n  stop it with: kill {self.service.pid}"
                          + (f"\n  its Swift keeps running too, at {self.swift.url}: stop it with kill {self.swift.pid}"
                             if self.swift else ""))
            return
        self.service.stop()
        leftovers = leftover_pids(self.service.state_dir)
        for pid in leftovers:  # only if deleting the clusters failed: nothing of ours outlives the demo
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if leftovers:
            err_console.print(f"[yellow]stopped {len(leftovers)} leftover cluster processes[/]")
        if self.swift is not None:
            self.swift.stop()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
