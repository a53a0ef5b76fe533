"""A job's history (oasis/edp/history.py and its users): the names it keeps and serves, its collection from a
host, the launch configs that make Spark and Dask write it, the Dask wrapper's argv and exit codes (against a
fake `distributed`), and the API's two routes, for the job's own project only."""
from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from oasis.cli import history as history_cli
from oasis.cli.client import OasisClient, OasisError
from oasis.db.models import Job
from oasis.edp import history, joblogs
from oasis.plugins import dask as dask_plugin
from oasis.plugins import security
from oasis.plugins import spark as spark_plugin
from oasis.plugins.base import ClusterView, InstanceView
from oasis.remote.base import RemoteError
from oasis.remote.local import LocalRemote
from oasis.storage.filesystem import FilesystemStore
from tests.unit.conftest import World

SPARK_LOG = "app-20261201120000-0003.zstd"


# --- names ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, kind", [
    ("app-20261201120000-0000", history.SPARK_EVENT_LOG), (SPARK_LOG, history.SPARK_EVENT_LOG),
    ("app-20261201120000-0000.zstd.inprogress", history.SPARK_EVENT_LOG),
    ("app-20261201120000-0000.inprogress", history.SPARK_EVENT_LOG),
    ("local-1796162026384.lz4", history.SPARK_EVENT_LOG), ("dask-report.html", history.DASK_KIND)])
def test_the_names_a_job_leaves(name: str, kind: str) -> None:
    assert history.kind_of(name) == kind
    assert history.key("j1", name) == f"jobs/j1/history/{name}"


@pytest.mark.parametrize("name", ["", ".", "..", "../stdout", "app-1/../../x", "/etc/passwd", "README",
                                  ".app-1.zstd.crc", "app-1.zstd.crc", "app-", "app-1 2", "app-1\n", "dask-report.htm",
                                  "dask-report.html.bak", "eventlog_v2_app-1", "stdout", "app-1.gz", "x" * 300])
def test_any_other_name_is_refused(name: str) -> None:
    assert history.kind_of(name) is None
    with pytest.raises(history.HistoryError):
        history.key("j1", name)


def test_the_application_id_of_an_event_log() -> None:
    assert history.app_id(SPARK_LOG) == "app-20261201120000-0003"
    assert history.app_id("app-20261201120000-0003.zstd.inprogress") == "app-20261201120000-0003"
    with pytest.raises(history.HistoryError):
        history.app_id("dask-report.html")


