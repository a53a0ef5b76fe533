"""Warm pools on real clusters through `oasis up`: a pool of one Dask (and one Spark) cluster fills, a create
from its template is Active in its 202 and runs a job, the pool refills with a different cluster whose own
credentials differ, and another project can neither see the pool nor claim from it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest

from tests.integration import workflow as wf
from tests.integration.cluster_checks import assert_nothing_left
from tests.integration.services import Oasis, wait_until

DASK_JOB = b"""
from distributed import Client
client = Client()  # DASK_SCHEDULER_ADDRESS, set by oasis
print("sum", sum(client.gather(client.map(lambda x: x * x, range(10)))))
"""
SPARK_JOB = b"""
from pyspark.sql import SparkSession
spark = SparkSession.builder.appName("squares").getOrCreate()
print("sum", spark.sparkContext.parallelize(range(10), 2).map(lambda x: x * x).sum())
spark.stop()
"""
# A worker of m1.tiny offers 512 MB: an executor of Spark's default 1 GB would never be given one.
JOB_CONFIGS = {"dask": {}, "spark": {"configs": {"spark.executor.memory": "512m"}}}


def cluster_template(client: httpx.Client, plugin: str, name: str) -> str:
    body = wf.cluster_body(client, plugin, name, workers=1, flavor="1")
    return wf.ok(client.post("/cluster-templates", json={
        "name": name, "plugin_name": plugin, "plugin_version": body["plugin_version"],
        "node_groups": body["node_groups"]}), 202)["cluster_template"]["id"]


def pool_of(client: httpx.Client, pool_id: str) -> dict:
    return wf.ok(client.get(f"/pools/{pool_id}"), 200)["pool"]


def wait_ready(client: httpx.Client, pool_id: str, timeout: float = 600) -> dict:
    """The pool at its size with every cluster Active; its status Ready."""
    def ready() -> dict | None:
        pool = pool_of(client, pool_id)
        assert pool["status"] != "Error", pool["status_description"]
        return pool if pool["status"] == "Ready" and pool["ready"] == pool["size"] else None

    return wait_until(ready, timeout, f"pool {pool_id} to be ready")


def fingerprint(client: httpx.Client, cluster_id: str) -> str:
    """A digest of the cluster's own credentials (its CA, client certificate and key, Spark's secret), so that
    two clusters' can be compared without printing them."""
    config = wf.ok(client.get(f"/clusters/{cluster_id}/client-config"), 200)["client_config"]
    secret = {k: config.get(k) for k in ("ca", "cert", "key")} | {"spark_conf": config.get("spark_conf")}
    assert config.get("ca") and config.get("key"), "the cluster has no credentials of its own"
    return hashlib.sha256(json.dumps(secret, sort_keys=True).encode()).hexdigest()


def from_pool(client: httpx.Client, plugin: str, template_id: str, name: str) -> dict:
    body = {"name": name, "plugin_name": plugin, "plugin_version": wf.plugin_version(client, plugin),
            "cluster_template_id": template_id}
    return wf.ok(client.post("/clusters", json=body), 202)["cluster"]


def run(client: httpx.Client, plugin: str, cluster_id: str, code: bytes) -> str:
    template = wf.job_template(client, f"squares-{cluster_id[:8]}", wf.JOB_TYPE[plugin],
                               wf.upload_binary(client, f"squares-{cluster_id[:8]}.py", code))
    jid = wf.run_job(client, template, cluster_id, job_configs=JOB_CONFIGS[plugin])
    j = wf.wait_job(client, jid, timeout=900)  # a Spark job on a loaded 2-core machine
    assert j["info"]["status"] == "SUCCEEDED", wf.logs(client, jid, "stderr")[-3000:]
    return wf.logs(client, jid).strip()


def claim_run_refill(service: Oasis, plugin: str, code: bytes, other_project: bool = True) -> None:
    client = service.client
    template_id = cluster_template(client, plugin, f"ct-{plugin}")
    pool = wf.ok(client.post("/pools", json={"pool": {"name": f"warm-{plugin}", "cluster_template_id": template_id,
                                                      "size": 1}}), 202)["pool"]
    [pooled] = wait_ready(client, pool["id"])["clusters"]
    # a pooled cluster is not a cluster of the project's list until it is claimed
    assert pooled["id"] not in [c["id"] for c in wf.ok(client.get("/clusters"))["clusters"]]
    assert client.get(f"/clusters/{pooled['id']}").status_code == 404

    if other_project:
        # another project: it sees no pool, and a create from the same (public) template never takes one
        wf.ok(client.patch(f"/cluster-templates/{template_id}", json={"is_public": True}), 202)
        _, other = service.add_project(f"other-{plugin}", f"olga-{plugin}", "olga-pass-1")
        try:
            assert wf.ok(other.get("/pools"))["pools"] == []
            assert other.get(f"/pools/{pool['id']}").status_code == 404
            theirs = from_pool(other, plugin, template_id, "theirs")
            assert theirs["id"] != pooled["id"] and theirs["status"] != "Active"
            wf.ok(other.delete(f"/clusters/{theirs['id']}"), 204)
            wf.wait_gone(other, theirs["id"], timeout=180)
        finally:
            other.close()
        assert pool_of(client, pool["id"])["clusters"] == [pooled]

    mine = from_pool(client, plugin, template_id, "mine")
    assert (mine["id"], mine["status"], mine["name"]) == (pooled["id"], "Active", "mine")  # Active in the 202
    shown = wf.ok(client.get(f"/clusters/{mine['id']}", params={"show_progress": "true"}))["cluster"]
    assert f"From pool warm-{plugin}" in [st["step_name"] for st in shown["provision_progress"]]
    assert run(client, plugin, mine["id"], code) == "sum 285"

    # refilled with a cluster of its own: other credentials
    refill = wait_ready(client, pool["id"])["clusters"][0]
    assert refill["id"] != mine["id"]
    second = from_pool(client, plugin, template_id, "second")
    assert (second["id"], second["status"]) == (refill["id"], "Active")
    assert fingerprint(client, mine["id"]) != fingerprint(client, second["id"])

    # deleting the pool deletes what it holds, never the clusters taken from it
    wf.ok(client.delete(f"/pools/{pool['id']}"), 204)
    assert client.get(f"/pools/{pool['id']}").status_code == 404
    for cid in (mine["id"], second["id"]):
        assert wf.cluster(client, cid)["status"] == "Active"
        wf.ok(client.delete(f"/clusters/{cid}"), 204)
    for cid in (mine["id"], second["id"]):
        wf.wait_gone(client, cid, timeout=180)
        assert_nothing_left(service.state_dir, cid)


def test_a_dask_pool_is_claimed_at_once_and_refilled(embedded: Oasis) -> None:
    claim_run_refill(embedded, "dask", DASK_JOB)


@pytest.mark.spark
@pytest.mark.timeout(1800)  # three Spark clusters and a job: slow on a loaded 2-core machine
def test_a_spark_pool_is_claimed_at_once_and_refilled(embedded: Oasis) -> None:
    # another project's isolation is the Dask test's: it is the same code whatever the plugin
    claim_run_refill(embedded, "spark", SPARK_JOB, other_project=False)
