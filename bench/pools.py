#!/usr/bin/env python3
"""Warm pools benchmark: create → Active from a warm pool, against the direct start of the same daemons (and the
ordinary, cold create through oasis), for Dask and Spark, side by side in one run.

    .venv/bin/python bench/pools.py [--reps N]

For each plugin: a cluster template of 1 master/scheduler + 2 workers (flavor m1.small, as bench/run.py), a pool
of 1 of it; each repetition waits for the pool to be Ready (not timed), then times `POST /v2/clusters` naming the
template until the cluster is seen Active (the 202 itself says so when it came from the pool), then deletes it.
The direct start is bench/run.py's (`Direct`: the same daemons with the same options, ready by their own logs and
the master's /json/), and so is the cold create (`Through.create_cluster`). Runs alternate which goes first.
It starts its own embedded `oasis up` and stops everything it started by PID. Results: bench/pools-results.md."""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import FLAVOR, MASTER, POLL, Direct, Through, _java, log, med  # noqa: E402
from oasis.cli.client import OasisClient, OasisError, authenticate, endpoint_for  # noqa: E402
from oasis.cli.demo import leftover_pids  # noqa: E402
from oasis.cli.embedded import EmbeddedService  # noqa: E402
from oasis.procs import wait_until  # noqa: E402
from tests.project_users import removing_new_project_users  # noqa: E402

TARGET = {"dask": 0.5, "spark": 2.0}  # seconds, create → Active from a pool (issue 16)


class Pooled:
    """A pool of one cluster of a template, and timed creates that claim from it."""

    def __init__(self, through: Through, plugin: str) -> None:
        self.c, self.plugin, self.version = through.c, plugin, through.versions[plugin]
        self.template = self.c.create("cluster-templates", {
            "name": f"bench-pool-{plugin}", "plugin_name": plugin, "plugin_version": self.version,
            "node_groups": [{"name": "master", "flavor_id": FLAVOR, "node_processes": [MASTER[plugin]], "count": 1},
                            {"name": "worker", "flavor_id": FLAVOR, "node_processes": ["worker"], "count": 2}]})["id"]
        self.pool = self.c.create("pools", {"pool": {"name": f"bench-{plugin}", "cluster_template_id": self.template,
                                                     "size": 1}})["id"]

    def wait_ready(self) -> None:
        def ready() -> bool:
            pool = self.c.show("pools", self.pool)
            if pool["status"] == "Error":
                raise RuntimeError(f"pool {self.pool}: {pool['status_description']}")
            return pool["status"] == "Ready"

        wait_until(ready, 600, f"pool {self.pool} to be ready", 0.2)

    def create(self, name: str) -> tuple[float, dict, bool]:
        """(create → seen Active, the cluster, whether the 202 already said Active)."""
        body = {"name": name, "plugin_name": self.plugin, "plugin_version": self.version,
                "cluster_template_id": self.template}
        t0 = time.monotonic()
        cluster = self.c.create("clusters", body)
        at_once = cluster["status"] == "Active"
        while cluster["status"] != "Active":
            if cluster["status"] == "Error":
                raise RuntimeError(f"{name}: Error: {cluster.get('status_description')}")
            if time.monotonic() - t0 > 600:
                raise TimeoutError(f"{name} not Active after 600 s")
            time.sleep(POLL)
            cluster = self.c.show("clusters", cluster["id"])
        return time.monotonic() - t0, cluster, at_once

    def delete(self) -> None:
        self.c.delete(f"/pools/{self.pool}")


def bench(reps: int, work: Path) -> dict[str, Any]:
    res: dict[str, Any] = {"load": [os.getloadavg()[0]]}
    res.update({p: {"pool": [], "direct": [], "cold": [], "at_once": []} for p in MASTER})
    direct = Direct(work / "direct")
    service = EmbeddedService(work / "oasis")
    through: Through | None = None
    live: list[str] = []
    pools: list[Pooled] = []
    try:
        log(f"starting an embedded oasis in {service.state_dir}")
        service.start()
        session = authenticate(service.credentials())
        through = Through(OasisClient(endpoint_for(service.url), session.token), service.state_dir)
        for plugin in ("dask", "spark"):
            r = res[plugin]
            pooled = Pooled(through, plugin)
            pools.append(pooled)
            for i in range(reps):
                order = ("pool", "cold", "direct") if i % 2 == 0 else ("direct", "cold", "pool")
                for who in order:
                    if who == "pool":
                        pooled.wait_ready()
                        t, cluster, at_once = pooled.create(f"bench-pool-{plugin}-{i}")
                        live.append(cluster["id"])
                        r["pool"].append(t)
                        r["at_once"].append(at_once)
                        log(f"{plugin} cluster from the pool: {t:.3f}s (Active in the 202: {at_once})")
                        through.delete_cluster(cluster["id"])
                        live.remove(cluster["id"])
                    elif who == "cold":
                        t, cluster = through.create_cluster(plugin, f"bench-cold-{plugin}-{i}")
                        live.append(cluster["id"])
                        r["cold"].append(t)
                        log(f"{plugin} cluster through oasis, cold: {t:.2f}s")
                        through.delete_cluster(cluster["id"])
                        live.remove(cluster["id"])
                    else:
                        t, _, procs = getattr(direct, f"{plugin}_cluster")(f"{plugin}-{i}")
                        r["direct"].append(t)
                        log(f"{plugin} cluster directly: {t:.2f}s")
                        direct.stop(procs)
            pooled.delete()
            pools.remove(pooled)
    finally:
        res["load"].append(os.getloadavg()[0])
        direct.stop()
        if through is not None:
            for p in pools:
                try:
                    p.delete()
                except OasisError as e:
                    log(f"could not delete pool {p.pool}: {e}")
            for cid in live:
                try:
                    through.delete_cluster(cid)
                except Exception as e:  # noqa: BLE001 - cleanup goes on
                    log(f"could not delete cluster {cid}: {e}")
            _wait_no_clusters(through)
            through.c.close()
        service.stop()
        for pid in leftover_pids(service.state_dir):
            try:
                os.kill(pid, signal.SIGKILL)
                log(f"killed leftover process {pid}")
            except ProcessLookupError:
                pass
    return res


