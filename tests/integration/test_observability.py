"""Metrics and structured logs from outside: a real `oasis api` and a real `oasis engine` as separate processes,
both with `--log-format json`, the engine with `--metrics-port`. A Dask cluster is created and deleted; every line
of both processes is one JSON object; the create's request id (the response header) is in the API's access line
and on the engine's lines of that operation; both `/metrics` say what each process saw."""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration import workflow as wf
from tests.integration.services import Oasis, free_port, wait_until


class JsonOasis(Oasis):
    """`oasis api` and `oasis engine` logging JSON lines; the engine serving its metrics on a port of its own."""

    def __init__(self, state_dir: Path, database_url: str | None) -> None:
        super().__init__(state_dir, database_url)
        self.metrics_port = free_port()
        self.serve_args = ["--log-format", "json"]

    def spawn(self, command: str, port: int | None = None) -> subprocess.Popen:
        if command != "engine":
            return super().spawn(command, port)
        argv = [sys.executable, "-m", "oasis.cli.main", "engine", "--state-dir", str(self.state_dir),
                "--log-format", "json", "--metrics-port", str(self.metrics_port)]
        if self.database_url:
            argv += ["--database-url", self.database_url]
        log = open(self.state_dir / f"engine-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc


@pytest.fixture
def observed(tmp_path: Path, database_url: str | None) -> Iterator[JsonOasis]:
    service = JsonOasis(tmp_path / "state", database_url)
    try:
        service.start_api("api")
        service.start_engine()
        yield service
    finally:
        service.stop()


def samples(url: str) -> list:
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200, r.text
    return [s for family in text_string_to_metric_families(r.text) for s in family.samples]


def value(found: list, name: str, **labels: str) -> float:
    return sum(s.value for s in found if s.name == name and labels.items() <= s.labels.items())


def json_lines(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.strip(), f"{path} is empty"
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            out.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"{path.name} line {n} is not JSON: {line[:300]}") from None
        assert {"time", "level", "logger", "message", "process"} <= out[-1].keys(), line
    return out


def test_one_clusters_story_across_api_and_engine(observed: JsonOasis) -> None:
    client = observed.client
    create = client.post("/clusters", json=wf.cluster_body(client, "dask", "observed", workers=1))
    assert create.status_code == 202, create.text
    create_id, cid = create.headers["x-openstack-request-id"], create.json()["cluster"]["id"]
    assert create_id.startswith("req-")
    wf.wait_cluster(client, cid)
    delete = client.delete(f"/clusters/{cid}")
    assert delete.status_code == 204, delete.text
    delete_id = delete.headers["x-openstack-request-id"]
    wf.wait_gone(client, cid)

    engine_metrics = f"http://127.0.0.1:{observed.metrics_port}/metrics"
    api_metrics = f"{observed.url}/metrics"  # no token
    # the first health check of the local site runs once the engine is up; both processes read its record
    wait_until(lambda: value(samples(engine_metrics), "oasis_hosts_reachable", site="local") >= 1, 60,
               "the engine's metrics to show the local host reachable")
    api, engine = samples(api_metrics), samples(engine_metrics)
    assert value(api, "oasis_http_requests_total", method="POST", route="/v2/clusters", code="202") == 1
    assert value(api, "oasis_http_requests_total", method="DELETE", route="/v2/clusters/{id}", code="204") == 1
    assert value(api, "oasis_hosts_reachable", site="local") >= 1
    assert value(engine, "oasis_step_duration_seconds_count", model="cluster", operation="create") >= 1
    assert value(engine, "oasis_step_duration_seconds_count", model="cluster", operation="delete") >= 1
    assert value(engine, "oasis_operations_total", model="cluster", operation="create", outcome="done") == 1
    assert value(engine, "oasis_hosts_reachable", site="local") >= 1
    assert value(engine, "oasis_http_requests_total") == 0  # the engine answers no API request
    for found in (api, engine):
        assert not any(cid in v for s in found for v in s.labels.values()), "an id in a label"

    api_proc, engine_proc = observed.procs
    observed.stop()  # every line written and closed
    api_lines = json_lines(observed.state_dir / "api-0.log")
    engine_lines = json_lines(observed.state_dir / "engine-1.log")
    assert {line["process"] for line in api_lines} == {api_proc.pid}
    assert {line["process"] for line in engine_lines} == {engine_proc.pid}

    access = [line for line in api_lines if line.get("request_id") == create_id]
    assert [(a["logger"], a["method"], a["route"], a["status"]) for a in access] == [
        ("oasis.access", "POST", "/v2/clusters", 202)]

    created = [line for line in engine_lines if line.get("request_id") == create_id]
    assert created, "no engine line carries the create's request id"
    assert {line["operation"] for line in created} == {f"cluster:{cid}:create"}
    assert {line["cluster_id"] for line in created} == {cid}
    assert any(line["message"].endswith("create done") for line in created)
    deleted = [line for line in engine_lines if line.get("request_id") == delete_id]
    assert deleted and {line["operation"] for line in deleted} == {f"cluster:{cid}:delete"}

    auth = yaml.safe_load((observed.state_dir / "clouds.yaml").read_text())["clouds"]["oasis"]["auth"]
    token = client.headers["X-Auth-Token"]
    for path in (observed.state_dir / "api-0.log", observed.state_dir / "engine-1.log"):
        text = path.read_text()
        assert auth["password"] not in text and token not in text, f"{path.name} holds a credential"
        assert "Traceback" not in text, f"{path.name} has a traceback"
