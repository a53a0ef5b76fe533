#!/usr/bin/env python3
"""oasis replicas benchmark: engine takeover after SIGKILL, and create throughput over 1, 2 and 3 engines, on a
throwaway PostgreSQL, side by side with the same Dask daemons started by hand.

    .venv/bin/python bench/replicas.py [--quick] [--kills N] [--clusters N] [--reps N] [--engines N]

  (a) takeover: one `oasis api` and E engines (default 3) on one database. A Dask cluster (1 scheduler + 1
      worker) is created; while it is in a provisioning step, the engine holding its lease (the pid in
      `clusters.lease_owner`, `<hostname>-<pid>-<hex>`) is SIGKILLed and the database is polled every 20 ms until
      another engine's id is in `lease_owner`: kill -> takeover. Then kill -> Active. An engine is started again
      after each kill so that E stay alive. Against the old behaviour (a dead engine's lease is waited out): the
      lease time left at the kill, and the whole lease (15 s, the production default, which this run uses).
  (b) throughput: with 1, 2 and 3 engines, a burst of N Dask clusters (1 scheduler + 1 worker each) is POSTed at
      once; first POST -> all Active, clusters per minute, and how the creates spread over the engines (the
      distinct lease owners seen per cluster). Against the same N scheduler + worker pairs started directly
      (`python -m distributed.cli.dask_scheduler` / `dask_worker`), all in parallel, in the same run.

Everything listens on 127.0.0.1. It starts its own PostgreSQL and oasis processes in temporary directories,
stops each by its PID and removes the directories, also on failure. Results go to bench/replicas-results.md
(printed too)."""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from oasis.bootstrap import FLAVORS  # noqa: E402
from oasis.engine.leases import DEAD_AFTER_SECONDS, HEARTBEAT_SECONDS  # noqa: E402
from oasis.procs import log_has  # noqa: E402
from oasis.runtime import total_ram_mb  # noqa: E402
from tests.integration import workflow as wf  # noqa: E402
from tests.integration.cluster_checks import assert_clean_processes  # noqa: E402
from tests.integration.services import Oasis, Postgres, free_port, stop_process, wait_until  # noqa: E402

LEASE_SECONDS = 15.0  # the production default (oasis.config.Settings.lease_seconds)
ENGINE_POLL_SECONDS = 0.2  # the production default (oasis.config.Settings.poll_seconds); the test harness uses 0.1
DB_POLL = 0.02  # how often the benchmark reads the database
CPU_RATIO, RAM_RATIO = 16.0, 1.5  # the local site's overcommit (oasis.db.models.Site defaults)
STEPS = ["Validating", "Spawning", "Waiting", "Preparing", "Configuring", "Starting"]
TARGETS = ["Spawning", "Configuring", "Starting"]  # where the kills aim, in turn (or the first step after)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # as oasis.db.models.utcnow: naive UTC


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pid_of(owner: str) -> int:
    return int(owner.rsplit("-", 2)[1])  # <hostname>-<pid>-<hex>; a hostname may hold dashes


class Problem(Exception):
    """Something the engine did wrong (not the benchmark): reported with the logs, not worked around."""


# --- the database, read directly -------------------------------------------------------------------------------


class Db:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, isolation_level="AUTOCOMMIT")
        self.conn = self.engine.connect()

    def cluster(self, cid: str) -> tuple[str, str | None, datetime | None] | None:
        row = self.conn.execute(text("SELECT status, lease_owner, lease_expires FROM clusters WHERE id = :id"),
                                {"id": cid}).first()
        return None if row is None else (row[0], row[1], row[2])

    def clusters(self, ids: list[str]) -> dict[str, tuple[str, str | None, str | None]]:
        rows = self.conn.execute(text("SELECT id, status, lease_owner, status_description FROM clusters"))
        wanted = set(ids)
        return {r[0]: (r[1], r[2], r[3]) for r in rows if r[0] in wanted}

    def alive(self) -> list[str]:
        since = utcnow() - timedelta(seconds=DEAD_AFTER_SECONDS)
        return sorted(r[0] for r in self.conn.execute(
            text("SELECT engine_id FROM engine_heartbeats WHERE seen_at >= :t"), {"t": since}))

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()


