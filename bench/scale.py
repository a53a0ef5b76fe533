#!/usr/bin/env python3
"""oasis benchmark: how placement and the engine's reconcile pass grow with hosts, sites and clusters.

    .venv/bin/python bench/scale.py [--hosts 10,100,1000] [--sites 1,10,50] [--clusters 10,500,5000] [--reps N]
                                   [--out bench/scale-results.md]

Each size gets a fresh SQLite database (migrated as `oasis up` does), seeded with simulated rows: sites, hosts
with capacity, clusters (Active, a master and a worker node group, 3 instances with their ports, a verification
record; a tenth autoscaled, a tenth transient with a running job, a tenth with a `max_age`) and a job per
cluster. One dimension grows while the other two stay at their smallest (10 hosts per site, 1 site, 10
clusters). At each size, median of `--reps`:

  (a) placement: a new 3-instance Spark cluster placed by `oasis.compute.placement.place`, the engine's spawn
      step (the site locked, its free capacity read, hosts chosen, instance rows and ports written), rolled back
      after each run. Direct: the one indexed query a placement cannot do without (the site's hosts with what
      their instances use).
  (b) one reconcile pass of a real `oasis.engine.runner.Engine` (`_tick`, with its periodic part due): the claim
      query of each model, and each periodic task's tick (transient clusters, job starts, host health,
      verification, lifecycle's sweep, autoscale). Three passes: within a period (nothing to do, the usual
      case), at a period's start (every periodic task's claim is new: what each period costs once), and with one
      operation to claim. What a pass would do past the database is left out: the machines, the health
      checks, the frameworks' probes and the autoscaler's load reads are no-ops here. Direct: the bare indexed
      query that finds an operation to do.
  (c) queries: every statement sent to the database during each step of a pass, counted with SQLAlchemy's
      `before_cursor_execute` event.

Growth is stated as time per row (host, site or cluster) and as the fitted exponent: the slope of log(time)
over log(size), least squares over the sizes (1: linear; 0: constant). Results go to bench/scale-results.md
(printed too); it removes its temporary directories, also on failure."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import delete, event, insert, text, update  # noqa: E402

from oasis.bootstrap import FLAVORS  # noqa: E402
from oasis.compute import placement  # noqa: E402
from oasis.config import Settings  # noqa: E402
from oasis.db.models import (Cluster, Flavor, Host, HostPort, Instance, Job, NodeGroup, PeriodicRun,  # noqa: E402
                             Site)
from oasis.db.session import Database  # noqa: E402
from oasis.engine import attempts, leases, runner  # noqa: E402
from oasis.engine.runner import Engine  # noqa: E402
from oasis.db.encrypted import load_key  # noqa: E402
from oasis.plugins import get_plugin  # noqa: E402
from oasis.storage.filesystem import FilesystemStore  # noqa: E402
from tests.integration.services import Postgres  # noqa: E402

FLAVOR = "2"  # m1.small
BASE = {"hosts": 10, "sites": 1, "clusters": 10}  # the other dimensions while one grows
PORTS = ("7077", "8080")  # two ports per simulated instance


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def slope(sizes: list[int], times: list[float]) -> float:
    """The least-squares slope of log(time) over log(size): the exponent of the growth."""
    xs, ys = [math.log(s) for s in sizes], [math.log(max(t, 1e-9)) for t in times]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")


# --- counting queries -------------------------------------------------------------------------------------------


class Meter:
    """Per labelled step: the statements the database received and the seconds spent in it."""

    def __init__(self, db: Database) -> None:
        self.label: str | None = None
        self.queries: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        self.started: dict[str, list[str]] = {"autoscale": [], "verification": [], "host health": []}
        event.listen(db.engine, "before_cursor_execute", self._count)

    def _count(self, *_args: Any) -> None:
        self.queries[self.label or "other"] += 1

    def reset(self) -> None:
        self.queries.clear()
        self.seconds.clear()
        for started in self.started.values():
            started.clear()

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        outer, self.label = self.label, label
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[label] += time.perf_counter() - began
            self.label = outer

    def wrap(self, label: str, fn: Callable) -> Callable:
        if asyncio.iscoroutinefunction(fn):
            async def awrapped(*a: Any, **k: Any) -> Any:
                with self.step(label):
                    return await fn(*a, **k)
            return awrapped

        def wrapped(*a: Any, **k: Any) -> Any:
            with self.step(label):
                return fn(*a, **k)
        return wrapped


# --- the simulated rows ------------------------------------------------------------------------------------------


def spec_of(i: int, cluster_id: str) -> dict[str, Any]:
    """A cluster's spec as the API writes it, with what the engine adds (a verification record), and for a tenth
    each an autoscaling policy or a max_age."""
    now = utcnow().strftime("%Y-%m-%dT%H:%M:%S")
    vid = str(uuid.uuid4())
    spec: dict[str, Any] = {
        "default_image_id": str(uuid.uuid4()), "neutron_management_network": "local",
        "cluster_configs": {"Spark": {"spark.executor.memory": "1g"}}, "anti_affinity": [],
        "description": f"simulated cluster {i}", "user_keypair_id": None, "use_autoconfig": True,
        "verification": {"id": vid, "cluster_id": cluster_id, "status": "GREEN", "created_at": now,
                         "updated_at": now, "checks": [
                             {"id": str(uuid.uuid4()), "verification_id": vid, "name": name, "status": "GREEN",
                              "description": "as the last check found", "created_at": now, "updated_at": now}
                             for name in ("Master alive", "Workers registered", "Hosts reachable")]}}
    if i % 10 == 1:
        spec["autoscaling"] = {"node_groups": {"worker": {"min": 1, "max": 4, "cooldown": 60}}}
    if i % 10 == 2:
        spec["lifecycle"] = {"max_age": 30 * 86400}
    return spec


def seed(db: Database, sites: int, hosts_per_site: int, clusters: int) -> list[str]:
    """The rows; the sites' ids, in order."""
    now = utcnow()
    with db.session() as s:
        s.execute(insert(Flavor), [dict(id=fid, name=n, vcpus=v, ram_mb=r, disk_gb=d) for fid, n, v, r, d in FLAVORS])
        site_ids = [str(uuid.uuid4()) for _ in range(sites)]
        s.execute(insert(Site), [dict(id=sid, name=f"site-{n}", spec={"default_network": "local"}, created_at=now)
                                 for n, sid in enumerate(site_ids)])
        hosts: list[dict[str, Any]] = []
        for sid in site_ids:
            for h in range(hosts_per_site):
                hosts.append(dict(id=str(uuid.uuid4()), site_id=sid, name=f"h{h:04d}", access="local",
                                  address=f"127.0.{h // 250}.{h % 250 + 1}", vcpus=128, ram_mb=4 * 1024 * 1024,
                                  disk_gb=100000, base_dir="/var/lib/oasis-agent/sim", status="up",
                                  spec={"health": {"reachable": True, "checked_at": now.isoformat()}},
                                  created_at=now))
        s.execute(insert(Host), hosts)
        by_site = {sid: [h for h in hosts if h["site_id"] == sid] for sid in site_ids}
        cl, ngs, insts, ports, jobs = [], [], [], [], []
        next_port: dict[str, int] = {}
        for i in range(clusters):
            cid, sid = str(uuid.uuid4()), site_ids[i % sites]
            cl.append(dict(id=cid, project_id="p" * 32, name=f"c{i:05d}", plugin_name="spark",
                           plugin_version="4.3", site_id=sid, status="Active", is_transient=i % 10 == 3,
                           spec=spec_of(i, cid), info={}, secrets={"spark_secret": uuid.uuid4().hex},
                           management_private_key="-----BEGIN OPENSSH PRIVATE KEY----- simulated",
                           created_at=now - timedelta(minutes=5), updated_at=now - timedelta(minutes=5)))
            for name, procs, count in (("master", ["master"], 1), ("worker", ["worker"], 2)):
                ngid = str(uuid.uuid4())
                ngs.append(dict(id=ngid, cluster_id=cid, name=name, count=count, created_at=now,
                                spec={"flavor_id": FLAVOR, "node_processes": procs, "node_configs": {}}))
                for index in range(1, count + 1):
                    host = by_site[sid][(i * 3 + index + (name == "worker")) % len(by_site[sid])]
                    iid, iname = str(uuid.uuid4()), f"c{i:05d}-{name}-{index:03d}"
                    taken = next_port.get(host["id"], 20000)
                    next_port[host["id"]] = taken + len(PORTS)
                    pmap = {p: taken + k for k, p in enumerate(PORTS)}
                    insts.append(dict(id=iid, cluster_id=cid, node_group_id=ngid, host_id=host["id"], index=index,
                                      name=iname, internal_ip=host["address"], management_ip=host["address"],
                                      workdir=f"/var/lib/oasis-agent/sim/{cid}/{iname}", ports=pmap, vcpus=1,
                                      ram_mb=2048, disk_gb=20, state="active", created_at=now))
                    ports += [dict(host_id=host["id"], port=p, instance_id=iid) for p in pmap.values()]
            jobs.append(dict(id=str(uuid.uuid4()), project_id="p" * 32, job_template_id=str(uuid.uuid4()),
                             cluster_id=cid, status="RUNNING" if i % 10 == 3 else "SUCCEEDED",
                             start_time=now - timedelta(minutes=4),
                             end_time=None if i % 10 == 3 else now - timedelta(minutes=3), created_at=now))
        for model, rows in ((Cluster, cl), (NodeGroup, ngs), (Instance, insts), (Job, jobs)):
            for k in range(0, len(rows), 2000):
                s.execute(insert(model), rows[k:k + 2000])
        for k in range(0, len(ports), 2000):
            s.execute(insert(HostPort), ports[k:k + 2000])
    return site_ids


