#!/usr/bin/env python3
"""oasis benchmark: the Spark Connect gateway against a direct connection to the same server, in one run.

    .venv/bin/python bench/connect.py [--reps N] [--queries Q]

One Spark cluster (1 master + 1 worker) of an embedded `oasis up`, as made by default: its master starts the
cluster's Spark Connect server at the first session, whose wait (create → Active, then that first session's first
answer) is measured once. The stock pyspark Connect client then reaches that one server two ways, alternated in
each repetition:
  - through oasis: `sc://localhost:GATEWAY/;token=<oasis token>;x-oasis-cluster=NAME` (the gateway checks the
    token, finds the cluster, swaps in the server's own token and forwards);
  - directly: `sc://localhost:SERVER/;token=<the server's own token>` (read, as root, from the master instance's
    0600 properties file: an operator's shortcut that no user has).
Measured: session creation (a new session, up to its first answer: the server's Spark version), and a loop of Q
small queries (`spark.range(1000).selectExpr("sum(id)").collect()`) on one session, as queries per second.
Medians over N repetitions and their ratios. Results go to bench/connect-results.md (printed too); everything it
started is stopped by PID."""
from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from oasis.cli.client import OasisClient, authenticate, endpoint_for  # noqa: E402
from oasis.cli.embedded import EmbeddedService  # noqa: E402
from oasis.procs import wait_until  # noqa: E402
from tests.project_users import removing_new_project_users  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def server_endpoint(state_dir: Path, cluster_id: str) -> tuple[int, str]:
    """The Connect server's port and token, from the master instance's properties file (root reads it)."""
    props = next((state_dir / "hosts" / "localhost" / cluster_id).glob("*master*/conf/connect.properties"))
    conf = dict(line.split(" ", 1) for line in props.read_text().splitlines() if " " in line)
    return int(conf["spark.connect.grpc.binding.port"]), conf["spark.connect.authenticate.token"].strip()


def session_seconds(url: str) -> float:
    from pyspark.sql import SparkSession

    start = time.perf_counter()
    spark = SparkSession.builder.remote(url).create()
    assert spark.version  # the first answer
    took = time.perf_counter() - start
    spark.stop()
    return took


def queries_per_second(url: str, queries: int) -> float:
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.remote(url).create()
    try:
        assert spark.range(1000).selectExpr("sum(id)").collect()[0][0] == 499500  # warm: executors, plan cache
        start = time.perf_counter()
        for _ in range(queries):
            assert spark.range(1000).selectExpr("sum(id)").collect()[0][0] == 499500
        return queries / (time.perf_counter() - start)
    finally:
        spark.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--output", type=Path, default=ROOT / "bench" / "connect-results.md")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="oasis-bench-connect-"))
    service = EmbeddedService(work / "oasis")
    sessions: dict[str, list[float]] = {"oasis": [], "direct": []}
    rates: dict[str, list[float]] = {"oasis": [], "direct": []}
    try:
        log("starting oasis up")
        service.start()
        c = OasisClient(endpoint_for(service.url), authenticate(service.credentials()).token)
        version = c.get("/plugins/spark")["plugin"]["versions"][0]
        cid = c.create("clusters", {"name": "bench-connect", "plugin_name": "spark", "plugin_version": version,
                                    "node_groups": [
                                        {"name": "master", "flavor_id": "2", "node_processes": ["master"],
                                         "count": 1},
                                        {"name": "worker", "flavor_id": "2", "node_processes": ["worker"],
                                         "count": 1}]})["id"]
        begun = time.perf_counter()
        wait_until(lambda: c.show("clusters", cid)["status"] == "Active", 600, "the Spark cluster", 0.5)
        active = time.perf_counter() - begun
        port, server_token = server_endpoint(service.state_dir, cid)
        urls = {"oasis": f"sc://localhost:{service.connect_port}/;token={c.token};x-oasis-cluster=bench-connect",
                "direct": f"sc://localhost:{port}/;token={server_token}"}
        first = session_seconds(urls["oasis"])  # the server starts on demand: this session waits for it
        log(f"create → Active {active:.1f}s; the first session (starting the server) {first:.1f}s")
        for way in urls:  # warm both (the server's JIT, the gateway's first route): else the medians follow the
            queries_per_second(urls[way], 3 * args.queries)  # warm-up along the repetitions, not either way
        for i in range(args.reps):
            order = ("oasis", "direct") if i % 2 == 0 else ("direct", "oasis")
            for way in order:
                sessions[way].append(session_seconds(urls[way]))
                rates[way].append(queries_per_second(urls[way], args.queries))
            log(f"rep {i + 1}: session oasis {sessions['oasis'][-1]:.3f}s direct {sessions['direct'][-1]:.3f}s; "
                f"queries/s oasis {rates['oasis'][-1]:.1f} direct {rates['direct'][-1]:.1f}")
        c.delete(f"/clusters/{cid}")
        wait_until(lambda: c.cluster_or_none(cid) is None, 300, "the cluster to be deleted", 0.5)
    finally:
        service.stop()
        shutil.rmtree(work, ignore_errors=True)

    s_o, s_d = statistics.median(sessions["oasis"]), statistics.median(sessions["direct"])
    q_o, q_d = statistics.median(rates["oasis"]), statistics.median(rates["direct"])
    text = "\n".join([
        "# Spark Connect: through the oasis gateway against a direct connection",
        "",
        f"`bench/connect.py --reps {args.reps} --queries {args.queries}`, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} "
        f"UTC, {platform.node()} ({platform.machine()}, Python {platform.python_version()}).",
        "",
        "One Spark cluster on `local` (1 master with its Spark Connect server + 1 worker); the stock pyspark "
        "Connect client, alternately through the gateway of `oasis up` (token check, cluster lookup, token swap, "
        "forwarding) and directly to the same server with its own token. Medians of "
        f"{args.reps} repetitions; min–max in brackets.",
        "",
        f"The cluster, made as by default (its server on demand), was Active {active:.1f} s after its create; its "
        f"first session, which started the server, had its first answer {first:.1f} s later (once only: the "
        "repetitions below reach the running server).",
        "",
        "| measure | oasis | direct | oasis vs direct | target | met |",
        "|---|---:|---:|---:|---:|:---:|",
        f"| session creation (new session → first answer) | {s_o * 1000:.0f} ms "
        f"[{min(sessions['oasis']) * 1000:.0f}–{max(sessions['oasis']) * 1000:.0f}] | {s_d * 1000:.0f} ms "
        f"[{min(sessions['direct']) * 1000:.0f}–{max(sessions['direct']) * 1000:.0f}] | {s_o / s_d:.2f}x | ≤ 1.2x | "
        f"{'yes' if s_o / s_d <= 1.2 else 'no'} |",
        f"| query throughput ({args.queries} small queries on one session) | {q_o:.1f}/s "
        f"[{min(rates['oasis']):.1f}–{max(rates['oasis']):.1f}] | {q_d:.1f}/s "
        f"[{min(rates['direct']):.1f}–{max(rates['direct']):.1f}] | {q_o / q_d:.2f}x | ≥ 0.9x | "
        f"{'yes' if q_o / q_d >= 0.9 else 'no'} |",
        "",
        "The gateway's cost per RPC is one hop on loopback and, at most every 5 s (the routes' TTL), a token "
        "check and a cluster lookup in the database; a query is a few RPCs (ExecutePlan, its results stream, "
        "ReleaseExecute), each going to the same server either way.",
        "",
    ])
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    with removing_new_project_users():  # as root: the local host's instance base and project users it made
        main()
