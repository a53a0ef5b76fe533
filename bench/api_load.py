#!/usr/bin/env python3
"""oasis benchmark: the API under load. Many rows, many concurrent clients, a mix of reads and writes, against a
bare Starlette app running the same SQL on the same database (the ceiling, bench/api_load_ceiling.py).

    .venv/bin/python bench/api_load.py [--clusters 10000] [--jobs 100000] [--projects 20] [--clients 50]
                                       [--seconds 30] [--db sqlite|postgres|both] [--drivers 2]

For each database (SQLite in the state dir; a throwaway PostgreSQL):
  1. `oasis api` (the real process, as a deployment runs it: uvicorn, one process) migrates and bootstraps; the
     administrator makes P projects with a member each (the identity API), and each member gets a token.
  2. The rows are written directly in the database, through the models (bulk INSERTs): C clusters and J jobs
     spread over the projects, each cluster with two node groups, the Active third of them with 3 instances and
     3 provision steps; 5 job templates per project; jobs in every Sahara status on the project's clusters.
  3. The ceiling starts on the same database, served the same way (uvicorn, one process, no TLS).
  4. For each server in turn (oasis, then the ceiling), N clients (spread over D load-generator processes,
     httpx async, keep-alive, each client one project's token) send for S seconds a fixed mix:
       list clusters (limit=100; a third the first page, a third the next page by the `markers.next` of
       the client's previous list, a third with `plugin_name`), list jobs (limit=100; half with `status`),
       show cluster, show job, and create then delete of a cluster template (no engine acts on either).
     Latency is per request, measured in the load generator; p50 and p99 per kind, and requests/s overall.
     The load generators' own CPU use is measured too (user+sys seconds per wall second): a generator near
     1.0 is saturated and the figures then understate both servers alike.

Authentication is included on both sides: oasis checks each request's token (its built-in identity); the
ceiling looks the token and its role up in one query. Everything listens on 127.0.0.1; processes are stopped by
PID and temporary directories removed, also on failure. Results: bench/api-load-results.md (printed too)."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The processes this starts (`oasis api`, the ceiling, the load generators) run this checkout's code, not
# whichever checkout the virtualenv's editable install names.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)

import httpx  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from oasis.db.encrypted import load_key  # noqa: E402
from oasis.db.models import (Cluster, Host, Instance, Job, JobTemplate, NodeGroup, ProvisionStep, Site,  # noqa: E402
                             new_id)
from oasis.db.session import Database  # noqa: E402
from oasis.edp import statuses  # noqa: E402
from oasis.plugins import get_plugin  # noqa: E402
from tests.integration.services import Oasis, Postgres, free_port, stop_process  # noqa: E402

KINDS = ("list clusters", "list clusters, next page", "list clusters, plugin_name", "list jobs",
         "list jobs, status", "show cluster", "show job", "create cluster template", "delete cluster template")
# One round of a client: every kind once, the lists twice (they are what a dashboard and `openstack ... list`
# send most).
ROUND = ("list clusters", "list clusters, next page", "list clusters, plugin_name", "list jobs", "list jobs, status",
         "show cluster", "show job", "show cluster", "show job", "list clusters", "list jobs", "create")
JOB_STATUSES = (statuses.PENDING, statuses.RUNNING, statuses.SUCCEEDED, statuses.FAILED, statuses.KILLED,
                statuses.DONEWITHERROR, statuses.SUSPENDED, statuses.TOBEKILLED)
CLUSTER_STATUSES = ("Active", "Active", "Active", "Error", "Validating", "Spawning", "Deleting")
PLUGINS = {name: get_plugin(name).versions()[0] for name in ("spark", "dask")}
SAMPLE = 200  # ids per project the clients show


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- seeding ------------------------------------------------------------------------------------------------------


def seed(db: Database, projects: list[str], clusters: int, jobs: int) -> dict[str, dict[str, list[str]]]:
    """The rows, straight into the database; returns per project a sample of its cluster and job ids."""
    rnd = random.Random(16)
    start = datetime(2026, 11, 1)
    sample: dict[str, dict[str, list[str]]] = {p: {"clusters": [], "jobs": []} for p in projects}
    with db.session() as s:
        site = s.scalars(select(Site)).first()
        host = s.scalars(select(Host).where(Host.site_id == site.id)).first()
    per_project: dict[str, list[str]] = {p: [] for p in projects}
    batch = 2000
    for first in range(0, clusters, batch):
        rows, groups, insts, steps = [], [], [], []
        for i in range(first, min(first + batch, clusters)):
            project, k = projects[i % len(projects)], i // len(projects)  # k: the cluster's index in its project
            plugin = "spark" if k % 2 else "dask"
            master, worker = get_plugin(plugin).node_processes(PLUGINS[plugin])[plugin.capitalize()]
            cid, created = new_id(), start + timedelta(seconds=i * 30)
            status = CLUSTER_STATUSES[k % len(CLUSTER_STATUSES)]
            rows.append({"id": cid, "project_id": project, "name": f"load-{i:06d}", "plugin_name": plugin,
                         "plugin_version": PLUGINS[plugin], "site_id": site.id, "status": status,
                         "status_description": "", "is_public": k % 100 == 0, "is_protected": False,
                         "is_transient": False, "spec": {"description": "seeded by bench/api_load.py",
                                                         "neutron_management_network": "local"},
                         "info": {}, "management_public_key": "ssh-ed25519 AAAA", "op_target": {},
                         "created_at": created, "updated_at": created + timedelta(minutes=3)})
            per_project[project].append(cid)
            for name, procs, count in (("master", [master], 1), ("workers", [worker], 2)):
                ngid = new_id()
                groups.append({"id": ngid, "cluster_id": cid, "name": name, "count": count, "created_at": created,
                               "spec": {"flavor_id": "2", "node_processes": procs, "node_configs": {}}})
                if status == "Active" and k % 3 == 0:
                    for k in range(count):
                        insts.append({"id": new_id(), "cluster_id": cid, "node_group_id": ngid, "host_id": host.id,
                                      "index": k, "name": f"load-{i:06d}-{name}-{k}", "internal_ip": "127.0.0.1",
                                      "management_ip": "127.0.0.1", "workdir": f"/nonexistent/{cid}/{k}",
                                      "ports": {}, "vcpus": 1, "ram_mb": 2048, "disk_gb": 20, "state": "active",
                                      "created_at": created})
            if status == "Active" and k % 3 == 0:
                for n, step in enumerate(("Spawning", "Configuring", "Starting")):
                    steps.append({"id": new_id(), "cluster_id": cid, "project_id": project, "step_name": step,
                                  "step_type": step, "total": 3, "successful": True, "duration": 1.5,
                                  "created_at": created + timedelta(seconds=n)})
        with db.session() as s:
            for model, values in ((Cluster, rows), (NodeGroup, groups), (Instance, insts), (ProvisionStep, steps)):
                if values:
                    s.execute(insert(model), values)
    templates: dict[str, list[str]] = {}
    with db.session() as s:
        values = []
        for p in projects:
            templates[p] = [new_id() for _ in range(5)]
            values += [{"id": t, "project_id": p, "name": f"load-jt-{n}", "type": "Spark", "mains": [], "libs": [],
                        "interface": [], "description": ""} for n, t in enumerate(templates[p])]
        s.execute(insert(JobTemplate), values)
    for first in range(0, jobs, 5000):
        values = []
        for i in range(first, min(first + 5000, jobs)):
            p = projects[i % len(projects)]
            status = JOB_STATUSES[(i // len(projects)) % len(JOB_STATUSES)]
            created = start + timedelta(seconds=i * 3)
            ended = status in statuses.TERMINAL
            jid = new_id()
            values.append({"id": jid, "project_id": p, "job_template_id": rnd.choice(templates[p]),
                           "cluster_id": rnd.choice(per_project[p]), "status": status, "op_target": {},
                           "job_configs": {"configs": {"spark.executor.memory": "1g"}, "args": ["x"]},
                           "interface": {}, "info": {"status": status}, "data_source_urls": {}, "runtime": {},
                           "engine_job_id": f"app-{i}", "return_code": 0 if status == statuses.SUCCEEDED else None,
                           "start_time": created + timedelta(seconds=5) if status != statuses.PENDING else None,
                           "end_time": created + timedelta(seconds=60) if ended else None,
                           "created_at": created, "updated_at": created + timedelta(seconds=60)})
            if len(sample[p]["jobs"]) < SAMPLE:
                sample[p]["jobs"].append(jid)
        with db.session() as s:
            s.execute(insert(Job), values)
    for p in projects:
        sample[p]["clusters"] = rnd.sample(per_project[p], min(SAMPLE, len(per_project[p])))
    with db.session() as s:
        n_clusters, n_jobs = s.scalar(select(func.count()).select_from(Cluster)), \
            s.scalar(select(func.count()).select_from(Job))
        n_instances = s.scalar(select(func.count()).select_from(Instance))
    log(f"seeded {n_clusters} clusters ({n_instances} instances), {n_jobs} jobs over {len(projects)} projects")
    if db.url.startswith("postgresql"):
        with db.engine.connect() as conn:  # as autovacuum would soon after such a load
            conn.exec_driver_sql("COMMIT")
            conn.exec_driver_sql("ANALYZE")
    return sample


# --- the load generator (a process of its own) ---------------------------------------------------------------------


def template_body(n: int) -> dict[str, Any]:
    return {"name": f"load-ct-{n}", "plugin_name": "dask", "plugin_version": PLUGINS["dask"],
            "node_groups": [{"name": "scheduler", "flavor_id": "2", "node_processes": ["scheduler"], "count": 1},
                            {"name": "workers", "flavor_id": "2", "node_processes": ["worker"], "count": 2}]}


async def client_loop(url: str, token: str, ids: dict[str, list[str]], until: float, seed_n: int,
                      out: list[tuple[str, float, int]]) -> None:
    rnd = random.Random(seed_n)
    plugins = list(PLUGINS)
    marker: str | None = None
    made = 0
    async with httpx.AsyncClient(base_url=url, headers={"X-Auth-Token": token}, timeout=60,
                                 limits=httpx.Limits(max_connections=1)) as http:
        async def call(kind: str, method: str, path: str, **kw: Any) -> httpx.Response:
            t0 = time.perf_counter()
            r = await http.request(method, path, **kw)
            out.append((kind, time.perf_counter() - t0, r.status_code))
            return r

        while time.monotonic() < until:
            for kind in ROUND:
                if kind == "list clusters":
                    r = await call(kind, "GET", "/v2/clusters", params={"limit": 100})
                    marker = (r.json().get("markers") or {}).get("next")
                elif kind == "list clusters, next page":
                    params: dict[str, Any] = {"limit": 100}
                    if marker:
                        params["marker"] = marker
                    r = await call(kind, "GET", "/v2/clusters", params=params)
                    marker = (r.json().get("markers") or {}).get("next")
                elif kind == "list clusters, plugin_name":
                    await call(kind, "GET", "/v2/clusters", params={"limit": 100, "plugin_name": rnd.choice(plugins)})
                elif kind == "list jobs":
                    await call(kind, "GET", "/v2/jobs", params={"limit": 100})
                elif kind == "list jobs, status":
                    await call(kind, "GET", "/v2/jobs", params={"limit": 100, "status": rnd.choice(JOB_STATUSES)})
                elif kind == "show cluster":
                    await call(kind, "GET", f"/v2/clusters/{rnd.choice(ids['clusters'])}")
                elif kind == "show job":
                    await call(kind, "GET", f"/v2/jobs/{rnd.choice(ids['jobs'])}")
                else:
                    made += 1
                    r = await call("create cluster template", "POST", "/v2/cluster-templates",
                                   json=template_body(seed_n * 1_000_000 + made))
                    if r.status_code == 202:
                        await call("delete cluster template", "DELETE",
                                   f"/v2/cluster-templates/{r.json()['cluster_template']['id']}")


async def drive_async(cfg: dict[str, Any]) -> list[tuple[str, float, int]]:
    out: list[tuple[str, float, int]] = []
    until = time.monotonic() + cfg["seconds"]
    await asyncio.gather(*(client_loop(cfg["url"], c["token"], c["ids"], until, c["seed"], out)
                           for c in cfg["clients"]))
    return out


def drive(cfg_path: Path) -> None:
    """`--drive CONFIG`: run the clients of one load-generator process; results as JSON on stdout."""
    cfg = json.loads(cfg_path.read_text())
    wall0, r0 = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
    out = asyncio.run(drive_async(cfg))
    wall, r1 = time.monotonic() - wall0, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    json.dump({"samples": out, "wall": wall, "cpu": cpu}, sys.stdout)


# --- one run: a server under the mix --------------------------------------------------------------------------------


def load(url: str, tokens: dict[str, str], sample: dict[str, dict[str, list[str]]], clients: int, drivers: int,
         seconds: float, work: Path, label: str) -> dict[str, Any]:
    projects = list(tokens)
    specs = [{"token": tokens[projects[i % len(projects)]], "ids": sample[projects[i % len(projects)]], "seed": i}
             for i in range(clients)]
    procs = []
    try:
        for d in range(drivers):
            cfg = work / f"drive-{label}-{d}.json"
            cfg.write_text(json.dumps({"url": url, "seconds": seconds, "clients": specs[d::drivers]}))
            cfg.chmod(0o600)  # tokens inside
            procs.append(subprocess.Popen([sys.executable, __file__, "--drive", str(cfg)], stdout=subprocess.PIPE))
        results = [json.loads(p.communicate(timeout=seconds + 300)[0]) for p in procs]
    finally:
        for p in procs:
            stop_process(p)
    samples = [tuple(x) for r in results for x in r["samples"]]
    wall = max(r["wall"] for r in results)
    bad = [x for x in samples if x[2] >= 400]
    if bad:
        raise RuntimeError(f"{label}: {len(bad)} failed requests, e.g. {bad[:3]}")
    kinds: dict[str, list[float]] = {}
    for kind, seconds_taken, _status in samples:
        kinds.setdefault(kind, []).append(seconds_taken * 1000)
    return {"kinds": {k: (statistics.median(v), quantile(v, 0.99), len(v)) for k, v in kinds.items()},
            "rps": len(samples) / wall, "n": len(samples),
            "driver_cpu": [round(r["cpu"] / r["wall"], 2) for r in results]}


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run_database(kind: str, args: argparse.Namespace, base: Path) -> dict[str, Any]:
    pg: Postgres | None = None
    oasis: Oasis | None = None
    ceiling: subprocess.Popen | None = None
    try:
        url = None
        if kind == "postgres":
            pg = Postgres(Path(tempfile.mkdtemp(prefix="oasis-bench-apiload-pg-")))  # its own, chowned to postgres
            pg.start()
            url = pg.create_database("oasis")
        state = base / f"state-{kind}"
        oasis = Oasis(state, url)
        oasis.start_api("api")
        log(f"{kind}: oasis api on {oasis.url}; making {args.projects} projects")
        tokens: dict[str, str] = {}
        for i in range(args.projects):
            pid, client = oasis.add_project(f"load-{i:02d}", f"load-user-{i:02d}", f"pw-{os.urandom(8).hex()}")
            tokens[pid] = str(client.headers["X-Auth-Token"])
            client.close()
        db_url = url or f"sqlite:///{state / 'oasis.db'}"
        db = Database(db_url, key=load_key(state))
        t0 = time.monotonic()
        sample = seed(db, list(tokens), args.clusters, args.jobs)
        db.engine.dispose()
        log(f"{kind}: seeded in {time.monotonic() - t0:.0f} s")
        port = free_port()
        ceiling = subprocess.Popen([sys.executable, str(ROOT / "bench" / "api_load_ceiling.py"), "--database-url",
                                    db_url, "--port", str(port)], env=oasis.env,
                                   stdout=open(base / f"ceiling-{kind}.log", "wb"), stderr=subprocess.STDOUT)
        ceiling_url = f"http://127.0.0.1:{port}"
        oasis.wait_answering(ceiling, ceiling_url)
        out: dict[str, Any] = {}
        for label, target in (("oasis", oasis.url), ("ceiling", ceiling_url)):
            load(target, tokens, sample, min(args.clients, 4), 1, 3, base, f"{kind}-{label}-warm")  # warm up
            log(f"{kind}: {label} under {args.clients} clients for {args.seconds} s")
            out[label] = load(target, tokens, sample, args.clients, args.drivers, args.seconds, base,
                              f"{kind}-{label}")
            log(f"{kind}: {label}: {out[label]['rps']:.0f} requests/s, load generators' CPU "
                f"{out[label]['driver_cpu']}")
        return out
    finally:
        if ceiling is not None:
            stop_process(ceiling)
        if oasis is not None:
            oasis.stop()
        if pg is not None:
            pg.stop()
            shutil.rmtree(pg.base, ignore_errors=True)


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> str:
    lines = ["# The API under load (bench/api_load.py)", "",
             f"{args.clusters} clusters and {args.jobs} jobs over {args.projects} projects, {args.clients} concurrent "
             f"clients in {args.drivers} load-generator processes (httpx async, keep-alive), {args.seconds:.0f} s "
             f"per server; `oasis api` (uvicorn, one process) against the ceiling (a bare Starlette app, the same "
             f"SQL on the same database, the same server), token checked on both; {platform.machine()}, "
             f"{os.cpu_count()} CPUs shared with the load generators, Python {platform.python_version()}. "
             f"Latencies as the clients saw them.", ""]
    for db, res in results.items():
        o, c = res["oasis"], res["ceiling"]
        lines += [f"## {db}", "",
                  f"Requests/s: oasis **{o['rps']:.0f}**, ceiling {c['rps']:.0f}: ceiling / oasis "
                  f"**{c['rps'] / o['rps']:.2f}×**. Load generators' CPU (s per s, per process): oasis run "
                  f"{o['driver_cpu']}, ceiling run {c['driver_cpu']}.", "",
                  "| request | oasis p50 | oasis p99 | ceiling p50 | ceiling p99 | p50 oasis / ceiling | n (oasis) |",
                  "|---|---|---|---|---|---|---|"]
        for kind in KINDS:
            if kind not in o["kinds"] or kind not in c["kinds"]:
                continue
            (op50, op99, on), (cp50, cp99, _cn) = o["kinds"][kind], c["kinds"][kind]
            lines.append(f"| {kind} | {op50:.1f} ms | {op99:.1f} ms | {cp50:.1f} ms | {cp99:.1f} ms | "
                         f"{op50 / cp50:.2f}× | {on} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--drive":
        drive(Path(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--clusters", type=int, default=10000)
    parser.add_argument("--jobs", type=int, default=100000)
    parser.add_argument("--projects", type=int, default=20)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--drivers", type=int, default=2, help="load-generator processes")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "api-load-results.md")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="oasis-bench-apiload-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        for kind in (("sqlite", "postgres") if args.db == "both" else (args.db,)):
            results[kind] = run_database(kind, args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    text = report(args, results)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
