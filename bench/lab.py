#!/usr/bin/env python3
"""oasis lab benchmark (needs root): SSH and clusters on the network-namespace lab, side by side in one run.

    .venv/bin/python bench/lab.py [--reps N]

  (a) one command over oasis's pooled SSH connection against a fresh connection per command, for every way in
      (routed fixed address, gateway host, floating address, proxy command); and one agent call on the host's
      warm agent session (`oasis-agent serve`, one channel for all calls) against the same call as a process of
      its own over the pooled connection (what every agent call cost before sessions)
  (b) Dask cluster create -> Active through oasis on three `central` lab hosts (1 scheduler + 2 workers) against
      Dask's own `SSHCluster` starting the same daemons on the same hosts

It builds the default lab in a temporary state dir, starts its own embedded `oasis up`, and removes both at the
end. Results go to bench/lab-results.md (printed too)."""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from oasis.cli.client import OasisClient  # noqa: E402
from oasis.cli.embedded import EmbeddedService  # noqa: E402
from oasis.remote.agent_client import AGENT_NAME, Agent  # noqa: E402
from oasis.remote.agent_session import AgentSession  # noqa: E402
from oasis.remote.ssh import SshRemote, SshTarget  # noqa: E402

POLL = 0.05


def site(manifest: dict, name: str) -> dict:
    return next(s for s in manifest["sites"] if s["name"] == name)


def routes(manifest: dict, key: str) -> dict[str, tuple[SshTarget, SshTarget | None, dict]]:
    """(target, gateway, host) for one host per way in."""
    def target(h: dict, address: str, proxy: str | None = None) -> SshTarget:
        return SshTarget(address=address, host_key=h["host_key"], client_key=key, proxy_command=proxy, label=h["name"])

    central, edge1, edge2 = (site(manifest, n)["hosts"][0] for n in ("central", "edge-1", "edge-2"))
    gw = site(manifest, "edge-1")["gateway"]
    proxy = site(manifest, "edge-2")["proxy_command"].format(host=edge2["addresses"][edge2["network"]], port=22)
    return {
        "direct (routed fixed address)": (target(central, central["addresses"][central["network"]]), None, central),
        "gateway host (tunnel)": (target(edge1, edge1["addresses"][edge1["network"]]),
                                  target(gw, gw["address"]), edge1),
        "floating address (DNAT)": (target(edge1, edge1["floating_address"]), None, edge1),
        "proxy command": (target(edge2, edge2["addresses"][edge2["network"]], proxy), None, edge2),
    }


async def timed(n: int, call) -> list[float]:  # noqa: ANN001
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t0)
    return out