# --- (a) placement --------------------------------------------------------------------------------------------------


def place_once(db: Database, site_id: str) -> float:
    """A new cluster placed as the engine's spawn step does, in one transaction, rolled back after."""
    plugin = get_plugin("spark")
    with db._sessions() as s:  # not db.session(): this one is rolled back, so every run finds the same rows
        began = time.perf_counter()
        c = Cluster(project_id="q" * 32, name=f"new-{uuid.uuid4().hex[:6]}", plugin_name="spark",
                    plugin_version="4.3", site_id=site_id, status="Spawning", spec={"anti_affinity": ["worker"]})
        s.add(c)
        s.flush()
        for name, procs, count in (("master", ["master"], 1), ("worker", ["worker"], 2)):
            s.add(NodeGroup(cluster_id=c.id, name=name, count=count,
                            spec={"flavor_id": FLAVOR, "node_processes": procs}))
        s.flush()
        placement.place(s, c, plugin.ports, "active", lambda h: h.address)
        s.flush()
        took = time.perf_counter() - began
        s.rollback()
    return took


def place_direct(db: Database, site_id: str) -> float:
    """The bare SQL: the site's hosts with what their instances use, one indexed query."""
    with db.engine.connect() as conn:
        began = time.perf_counter()
        conn.execute(text(
            "SELECT h.id, h.vcpus, h.ram_mb, h.disk_gb, coalesce(sum(i.vcpus), 0), coalesce(sum(i.ram_mb), 0), "
            "coalesce(sum(i.disk_gb), 0) FROM hosts h LEFT JOIN instances i ON i.host_id = h.id "
            "WHERE h.site_id = :site AND h.status = 'up' GROUP BY h.id"), {"site": site_id}).all()
        return time.perf_counter() - began


