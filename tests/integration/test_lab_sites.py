"""Clusters on real SSH hosts: the lab's three sites, one per way in (routed fixed addresses, a gateway host
or floating addresses, a proxy command), and a cluster's own proxy gateway node. Needs root (CI has it)."""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration import workflow as wf
from tests.integration.services import Oasis, processes_under, wait_until
from tests.lab_fixture import site_of

UNREACHABLE_GRACE = 8
# A short grace for unreachable hosts: the sshd test below sees the wait, then the rollback after it.
pytestmark = pytest.mark.service(lab=True, env={"OASIS_UNREACHABLE_GRACE_SECONDS": str(UNREACHABLE_GRACE)})

HOSTNAME_JOB = b"""
import socket, sys
from distributed import Client
client = Client()
names = client.run(socket.gethostname)  # runs on every worker, in its host's namespace
print(" ".join(sorted(names.values())))
print(sum(client.gather(client.map(lambda x: x + 1, range(100)))))
"""


def run_on_site(service: Oasis, lab: dict, site: str, name: str, **extra) -> dict:
    """A Dask cluster (scheduler + 2 workers) spread over the site's hosts, a job that reports where its tasks
    ran, then the cluster deleted with nothing left behind."""
    client = service.client
    # m1.tiny: the lab's hosts have 20 GB of disk each, which does not overcommit
    cid = wf.create_cluster(client, "dask", name, flavor="1", availability_zone=site, **extra)
    c = wf.wait_cluster(client, cid)
    leaf = ipaddress.ip_network(next(n["cidr"] for n in site_of(lab, site)["networks"]))
    instances = [i for ng in c["node_groups"] for i in ng["instances"]]
    assert all(ipaddress.ip_address(i["internal_ip"]) in leaf for i in instances), instances
    assert len({i["internal_ip"] for i in instances}) >= 2, "the instances should span several hosts"
    keys = {h["name"]: Path(h["authorized_keys"]) for h in site_of(lab, site)["hosts"]}
    used = {h["name"] for h in site_of(lab, site)["hosts"]
            if h["addresses"][h["network"]] in {i["internal_ip"] for i in instances}}
    assert all(f"oasis-cluster-{cid}" in keys[h].read_text() for h in used), "the cluster's key is on its hosts"
    template = wf.job_template(client, f"where-{name}", "Dask", wf.upload_binary(client, f"where-{name}.py",
                                                                                 HOSTNAME_JOB))
    j = wf.wait_job(client, wf.run_job(client, template, cid))
    assert j["info"]["status"] == "SUCCEEDED", wf.logs(client, j["id"], "stderr")[-2000:]
    hostnames, total = wf.logs(client, j["id"]).splitlines()
    site_hosts = {h["name"] for h in site_of(lab, site)["hosts"]}
    assert set(hostnames.split()) <= site_hosts and len(hostnames.split()) == 2
    assert total == "5050"
    wf.ok(client.delete(f"/clusters/{cid}"), 204)
    wf.wait_gone(client, cid)
    for host in site_of(lab, site)["hosts"]:
        assert not processes_under(Path(host["base_dir"]) / cid)
        assert not (Path(host["base_dir"]) / cid).exists()
        assert f"oasis-cluster-{cid}" not in keys[host["name"]].read_text(), "the cluster's key outlived it"
    return c


def test_sites_are_registered_with_pinned_keys(service: Oasis, lab: dict) -> None:
    sites = {s["name"]: s for s in wf.ok(service.client.get("/sites"))["sites"]}
    assert {"local", "central", "edge-1", "edge-2"} <= set(sites)
    edge1 = wf.ok(service.client.get("/sites/edge-1"))["site"]
    assert edge1["access"] == "gateway" and edge1["use_floating_ips"]
    assert all(h["host_key"].startswith("ssh-ed25519 ") for h in edge1["hosts"])
    assert "private_key" not in json.dumps(edge1) and "BEGIN OPENSSH" not in json.dumps(edge1)


def test_direct_site(service: Oasis, lab: dict) -> None:
    run_on_site(service, lab, "central", "lab-central")


def test_floating_addresses(service: Oasis, lab: dict) -> None:
    c = run_on_site(service, lab, "edge-1", "lab-floating")
    floating = ipaddress.ip_network(site_of(lab, "edge-1")["floating_range"])
    assert all(ipaddress.ip_address(i["management_ip"]) in floating for ng in c["node_groups"]
               for i in ng["instances"])


def test_gateway_host(service: Oasis, lab: dict) -> None:
    manifest = {**lab["manifest"], "sites": [dict(site_of(lab, "edge-1"), use_floating_ips=False)]}
    key = Path(lab["manifest"]["controller"]["private_key"]).read_text()
    wf.ok(service.client.post("/sites", json={"manifest": manifest, "private_key": key}), 202)
    try:
        c = run_on_site(service, lab, "edge-1", "lab-gateway")
        assert all(i["management_ip"] == i["internal_ip"] for ng in c["node_groups"] for i in ng["instances"])
    finally:
        wf.ok(service.client.post("/sites", json={"manifest": lab["manifest"], "private_key": key}), 202)


