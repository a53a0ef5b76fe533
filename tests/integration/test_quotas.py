"""Per-project quotas from outside, as an operator and a project see them: two API replicas on one PostgreSQL, a
burst of cluster creates for one project through both at the same moment (the limit is never exceeded, every
refusal is QUOTA_ERROR with the numbers, deleting frees the quota); and a real Dask cluster through `oasis up`,
whose deployment default (OASIS_QUOTA_CLUSTERS) refuses a second one until the first is deleted."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration import workflow as wf
from tests.integration.cluster_checks import assert_nothing_left
from tests.integration.services import Oasis, Postgres, free_port

LIMIT, PER_CLUSTER, BURST = 7, 2, 12  # room for three clusters of two instances: 3 of the 12 get through


def _same_moment(calls: list) -> list:
    barrier = threading.Barrier(len(calls))

    def go(call):  # noqa: ANN001, ANN202
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(go, calls))


def _tiny(client: httpx.Client, name: str) -> dict:
    return wf.cluster_body(client, "dask", name, workers=1, flavor="1")  # two m1.tiny instances


@pytest.mark.postgres
def test_concurrent_creates_through_two_replicas_never_exceed_the_quota(tmp_path: Path, postgres: Postgres) -> None:
    service = Oasis(tmp_path / "state", postgres.create_database("oasis_" + uuid.uuid4().hex[:12]))
    urls = [service.url, f"http://127.0.0.1:{free_port()}"]
    clients: list[httpx.Client] = []
    try:
        # No engine: the clusters stay unprovisioned, and the quota counts their rows all the same.
        apis = [service.spawn("api", int(url.rsplit(":", 1)[1])) for url in urls]
        for proc, url in zip(apis, urls):
            service.wait_answering(proc, url)
        service.client = service.login()
        project_id, member = service.add_project("alpha", "alice", "alice-pass-1")
        clients = [member, service.login_as("alice", "alice-pass-1", "alpha", urls[1])]
        set_quota = service.client.put(f"/quotas/{project_id}", json={"quota": {"instances": LIMIT}})
        assert wf.ok(set_quota, 200)["quota"]["instances"] == LIMIT

        answers = _same_moment([lambda i=i: clients[i % 2].post("/clusters", json=_tiny(clients[i % 2], f"b-{i}"))
                                for i in range(BURST)])
        outcomes = Counter((r.status_code, r.json().get("error_name")) for r in answers)
        assert outcomes == {(202, None): LIMIT // PER_CLUSTER, (400, "QUOTA_ERROR"): BURST - LIMIT // PER_CLUSTER}, \
            [r.text for r in answers]
        used = LIMIT // PER_CLUSTER * PER_CLUSTER
        refusals = {r.json()["error_message"].split("\nError ID")[0] for r in answers if r.status_code == 400}
        assert refusals == {f"Quota exceeded for project 'alpha': instances: requested {PER_CLUSTER}, used {used}, "
                            f"limit {LIMIT}"}
        quota = wf.ok(clients[1].get("/quotas"), 200)
        assert quota["usage"]["instances"] == used and quota["usage"]["clusters"] == LIMIT // PER_CLUSTER
        assert len(wf.ok(clients[0].get("/clusters"))["clusters"]) == LIMIT // PER_CLUSTER

        # Deleting one frees its instances at once (its delete cannot be taken back); the other replica sees it.
        made = [r.json()["cluster"]["id"] for r in answers if r.status_code == 202]
        wf.ok(clients[0].delete(f"/clusters/{made[0]}"), 204)
        assert wf.ok(clients[1].get("/quotas"), 200)["usage"]["instances"] == used - PER_CLUSTER
        again = _same_moment([lambda i=i: clients[i % 2].post("/clusters", json=_tiny(clients[i % 2], f"a-{i}"))
                              for i in range(4)])
        assert sorted(r.status_code for r in again) == [202, 400, 400, 400], [r.text for r in again]
        assert wf.ok(clients[0].get("/quotas"), 200)["usage"]["instances"] == used
    finally:
        for c in clients:
            c.close()
        service.stop()


def _cli(service: Oasis, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oasis.cli.main", "--state-dir", str(service.state_dir), *args],
                          env=service.env, capture_output=True, text=True, timeout=60)


def test_a_real_dask_cluster_past_the_default_quota_is_refused(tmp_path: Path) -> None:
    service = Oasis(tmp_path / "state")
    service.env["OASIS_QUOTA_CLUSTERS"] = "1"  # the deployment's default for every project
    try:
        service.start_api("up")
        client = service.client
        project = yaml.safe_load((service.state_dir / "clouds.yaml").read_text())["clouds"]["oasis"]["auth"][
            "project_name"]
        first = wf.create_cluster(client, "dask", "q1", workers=1, flavor="1")
        wf.wait_cluster(client, first)
        r = client.post("/clusters", json=_tiny(client, "q2"))
        assert r.status_code == 400 and r.json()["error_name"] == "QUOTA_ERROR", r.text
        assert r.json()["error_message"].startswith(
            f"Quota exceeded for project '{project}': clusters: requested 1, used 1, limit 1")

        shown = _cli(service, "--json", "quota", "show")
        assert shown.returncode == 0, shown.stderr
        answer = json.loads(shown.stdout)
        assert answer["quota"]["clusters"] == 1 and answer["usage"]["clusters"] == 1
        assert answer["usage"]["instances"] == 2 and answer["usage"]["vcpus"] == 2  # the Active cluster's rows

        wf.ok(client.delete(f"/clusters/{first}"), 204)
        wf.wait_gone(client, first)
        assert_nothing_left(service.state_dir, first)
        second = wf.ok(client.post("/clusters", json=_tiny(client, "q2")), 202)["cluster"]["id"]
        wf.ok(client.delete(f"/clusters/{second}"), 204)
        wf.wait_gone(client, second)
    finally:
        service.stop()
