"""Jobs that recover, through a real `oasis up` with a real Dask cluster on `local`: a Shell job that fails on its
first attempt (it leaves a marker in a directory the jobs' Unix users may write to) and succeeds on its second
ends SUCCEEDED with two attempts, each with its own logs and exit code; a job sent to a cluster that is still
starting is PENDING and then SUCCEEDS; a scheduled job starts only at its time."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.integration import workflow as wf
from tests.integration.cluster_checks import assert_nothing_left
from tests.integration.services import Oasis, open_dir

FLAKY = b"""#!/bin/sh
marker="$1/marker"
if [ ! -e "$marker" ]; then
    echo "first attempt"
    echo "failing on purpose" >&2
    touch "$marker"
    exit 3
fi
echo "second attempt"
"""
HELLO = b"#!/bin/sh\necho hello\n"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the job's Unix user (a project user, when the tests run as root) may write its marker to."""
    with open_dir("oasis-retry-", writable=True) as d:
        yield d


def _delete(service: Oasis, cid: str) -> None:
    wf.ok(service.client.delete(f"/clusters/{cid}"), 204)
    wf.wait_gone(service.client, cid)
    assert_nothing_left(service.state_dir, cid)


@pytest.fixture(scope="module")
def dask_cluster(service: Oasis) -> Iterator[str]:
    cid = wf.create_cluster(service.client, "dask", "recover", workers=1)
    try:
        wf.wait_cluster(service.client, cid)
        yield cid
    finally:
        _delete(service, cid)


def _logs(service: Oasis, jid: str, stream: str, **params: object) -> str:
    r = service.client.get(f"/jobs/{jid}/logs", params={"stream": stream, **params})
    assert r.status_code == 200, r.text
    return r.text


def test_a_job_that_fails_once_succeeds_on_its_retry(service: Oasis, dask_cluster: str, shared_dir: Path) -> None:
    client = service.client
    template = wf.job_template(client, "flaky", "Shell", wf.upload_binary(client, "flaky.sh", FLAKY))
    jid = wf.run_job(client, template, dask_cluster, job_configs={
        "configs": {"edp.oasis.max_retries": "2", "edp.oasis.retry_backoff": "1"}, "args": [str(shared_dir)]})
    job = wf.wait_job(client, jid, timeout=240)
    assert job["info"]["status"] == "SUCCEEDED", job["info"]
    assert job["return_code"] == 0
    attempts = job["attempts"]
    assert [(a["number"], a["status"], a["return_code"]) for a in attempts] == [(1, "DONEWITHERROR", 3),
                                                                                (2, "SUCCEEDED", 0)]
    for a in attempts:
        assert a["start_time"] and a["end_time"] and a["instance_id"] and a["host"]
    assert attempts[0]["end_time"] <= attempts[1]["start_time"]
    # each attempt's own logs; the latest by default
    assert _logs(service, jid, "stdout", attempt=1) == "first attempt\n"
    assert _logs(service, jid, "stderr", attempt=1) == "failing on purpose\n"
    assert _logs(service, jid, "stdout", attempt=2) == "second attempt\n"
    assert _logs(service, jid, "stdout") == "second attempt\n"
    r = client.get(f"/jobs/{jid}/logs", params={"attempt": 3})
    assert r.status_code == 400 and r.json()["error_name"] == "INVALID_DATA"


def test_a_job_without_retries_fails_for_good(service: Oasis, dask_cluster: str, shared_dir: Path) -> None:
    client = service.client
    template = wf.job_template(client, "flaky-once", "Shell", wf.upload_binary(client, "flaky1.sh", FLAKY))
    jid = wf.run_job(client, template, dask_cluster, job_configs={"args": [str(shared_dir)]})
    job = wf.wait_job(client, jid)
    assert (job["info"]["status"], job["return_code"]) == ("DONEWITHERROR", 3)
    assert [a["number"] for a in job["attempts"]] == [1]


def test_a_job_sent_to_a_starting_cluster_waits_for_it(service: Oasis) -> None:
    client = service.client
    cid = wf.create_cluster(client, "dask", "coming-up", workers=1)
    try:
        template = wf.job_template(client, "early", "Shell", wf.upload_binary(client, "early.sh", HELLO))
        created = wf.ok(client.post("/jobs", json={"job_template_id": template, "cluster_id": cid}), 202)["job"]
        assert created["info"]["status"] == "PENDING"
        # taken while the cluster was not Active yet (it is not even now)
        assert wf.cluster(client, cid)["status"] != "Active"
        job = wf.wait_job(client, created["id"], timeout=240)
        assert job["info"]["status"] == "SUCCEEDED", job["info"]
        assert wf.logs(client, created["id"]) == "hello\n"
    finally:
        _delete(service, cid)


def test_a_scheduled_job_starts_at_its_time(service: Oasis, dask_cluster: str) -> None:
    client = service.client
    template = wf.job_template(client, "later", "Shell", wf.upload_binary(client, "later.sh", HELLO))
    start = (datetime.now(timezone.utc) + timedelta(seconds=6)).replace(microsecond=0, tzinfo=None)
    info = {"job_execution_type": "scheduled", "start": start.strftime("%Y-%m-%d %H:%M:%S")}
    created = wf.ok(client.post("/jobs", json={"job_template_id": template, "cluster_id": dask_cluster,
                                               "job_configs": {"job_execution_info": info}}), 202)["job"]
    assert created["info"]["status"] == "PENDING"
    assert created["info"]["status_description"] == f"scheduled to start at {info['start']} UTC"
    assert created["start_time"] is None
    job = wf.wait_job(client, created["id"], timeout=240)
    assert job["info"]["status"] == "SUCCEEDED", job["info"]
    assert datetime.fromisoformat(job["start_time"]) >= start  # not before its time
    assert wf.logs(client, created["id"]) == "hello\n"