def _wait_no_clusters(through: Through) -> None:
    """The pools' own clusters (deleted with their pools) gone too, before the service stops."""
    try:
        wait_until(lambda: not any(through.c.list("pools")) and _pooled_gone(through), 300,
                   "the pools' clusters to be deleted", 0.5)
    except (TimeoutError, OasisError) as e:
        log(f"the pools' clusters did not all go: {e}")


def _pooled_gone(through: Through) -> bool:
    """No cluster directory left under the embedded state's hosts (pooled clusters are not listed by the API)."""
    return not any(p.is_dir() for p in through.state_dir.glob("hosts/*/*-*-*-*-*"))


def render(res: dict[str, Any], reps: int, wall: float) -> str:
    def row(plugin: str, label: str) -> str:
        r = res[plugin]
        p, x, c = med(r["pool"]), med(r["direct"]), med(r["cold"])
        ok = "yes" if p <= TARGET[plugin] else "**no**"
        return (f"| {label} | {p:.3f} s | {x:.2f} s | {c:.2f} s | {p / x:.3f}x | {p / c:.3f}x | "
                f"≤ {TARGET[plugin]:.1f} s | {ok} |")

    at_once = sum(res["dask"]["at_once"] + res["spark"]["at_once"])
    lines = [
        "# Warm pools: create → Active from a pool", "",
        f"Run {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `bench/pools.py` ({reps} repetitions "
        f"each, medians; {wall / 60:.1f} min in all) on {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Spark {metadata.version('pyspark')}, Dask distributed {metadata.version('distributed')}, {_java()}. "
        "Everything on 127.0.0.1, through an embedded `oasis up` (SQLite) that the benchmark started. Load "
        f"average at start / end: {res['load'][0]:.1f} / {res['load'][-1]:.1f}.", "",
        "| Cluster (1 master + 2 workers, m1.small) | from a pool | direct start | oasis, cold | pool vs direct | "
        "pool vs cold | target | met |",
        "|---|---:|---:|---:|---:|---:|---:|:---:|",
        row("dask", "Dask create → Active"), row("spark", "Spark create → Active"), "",
        f"{at_once} of {2 * reps} creates from a pool answered 202 with the cluster already `Active`"
        + ("." if at_once == 2 * reps else " (the rest were seen Active by a later 50 ms poll)."), "",
        "How each was measured:", "",
        "- *from a pool*: a pool of 1 of the template; once the pool is Ready (not timed), `POST /v2/clusters` "
        "naming the template until the cluster is seen `Active` (the 202's own status when the create claimed a "
        "pooled cluster), then the cluster is deleted and the pool refills before the next repetition.",
        "- *direct start*: bench/run.py's `Direct`: the same daemons with the same options started on 127.0.0.1, "
        "ready by Dask's `Scheduler at` / `Registered to` lines and Spark's master `/json/` showing 2 alive "
        "workers. *oasis, cold*: bench/run.py's `Through.create_cluster` (a create with no pool).",
        "- The claim is one conditional UPDATE in the create's transaction; what it costs is the API request "
        "itself (validation over the template, the trust, the views), not the framework's start, which the "
        "pooled cluster did before it was claimed.",
        "- Runs alternate which goes first. A 2-core machine is noisy: read ±20%.", "",
        "Samples (seconds):", "",
    ]
    for plugin in MASTER:
        for key in ("pool", "direct", "cold"):
            lines.append(f"- {plugin} {key}: " + ", ".join(f"{v:.3f}" for v in res[plugin][key]))
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "pools-results.md")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="oasis-bench-pools-"))
    t0 = time.monotonic()
    try:
        with removing_new_project_users():  # as root: the local host's instance base and project users
            res = bench(args.reps, work)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except (RuntimeError, TimeoutError, OSError, OasisError) as e:
        log(f"benchmark failed: {e} (work dir kept: {work})")
        return 1
    text = render(res, args.reps, time.monotonic() - t0)
    args.out.write_text(text)
    shutil.rmtree(work, ignore_errors=True)
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