async def ssh_costs(manifest: dict, key: str, n: int) -> list[tuple[str, float, float, float, float]]:
    """Per way in: (pooled `true`, fresh connection `true`, agent call as a process, agent call on the session)."""
    out = []
    for mode, (tgt, gw, host) in routes(manifest, key).items():
        gateway = SshRemote(gw) if gw else None
        pooled = SshRemote(tgt, gateway)
        await pooled.run(["true"])  # connect once
        per_pooled = await timed(n, lambda: pooled.run(["true"]))
        # one agent call (`busy-ports ADDRESS 1`: a bind and its answer), as a process and on the warm session
        path = f"{host['base_dir']}/{AGENT_NAME}"
        per_process = Agent(pooled, sys.executable, path)
        await per_process.install()
        session = AgentSession(pooled, sys.executable, path)
        on_session = Agent(pooled, sys.executable, path, session=session)
        await on_session.busy_ports(tgt.address, [1])  # opens the session
        per_call = await timed(n, lambda: per_process.busy_ports(tgt.address, [1]))
        per_session = await timed(n, lambda: on_session.busy_ports(tgt.address, [1]))
        assert session.opened == 1
        await session.close()
        await pooled.close()
        per_fresh = []
        for _ in range(max(3, n // 4)):
            t0 = time.perf_counter()
            fresh = SshRemote(tgt, SshRemote(gw) if gw else None)
            await fresh.run(["true"])
            per_fresh.append(time.perf_counter() - t0)
            await fresh.close()
            if fresh.gateway:
                await fresh.gateway.close()
        if gateway:
            await gateway.close()
        out.append((mode, statistics.median(per_pooled), statistics.median(per_fresh), statistics.median(per_call),
                    statistics.median(per_session)))
    return out


def oasis_dask(client: OasisClient, version: str, name: str) -> float:
    body = {"name": name, "plugin_name": "dask", "plugin_version": version, "availability_zone": "central",
            "node_groups": [{"name": "master", "flavor_id": "1", "node_processes": ["scheduler"], "count": 1},
                            {"name": "worker", "flavor_id": "1", "node_processes": ["worker"], "count": 2}]}
    t0 = time.monotonic()
    cid = client.create("clusters", body)["id"]
    while (status := client.show("clusters", cid)["status"]) != "Active":
        if status == "Error":
            raise RuntimeError(client.show("clusters", cid)["status_description"])
        time.sleep(POLL)
    elapsed = time.monotonic() - t0
    client.delete(f"/clusters/{cid}")
    while client.cluster_or_none(cid) is not None:
        time.sleep(0.1)
    return elapsed


def direct_dask(manifest: dict, key_path: str) -> float:
    """Dask's own way to start a cluster over SSH on the same three hosts."""
    from distributed import Client, SSHCluster

    hosts = [h["addresses"][h["network"]] for h in site(manifest, "central")["hosts"][:3]]
    t0 = time.monotonic()
    cluster = SSHCluster(hosts, connect_options={"known_hosts": manifest["controller"]["known_hosts"],
                                                 "client_keys": [key_path], "username": "root"},
                         worker_options={"nthreads": 1, "memory_limit": "512MB"},
                         scheduler_options={"host": hosts[0], "port": 0, "dashboard_address": ":0"},
                         remote_python=sys.executable)
    with Client(cluster) as client:
        client.wait_for_workers(2)
        elapsed = time.monotonic() - t0
    cluster.close()
    return elapsed


def main() -> int:
    if os.geteuid() != 0:
        print("bench/lab.py needs root (it builds the network-namespace lab)", file=sys.stderr)
        return 2
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "lab-results.md")
    args = ap.parse_args()
    from oasis.lab import lab as labmod
    from oasis.lab.model import load_lab
    from oasis.lab.requirements import ensure_packages

    ensure_packages()
    lab_dir, work = Path(tempfile.mkdtemp(prefix="oasis-bench-lab-")), Path(tempfile.mkdtemp(prefix="oasis-bench-"))
    spec = load_lab()
    service = EmbeddedService(work / "state")
    with labmod.exclusive_use():
        try:
            manifest = yaml.safe_load(labmod.up(spec, lab_dir).manifest.read_text())
            key_path = manifest["controller"]["private_key"]
            key = Path(key_path).read_text()
            ssh = asyncio.run(ssh_costs(manifest, key, 40))
            service.start()
            client = OasisClient.connect(url=service.url, state_dir=service.state_dir)
            client.post("/sites", {"manifest": manifest, "private_key": key})
            version = client.get("/plugins/dask")["plugin"]["versions"][0]
            through, direct = [], []
            for i in range(args.reps):  # alternate which goes first
                for which in (("oasis", "direct") if i % 2 == 0 else ("direct", "oasis")):
                    if which == "oasis":
                        through.append(oasis_dask(client, version, f"bench-lab-{i}"))
                    else:
                        direct.append(direct_dask(manifest, key_path))
        finally:
            service.stop()
            labmod.down(lab_dir, spec)
            shutil.rmtree(lab_dir, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
    text = render(ssh, through, direct, args.reps)
    args.out.write_text(text)
    print(text)
    return 0


def render(ssh: list[tuple[str, float, float, float, float]], through: list[float], direct: list[float],
           reps: int) -> str:
    lines = ["# oasis lab benchmark", "",
             f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `bench/lab.py` on {os.cpu_count()} cores, "
             f"on the default lab (hosts are network namespaces with their own sshd). Medians; a 2-core machine is "
             f"noisy, read ±20%.", "",
             "| SSH: one command (`true`) | pooled connection | fresh connection | fresh / pooled |",
             "|---|---:|---:|---:|"]
    for mode, pooled, fresh, _, _ in ssh:
        lines.append(f"| {mode} | {pooled * 1000:.1f} ms | {fresh * 1000:.1f} ms | {fresh / pooled:.1f}x |")
    lines += ["", "| one agent call (`busy-ports`) | warm agent session | process per call (pooled) | pooled `true` "
              "| session / pooled `true` |", "|---|---:|---:|---:|---:|"]
    for mode, pooled, _, per_call, per_session in ssh:
        lines.append(f"| {mode} | {per_session * 1000:.1f} ms | {per_call * 1000:.1f} ms | {pooled * 1000:.1f} ms "
                     f"| {per_session / pooled:.2f}x |")
    t, d = statistics.median(through), statistics.median(direct)
    lines += ["", "| Dask cluster on 3 `central` hosts (1 scheduler + 2 workers) | oasis | Dask SSHCluster | ratio |",
              "|---|---:|---:|---:|",
              f"| create → ready (median of {reps}) | {t:.2f} s | {d:.2f} s | {t / d:.2f}x |", "",
              f"Samples: oasis {', '.join(f'{x:.2f}' for x in through)}; SSHCluster {', '.join(f'{x:.2f}' for x in direct)}.",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
