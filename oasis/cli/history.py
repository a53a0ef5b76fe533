"""`oasis history JOB`: a job's Spark application UI after its cluster is gone, served on this machine by the Spark
History Server that ships in the pyspark wheel, over the event logs the job left in oasis's store (fetched through
the API with the user's own credentials); `--report FILE` saves a Dask job's performance report instead."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import httpx
import typer

from oasis.cli.client import OasisClient, OasisError
from oasis.cli.common import client, command, console
from oasis.edp.history import DASK_KIND, SPARK_EVENT_LOG, app_id
from oasis.runtime import local_runtime

HISTORY_SERVER = "org.apache.spark.deploy.history.HistoryServer"
READY_TIMEOUT = 120.0
CREDENTIAL_PREFIXES = ("OS_", "OASIS_")

class Stopped(Exception):
    """SIGTERM: stop the History Server as Ctrl-C would."""


def listing(c: OasisClient, job_id: str) -> list[dict[str, Any]]:
    return c.get(f"/jobs/{job_id}/history").get("history") or []


def download(c: OasisClient, job_id: str, name: str, path: Path) -> None:
    """One history file into `path`, readable by its owner only (a report shows the job's code)."""
    data = c.request("GET", f"/jobs/{job_id}/history/{name}").content
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(spark_home: str, properties: Path) -> list[str]:
    return [f"{spark_home}/bin/spark-class", HISTORY_SERVER, "--properties-file", str(properties)]


def server_properties(log_dir: Path, port: int) -> str:
    # Scanned every second, so the applications are listed as soon as the server answers.
    settings = {"spark.history.fs.logDirectory": f"file:{log_dir}", "spark.history.ui.port": str(port),
                "spark.history.fs.update.interval": "1s", "spark.history.fs.cleaner.enabled": "false"}
    return "".join(f"{k} {v}\n" for k, v in settings.items())


def server_env(runtime: dict[str, Any], conf_dir: Path) -> dict[str, str]:
    # Not the credentials this command was given (OS_TOKEN, OS_PASSWORD, …): the server needs none of them.
    env = {k: v for k, v in os.environ.items() if not k.startswith(CREDENTIAL_PREFIXES)}
    # SPARK_LOCAL_IP: the UI listens on loopback only, not on every interface (Spark's default)
    env.update(SPARK_HOME=runtime["spark_home"], SPARK_LOCAL_IP="127.0.0.1", SPARK_CONF_DIR=str(conf_dir))
    if runtime.get("java_home"):
        env["JAVA_HOME"] = runtime["java_home"]
    return env


def wait_ready(proc: subprocess.Popen, base: str, apps: list[str], log: Path) -> None:
    """Until the server's REST API lists every application of the downloaded logs."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise OasisError(f"the Spark History Server exited with {proc.returncode}:\n{tail}")
        try:
            r = httpx.get(f"{base}/api/v1/applications", timeout=2)
            listed = {a.get("id") for a in r.json()} if r.status_code == 200 else set()
            if set(apps) <= listed:
                return
        except (httpx.TransportError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise OasisError(f"the Spark History Server did not list {', '.join(apps)} within "
                             f"{READY_TIMEOUT:.0f}s; its log:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    """By its PID (spark-class execs the JVM, so the PID is the server's own)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve(c: OasisClient, job_id: str, port: int | None) -> None:
    logs = [item for item in listing(c, job_id) if item.get("kind") == SPARK_EVENT_LOG]
    if not logs:
        raise OasisError(f"job {job_id} left no Spark event log (a Spark job keeps them when it ends, unless "
                         "its configs say spark.eventLog.enabled=false)")
    runtime = local_runtime()
    if not runtime.get("spark_home"):
        raise OasisError("the Spark History Server comes with pyspark, which is not installed here")
    work = Path(tempfile.mkdtemp(prefix="oasis-history-"))  # 0700: the job's logs are for its user only
    proc: subprocess.Popen | None = None
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        log_dir, conf_dir = work / "logs", work / "conf"
        log_dir.mkdir(mode=0o700)
        conf_dir.mkdir(mode=0o700)
        for item in logs:
            download(c, job_id, item["name"], log_dir / item["name"])
        port = port or free_port()
        properties = work / "history.properties"
        properties.write_text(server_properties(log_dir, port))
        server_log = work / "server.log"
        with open(server_log, "wb") as out:
            proc = subprocess.Popen(server_command(runtime["spark_home"], properties), cwd=work, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=server_env(runtime, conf_dir))
        base = f"http://127.0.0.1:{port}"
        apps = sorted({app_id(item["name"]) for item in logs})
        wait_ready(proc, base, apps, server_log)
        say(f"Spark History Server at {base} (pid {proc.pid}), over the event logs of job {job_id} in {work}")
        for app in apps:
            say(f"application {app}: {base}/history/{app}/jobs/")
        say("Ctrl-C stops it")
        proc.wait()
        raise OasisError(f"the Spark History Server exited with {proc.returncode}")
    except (KeyboardInterrupt, Stopped):
        say("stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc is not None:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)


def save_report(c: OasisClient, job_id: str, path: Path) -> None:
    reports = [item for item in listing(c, job_id) if item.get("kind") == DASK_KIND]
    if not reports:
        raise OasisError(f"job {job_id} left no Dask performance report (a Dask job saves one when it ends)")
    download(c, job_id, reports[0]["name"], path)
    console.print(f"saved the performance report of job {job_id} to {path} ({reports[0]['size']} bytes)")


def say(line: str) -> None:
    """Plain lines, never wrapped: whoever runs this reads the URLs off its output."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _raise_stopped(signum: int, frame: object) -> None:
    raise Stopped()


def register(main: typer.Typer) -> None:
    @command(main, "history")
    def history(ctx: typer.Context, job_id: str = typer.Argument(..., metavar="JOB"),
                port: Optional[int] = typer.Option(None, help="Port of the Spark History Server (default: a free "
                                                              "one), on 127.0.0.1"),
                report: Optional[Path] = typer.Option(None, "--report", metavar="FILE",
                                                      help="Save the job's Dask performance report to FILE "
                                                           "instead")) -> None:
        """Serve a Spark job's application UI from its event logs (its cluster may be gone), until Ctrl-C; or
        save a Dask job's performance report."""
        if report is not None:
            save_report(client(ctx), job_id, report)
        else:
            serve(client(ctx), job_id, port)
