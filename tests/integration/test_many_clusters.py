"""Many clusters on one host at once, through the embedded default: four Spark and four Dask clusters created at
the same moment all become Active, run a job each, and hold only the ports oasis gave them (or ephemeral ones)."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from tests.integration import workflow as wf
from tests.integration.cluster_checks import assert_clean_processes, assert_nothing_left, cluster_dir
from tests.integration.services import Oasis, processes_under

PER_PLUGIN = 4
# m1.tiny (1 vCPU, 512 MB, 1 GB): 16 instances fit this host's capacity (cpu count x 16 overcommit, RAM x 1.5,
# disk); m1.small's 20 GB disk each would not fit 16 times on a small disk.
FLAVOR = "1"

SPARK_JOB = b"""
import sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("count").getOrCreate()
print("words", spark.sparkContext.textFile(sys.argv[1], 2).flatMap(lambda line: line.split()).count())
spark.stop()
"""

DASK_JOB = b"""
import sys
from distributed import Client

client = Client()  # DASK_SCHEDULER_ADDRESS, set by oasis
text = open(sys.argv[1].removeprefix("file://")).read()
print("words", client.submit(lambda t: len(t.split()), text).result())
"""


def _ephemeral_ports() -> range:
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return range(low, high + 1)


def _listeners(pids: list[int]) -> list[tuple[int, str, int]]:
    out = []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out += [(pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return out


@pytest.mark.spark
def test_four_spark_and_four_dask_clusters_on_one_host_at_once(embedded: Oasis, data_dir: Path) -> None:
    client = embedded.client
    text = data_dir / "input.txt"
    text.write_text("four clusters of each kind\n" * 50)
    wanted = [(plugin, f"{plugin}-{i}") for plugin in ("spark", "dask") for i in range(PER_PLUGIN)]

    # Every create at the same moment, each from a client of its own.
    versions = {plugin: wf.plugin_version(client, plugin) for plugin in ("spark", "dask")}
    start = threading.Barrier(len(wanted))

    def create(plugin: str, name: str) -> str:
        body = {"name": name, "plugin_name": plugin, "plugin_version": versions[plugin], "node_groups": [
            {"name": "master", "flavor_id": FLAVOR, "node_processes": [wf.MASTER[plugin]], "count": 1},
            {"name": "worker", "flavor_id": FLAVOR, "node_processes": ["worker"], "count": 1}]}
        with embedded.login() as own:
            start.wait()
            return wf.ok(own.post("/clusters", json=body), 202)["cluster"]["id"]

    with ThreadPoolExecutor(len(wanted)) as pool:
        ids = list(pool.map(lambda w: create(*w), wanted))
    plugin_of = dict(zip(ids, (p for p, _ in wanted)))
    clusters = {cid: wf.wait_cluster(client, cid, timeout=200) for cid in ids}  # fails at once on an Error

    # Each cluster on ports of its own, from the host's range.
    host_range = range(embedded.first_port, embedded.first_port + 100)
    service_ports = [int(v.rsplit(":", 1)[1].split("/")[0]) for c in clusters.values()
                     for section in c["info"].values() for v in section.values() if "://" in v]
    assert len(service_ports) == len(set(service_ports)) == 2 * len(ids)
    assert all(p in host_range for p in service_ports), service_ports

    spark_wc = wf.job_template(client, "count-spark", "Spark", wf.upload_binary(client, "count.py", SPARK_JOB))
    dask_wc = wf.job_template(client, "count-dask", "Dask", wf.upload_binary(client, "count_dask.py", DASK_JOB))
    jobs = {}
    for cid in ids:
        if plugin_of[cid] == "spark":
            # a tiny worker offers 512 MB: an executor asks for no more than that
            configs = {"args": [f"file://{text}"], "configs": {"spark.executor.memory": "512m"}}
            jobs[cid] = wf.run_job(client, spark_wc, cid, job_configs=configs)
        else:
            jobs[cid] = wf.run_job(client, dask_wc, cid, job_configs={"args": [f"file://{text}"]})
    for cid, jid in jobs.items():
        j = wf.wait_job(client, jid, timeout=200)
        assert j["info"]["status"] == "SUCCEEDED", (plugin_of[cid], wf.logs(client, jid, "stderr")[-3000:])
        assert wf.logs(client, jid).splitlines()[-1] == "words 250"

    # Exactly the expected daemons, and every port they listen on is one oasis allocated to the host (each held
    # by one process only) or an ephemeral one the kernel chose; none on a fixed default (6066, 7077, 8787 ...),
    # none on every interface.
    ephemeral = _ephemeral_ports()
    seen: dict[int, int] = {}
    for cid in ids:
        assert_clean_processes(embedded.state_dir, cid, expected=2)
        for pid, address, port in _listeners(processes_under(cluster_dir(embedded.state_dir, cid))):
            assert address in ("127.0.0.1", "::ffff:127.0.0.1"), (plugin_of[cid], pid, address, port)
            assert port in host_range or port in ephemeral, (plugin_of[cid], pid, port)
            assert seen.setdefault(port, pid) == pid, f"port {port} held twice"
    assert set(service_ports) <= set(seen), "every service in `info` listens"

    for cid in ids:
        wf.ok(client.delete(f"/clusters/{cid}"), 204)
    for cid in ids:
        wf.wait_gone(client, cid)
        assert_nothing_left(embedded.state_dir, cid)
