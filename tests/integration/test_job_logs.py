"""A real `oasis up` and a real Dask job on `local`: its stdout streams to the API while it runs (read with
`offset` while the job still blocks), `oasis job logs -f` follows it to its end, the logs stay readable once the
cluster is deleted, and another project's member cannot read them."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration import workflow as wf
from tests.integration.services import Oasis, open_dir, stop_process, wait_until

# Prints a line, blocks until the test makes the gate file, then prints the rest: what the API shows before the
# gate exists can only have been streamed.
GATED = b"""
import os, sys, time
from distributed import Client

with Client() as client:  # a real Dask job on the cluster, with the credentials oasis gave it
    assert client.submit(lambda x: x + 1, 1).result() == 2
print("first line", flush=True)
gate = sys.argv[1]
while not os.path.exists(gate):
    time.sleep(0.05)
print("second line \\u2603", flush=True)
print("a warning", file=sys.stderr, flush=True)
print("third line", flush=True)
"""
LINES = "first line\nsecond line \u2603\nthird line\n"


@pytest.fixture
def gate_dir() -> Iterator[Path]:
    """A directory the job's Unix user (a project user, when the tests run as root) can look into."""
    with open_dir("oasis-gate-") as d:
        yield d


def logs(client: httpx.Client, job_id: str, **params: object) -> httpx.Response:
    r = client.get(f"/jobs/{job_id}/logs", params=params)
    assert r.status_code == 200, r.text
    return r


def test_logs_stream_while_the_job_runs_and_outlive_the_cluster(embedded: Oasis, gate_dir: Path) -> None:
    client = embedded.client
    gate = gate_dir / "go"
    cid = wf.create_cluster(client, "dask", "logs", workers=1)
    wf.wait_cluster(client, cid)
    template = wf.job_template(client, "gated", "Dask", wf.upload_binary(client, "gated.py", GATED))
    jid = wf.run_job(client, template, cid, job_configs={"args": [str(gate)]})

    env = dict(os.environ, OS_CLIENT_CONFIG_FILE=str(embedded.state_dir / "clouds.yaml"))
    follower = subprocess.Popen([sys.executable, "-m", "oasis.cli.main", "job", "logs", "-f", jid], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The first line, through the API, while the job blocks on the gate that does not exist yet.
        first = wait_until(lambda: (r := logs(client, jid, offset=0)).content == b"first line\n" and r, 120,
                           "the job's first line to be readable while it runs")
        assert not gate.exists() and wf.job(client, jid)["info"]["status"] == "RUNNING"
        assert first.headers["X-Oasis-Log-Complete"] == "false" and first.headers["X-Oasis-Log-Size"] == "11"
        assert logs(client, jid, offset=6).text == "line\n"
        gate.touch()

        out, err = follower.communicate(timeout=120)  # it returns by itself once the job ended
        assert follower.returncode == 0, err
        assert out == LINES
        assert f"job {jid} ended SUCCEEDED" in err
    finally:
        if follower.poll() is None:
            stop_process(follower)
    job = wf.job(client, jid)
    assert job["info"]["status"] == "SUCCEEDED"
    whole = logs(client, jid)
    assert whole.text == LINES and whole.headers["X-Oasis-Log-Complete"] == "true"
    assert whole.headers["X-Oasis-Log-Size"] == str(len(LINES.encode()))
    assert logs(client, jid, stream="stderr").text.endswith("a warning\n")
    r = client.get(f"/jobs/{jid}/logs", params={"offset": "-3"})
    assert r.status_code == 400 and "negative" in r.text

    # The cluster goes; the job's row (still naming the cluster) and its logs stay.
    wf.ok(client.delete(f"/clusters/{cid}"), 204)
    wf.wait_gone(client, cid)
    assert wf.job(client, jid)["cluster_id"] == cid
    assert logs(client, jid).text == LINES
    assert logs(client, jid, offset=11).text == LINES[11:]
    cli = subprocess.run([sys.executable, "-m", "oasis.cli.main", "job", "logs", jid], env=env,
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and cli.stdout == LINES, cli.stderr

    # Another project's member: no such job, and no such logs.
    _, bob = embedded.add_project("other", "bob", "bob-password-1")
    assert bob.get(f"/jobs/{jid}").status_code == 404
    assert bob.get(f"/jobs/{jid}/logs").status_code == 404
    assert bob.get(f"/jobs/{jid}/logs", params={"offset": 0}).status_code == 404
    # and nothing of the job's output went into oasis's own log
    own_log = "".join(p.read_text(errors="replace") for p in embedded.state_dir.glob("up-*.log"))
    assert "first line" not in own_log and "a warning" not in own_log