# --- (b) the reconcile pass ---------------------------------------------------------------------------------------


def make_engine(settings: Settings, db: Database, meter: Meter) -> Engine:
    """A real engine whose work past the database is a no-op, with each step of its pass labelled."""
    engine = Engine(settings, db, FilesystemStore(settings.state_dir / "objects"))

    async def machine(_row_id: str) -> None:
        return None

    engine.machines = [(model, machine) for model, _ in engine.machines]

    async def no_probe(_cluster_id: str) -> None:
        return None

    async def no_look(cluster_id: str) -> None:
        meter.started["autoscale"].append(cluster_id)

    async def no_check(_db: Any, _remotes: Any, site_ids: list[str]) -> None:
        meter.started["host health"] += site_ids

    runner.check_hosts = no_check  # the health check's `true` on each host
    engine.lifecycle._probe = no_probe  # the frameworks' "in use?"
    engine.autoscaler._run = no_look  # the frameworks' load
    engine.verifications._start = lambda cid, req: meter.started["verification"].append(cid)  # the check itself

    for name in ("alive", "superseded", "share", "claimable", "claim"):
        setattr(leases, name, meter.wrap(f"claim: {name}", getattr(leases, name)))
    attempts.start_due = meter.wrap("job starts", attempts.start_due)
    engine._delete_idle_transient = meter.wrap("transient clusters", engine._delete_idle_transient)
    engine._check_health = meter.wrap("host health", engine._check_health)
    engine.verifications.tick = meter.wrap("verification", engine.verifications.tick)
    engine.autoscaler.tick = meter.wrap("autoscale", engine.autoscaler.tick)
    engine.lifecycle.tick = meter.wrap("lifecycle", engine.lifecycle.tick)
    engine.lifecycle.sweep = meter.wrap("lifecycle", engine.lifecycle.sweep)
    return engine


