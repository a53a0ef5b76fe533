"""History that outlives clusters, through a real `oasis up`: a PySpark job's event logs are kept when it ends and,
its cluster deleted, `oasis history JOB` (a subprocess, with the user's own token) serves them with the Spark
History Server of the pyspark wheel, whose REST API lists the application and its completed jobs; a Dask job
leaves its performance report. Another project gets 404 on both routes."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration import workflow as wf
from tests.integration.services import Oasis, stop_process, wait_until

ROOT = Path(__file__).resolve().parents[2]  # this checkout's oasis, wherever the command runs
PYSPARK = b"""
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("history-check").getOrCreate()
sc = spark.sparkContext
print("sum", sc.parallelize(range(100), 4).sum())
print("count", sc.parallelize(range(10), 2).count())
spark.stop()
"""

DASK = b"""
import sys
from distributed import Client

client = Client()
print("total", sum(client.gather(client.map(lambda x: x * 2, range(50)))))
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def other(service: Oasis) -> Iterator[httpx.Client]:
    """A member of a second project."""
    _, olga = service.add_project("history-other", "olga", "olga-password-1")
    yield olga
    olga.close()


def assert_hidden_from(other: httpx.Client, job_id: str, name: str) -> None:
    for path in (f"/jobs/{job_id}/history", f"/jobs/{job_id}/history/{name}"):
        r = other.get(path)
        assert r.status_code == 404, (path, r.status_code, r.text)


