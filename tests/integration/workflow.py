"""Steps every integration test takes through the API: templates, clusters, binaries, jobs."""
from __future__ import annotations

import time

import httpx

from tests.integration.services import wait_until

MASTER = {"dask": "scheduler", "spark": "master"}
JOB_TYPE = {"dask": "Dask", "spark": "Spark"}


def ok(response: httpx.Response, *codes: int) -> dict:
    assert response.status_code in (codes or (200, 202)), f"{response.status_code}: {response.text}"
    return response.json() if response.content else {}


def plugin_version(client: httpx.Client, plugin: str) -> str:
    return ok(client.get(f"/plugins/{plugin}"))["plugin"]["versions"][0]


def cluster_body(client: httpx.Client, plugin: str, name: str, workers: int = 2, flavor: str = "2",
                 **extra) -> dict:
    """A cluster create's body: one master and `workers` workers of the plugin's version on this service."""
    return {"name": name, "plugin_name": plugin, "plugin_version": plugin_version(client, plugin), "node_groups": [
        {"name": "master", "flavor_id": flavor, "node_processes": [MASTER[plugin]], "count": 1},
        {"name": "worker", "flavor_id": flavor, "node_processes": ["worker"], "count": workers}], **extra}


def create_cluster(client: httpx.Client, plugin: str, name: str, workers: int = 2, flavor: str = "2",
                   **extra) -> str:
    body = cluster_body(client, plugin, name, workers, flavor, **extra)
    return ok(client.post("/clusters", json=body), 202)["cluster"]["id"]


def cluster(client: httpx.Client, cluster_id: str, progress: bool = False) -> dict | None:
    r = client.get(f"/clusters/{cluster_id}", params={"show_progress": str(progress).lower()})
    return None if r.status_code == 404 else ok(r)["cluster"]


def wait_cluster(client: httpx.Client, cluster_id: str, status: str = "Active", timeout: float = 180) -> dict:
    def reached():
        c = cluster(client, cluster_id)
        assert c is not None, "cluster disappeared"
        assert c["status"] != "Error" or status == "Error", c["status_description"]
        return c if c["status"] == status else None

    return wait_until(reached, timeout, f"cluster {cluster_id} to be {status}")


def wait_gone(client: httpx.Client, cluster_id: str, timeout: float = 120) -> None:
    wait_until(lambda: cluster(client, cluster_id) is None, timeout, f"cluster {cluster_id} to be deleted")


def upload_binary(client: httpx.Client, name: str, data: bytes) -> str:
    internal = ok(client.put(f"/job-binary-internals/{name}", content=data,
                             headers={"Content-Type": "application/octet-stream"}), 202)
    internal_id = internal["job_binary_internal"]["id"]
    return ok(client.post("/job-binaries", json={"name": name, "url": f"internal-db://{internal_id}"}), 202
              )["job_binary"]["id"]


def job_template(client: httpx.Client, name: str, job_type: str, main_id: str) -> str:
    return ok(client.post("/job-templates", json={"name": name, "type": job_type, "mains": [main_id]}), 202
              )["job_template"]["id"]


def run_job(client: httpx.Client, template_id: str, cluster_id: str, **body) -> str:
    return ok(client.post("/jobs", json={"job_template_id": template_id, "cluster_id": cluster_id, **body}), 202
              )["job"]["id"]


def job(client: httpx.Client, job_id: str) -> dict:
    return ok(client.get(f"/jobs/{job_id}"))["job"]


def wait_job(client: httpx.Client, job_id: str, statuses=("SUCCEEDED", "FAILED", "KILLED", "DONEWITHERROR"),
             timeout: float = 180) -> dict:
    def reached():
        j = job(client, job_id)
        return j if j["info"]["status"] in statuses else None

    return wait_until(reached, timeout, f"job {job_id} to reach {statuses}")


def logs(client: httpx.Client, job_id: str, stream: str = "stdout") -> str:
    r = client.get(f"/jobs/{job_id}/logs", params={"stream": stream})
    assert r.status_code == 200, r.text
    return r.text


def timed(fn, *args, **kwargs):
    t0 = time.monotonic()
    value = fn(*args, **kwargs)
    return value, time.monotonic() - t0