def test_proxy_command(service: Oasis, lab: dict) -> None:
    run_on_site(service, lab, "edge-2", "lab-proxied")


def test_cluster_proxy_gateway_node(service: Oasis, lab: dict) -> None:
    """The gateway node group's host is reached as the site says; every other node only through it."""
    client = service.client
    version = wf.plugin_version(client, "dask")
    body = {"name": "lab-pgw", "plugin_name": "dask", "plugin_version": version, "availability_zone": "edge-2",
            "node_groups": [
                {"name": "gw", "flavor_id": "1", "node_processes": ["scheduler"], "count": 1, "is_proxy_gateway": True},
                {"name": "worker", "flavor_id": "1", "node_processes": ["worker"], "count": 1}]}
    cid = wf.ok(client.post("/clusters", json=body), 202)["cluster"]["id"]
    wf.wait_cluster(client, cid)
    wf.ok(client.delete(f"/clusters/{cid}"), 204)
    wf.wait_gone(client, cid)


@pytest.mark.parametrize("site", ["central", "edge-1", "edge-2"])
def test_spark_across_hosts(service: Oasis, lab: dict, site: str) -> None:
    """Spark's driver (on the master instance) and executors on other hosts reach each other across the leaf."""
    client = service.client
    # m1.small: a worker needs room for a 1 GB executor; edge-2's two hosts have disk for two such instances
    cid = wf.create_cluster(client, "spark", f"lab-spark-{site}", workers=1 if site == "edge-2" else 2,
                            availability_zone=site)
    c = wf.wait_cluster(client, cid)
    assert len({i["internal_ip"] for ng in c["node_groups"] for i in ng["instances"]}) >= 2
    job = (b"from pyspark.sql import SparkSession\n"
           b"spark = SparkSession.builder.getOrCreate()\n"
           b"print(spark.sparkContext.parallelize(range(1000), 4).map(lambda x: x * 2).sum())\n"
           b"spark.stop()\n")
    template = wf.job_template(client, f"lab-spark-sum-{site}", "Spark",
                               wf.upload_binary(client, f"sum-{site}.py", job))
    j = wf.wait_job(client, wf.run_job(client, template, cid))
    assert j["info"]["status"] == "SUCCEEDED", wf.logs(client, j["id"], "stderr")[-3000:]
    assert wf.logs(client, j["id"]).strip() == "999000"
    if site == "edge-2":  # a leaf reached only through a proxy command: Spark Connect takes the same SSH path
        assert connect_sum(service, f"lab-spark-{site}") == 999000
    wf.ok(client.delete(f"/clusters/{cid}"), 204)
    wf.wait_gone(client, cid)


def connect_sum(service: Oasis, cluster: str) -> int:
    """A query from the stock Spark Connect client through the gateway of `oasis up`, which starts the cluster's
    server on demand and forwards the session over the cluster's SSH connection to its master's host."""
    from pyspark.sql import SparkSession

    before = dict(os.environ)  # the client sets SPARK_CONNECT_MODE_ENABLED, which later spark-submits must not see
    token = service.client.headers["X-Auth-Token"]
    spark = SparkSession.builder.remote(
        f"sc://localhost:{service.connect_port}/;token={token};x-oasis-cluster={cluster}").create()
    try:
        return spark.range(1000).selectExpr("sum(id * 2)").collect()[0][0]
    finally:
        spark.stop()
        spark.client.close()  # else pyspark's exit hook calls the gateway again when the tests end
        os.environ.clear()
        os.environ.update(before)


def test_a_host_whose_sshd_died_fails_the_cluster_and_rolls_back(service: Oasis, lab: dict) -> None:
    from oasis.lab import lab as labmod

    victim = site_of(lab, "central")["hosts"][-1]
    # Its sshd and every session of it die: all processes of that host's namespace, which the lab made.
    pids = subprocess.run(["ip", "netns", "pids", victim["namespace"]], capture_output=True, text=True).stdout
    for pid in map(int, pids.split()):
        os.kill(pid, signal.SIGKILL)
    try:
        client = service.client
        cid = wf.create_cluster(client, "dask", "lab-doomed", workers=2, flavor="1", availability_zone="central")
        # First the operation waits for the host, saying so; past the grace it fails and rolls back.
        wait_until(lambda: wf.cluster(client, cid)["status_description"].startswith(
            f"Waiting for site central: host {victim['name']} unreachable since "), 60, "the wait to show", 0.1)
        c = wf.wait_cluster(client, cid, status="Error", timeout=120)
        assert victim["name"] in c["status_description"], c["status_description"]
        assert f"for more than {UNREACHABLE_GRACE}s" in c["status_description"], c["status_description"]
        # What started on the other hosts was rolled back; only the unreachable host's placement is still
        # recorded, since nobody could look there.
        left = [i["internal_ip"] for ng in c["node_groups"] for i in ng["instances"]]
        assert set(left) <= {victim["addresses"][victim["network"]]}, left
        for host in site_of(lab, "central")["hosts"]:
            assert not processes_under(Path(host["base_dir"]) / cid)
    finally:
        labmod.up(lab["spec"], lab["state_dir"])  # brings the sshd back
    # With the host back, deleting the failed cluster finishes the cleanup.
    wf.ok(client.delete(f"/clusters/{cid}"), 204)
    wf.wait_gone(client, cid)
    for host in site_of(lab, "central")["hosts"]:
        assert not (Path(host["base_dir"]) / cid).exists()