def oasis_cli(service: Oasis, client: httpx.Client, *args: str, stdout=None,  # noqa: ANN001
              cwd: Path) -> subprocess.Popen:
    """`oasis ARGS` as the user of `client`: its token in the environment, never on a command line."""
    env = dict(os.environ, OASIS_URL=service.url, OS_TOKEN=client.headers["X-Auth-Token"],
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return subprocess.Popen([sys.executable, "-m", "oasis.cli.main", *args], env=env, cwd=cwd,
                            stdout=stdout or subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def history_of(client: httpx.Client, job_id: str) -> list[dict]:
    return wf.ok(client.get(f"/jobs/{job_id}/history"))["history"]


@pytest.mark.spark
def test_a_spark_applications_ui_after_its_cluster_is_deleted(service: Oasis, other: httpx.Client,
                                                              tmp_path: Path) -> None:
    client = service.client
    cid = wf.create_cluster(client, "spark", "hist-spark", workers=1)
    wf.wait_cluster(client, cid)
    template = wf.job_template(client, "hist-py", "Spark", wf.upload_binary(client, "hist.py", PYSPARK))
    jid = wf.run_job(client, template, cid)
    quiet = wf.run_job(client, template, cid, job_configs={"configs": {"spark.eventLog.enabled": "false"}})
    for job in (jid, quiet):
        j = wf.wait_job(client, job, timeout=300)
        assert j["info"]["status"] == "SUCCEEDED", wf.logs(client, job, "stderr")[-3000:]
    assert wf.logs(client, jid).splitlines() == ["sum 4950", "count 10"]
    assert history_of(client, quiet) == []  # switched off for that job
    [log] = history_of(client, jid)
    assert log["kind"] == "spark-event-log" and log["size"] > 0, log
    app = re.fullmatch(r"(app-\d+-\d+)(\.\w+)?", log["name"]).group(1)  # ended: no .inprogress

    wf.ok(client.delete(f"/clusters/{cid}"), 204)
    wf.wait_gone(client, cid)
    assert_hidden_from(other, jid, log["name"])

    out = tmp_path / "history.out"
    with open(out, "wb") as sink:
        proc = oasis_cli(service, client, "history", jid, stdout=sink, cwd=tmp_path)
    server_pid = None
    try:
        def printed() -> re.Match | None:
            assert proc.poll() is None, out.read_text()
            return re.search(r"^application (\S+): (http://127\.0\.0\.1:(\d+))/history/\S+$", out.read_text(), re.M)

        shown = wait_until(printed, 180, "oasis history to print the application's URL", 0.2)
        assert shown.group(1) == app
        base = shown.group(2)
        header = re.search(r"\(pid (\d+)\), over the event logs of job \S+ in (\S+)$", out.read_text(), re.M)
        server_pid, work = int(header.group(1)), Path(header.group(2))
        assert work.stat().st_mode & 0o777 == 0o700
        apps = httpx.get(f"{base}/api/v1/applications", timeout=10).json()
        assert [a["id"] for a in apps] == [app]
        assert apps[0]["name"] == "history-check" and apps[0]["attempts"][0]["completed"] is True
        jobs = httpx.get(f"{base}/api/v1/applications/{app}/jobs", timeout=10).json()
        assert len(jobs) == 2 and {j["status"] for j in jobs} == {"SUCCEEDED"}, jobs
        assert httpx.get(shown.group(0).split(": ", 1)[1], timeout=10).status_code == 200  # the UI's page

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, out.read_text()
        assert "stopped" in out.read_text().splitlines()
        assert not work.exists()
        assert not Path(f"/proc/{server_pid}").exists()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{base}/api/v1/applications", timeout=5)
    finally:
        stop_process(proc)
        if server_pid is not None and Path(f"/proc/{server_pid}").exists():
            os.kill(server_pid, signal.SIGKILL)


def test_a_dask_job_leaves_its_performance_report(service: Oasis, other: httpx.Client, tmp_path: Path) -> None:
    client = service.client
    cid = wf.create_cluster(client, "dask", "hist-dask", workers=1)
    wf.wait_cluster(client, cid)
    template = wf.job_template(client, "hist-dask", "Dask", wf.upload_binary(client, "hist-dask.py", DASK))
    ok = wf.run_job(client, template, cid, job_configs={"args": ["0"]})
    failed = wf.run_job(client, template, cid, job_configs={"args": ["3"]})
    shell = wf.job_template(client, "hist-sh", "Shell", wf.upload_binary(client, "hist.sh", b"echo hi\n"))
    plain = wf.run_job(client, shell, cid)
    assert wf.wait_job(client, ok)["info"]["status"] == "SUCCEEDED", wf.logs(client, ok, "stderr")[-3000:]
    j = wf.wait_job(client, failed)
    assert (j["info"]["status"], j["return_code"]) == ("DONEWITHERROR", 3)  # the script's exit code, kept
    assert wf.wait_job(client, plain)["info"]["status"] == "SUCCEEDED"
    assert wf.logs(client, ok).splitlines() == ["total 2450"]
    assert history_of(client, plain) == []  # a Shell job has neither

    wf.ok(client.delete(f"/clusters/{cid}"), 204)
    wf.wait_gone(client, cid)
    for job in (ok, failed):
        [item] = history_of(client, job)
        assert item["name"] == "dask-report.html" and item["kind"] == "dask-report", item
        r = client.get(f"/jobs/{job}/history/dask-report.html")
        assert r.status_code == 200 and "Dask Performance Report" in r.text
        assert "sys.exit(int(sys.argv[1]))" in r.text  # the job's own code, in its "calling code"
        assert r.headers["content-disposition"].startswith("attachment")
        assert r.headers["content-security-policy"] == "sandbox allow-scripts"
        assert "cdn.bokeh.org" not in r.text  # opens offline
    assert_hidden_from(other, ok, "dask-report.html")

    saved = tmp_path / "report.html"
    proc = oasis_cli(service, client, "history", ok, "--report", str(saved), cwd=tmp_path)
    output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, output
    assert "Dask Performance Report" in saved.read_text() and saved.stat().st_mode & 0o777 == 0o600
    # the user's own credentials: another project's user cannot
    proc = oasis_cli(service, other, "history", ok, "--report", str(tmp_path / "theirs.html"), cwd=tmp_path)
    output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 1 and "404" in output and not (tmp_path / "theirs.html").exists()