def test_listing_reading_and_deleting_in_the_store(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    store.put(f"jobs/j1/history/{SPARK_LOG}", b"events")
    store.put("jobs/j1/history/dask-report.html", b"<html>")
    store.put("jobs/j1/history/stray", b"not a history file")
    store.put("jobs/j1/stdout", b"out")
    store.put("jobs/j10/history/dask-report.html", b"another job's")
    assert history.listing(store, "j1") == [
        {"name": SPARK_LOG, "kind": "spark-event-log", "size": 6},
        {"name": "dask-report.html", "kind": "dask-report", "size": 6}]
    assert history.read(store, "j1", SPARK_LOG) == b"events"
    with pytest.raises(history.HistoryError):
        history.read(store, "j1", "stray")
    joblogs.delete_all(store, "j1")  # a deleted job's history goes with its logs
    assert history.listing(store, "j1") == [] and not store.exists("jobs/j1/stdout")
    assert store.exists("jobs/j10/history/dask-report.html")


# --- collection -------------------------------------------------------------------------------------------------


def test_collect_copies_the_history_files_of_a_job_directory(tmp_path: Path) -> None:
    workdir = tmp_path / "jobs" / "j1"
    hist = workdir / "history"
    hist.mkdir(parents=True)
    (hist / SPARK_LOG).write_bytes(b"spark events")
    (hist / "dask-report.html").write_bytes(b"<html>report")
    (hist / "README").write_text("not kept")
    (hist / f".{SPARK_LOG}.crc").write_bytes(b"crc")
    (workdir / "secret.txt").write_text("outside the history directory")
    (hist / "app-20261201120000-0009").symlink_to(workdir / "secret.txt")  # a link is never followed
    store = FilesystemStore(tmp_path / "store")
    copied = asyncio.run(history.collect(LocalRemote(), str(workdir), store, "j1"))
    assert sorted(copied) == [SPARK_LOG, "dask-report.html"]
    assert history.read(store, "j1", SPARK_LOG) == b"spark events"
    assert [i["name"] for i in history.listing(store, "j1")] == sorted(copied)


def test_collect_without_a_history_directory_keeps_nothing(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "store")
    assert asyncio.run(history.collect(LocalRemote(), str(tmp_path / "nothing"), store, "j1")) == []
    assert history.listing(store, "j1") == []


class GoneHost:
    async def run(self, argv, **kwargs):  # noqa: ANN001, ANN003, ANN201
        raise RemoteError("h1: unreachable (connection refused)")

    async def get(self, path: str) -> bytes:
        raise AssertionError("not reached")


def test_collect_is_best_effort(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = FilesystemStore(tmp_path / "store")
    with caplog.at_level(logging.WARNING, "oasis.edp.history"):
        assert asyncio.run(history.collect(GoneHost(), "/nowhere", store, "j1")) == []
    assert "could not keep its history files (RemoteError): h1: unreachable" in caplog.text


def test_collect_leaves_out_a_file_over_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    hist = tmp_path / "job" / "history"
    hist.mkdir(parents=True)
    (hist / SPARK_LOG).write_bytes(b"x" * 100)
    (hist / "dask-report.html").write_bytes(b"small")
    monkeypatch.setattr(history, "MAX_FILE_BYTES", 50)
    store = FilesystemStore(tmp_path / "store")
    with caplog.at_level(logging.WARNING, "oasis.edp.history"):
        assert asyncio.run(history.collect(LocalRemote(), str(tmp_path / "job"), store, "j1")) == ["dask-report.html"]
    assert f"{SPARK_LOG} is 100 bytes" in caplog.text


# --- launch configs ---------------------------------------------------------------------------------------------


def view(plugin: str, configs: dict | None = None) -> ClusterView:
    master = "master" if plugin == "spark" else "scheduler"
    ports = {"master": 20000, "master_ui": 20001, "scheduler": 20002, "dashboard": 20003}
    inst = InstanceView("i1", "m", "master", [master], "127.0.0.1", "/base/i1", ports, 2, 2048,
                        remote=None, agent=None)  # type: ignore[arg-type]
    runtime = {"python": "/usr/bin/python3", "spark_home": "/opt/spark"}
    return ClusterView("c1", "c", "4.3", configs or {}, runtime, [inst], secrets={"insecure": True})


def confs(argv: list[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--conf")


WORKDIR = "/base/i1/jobs/j1"


def test_a_spark_job_logs_its_events_into_its_own_directory() -> None:
    plugin = spark_plugin.SparkPlugin()
    for job_type, main in (("Spark", f"{WORKDIR}/wc.py"), ("Java", f"{WORKDIR}/app.jar")):
        configs = {"edp.java.main_class": "Main", "spark.eventLog.dir": "s3a://elsewhere/",
                   "spark.eventLog.rolling.enabled": "true", "spark.executor.memory": "2g"}
        argv = plugin.launch(view("spark"), job_type, main, [], configs, ["a"], WORKDIR).argv
        got = confs(argv)
        assert got["spark.eventLog.enabled"] == "true"
        assert got["spark.eventLog.dir"] == f"file:{WORKDIR}/{history.HISTORY_DIR}"  # the job's, not its own
        assert got["spark.eventLog.rolling.enabled"] == "false"  # one file per application
        assert got["spark.executor.memory"] == "2g"
        dirs = [a for a in argv if a.startswith("spark.eventLog.dir=")]
        assert dirs == [f"spark.eventLog.dir=file:{WORKDIR}/history"]
    # the directory exists before the driver starts: a file of the job's makes it
    files = plugin.job_files(view("spark"), WORKDIR)
    assert f"{WORKDIR}/{history.HISTORY_DIR}/README" in files
    assert history.kind_of("README") is None  # and it is never kept


@pytest.mark.parametrize("where", ["job", "cluster"])
def test_a_spark_job_or_cluster_may_switch_event_logging_off(where: str) -> None:
    plugin = spark_plugin.SparkPlugin()
    off = {"spark.eventLog.enabled": "False"}
    cluster = view("spark", {"general": off} if where == "cluster" else None)
    argv = plugin.launch(cluster, "Spark", f"{WORKDIR}/wc.py", [], off if where == "job" else {}, [], WORKDIR).argv
    got = confs(argv)
    assert got["spark.eventLog.enabled"] == "false" and "spark.eventLog.dir" not in got
    # the job's own `true` wins over its cluster's `false`
    on = plugin.launch(view("spark", {"general": off}), "Spark", "x.py", [], {"spark.eventLog.enabled": True}, [],
                       WORKDIR).argv
    assert confs(on)["spark.eventLog.enabled"] == "true"


def test_a_shell_job_has_no_history() -> None:
    for plugin in (spark_plugin.SparkPlugin(), dask_plugin.DaskPlugin()):
        argv = plugin.launch(view(plugin.name), "Shell", f"{WORKDIR}/run.sh", [], {}, ["x"], WORKDIR).argv
        assert argv == ["/bin/sh", f"{WORKDIR}/run.sh", "x"]


def test_the_history_directory_is_the_same_for_plugins_and_edp() -> None:
    # plugins and edp are siblings (neither imports the other): each names it, and they must agree
    assert spark_plugin.HISTORY_DIR == dask_plugin.HISTORY_DIR == history.HISTORY_DIR
    assert dask_plugin.DASK_REPORT == history.DASK_REPORT


def test_a_dask_job_runs_through_the_report_wrapper() -> None:
    plugin = dask_plugin.DaskPlugin()
    launch = plugin.launch(view("dask"), "Dask", f"{WORKDIR}/wc.py", [], {}, ["in", "out"], WORKDIR)
    assert launch.argv == ["/usr/bin/python3", f"{WORKDIR}/{dask_plugin.WRAPPER}",
                           f"{WORKDIR}/history/dask-report.html", f"{WORKDIR}/wc.py", "in", "out"]
    for secrets in ({"insecure": True}, {}):
        cluster = view("dask")
        cluster.secrets = secrets
        if not secrets:  # a secured cluster's job files also carry its client certificate
            ca = security.make_cluster_ca("c", "dask")
            cluster.secrets = {"ca": security.as_dict(ca), "client": security.as_dict(security.client_pem(ca, "c"))}
        files = plugin.job_files(cluster, WORKDIR)
        assert files[f"{WORKDIR}/{dask_plugin.WRAPPER}"] == dask_plugin.WRAPPER_CODE


@pytest.mark.parametrize("where", ["job", "cluster"])
def test_a_dask_job_or_cluster_may_switch_the_report_off(where: str) -> None:
    plugin = dask_plugin.DaskPlugin()
    off = {dask_plugin.REPORT_CONFIG: "False"}
    cluster = view("dask", {"general": off} if where == "cluster" else None)
    launch = plugin.launch(cluster, "Dask", f"{WORKDIR}/wc.py", [], off if where == "job" else {}, ["in"], WORKDIR)
    assert launch.argv == ["/usr/bin/python3", f"{WORKDIR}/wc.py", "in"]  # the script itself, no wrapper
    # the job's own `true` wins over its cluster's `false`
    on = plugin.launch(view("dask", {"general": off}), "Dask", "x.py", [], {dask_plugin.REPORT_CONFIG: True}, [],
                       WORKDIR)
    assert on.argv[1] == f"{WORKDIR}/{dask_plugin.WRAPPER}"


def test_a_dask_job_with_a_report_switch_that_is_no_flag_is_refused() -> None:
    plugin = dask_plugin.DaskPlugin()
    for value in ("true", "FALSE", False, True):
        assert plugin.job_problem({}, [], {"configs": {dask_plugin.REPORT_CONFIG: value}}) is None
    problem = plugin.job_problem({}, [], {"configs": {dask_plugin.REPORT_CONFIG: "sometimes"}})
    assert problem == "oasis.dask.performance_report must be true or false, not 'sometimes'"


# --- the Dask wrapper, against a fake `distributed` ----------------------------------------------------------------

FAKE_DISTRIBUTED = '''
import asyncio, os

def _note(line):
    with open(os.environ["FAKE_NOTES"], "a") as f:
        f.write(line + "\\n")

class Client:
    def __init__(self):
        if os.environ.get("FAKE_NO_SCHEDULER"):
            raise OSError("Timed out trying to connect to tls://10.0.0.1:20000")
        _note("client")
    def sync(self, fn, *args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))
    def close(self):
        _note("closed")

class performance_report:
    def __init__(self, filename, mode=None):
        self.filename = filename
        _note("mode %s" % mode)
    def __enter__(self):
        _note("report started")
    async def __aexit__(self, exc_type, exc, tb, code=None):
        with open(self.filename, "w") as f:
            f.write("<title>Dask Performance Report</title>" + code)
'''

SCRIPT = '''
import sys
print("argv", sys.argv)
print("name", __name__)
import helper  # from the script's own directory, as `python script.py` would find it
what = sys.argv[1] if len(sys.argv) > 1 else "ok"
if what == "exit":
    sys.exit(int(sys.argv[2]))
if what == "raise":
    raise RuntimeError("the job failed")
'''


def run_wrapper(tmp_path: Path, *args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, Path, Path]:
    fake = tmp_path / "fake"
    (fake / "distributed").mkdir(parents=True, exist_ok=True)
    (fake / "distributed" / "__init__.py").write_text(FAKE_DISTRIBUTED)
    job = tmp_path / "job"
    job.mkdir(exist_ok=True)
    (job / dask_plugin.WRAPPER).write_bytes(dask_plugin.WRAPPER_CODE)
    (job / "wc.py").write_text(SCRIPT)
    (job / "helper.py").write_text("")
    report, notes = job / "history" / "dask-report.html", tmp_path / "notes"
    notes.write_text("")
    proc = subprocess.run([sys.executable, str(job / dask_plugin.WRAPPER), str(report), str(job / "wc.py"), *args],
                          capture_output=True, text=True, cwd=job, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(fake), "FAKE_NOTES": str(notes), **(env or {})})
    return proc, report, notes


def test_the_wrapper_runs_the_script_as_python_would_with_a_report(tmp_path: Path) -> None:
    proc, report, notes = run_wrapper(tmp_path, "ok", "two words")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"argv [{str(tmp_path / 'job' / 'wc.py')!r}, 'ok', 'two words']",
                                        "name __main__"]
    assert report.read_text() == "<title>Dask Performance Report</title>" + SCRIPT  # the script's code, not ours
    assert notes.read_text().splitlines() == ["client", "mode inline", "report started", "closed"]


@pytest.mark.parametrize("args, rc, stderr", [(("exit", "3"), 3, ""), (("exit", "0"), 0, ""),
                                              (("raise",), 1, "RuntimeError: the job failed")])
def test_the_wrapper_keeps_the_scripts_exit_code_and_still_saves_the_report(
        tmp_path: Path, args: tuple, rc: int, stderr: str) -> None:
    proc, report, _ = run_wrapper(tmp_path, *args)
    assert proc.returncode == rc, proc.stderr
    assert stderr in proc.stderr
    assert report.read_text().startswith("<title>Dask Performance Report</title>")


def test_without_a_client_the_script_runs_as_it_would_have(tmp_path: Path) -> None:
    proc, report, _ = run_wrapper(tmp_path, "exit", "4", env={"FAKE_NO_SCHEDULER": "1"})
    assert proc.returncode == 4
    assert "oasis: no performance report for this job: Timed out trying to connect" in proc.stderr
    assert not report.exists()


# --- the API --------------------------------------------------------------------------------------------------


def a_job(world: World, project: str = "p1", public: bool = False) -> str:
    with world.db.session() as s:
        job = Job(project_id=world.projects[project], job_template_id="jt", cluster_id=None, status="SUCCEEDED",
                  is_public=public)
        s.add(job)
        s.flush()
        return job.id


def test_the_history_of_a_job_through_the_api(world: World) -> None:
    jid = a_job(world)
    assert world.get(f"/v2/jobs/{jid}/history").json() == {"history": []}
    world.store.put(f"jobs/{jid}/history/{SPARK_LOG}", b"spark events")
    world.store.put(f"jobs/{jid}/history/dask-report.html", b"<html><script>alert(1)</script>")
    listed = world.get(f"/v2/jobs/{jid}/history")
    assert listed.status_code == 200
    assert listed.json()["history"] == [{"name": SPARK_LOG, "kind": "spark-event-log", "size": 12},
                                        {"name": "dask-report.html", "kind": "dask-report", "size": 31}]
    log = world.get(f"/v2/jobs/{jid}/history/{SPARK_LOG}")
    assert log.status_code == 200 and log.content == b"spark events"
    assert log.headers["content-type"] == "application/octet-stream"
    assert log.headers["content-disposition"] == f'attachment; filename="{SPARK_LOG}"'
    report = world.get(f"/v2/jobs/{jid}/history/dask-report.html")
    assert report.status_code == 200 and report.text.startswith("<html>")
    # scripts that can never act on the oasis origin
    assert report.headers["content-disposition"] == 'attachment; filename="dask-report.html"'
    assert report.headers["content-security-policy"] == "sandbox allow-scripts"
    assert report.headers["x-content-type-options"] == "nosniff"
    assert world.get(f"/v2/{world.projects['p1']}/jobs/{jid}/history").json()["history"][0]["name"] == SPARK_LOG
    assert world.get(f"/v2/jobs/{jid}/history", who="carol").status_code == 200  # a reader of the project reads
    assert world.get(f"/v2/jobs/{jid}/history/{SPARK_LOG}", who="admin").status_code == 200


def test_the_history_is_the_job_projects_only(world: World) -> None:
    for public in (False, True):  # a public job is visible to all; its history is not
        jid = a_job(world, public=public)
        world.store.put(f"jobs/{jid}/history/dask-report.html", b"<html>")
        for path in (f"/v2/jobs/{jid}/history", f"/v2/jobs/{jid}/history/dask-report.html"):
            r = world.get(path, who="bob")
            assert r.status_code == 404 and r.json()["error_name"] == "NOT_FOUND", r.text
            assert "html" not in r.text.replace("dask-report.html", "")
    assert world.get("/v2/jobs/nope/history").status_code == 404


def test_history_names_are_checked(world: World) -> None:
    jid = a_job(world)
    world.store.put(f"jobs/{jid}/stdout", b"the job's stdout")
    world.store.put(f"jobs/{jid}/history/README", b"not served")
    for name in ("README", "%2E%2E", "..%2Fstdout", "%2E%2E%2Fstdout", ".crc"):
        r = world.get(f"/v2/jobs/{jid}/history/{name}")
        assert r.status_code in (400, 404), (name, r.status_code)
        assert b"the job's stdout" not in r.content and b"not served" not in r.content
    assert world.get(f"/v2/jobs/{jid}/history/README").json()["error_name"] == "INVALID_DATA"
    missing = world.get(f"/v2/jobs/{jid}/history/{SPARK_LOG}")
    assert missing.status_code == 404 and SPARK_LOG in missing.json()["error_message"]
    assert world.get(f"/v2/jobs/{jid}/history", params={"stream": "x"}).status_code == 400


def test_deleting_a_job_deletes_its_history(world: World, tmp_path: Path) -> None:
    from oasis.engine.jobs import JobWork

    jid = a_job(world)
    world.store.put(f"jobs/{jid}/history/{SPARK_LOG}", b"events")
    work = JobWork(world.db, jid, lambda: None, remotes=None, store=world.store, secrets=None,  # type: ignore[arg-type]
                   access_ttl=900)
    asyncio.run(work.delete())
    assert history.listing(world.store, jid) == []


# --- `oasis history` without a server -------------------------------------------------------------------------


def cli_client(files: dict[str, bytes]) -> OasisClient:
    """A client of a service whose job j1 left `files`."""
    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v2/jobs/j1/history":
            return httpx.Response(200, json={"history": [{"name": n, "kind": history.kind_of(n), "size": len(d)}
                                                         for n, d in files.items()]})
        name = path.removeprefix("/v2/jobs/j1/history/")
        if name in files:
            return httpx.Response(200, content=files[name])
        return httpx.Response(404, json={"error_code": 404, "error_name": "NOT_FOUND", "error_message": "no"})

    return OasisClient("http://oasis.test:8386", "tok", transport=httpx.MockTransport(answer))


def test_oasis_history_saves_a_dask_report_for_its_owner_only(tmp_path: Path) -> None:
    saved = tmp_path / "report.html"
    history_cli.save_report(cli_client({"dask-report.html": b"<html>report"}), "j1", saved)
    assert saved.read_bytes() == b"<html>report" and saved.stat().st_mode & 0o777 == 0o600
    with pytest.raises(OasisError, match="left no Dask performance report"):
        history_cli.save_report(cli_client({SPARK_LOG: b"events"}), "j1", tmp_path / "none.html")


def test_oasis_history_needs_an_event_log(tmp_path: Path) -> None:
    with pytest.raises(OasisError, match="left no Spark event log"):
        history_cli.serve(cli_client({"dask-report.html": b"<html>"}), "j1", None)


def test_the_history_server_is_configured_for_loopback_and_no_credentials(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    props = history_cli.server_properties(tmp_path / "logs", 18080)
    assert f"spark.history.fs.logDirectory file:{tmp_path / 'logs'}\n" in props
    assert "spark.history.ui.port 18080\n" in props
    monkeypatch.setenv("OS_TOKEN", "the-users-token")
    monkeypatch.setenv("OS_PASSWORD", "the-users-password")
    env = history_cli.server_env({"spark_home": "/opt/spark", "java_home": "/opt/java"}, tmp_path)
    assert env["SPARK_LOCAL_IP"] == "127.0.0.1" and env["JAVA_HOME"] == "/opt/java"
    assert not any(k.startswith("OS_") for k in env)
    assert history_cli.server_command("/opt/spark", tmp_path / "p")[:2] == [
        "/opt/spark/bin/spark-class", "org.apache.spark.deploy.history.HistoryServer"]