async def one_pass(engine: Engine, meter: Meter) -> float:
    """One `_tick` with its periodic part due, and the work it started (the lifecycle sweep, a claimed
    operation's no-op machine) awaited: seconds."""
    engine._last_periodic = float("-inf")
    with meter.step("heartbeat"):  # what the pulse thread does each second, outside the pass
        engine.pulse.beat()
    began = time.perf_counter()
    with meter.step("pass"):
        engine._tick()
        if engine.lifecycle._task is not None:
            await engine.lifecycle._task
        await asyncio.gather(*engine.tasks.values())
    return time.perf_counter() - began


PERIODS = (attempts.DUE_SECONDS, 2.0, 5.0, runner.PERIODIC_SECONDS, 300.0)  # every periodic task's period


def slots() -> tuple[int, ...]:
    return tuple(int(time.time() // p) for p in PERIODS)


async def pass_within_period(engine: Engine, meter: Meter, before: Callable[[], None] = lambda: None,
                             tries: int = 20) -> tuple[float, bool]:
    """A pass in periods this engine has already looked at (the usual pass: every periodic task's claim for the
    period is behind it): passes are run until two in a row start and end in the same periods of every periodic
    task; the second is the one measured. (seconds, True); after `tries`, the last pass and False: passes that
    outlast a period (2 s) never fit in one, and every one of them does some period's work."""
    took = 0.0
    for _ in range(tries):
        at = slots()
        await one_pass(engine, meter)
        fitted = slots() == at  # else a period began during this one: the next pass may be the first to see it
        before()
        meter.reset()
        took = await one_pass(engine, meter)
        if fitted and slots() == at:
            return took, True
    return took, False


def new_period(db: Database, engine: Engine) -> None:
    """As if every periodic task's period had just begun: no claim of it yet, anywhere."""
    with db.session() as s:
        s.execute(delete(PeriodicRun))
    engine.lifecycle._task = None
    # the engine's memory of the periods it looked at
    for part in (engine, engine.verifications, engine.autoscaler):
        if hasattr(part, "_seen"):
            part._seen.clear()
    for shards in (getattr(engine, "_health_shards", None), getattr(engine.verifications, "shards", None),
                   getattr(engine.autoscaler, "shards", None)):
        if shards is not None:
            shards.slot = None


def direct_pass(db: Database) -> float:
    with db.engine.connect() as conn:
        began = time.perf_counter()
        conn.execute(text("SELECT id FROM clusters WHERE op IS NOT NULL LIMIT 1")).all()
        return time.perf_counter() - began


@dataclass
class Size:
    database: str
    dim: str
    n: int
    rows: dict[str, int]
    place: float
    place_direct: float
    steady: float
    period: float
    claim: float
    direct: float
    steady_q: dict[str, int] = field(default_factory=dict)
    period_q: dict[str, int] = field(default_factory=dict)
    claim_q: dict[str, int] = field(default_factory=dict)
    period_s: dict[str, float] = field(default_factory=dict)
    fitted: bool = True  # every pass "within a period" fitted in one (see pass_within_period)


async def measure(work: Path, dim: str, n: int, reps: int, pg: Postgres | None = None, tries: int = 20) -> Size:
    dims = {**BASE, dim: n}
    state = work / f"{dim}-{n}-{'postgresql' if pg else 'sqlite'}"
    state.mkdir(mode=0o700)
    url = pg.create_database(f"scale_{dim}_{n}") if pg is not None else None
    settings = Settings(state_dir=state, database_url=url, verification_seconds=300)
    db = Database(settings.database_url, key=load_key(state))
    db.migrate()
    began = time.perf_counter()
    site_ids = seed(db, dims["sites"], dims["hosts"], dims["clusters"])
    with db.session() as s:
        counts = {name: s.scalar(text(f"SELECT count(*) FROM {name}"))
                  for name in ("sites", "hosts", "clusters", "instances", "host_ports", "jobs")}
    log(f"{'postgresql' if pg else 'sqlite'} {dim}={n}: seeded {counts} in {time.perf_counter() - began:.1f}s")

    place = med([place_once(db, site_ids[0]) for _ in range(reps)])
    pdirect = med([place_direct(db, site_ids[0]) for _ in range(reps)])

    meter = Meter(db)
    engine = make_engine(settings, db, meter)
    engine._loop, engine._wake = asyncio.get_running_loop(), asyncio.Event()
    engine.pulse.beat()  # alive, as `run` makes it before its first claim (again before each pass)
    try:
        period_t, period_q, period_s = [], Counter(), Counter()
        for _ in range(reps):
            new_period(db, engine)
            meter.reset()
            period_t.append(await one_pass(engine, meter))
            period_q, period_s = Counter(meter.queries), Counter(meter.seconds)
            await asyncio.gather(*engine.autoscaler.tasks.values(), *([engine._health] if engine._health else []))
            # what a period's start must start, whatever the database: every Active cluster's verification, every
            # autoscaled cluster's look, every site's health check (the queries that find them are right)
            wanted = {"verification": dims["clusters"], "autoscale": len(range(1, dims["clusters"], 10)),
                      "host health": dims["sites"]}
            found = {k: len(set(v)) for k, v in meter.started.items()}
            assert found == wanted, f"a period's start started {found}, not {wanted}"
        steady = [await pass_within_period(engine, meter, tries=tries) for _ in range(reps)]
        steady_t, fitted = [t for t, _ in steady], all(ok for _, ok in steady)
        steady_q = Counter(meter.queries)
        with db.session() as s:
            target = s.scalar(text("SELECT id FROM clusters ORDER BY name LIMIT 1"))

        def ask() -> None:
            with db.session() as s:
                s.execute(update(Cluster).where(Cluster.id == target).values(op="verify", lease_owner=None))

        claim_t = []
        for _ in range(reps):
            took, ok = await pass_within_period(engine, meter, ask, tries)
            claim_t.append(took)
            fitted = fitted and ok
            assert target not in engine.tasks
            with db.session() as s:
                s.execute(update(Cluster).where(Cluster.id == target).values(op=None))
        claim_q = Counter(meter.queries)
        direct = med([direct_pass(db) for _ in range(reps)])
    finally:
        for task in list(engine.tasks.values()):
            task.cancel()
        engine.pulse._stop.set()  # its thread never ran: the beats were the pass's own
        db.engine.dispose()
    size = Size("postgresql" if pg else "sqlite", dim, n, counts, place, pdirect, med(steady_t), med(period_t),
                med(claim_t), direct, dict(steady_q), dict(period_q), dict(claim_q), dict(period_s), fitted)
    log(f"{size.database} {dim}={n}: place {place * 1e3:.2f} ms (direct {pdirect * 1e3:.2f}); pass "
        f"{size.steady * 1e3:.1f} ms, at a period's start {size.period * 1e3:.1f} ms, with a claim "
        f"{size.claim * 1e3:.1f} ms; queries {total(steady_q)}/{total(period_q)}/{total(claim_q)}")
    return size


# --- the report ------------------------------------------------------------------------------------------------------

STEPS = ["claim: alive", "claim: superseded", "claim: share", "claim: claimable", "claim: claim",
         "transient clusters", "job starts", "host health", "verification", "lifecycle", "autoscale", "pass"]


def ms(x: float) -> str:
    return f"{x * 1e3:.2f}" if x < 0.1 else f"{x * 1e3:.0f}"


def report(results: list[Size], reps: int, seconds: float, postgres: str | None = None) -> str:
    pg = f"PostgreSQL {postgres}, " if postgres else ""
    out = [f"# Placement and reconcile cost as hosts, sites and clusters grow "
           f"({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
           f"`bench/scale.py`, median of {reps} per size, {seconds / 60:.1f} minutes; SQLite {sqlite_version()}, "
           f"{pg}SQLAlchemy {metadata.version('sqlalchemy')}, Python {platform.python_version()}; a shared 2-core "
           "machine. One dimension grows, the others stay at 10 hosts per site, 1 site, 10 clusters. Times in ms; "
           "*per row*: the time over the size; *exponent*: the log-log slope over the sizes (1 is linear).", ""]
    for database, dim in [(d, m) for d in ("sqlite", "postgresql") for m in ("hosts", "sites", "clusters")]:
        rows = [r for r in results if r.dim == dim and r.database == database]
        if not rows:
            continue
        sizes = [r.n for r in rows]
        out += [f"## {dim} ({'SQLite' if database == 'sqlite' else 'PostgreSQL'})", "",
                "| " + dim + " | rows (hosts / clusters / instances) | place | place, bare SQL | pass | pass at a "
                "period's start | pass with a claim | pass, bare SQL | queries: pass / period's start / claim |",
                "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in rows:
            mark = "" if r.fitted else " †"
            out.append(f"| {r.n} | {r.rows['hosts']} / {r.rows['clusters']} / {r.rows['instances']} | {ms(r.place)} "
                       f"| {ms(r.place_direct)} | {ms(r.steady)}{mark} | {ms(r.period)} | {ms(r.claim)} | {ms(r.direct)} "
                       f"| {total(r.steady_q)} / {total(r.period_q)} / {total(r.claim_q)} |")
        big = rows[-1]
        fit = {k: slope(sizes, [getattr(r, k) for r in rows])
               for k in ("place", "place_direct", "steady", "period", "claim", "direct")}
        out.append(f"| **exponent** | | **{fit['place']:.2f}** | {fit['place_direct']:.2f} | **{fit['steady']:.2f}** "
                   f"| **{fit['period']:.2f}** | **{fit['claim']:.2f}** | {fit['direct']:.2f} | |")
        per = {k: getattr(big, k) / big.n * 1e6 for k in ("place", "steady", "period", "claim")}
        out.append(f"| **per row at {big.n}** | | {per['place']:.1f} µs | | {per['steady']:.1f} µs "
                   f"| {per['period']:.1f} µs | {per['claim']:.1f} µs | | |")
        if not all(r.fitted for r in rows):
            out += ["", "† a pass outlasted a period of the 2 s tasks: no pass fitted within one, so this one (and its "
                    "queries) include some period's work."]
        out += ["", f"Queries per step of a pass ({dim}; within a period / at a period's start):", "",
                "| step | " + " | ".join(str(r.n) for r in rows) + " |",
                "|---|" + "---:|" * len(rows)]
        for step in STEPS[:-1]:
            cells = [f"{own(r.steady_q, step)} / {own(r.period_q, step)}" for r in rows]
            if any(c != "0 / 0" for c in cells):
                out.append(f"| {step} | " + " | ".join(cells) + " |")
        out += ["", f"Time per step at a period's start ({dim}, ms, the last run):", "",
                "| step | " + " | ".join(str(r.n) for r in rows) + " |", "|---|" + "---:|" * len(rows)]
        for step in STEPS[:-1]:
            if any(r.period_s.get(step) for r in rows):
                out.append(f"| {step} | " + " | ".join(ms(r.period_s.get(step, 0.0)) for r in rows) + " |")
        out.append("")
    return "\n".join(out) + "\n"


def own(q: dict[str, int], step: str) -> int:
    return q.get(step, 0)


def total(q: dict[str, int]) -> int:
    return sum(q.values())


def sqlite_version() -> str:
    import sqlite3
    return sqlite3.sqlite_version


def sizes(text_: str) -> list[int]:
    return [int(x) for x in text_.split(",") if x.strip()]


async def main_async(args: argparse.Namespace) -> list[Size]:
    work = Path(tempfile.mkdtemp(prefix="oasis-scale-"))
    # Not under `work`: PostgreSQL runs as `postgres` and must reach its directory.
    pg_base = Path(tempfile.mkdtemp(prefix="oasis-scale-pg-")) if args.postgres or args.postgres_only else None
    pg = Postgres(pg_base) if pg_base is not None else None
    results = []
    try:
        if pg is not None:
            pg.start()
        for dim in ("hosts", "sites", "clusters"):
            for n in sizes(getattr(args, dim)):
                if not args.postgres_only:
                    results.append(await measure(work, dim, n, args.reps, tries=args.tries))
                if pg is not None:
                    results.append(await measure(work, dim, n, args.reps, pg, args.tries))
                write(args, results)  # so far: a long run stopped midway keeps what it measured
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)
        if pg_base is not None:
            shutil.rmtree(pg_base, ignore_errors=True)
    return results


def write(args: argparse.Namespace, results: list[Size]) -> str:
    with_pg = args.postgres or args.postgres_only
    postgres = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))[-1].parts[-3] if with_pg else None
    text_ = report(results, args.reps, time.perf_counter() - args.began, postgres)
    args.out.write_text(text_)
    return text_


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill by PID still cleans up (the finally blocks)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", default="10,100,1000")
    p.add_argument("--sites", default="1,10,50")
    p.add_argument("--clusters", default="10,500,5000")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--tries", type=int, default=20, help="passes tried for one that fits within a period")
    p.add_argument("--postgres", action="store_true", help="each size on a throwaway PostgreSQL too")
    p.add_argument("--postgres-only", action="store_true", help="each size on a throwaway PostgreSQL only")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "scale-results.md")
    args = p.parse_args()
    args.began = time.perf_counter()
    results = asyncio.run(main_async(args))
    print(write(args, results))


if __name__ == "__main__":
    main()