def _ssh_as(host: dict, private_key: str) -> str:
    """Log in to a lab host over real SSH with a user's key (the host key pinned), and run a command."""
    import asyncio

    import asyncssh

    async def go() -> str:
        async with asyncssh.connect(host["addresses"][host["network"]], port=int(host["ssh_port"]),
                                    username=host["ssh_user"], client_keys=[asyncssh.import_private_key(private_key)],
                                    known_hosts=([asyncssh.import_public_key(host["host_key"])], [], []),
                                    agent_path=None, connect_timeout=20) as conn:
            return (await conn.run("echo user-key-works", check=True)).stdout.strip()

    return asyncio.run(go())


def test_user_keypair_on_hosts_update_and_delete(service: Oasis, lab: dict) -> None:
    """A cluster's user keypair is in authorized_keys on its hosts (a real SSH login with it works), update_keypair
    swaps it for the keypair's new key, a scale-down takes it (and the cluster's own key) from the host it leaves,
    and deleting the cluster removes it."""
    import asyncssh

    client = service.client
    first = wf.ok(client.post("/keypairs", json={"name": "lab-user"}), 202)["keypair"]
    # workers apart: one of them is then alone on its host, which the scale-down below leaves
    cid = wf.create_cluster(client, "dask", "lab-keyed", workers=2, flavor="1", availability_zone="central",
                            user_keypair_id="lab-user", anti_affinity=["worker"])
    hosts = site_of(lab, "central")["hosts"]
    mark = f"oasis-user-{cid}"

    def line(kp: dict) -> str:
        return " ".join(kp["public_key"].split()[:2] + [mark])

    def keys(h: dict) -> list[str]:
        return Path(h["authorized_keys"]).read_text().splitlines()

    try:
        c = wf.wait_cluster(client, cid)
        ips = {i["internal_ip"] for ng in c["node_groups"] for i in ng["instances"]}
        used = [h for h in hosts if h["addresses"][h["network"]] in ips]
        assert len(used) >= 2
        assert all(line(first) in keys(h) for h in used), "the user's key is on every host of the cluster"
        assert _ssh_as(used[0], first["private_key"]) == "user-key-works"

        # Rotate: the keypair is re-created under its name, then update_keypair puts the new key in place.
        wf.ok(client.delete("/keypairs/lab-user"), 204)
        second = wf.ok(client.post("/keypairs", json={"name": "lab-user"}), 202)["keypair"]
        wf.ok(client.patch(f"/clusters/{cid}", json={"update_keypair": True}), 202)

        def updated() -> bool:
            steps = wf.cluster(client, cid, progress=True)["provision_progress"]
            return any(s["step_name"] == "Update the user keypair" and s["successful"] for s in steps)

        wait_until(updated, 60, "the keypair update")
        assert all(line(second) in keys(h) and line(first) not in keys(h) for h in used)
        assert _ssh_as(used[-1], second["private_key"]) == "user-key-works"
        with pytest.raises(asyncssh.PermissionDenied):
            _ssh_as(used[-1], first["private_key"])

        by_host: dict[str, list[dict]] = {}
        for ng in c["node_groups"]:
            for i in ng["instances"]:
                by_host.setdefault(i["internal_ip"], []).append({**i, "group": ng["name"]})
        ip, alone = next((ip, i[0]) for ip, i in by_host.items() if len(i) == 1 and i[0]["group"] == "worker")
        wf.ok(client.put(f"/clusters/{cid}", json={"resize_node_groups": [
            {"name": "worker", "count": 1, "instances": [alone["instance_id"]]}]}), 202)
        wf.wait_cluster(client, cid)
        left = next(h for h in used if h["addresses"][h["network"]] == ip)
        assert not [k for k in keys(left) if cid in k], "keys of the cluster outlived its last instance on the host"
        assert all(line(second) in keys(h) for h in used if h is not left)
    finally:
        wf.ok(client.delete(f"/clusters/{cid}"), 204)
        wf.wait_gone(client, cid)
        client.delete("/keypairs/lab-user")
    assert not any(mark in "\n".join(keys(h)) for h in hosts), "the user's key outlived the cluster"