# --- oasis processes ---------------------------------------------------------------------------------------------


class Service:
    """An `oasis api` and engines on one database (tests.integration.services.Oasis), with production timings."""

    def __init__(self, state_dir: Path, url: str) -> None:
        self.oasis = Oasis(state_dir, url, lease_seconds=LEASE_SECONDS)
        self.oasis.env["OASIS_POLL_SECONDS"] = str(ENGINE_POLL_SECONDS)
        self.db = Db(url)
        self.engines: dict[int, subprocess.Popen] = {}  # pid -> the engine process, those running
        self.logs: dict[int, Path] = {}  # pid -> its log

    @property
    def client(self):  # type: ignore[no-untyped-def]
        return self.oasis.client

    def start(self, engines: int) -> None:
        self.oasis.start_api("api")
        self.scale(engines)

    def start_engine(self) -> subprocess.Popen:
        proc = self.oasis.start_engine()
        self.engines[proc.pid] = proc
        self.logs[proc.pid] = self.oasis.state_dir / f"engine-{self.oasis.procs.index(proc)}.log"
        return proc

    def scale(self, n: int) -> None:
        """Exactly n engines alive (a clean stop removes an engine's heartbeat at once)."""
        while len(self.engines) > n:
            pid = max(self.engines)
            stop_process(self.engines.pop(pid))
        while len(self.engines) < n:
            self.start_engine()
        self.wait_alive(n)

    def wait_alive(self, n: int) -> None:
        def ready() -> bool:
            for pid, proc in self.engines.items():
                if proc.poll() is not None:
                    raise Problem(f"engine {pid} exited with {proc.returncode}; see {self.logs[pid]}")
            return len(self.db.alive()) == n

        wait_until(ready, 90, f"{n} engines to beat", 0.1)

    def kill(self, pid: int) -> None:
        proc = self.engines.pop(pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        try:
            self.db.close()
        finally:
            self.oasis.stop()


def excerpt(state_dir: Path, needles: list[str], limit: int = 60) -> str:
    """The lines of the api/engine logs that matter for a problem: errors, warnings, tracebacks (with what
    follows them) and lines naming one of `needles` (cluster ids)."""
    out: list[str] = []
    for path in sorted(state_dir.glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()
        follow = 0
        for line in lines:
            hit = any(w in line for w in (" ERROR ", " WARNING ", "Traceback", "Error:")) or \
                any(n in line for n in needles)
            if hit or follow > 0:
                out.append(f"{path.name}: {line}")
                follow = 20 if "Traceback" in line else max(0, follow - 1)
    if len(out) > limit:
        out = out[:limit // 2] + [f"... ({len(out) - limit} lines) ..."] + out[-limit // 2:]
    return "\n".join(out) or "(no error, warning or mention of the clusters in the logs)"


# --- Dask started by hand ---------------------------------------------------------------------------------------


class Direct:
    """Dask schedulers and workers started here, each in its own session, stopped by PID (its process group)."""

    def __init__(self, base: Path, worker_mb: int, nthreads: int) -> None:
        self.base, self.worker_mb, self.nthreads = base, worker_mb, nthreads
        self.procs: list[subprocess.Popen] = []
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")

    def _start(self, name: str, argv: list[str]) -> tuple[subprocess.Popen, Path]:
        d = self.base / name
        d.mkdir(parents=True, exist_ok=True)
        path = d / "log"
        with open(path, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=d, env=self.env,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc, path

    def cluster(self, tag: str, t0: float) -> float:
        """Scheduler, then its worker, as oasis starts them; ready = "Scheduler at" and "Registered to"."""
        port, dash = free_port(), free_port()
        sched, slog = self._start(f"{tag}-scheduler", [
            sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
            "--dashboard-address", f"127.0.0.1:{dash}"])
        wait_until(lambda: log_has(slog, "Scheduler at", sched), 180, "a Dask scheduler", 0.02)
        worker, wlog = self._start(f"{tag}-worker", [
            sys.executable, "-m", "distributed.cli.dask_worker", f"tcp://127.0.0.1:{port}", "--host", "127.0.0.1",
            "--worker-port", str(free_port()), "--nanny-port", str(free_port()), "--nthreads", str(self.nthreads),
            "--memory-limit", f"{self.worker_mb}MB", "--no-dashboard", "--name", f"{tag}-worker",
            "--local-directory", str(self.base / f"{tag}-worker" / "dask")])
        wait_until(lambda: log_has(wlog, "Registered to", worker), 180, "a Dask worker", 0.02)
        return time.monotonic() - t0

    def burst(self, n: int, tag: str) -> tuple[float, list[float]]:
        t0 = time.monotonic()
        with ThreadPoolExecutor(n) as pool:
            each = list(pool.map(lambda i: self.cluster(f"{tag}-{i}", t0), range(n)))
        return time.monotonic() - t0, each

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


# --- (a) takeover ------------------------------------------------------------------------------------------------


@dataclass
class Kill:
    status: str  # the cluster's status when its engine was killed
    takeover: float | None  # kill -> another engine's id in lease_owner
    left: float  # lease time left at the kill: what the old behaviour waited
    active: float | None  # kill -> Active
    create_active: float | None  # POST -> Active, with the kill in it
    clean: str = "yes"  # exactly the cluster's 2 daemons, no duplicate or stray process


def takeover(svc: Service, kills: int, engines: int, flavor: str, baseline: int, problems: list[str]
             ) -> dict[str, Any]:
    client, state = svc.client, svc.oasis.state_dir
    res: dict[str, Any] = {"kills": [], "uninterrupted": [], "missed": 0}
    # The same create with no kill, for comparison: spread over the run, as the machine's load varies.
    plain_before = sorted({round(k * kills / baseline) for k in range(baseline)}) if baseline else []
    attempt = 0
    while len(res["kills"]) < kills:
        if plain_before and len(res["kills"]) >= plain_before[0]:
            plain_before.pop(0)
            t0 = time.monotonic()
            cid = wf.create_cluster(client, "dask", f"plain-{len(res['uninterrupted'])}", workers=1, flavor=flavor)
            wf.wait_cluster(client, cid, timeout=300)
            res["uninterrupted"].append(time.monotonic() - t0)
            log(f"takeover: uninterrupted create -> Active {res['uninterrupted'][-1]:.2f}s")
            delete_all(svc, [cid])
        attempt += 1
        if attempt > kills * 2 + 5:
            raise Problem(f"only {len(res['kills'])} of {kills} kills landed in a provisioning step")
        target = TARGETS[len(res["kills"]) % len(TARGETS)]
        t_create = time.monotonic()
        cid = wf.create_cluster(client, "dask", f"kill-{attempt}", workers=1, flavor=flavor)
        while True:
            row = svc.db.cluster(cid)
            assert row is not None, f"cluster {cid} vanished"
            status, owner, expires = row
            if status in ("Active", "Error"):
                break
            if owner and status in STEPS and STEPS.index(status) >= STEPS.index(target):
                break
            if time.monotonic() - t_create > 300:
                raise Problem(f"cluster {cid} not past {status} after 300 s:\n{excerpt(state, [cid])}")
            time.sleep(DB_POLL)
        if status == "Error":
            problems.append(f"takeover: cluster {cid} went to Error before the kill:\n{excerpt(state, [cid])}")
            delete_all(svc, [cid])
            continue
        if status == "Active":  # it was quicker than the poll: try again
            res["missed"] += 1
            delete_all(svc, [cid])
            continue
        assert owner is not None and expires is not None
        pid = pid_of(owner)
        if pid not in svc.engines:
            raise Problem(f"lease owner {owner} is none of the running engines {sorted(svc.engines)}")
        svc.kill(pid)
        t_kill = time.monotonic()
        left = (expires - utcnow()).total_seconds()
        # kill -> another engine holds the lease
        took: float | None = None
        new_owner = None
        deadline = t_kill + LEASE_SECONDS * 2 + 30
        while time.monotonic() < deadline:
            row = svc.db.cluster(cid)
            if row is not None and row[1] and row[1] != owner:
                took, new_owner = time.monotonic() - t_kill, row[1]
                break
            if row is not None and row[0] in ("Active", "Error"):
                break
            time.sleep(DB_POLL)
        kill = Kill(status, took, left, None, None)
        svc.start_engine()  # keep the count; it starts after the takeover, so it is not the one taking over
        if took is None:
            row = svc.db.cluster(cid)
            problems.append(f"takeover: no engine took cluster {cid} (killed {owner} in {status}) within "
                            f"{deadline - t_kill:.0f} s; the row is now {row}.\n{excerpt(state, [cid, owner])}")
        else:
            if pid_of(new_owner) not in svc.engines:  # type: ignore[arg-type]
                problems.append(f"takeover: cluster {cid} taken by {new_owner}, not a running engine")
            try:
                wf.wait_cluster(client, cid, timeout=300)
                kill.active = time.monotonic() - t_kill
                kill.create_active = time.monotonic() - t_create
                try:
                    assert_clean_processes(state, cid, expected=2)
                except AssertionError as e:
                    kill.clean = "**no**"
                    problems.append(f"takeover: cluster {cid} (killed in {status}) is Active but its processes "
                                    f"are not clean: {e}\n{excerpt(state, [cid])}")
            except (AssertionError, TimeoutError) as e:
                problems.append(f"takeover: cluster {cid} (killed {owner} in {status}, taken by {new_owner}) "
                                f"did not become Active: {e}\n{excerpt(state, [cid])}")
        res["kills"].append(kill)
        log(f"takeover {len(res['kills'])}/{kills}: killed engine {pid} in {status}; taken over after "
            f"{'never' if took is None else f'{took:.2f}s'} (lease left {left:.1f}s); Active after "
            f"{'never' if kill.active is None else f'{kill.active:.2f}s'}")
        delete_all(svc, [cid])
        svc.wait_alive(engines)  # the dead engine's heartbeat gone stale, the new one beating
    return res


def delete_all(svc: Service, ids: list[str], timeout: float = 300) -> float:
    t0 = time.monotonic()
    for cid in ids:
        r = svc.client.delete(f"/clusters/{cid}")
        if r.status_code not in (204, 404):
            raise Problem(f"DELETE /clusters/{cid}: {r.status_code} {r.text}")
    left = set(ids)

    def gone() -> bool:
        for cid in list(left):
            if wf.cluster(svc.client, cid) is None:
                left.discard(cid)
        return not left

    try:
        wait_until(gone, timeout, f"{len(ids)} clusters to be deleted", 0.1)
    except TimeoutError:
        raise Problem(f"clusters {sorted(left)} not deleted after {timeout:.0f} s; rows: "
                      f"{svc.db.clusters(sorted(left))}\n{excerpt(svc.oasis.state_dir, sorted(left))}") from None
    return time.monotonic() - t0


# --- (b) throughput ----------------------------------------------------------------------------------------------


@dataclass
class Burst:
    engines: int
    load: float = field(default_factory=lambda: os.getloadavg()[0])  # the 1-minute load average at the start
    total: float | None = None  # first POST -> all Active
    each: list[float] = field(default_factory=list)  # first POST -> each Active
    per_engine: list[int] = field(default_factory=list)  # clusters per engine (first owner seen), largest first
    handed: int = 0  # clusters that had more than one owner while in progress
    errors: int = 0
    delete: float = float("nan")


def burst(svc: Service, n: int, engines: int, flavor: str, tag: str, problems: list[str]) -> Burst:
    b = Burst(engines)
    version = wf.plugin_version(svc.client, "dask")  # noqa: F841 (warms the API up like every round)
    t0 = time.monotonic()
    with ThreadPoolExecutor(n) as pool:
        ids = list(pool.map(lambda j: wf.create_cluster(svc.client, "dask", f"{tag}-{j}", workers=1,
                                                         flavor=flavor), range(n)))
    owners: dict[str, list[str]] = {cid: [] for cid in ids}
    done: dict[str, float] = {}
    errors: dict[str, str] = {}
    try:
        while len(done) + len(errors) < n:
            if time.monotonic() - t0 > 600:
                raise Problem(f"burst {tag}: {n - len(done) - len(errors)} clusters not Active after 600 s: "
                              f"{svc.db.clusters([c for c in ids if c not in done])}")
            now = time.monotonic()
            for cid, (status, owner, desc) in svc.db.clusters(ids).items():
                if owner and owner not in owners[cid]:
                    owners[cid].append(owner)
                if status == "Active" and cid not in done:
                    done[cid] = now - t0
                elif status == "Error" and cid not in errors:
                    errors[cid] = desc or ""
            time.sleep(0.05)
        if errors:
            b.errors = len(errors)
            problems.append(f"burst {tag} ({engines} engines): {len(errors)} of {n} clusters went to Error: "
                            f"{errors}\n{excerpt(svc.oasis.state_dir, list(errors))}")
        else:
            b.total = max(done.values())
        b.each = sorted(done.values())
        firsts: dict[str, int] = {}
        for cid, seen in owners.items():
            if seen:
                firsts[seen[0]] = firsts.get(seen[0], 0) + 1
        b.per_engine = sorted(firsts.values(), reverse=True)
        b.handed = sum(1 for seen in owners.values() if len(seen) > 1)
        if sum(b.per_engine) < n:
            b.per_engine.append(0)  # some were never seen leased (a create quicker than the poll): shown as a 0
    finally:
        b.delete = delete_all(svc, ids)
    return b


# --- the run -----------------------------------------------------------------------------------------------------


def pick_flavor(clusters: int) -> tuple[str, int, int]:
    """The smallest flavor with which a burst of `clusters` x 2 instances fits on this machine (the local host
    has the machine's cpu count and RAM, with the site's overcommit): (id, vcpus, ram_mb)."""
    vcpus = (os.cpu_count() or 1) * CPU_RATIO
    ram = total_ram_mb() * RAM_RATIO
    disk = shutil.disk_usage(tempfile.gettempdir()).total >> 30
    n = clusters * 2
    for fid, _name, cpu, mb, gb in FLAVORS:
        if n * cpu <= vcpus and n * mb <= ram and n * gb <= disk:
            return fid, cpu, mb
    raise SystemExit(f"{n} instances of even the smallest flavor do not fit on this machine")


def run(args: argparse.Namespace, work: Path, pg_base: Path, problems: list[str]) -> dict[str, Any]:
    flavor, vcpus, ram_mb = pick_flavor(args.clusters)
    res: dict[str, Any] = {"load": [os.getloadavg()[0]], "flavor": flavor, "bursts": [], "direct": [],
                           "direct_each": [],
                           "direct_load": []}
    pg = Postgres(pg_base)
    services: list[Service] = []
    direct = Direct(work / "direct", max(512, ram_mb - 512), vcpus)  # as oasis's Dask plugin sizes a worker
    try:
        log(f"starting PostgreSQL in {pg_base}")
        pg.start()
        res["postgres"] = pg.bin.parent.name
        if args.kills:
            svc = Service(work / "takeover", pg.create_database("oasis_takeover"))
            services.append(svc)
            log(f"takeover: 1 api + {args.engines} engines, {args.kills} kills")
            svc.start(args.engines)
            res["takeover"] = takeover(svc, args.kills, args.engines, flavor, args.baseline, problems)
            svc.stop()
            services.remove(svc)
        svc = Service(work / "burst", pg.create_database("oasis_burst"))
        services.append(svc)
        svc.start(1)
        round_no = 0
        for rep in range(args.reps):
            counts = (1, 2, 3) if rep % 2 == 0 else (3, 2, 1)
            for n_engines in counts:
                order = ("oasis", "direct") if round_no % 2 == 0 else ("direct", "oasis")
                round_no += 1
                for who in order:
                    if who == "oasis":
                        svc.scale(n_engines)
                        b = burst(svc, args.clusters, n_engines, flavor, f"b{round_no}", problems)
                        res["bursts"].append(b)
                        log(f"burst of {args.clusters} with {n_engines} engine(s): "
                            f"{'failed' if b.total is None else f'{b.total:.2f}s'}, per engine {b.per_engine}, "
                            f"handed over {b.handed}, deleted in {b.delete:.2f}s")
                    else:
                        res["direct_load"].append(os.getloadavg()[0])
                        total, each = direct.burst(args.clusters, f"d{round_no}")
                        res["direct"].append(total)
                        res["direct_each"] += each
                        log(f"burst of {args.clusters} started directly: {total:.2f}s")
                        direct.stop()
    finally:
        res["load"].append(os.getloadavg()[0])
        direct.stop()
        for svc in services:
            try:
                svc.stop()
            except Exception as e:  # noqa: BLE001 - the rest of the cleanup goes on
                log(f"could not stop oasis in {svc.oasis.state_dir}: {e}")
        pg.stop()
    return res


def code_version() -> str:
    """The commit under test, and whether oasis/ has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "oasis"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        return f"commit {head}" + (" with uncommitted changes to oasis/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown code version"


def changed_since(t: float) -> list[str]:
    """Files of oasis/ modified since `t` (another engineer may edit them while the benchmark runs)."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "oasis").rglob("*.py") if p.stat().st_mtime > t)


def render(res: dict[str, Any], args: argparse.Namespace, wall: float, problems: list[str]) -> str:
    fl = next(f for f in FLAVORS if f[0] == res["flavor"])
    lines = [
        "# oasis replicas benchmark", "",
        f"Run {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `bench/replicas.py` on "
        f"{os.cpu_count()} cores and {total_ram_mb() // 1024} GB RAM, Python {platform.python_version()}, Dask "
        f"distributed {metadata.version('distributed')}, PostgreSQL {res.get('postgres', '?')}, oasis "
        f"{res.get('code', '?')}; "
        f"{wall / 60:.1f} min in all. Everything on 127.0.0.1: a throwaway PostgreSQL, one `oasis api` and "
        "separate `oasis engine` processes that the benchmark started, with the production timings (lease "
        f"{LEASE_SECONDS:.0f} s, heartbeat {HEARTBEAT_SECONDS:g} s, an engine dead after "
        f"{DEAD_AFTER_SECONDS:g} s without one, engine poll {ENGINE_POLL_SECONDS:g} s). Dask clusters of "
        f"1 scheduler + 1 worker, flavor {fl[0]} ({fl[1]}: {fl[2]} vCPU, {fl[3]} MB). Load average at start / "
        f"end: {res['load'][0]:.1f} / {res['load'][-1]:.1f}. A 2-core machine shared with other work is noisy: "
        "read medians and ratios, ±20%.", "",
    ]
    t = res.get("takeover")
    if t:
        kills: list[Kill] = t["kills"]
        took = [k.takeover for k in kills if k.takeover is not None]
        left = [k.left for k in kills]
        active = [k.active for k in kills if k.active is not None]
        with_kill = [k.create_active for k in kills if k.create_active is not None]
        plain = t["uninterrupted"]

        def mm(xs: list[float]) -> str:
            return f"{med(xs):.2f} s | {max(xs, default=float('nan')):.2f} s"

        lines += [
            f"## Takeover after SIGKILL ({args.engines} engines, 1 API, {len(kills)} kills)", "",
            "The engine holding a creating cluster's lease (the pid in `clusters.lease_owner`) is SIGKILLed while "
            "the cluster is in a provisioning step (aiming in turn at Spawning, Configuring, Starting, or the "
            "first step after); the database is read every 20 ms until another engine's id is in "
            "`lease_owner`. An engine is started again after each takeover, so that "
            f"{args.engines} are alive at every kill. *Old behaviour*: a dead engine's lease was waited out — the "
            "lease time left at the kill (the lease is renewed every third of it), at most the whole lease.", "",
            "| Measure | median | max |", "|---|---:|---:|",
            f"| kill → another engine holds the lease | {mm(took)} |",
            f"| old behaviour: lease time left at the kill | {mm(left)} |",
            f"| old behaviour, worst case: the whole lease | {LEASE_SECONDS:.2f} s | {LEASE_SECONDS:.2f} s |",
            f"| takeover / lease left (median of per-kill ratios) | "
            f"{med([k.takeover / k.left for k in kills if k.takeover is not None and k.left > 0]):.2f}x | |",
            f"| kill → Active (secondary) | {mm(active)} |",
            f"| create → Active, with a kill | {mm(with_kill)} |",
            f"| create → Active, no kill ({len(plain)} clusters, same engines) | {mm(plain)} |", "",
            f"Takeovers seen: {len(took)} of {len(kills)}; Active afterwards: {len(active)} of {len(kills)}; "
            f"processes clean (2 daemons, none twice, no stray): "
            f"{sum(1 for k in kills if k.clean == 'yes' and k.active is not None)} of {len(kills)}. "
            f"A kill costs the create {med(with_kill) - med(plain):+.2f} s (medians). "
            f"Creates that were Active before a kill could land (retried): {t['missed']}.", "",
            "| # | status at kill | kill → takeover | lease left | kill → Active | clean |",
            "|---:|---|---:|---:|---:|:---:|",
        ]
        for i, k in enumerate(kills, 1):
            lines.append(f"| {i} | {k.status} | {_s(k.takeover)} | {k.left:.2f} s | {_s(k.active)} | {k.clean} |")
        lines.append("")
    bursts: list[Burst] = res["bursts"]
    if bursts:
        d = med(res["direct"])
        lines += [
            f"## Create throughput: a burst of {args.clusters} Dask clusters", "",
            f"{args.clusters} `POST /v2/clusters` at once (from {args.clusters} threads), then the database read "
            "every 50 ms until all are Active; *per engine*: how many clusters each engine took (the first "
            "lease owner seen per cluster), *handed over*: clusters seen with more than one owner. Then all are "
            "deleted and the engine count changed (a clean stop, or a new `oasis engine`). *direct*: the same "
            f"{args.clusters} scheduler + worker pairs (`python -m distributed.cli.dask_scheduler` / "
            "`dask_worker`, same options as oasis's Dask plugin gives), all started in parallel by the "
            "benchmark, the worker after its scheduler's `Scheduler at`; ready = the worker's `Registered to`. "
            f"Rounds alternate which of oasis and direct goes first; {len(res['direct'])} direct bursts, "
            f"median {d:.2f} s.", "",
            "| engines | first POST → all Active | clusters / min | median cluster → Active | per engine | "
            "handed over | direct | oasis / direct | delete all |",
            "|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        for n in (1, 2, 3):
            bs = [b for b in bursts if b.engines == n]
            if not bs:
                continue
            totals = [b.total for b in bs if b.total is not None]
            tot = med(totals)
            spread = "; ".join("/".join(map(str, b.per_engine)) for b in bs)
            lines.append(
                f"| {n} | {tot:.2f} s | {args.clusters / tot * 60:.1f} | {med([x for b in bs for x in b.each]):.2f} s "
                f"| {spread} | {sum(b.handed for b in bs)} | {d:.2f} s | {tot / d:.2f}x | "
                f"{med([b.delete for b in bs]):.2f} s |")
        lines.append(f"| direct | {d:.2f} s | {args.clusters / d * 60:.1f} | {med(res['direct_each']):.2f} s "
                     f"| | | | 1.00x | |")
        one = med([b.total for b in bursts if b.engines == 1 and b.total is not None])
        three = med([b.total for b in bursts if b.engines == 3 and b.total is not None])
        lines += ["", f"3 engines against 1: {three / one:.2f}x the time for the burst. All engines, the API, "
                  "PostgreSQL and the clusters' daemons share the same 2 cores, so more engines spread the work "
                  "but cannot add CPU: the burst is bound by starting 2 Python daemons per cluster.", ""]
    lines += ["## Samples (s)", ""]
    if t:
        lines.append(f"- takeover: {', '.join(_s(k.takeover, '') for k in t['kills'])}")
        lines.append(f"- lease left at kill: {', '.join(f'{k.left:.2f}' for k in t['kills'])}")
        lines.append(f"- kill → Active: {', '.join(_s(k.active, '') for k in t['kills'])}")
        lines.append(f"- create → Active, no kill: {', '.join(f'{x:.2f}' for x in t['uninterrupted'])}")
    for b in bursts:
        lines.append(f"- burst, {b.engines} engine(s), load {b.load:.1f}: {_s(b.total, '')} (each Active at "
                     f"{', '.join(f'{x:.1f}' for x in b.each)}); delete {b.delete:.2f}")
    if res["direct"]:
        lines.append("- burst, direct: " + ", ".join(f"{x:.2f} (load {ld:.1f})"
                                                   for x, ld in zip(res["direct"], res["direct_load"])))
    if res.get("changed"):
        lines += ["", "Note: the code under test changed while the benchmark ran (another engineer's work): "
                  + ", ".join(f"`{c}`" for c in res["changed"]) + ". Engines started at different times may have "
                  "run different versions of it."]
    lines += ["", "## Problems seen", ""]
    if problems:
        for p in problems:
            head, _, rest = p.partition("\n")
            lines.append(f"- {head}")
            if rest:
                lines += ["", "```", rest, "```", ""]
    else:
        lines.append("None: every kill was taken over, every cluster became Active with clean processes, and "
                     "every delete finished.")
    return "\n".join(lines) + "\n"


def _s(x: float | None, unit: str = " s") -> str:
    return "never" if x is None else f"{x:.2f}{unit}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 kills and bursts of 6")
    ap.add_argument("--kills", type=int, help="SIGKILLs for the takeover (default 15, or 5 with --quick; 0: skip)")
    ap.add_argument("--clusters", type=int, help="clusters per burst (default 12, or 6 with --quick)")
    ap.add_argument("--reps", type=int, help="rounds of bursts over 1, 2, 3 engines (default 2, or 1 with --quick)")
    ap.add_argument("--engines", type=int, default=3, help="engines for the takeover (default 3)")
    ap.add_argument("--baseline", type=int, help="creates with no kill for comparison (default 3, or 2 quick)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "replicas-results.md")
    ap.add_argument("--keep-logs", type=Path, help="copy the api/engine logs here at the end")
    args = ap.parse_args()
    args.kills = args.kills if args.kills is not None else (5 if args.quick else 15)
    args.clusters = args.clusters or (6 if args.quick else 12)
    args.reps = args.reps or (1 if args.quick else 2)
    args.baseline = args.baseline if args.baseline is not None else (2 if args.quick else 3)
    if args.engines < 2:
        ap.error("--engines: a takeover needs at least 2 engines")
    work = Path(tempfile.mkdtemp(prefix="oasis-replicas-"))
    # Not under `work`: PostgreSQL runs as `postgres` and must reach its directory.
    pg_base = Path(tempfile.mkdtemp(prefix="oasis-replicas-pg-"))
    problems: list[str] = []
    t0, started = time.monotonic(), time.time()
    code = code_version()
    try:
        res = run(args, work, pg_base, problems)
        res["code"] = code
        changed = changed_since(started)
        res["changed"] = changed
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except Problem as e:
        log(f"benchmark stopped on an engine problem: {e}")
        return 1
    except (RuntimeError, TimeoutError, OSError, AssertionError) as e:
        log(f"benchmark failed: {type(e).__name__}: {e}")
        for d in ("takeover", "burst"):
            if (work / d).exists():
                print(excerpt(work / d, []))
        return 1
    finally:
        if args.keep_logs:
            for path in work.glob("*/*.log"):
                dest = args.keep_logs / path.parent.name
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, dest / path.name)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(pg_base, ignore_errors=True)
    text_ = render(res, args, time.monotonic() - t0, problems)
    args.out.write_text(text_)
    print()
    print(text_)
    return 0


if __name__ == "__main__":
    sys.exit(main())
