#!/usr/bin/env python3
"""oasis benchmark: oasis against the frameworks' own start and submit times, side by side in one run.

    .venv/bin/python bench/run.py [--quick] [--reps N]

Measures, with several repetitions and medians:
  (a) Dask cluster create -> Active through oasis (1 scheduler + 2 workers) vs the same daemons started directly
  (b) Spark cluster create -> Active through oasis (1 master + 2 workers) vs spark-class Master + 2 Workers
  (c) the demo's wordcount through oasis (POST /v2/jobs -> SUCCEEDED seen by the API) vs the same script run
      directly (spark-submit in client mode; python against a directly started scheduler)
  (d) job end -> status seen via the API: the end time the launcher records vs the first 50 ms poll that shows it

It starts its own embedded `oasis up` (free port, temporary state dir) and stops everything it started by PID.
Results go to bench/results.md (printed too)."""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from oasis.cli.client import OasisClient, OasisError, authenticate, endpoint_for  # noqa: E402
from oasis.cli.demo import DATA, DEMO_DIR, leftover_pids, top_words  # noqa: E402
from oasis.cli.embedded import EmbeddedService, free_port  # noqa: E402
from oasis.procs import log_has, wait_until  # noqa: E402
from tests.project_users import removing_new_project_users  # noqa: E402

POLL = 0.05  # how often the API is polled, as the brief for (d) asks
TERMINAL = {"SUCCEEDED", "FAILED", "KILLED", "DONEWITHERROR"}
FLAVOR = "2"  # m1.small: 1 vcpu, 2048 MB -> workers get 1 core / thread and 1536 MB, as oasis gives them
WORKER_MB = 2048 - 512
MASTER = {"dask": "scheduler", "spark": "master"}
JOB_TYPE = {"dask": "Dask", "spark": "Spark"}
NO_REPORT = "oasis.dask.performance_report"
SCRIPT = {"dask": DEMO_DIR / "wordcount_dask.py", "spark": DEMO_DIR / "wordcount_spark.py"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- processes started directly ----------------------------------------------------------------------------------


class Direct:
    """Daemons started here, each in its own session, stopped by PID (its process group)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: list[subprocess.Popen] = []
        import pyspark

        self.spark_home = str(Path(pyspark.__file__).parent)
        java = shutil.which("java")
        # The master's REST submission server off, as oasis has it: on by default it takes the fixed port 6066,
        # which a master kept for the job runs would still hold while the next cluster starts.
        self.env = dict(os.environ, SPARK_HOME=self.spark_home, SPARK_LOCAL_IP="127.0.0.1",
                        PYSPARK_PYTHON=sys.executable, PYTHONUNBUFFERED="1",
                        SPARK_DAEMON_JAVA_OPTS="-Dspark.master.rest.enabled=false")
        if java:
            self.env["JAVA_HOME"] = str(Path(os.path.realpath(java)).parent.parent)
        conf = base / "spark-conf"
        conf.mkdir(parents=True, exist_ok=True)
        # the same defaults oasis's Spark plugin writes on its instances
        (conf / "spark-defaults.conf").write_text("spark.executor.memory 1g\nspark.executor.cores 1\n")
        self.env["SPARK_CONF_DIR"] = str(conf)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
        d = self.base / name
        d.mkdir(parents=True, exist_ok=True)
        path = d / "log"
        with open(path, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=d, env=env or self.env,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc, path

    def stop(self, procs: list[subprocess.Popen] | None = None) -> None:
        """Stop each daemon's whole process group and return once every process of it is gone, so that the
        next repetition finds their ports released (a Dask worker is a child of its nanny, not the leader)."""
        procs = list(procs if procs is not None else self.procs)
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if not _group_gone(proc.pid, 10):  # what the leader started: a nanny's worker, an executor
                os.killpg(proc.pid, signal.SIGKILL)
                _group_gone(proc.pid, 10)
            if proc in self.procs:
                self.procs.remove(proc)

    # Dask: scheduler first, then the workers together; ready = "Scheduler at" and each worker's "Registered to"
    def dask_cluster(self, tag: str) -> tuple[float, str, list[subprocess.Popen]]:
        port, dash = free_port(), free_port()
        t0 = time.monotonic()
        sched, slog = self.start(f"{tag}-scheduler", [
            sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
            "--dashboard-address", f"127.0.0.1:{dash}"])
        wait_until(lambda: log_has(slog, "Scheduler at", sched), 60, "the Dask scheduler", 0.01)
        address = f"tcp://127.0.0.1:{port}"
        workers = []
        for i in (1, 2):
            w, wlog = self.start(f"{tag}-worker{i}", [
                sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1",
                "--worker-port", str(free_port()), "--nanny-port", str(free_port()), "--nthreads", "1",
                "--memory-limit", f"{WORKER_MB}MB", "--no-dashboard", "--name", f"{tag}-worker{i}",
                "--local-directory", str(self.base / f"{tag}-worker{i}" / "dask")])
            workers.append((w, wlog))
        wait_until(lambda: all(log_has(p, "Registered to", w) for w, p in workers), 60, "the Dask workers", 0.01)
        return time.monotonic() - t0, address, [sched, *(w for w, _ in workers)]

    # Spark: master first, then the workers together; ready = the master's /json/ shows 2 alive workers
    def spark_cluster(self, tag: str) -> tuple[float, str, list[subprocess.Popen]]:
        spark_class = f"{self.spark_home}/bin/spark-class"
        port, ui = free_port(), free_port()
        t0 = time.monotonic()
        master, _ = self.start(f"{tag}-master", [spark_class, "org.apache.spark.deploy.master.Master",
                                                 "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)])
        url = f"http://127.0.0.1:{ui}/json/"
        wait_until(lambda: _json(url, master) is not None, 120, "the Spark master", 0.02)
        address = f"spark://127.0.0.1:{port}"
        workers = []
        for i in (1, 2):
            w, _ = self.start(f"{tag}-worker{i}", [
                spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                "--port", str(free_port()), "--webui-port", str(free_port()), "--cores", "1",
                "--memory", f"{WORKER_MB}m", "--work-dir", str(self.base / f"{tag}-worker{i}" / "work"), address])
            workers.append(w)
        wait_until(lambda: (_json(url, master) or {}).get("aliveworkers") == 2, 120, "2 alive Spark workers", 0.02)
        return time.monotonic() - t0, address, [master, *workers]

    def job(self, plugin: str, address: str, tag: str) -> tuple[float, str]:
        if plugin == "spark":
            argv = [f"{self.spark_home}/bin/spark-submit", "--master", address, "--deploy-mode", "client",
                    "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.ui.enabled=false",
                    str(SCRIPT["spark"]), DATA.as_uri()]
            env = self.env
        else:
            argv = [sys.executable, str(SCRIPT["dask"]), DATA.as_uri()]
            env = dict(self.env, DASK_SCHEDULER_ADDRESS=address)
        d = self.base / tag
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        r = subprocess.run(argv, capture_output=True, text=True, cwd=d, env=env, timeout=600)
        elapsed = time.monotonic() - t0
        if r.returncode != 0:
            raise RuntimeError(f"direct {plugin} job failed ({r.returncode}):\n{r.stderr[-3000:]}")
        return elapsed, r.stdout


def _group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _json(url: str, proc: subprocess.Popen) -> dict | None:
    if proc.poll() is not None:
        raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}")
    try:
        r = httpx.get(url, timeout=1)
        return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


# --- through oasis ----------------------------------------------------------------------------------------------


class Through:
    def __init__(self, client: OasisClient, state_dir: Path) -> None:
        self.c, self.state_dir = client, state_dir
        self.versions = {p: self.c.get(f"/plugins/{p}")["plugin"]["versions"][0] for p in MASTER}
        self.templates: dict[str, str] = {}

    def create_cluster(self, plugin: str, name: str) -> tuple[float, dict]:
        body = {"name": name, "plugin_name": plugin, "plugin_version": self.versions[plugin], "node_groups": [
            {"name": "master", "flavor_id": FLAVOR, "node_processes": [MASTER[plugin]], "count": 1},
            {"name": "worker", "flavor_id": FLAVOR, "node_processes": ["worker"], "count": 2}]}
        t0 = time.monotonic()
        cid = self.c.create("clusters", body)["id"]
        while True:
            cluster = self.c.show("clusters", cid)
            if cluster["status"] == "Active":
                elapsed = time.monotonic() - t0
                return elapsed, self.c.show("clusters", cid, show_progress="true")
            if cluster["status"] == "Error":
                raise RuntimeError(f"{name}: Error: {cluster.get('status_description')}")
            if time.monotonic() - t0 > 600:
                raise TimeoutError(f"{name} not Active after 600 s")
            time.sleep(POLL)

    def delete_cluster(self, cid: str) -> None:
        self.c.delete(f"/clusters/{cid}")
        wait_until(lambda: self.c.cluster_or_none(cid) is None, 300, f"cluster {cid} to be deleted", 0.1)

    def job_template(self, plugin: str) -> str:
        if plugin not in self.templates:
            binary = self.c.upload_binary(f"bench-{SCRIPT[plugin].name}", SCRIPT[plugin].read_bytes())
            self.templates[plugin] = self.c.create("job-templates", {
                "name": f"bench-wordcount-{plugin}", "type": JOB_TYPE[plugin], "mains": [binary["id"]]})["id"]
        return self.templates[plugin]

    def job(self, plugin: str, cluster_id: str, configs: dict[str, str] | None = None
            ) -> tuple[float, float | None, str]:
        """(submit -> terminal status seen, launcher end -> seen, stdout)"""
        template = self.job_template(plugin)
        job_configs: dict[str, Any] = {"args": [DATA.as_uri()], **({"configs": configs} if configs else {})}
        t0 = time.monotonic()
        jid = self.c.create("jobs", {"job_template_id": template, "cluster_id": cluster_id,
                                     "job_configs": job_configs})["id"]
        while True:
            job = self.c.show("jobs", jid)
            seen_wall, seen = time.time(), time.monotonic()
            status = (job.get("info") or {}).get("status")
            if status in TERMINAL:
                break
            if seen - t0 > 900:
                raise TimeoutError(f"job {jid} not finished after 900 s")
            time.sleep(POLL)
        if status != "SUCCEEDED":
            raise RuntimeError(f"{plugin} job {jid} ended {status}:\n{self.c.logs(jid, 'stderr')[-3000:]}")
        ended = self._launcher_end(cluster_id, jid)
        return seen - t0, (seen_wall - ended) if ended else None, self.c.logs(jid)

    def _launcher_end(self, cluster_id: str, job_id: str) -> float | None:
        """The end time the launcher wrote next to the job on its master instance (full precision; the API's
        end_time has whole seconds)."""
        for path in self.state_dir.glob(f"hosts/*/{cluster_id}/*/jobs/{job_id}/result"):
            try:
                return float(json.loads(path.read_text())["ended"])
            except (OSError, ValueError, KeyError):
                pass
        return None


# --- the run ----------------------------------------------------------------------------------------------------


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def start_step(cluster: dict) -> float | None:
    steps = [s for s in cluster.get("provision_progress") or [] if s.get("step_name", "").startswith("Start")]
    return steps[0].get("duration") if steps else None


def bench(reps: int, work: Path) -> dict[str, Any]:
    res: dict[str, Any] = {"load": [os.getloadavg()[0]]}
    res.update({p: {"oasis_create": [], "direct_create": [], "oasis_job": [], "direct_job": [],
                               "lag": [], "start_step": [], "oasis_job_no_report": []} for p in MASTER})
    direct = Direct(work / "direct")
    service = EmbeddedService(work / "oasis")
    through: Through | None = None
    live: list[str] = []
    try:
        log(f"starting an embedded oasis in {service.state_dir}")
        service.start()
        session = authenticate(service.credentials())
        through = Through(OasisClient(endpoint_for(service.url), session.token), service.state_dir)
        for plugin in ("dask", "spark"):
            r = res[plugin]
            cid = address = None
            procs: list[subprocess.Popen] = []
            for i in range(reps):
                last = i == reps - 1
                order = ("oasis", "direct") if i % 2 == 0 else ("direct", "oasis")
                for who in order:
                    if who == "oasis":
                        t, cluster = through.create_cluster(plugin, f"bench-{plugin}-{i}")
                        live.append(cluster["id"])
                        r["oasis_create"].append(t)
                        r["start_step"].append(start_step(cluster))
                        log(f"{plugin} cluster through oasis: {t:.2f}s")
                        if last:
                            cid = cluster["id"]
                        else:
                            through.delete_cluster(cluster["id"])
                            live.remove(cluster["id"])
                    else:
                        t, address, procs = getattr(direct, f"{plugin}_cluster")(f"{plugin}-{i}")
                        r["direct_create"].append(t)
                        log(f"{plugin} cluster directly:     {t:.2f}s")
                        if not last:
                            direct.stop(procs)
            for i in range(reps):
                order = ("oasis", "direct") if i % 2 == 0 else ("direct", "oasis")
                for who in order:
                    if who == "oasis":
                        t, lag, out = through.job(plugin, cid)
                        r["oasis_job"].append(t)
                        if lag is not None:
                            r["lag"].append(lag)
                        r.setdefault("words", top_words(out))
                        log(f"{plugin} job through oasis: {t:.2f}s (end -> seen {lag if lag is None else round(lag, 3)}s)")
                        if plugin == "dask":  # the same job without its performance report (oasis/plugins/dask.py)
                            t, _, out = through.job(plugin, cid, {NO_REPORT: "false"})
                            r["oasis_job_no_report"].append(t)
                            log(f"{plugin} job through oasis, no report: {t:.2f}s")
                    else:
                        t, out = direct.job(plugin, address, f"{plugin}-job-{i}")
                        r["direct_job"].append(t)
                        r.setdefault("direct_words", top_words(out))
                        log(f"{plugin} job directly:     {t:.2f}s")
            r["same_words"] = r.get("words") == r.get("direct_words") and bool(r.get("words"))
            through.delete_cluster(cid)
            live.remove(cid)
            direct.stop(procs)
    finally:
        res["load"].append(os.getloadavg()[0])
        direct.stop()
        if through is not None:
            for cid in live:
                try:
                    through.delete_cluster(cid)
                except Exception as e:  # noqa: BLE001 - cleanup goes on
                    log(f"could not delete cluster {cid}: {e}")
            through.c.close()
        service.stop()
        for pid in leftover_pids(service.state_dir):
            try:
                os.kill(pid, signal.SIGKILL)
                log(f"killed leftover process {pid}")
            except ProcessLookupError:
                pass
    return res


def render(res: dict[str, Any], reps: int, wall: float) -> str:
    d, s = res["dask"], res["spark"]
    lags = d["lag"] + s["lag"]

    def row(what: str, oasis: list[float], direct: list[float], kind: str, target: float) -> str:
        o, x = med(oasis), med(direct)
        if kind == "ratio":
            value, shown, tgt = o / x, f"{o / x:.2f}x", f"≤ {target:.1f}x"
        elif kind == "pct":
            value, shown, tgt = o / x - 1, f"{(o / x - 1) * 100:+.1f}%", f"≤ +{target * 100:.0f}%"
        else:
            value, shown, tgt = o - x, f"{o - x:+.2f} s", f"≤ +{target:.1f} s"
        ok = "yes" if value <= target else "**no**"
        return f"| {what} | {o:.2f} s | {x:.2f} s | {shown} | {tgt} | {ok} |"

    lines = [
        "# oasis benchmark", "",
        f"Run {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `bench/run.py` "
        f"({reps} repetitions each, medians; {wall / 60:.1f} min in all) on {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, Spark {metadata.version('pyspark')}, "
        f"Dask distributed {metadata.version('distributed')}, {_java()}. Everything on 127.0.0.1, "
        "through an embedded `oasis up` (SQLite) that the benchmark started; oasis's API polled every 50 ms. "
        f"Load average at start / end: {res['load'][0]:.1f} / {res['load'][-1]:.1f}.", "",
        "| Measure | oasis | direct | oasis vs direct | target | met |",
        "|---|---:|---:|---:|---:|:---:|",
        row("Dask cluster create → Active (1 scheduler + 2 workers)", d["oasis_create"], d["direct_create"],
            "ratio", 1.5),
        row("Spark cluster create → Active (1 master + 2 workers)", s["oasis_create"], s["direct_create"],
            "ratio", 1.3),
        row("Spark wordcount job: submit → SUCCEEDED", s["oasis_job"], s["direct_job"], "pct", 0.10),
        row("Dask wordcount job: submit → SUCCEEDED", d["oasis_job"], d["direct_job"], "abs", 0.3),
        row(f"Dask wordcount job, no performance report (`{NO_REPORT}=false`)", d["oasis_job_no_report"],
            d["direct_job"], "abs", 0.3),
        f"| Job end → status seen via the API (median / max of {len(lags)}) | {med(lags):.3f} s / "
        f"{max(lags, default=float('nan')):.3f} s | Sahara: polls every 45 s | | ≤ 1 s | "
        f"{'yes' if lags and max(lags) <= 1 else '**no**'} |", "",
        "How each was measured:", "",
        "- *oasis cluster*: `POST /v2/clusters` until a `GET` shows `Active`. *direct*: the same daemons with the "
        "same options (1 core / thread and 1536 MB per worker, as flavor m1.small gives), started by the "
        "benchmark on 127.0.0.1 in the order oasis uses: the scheduler/master, then both workers together. "
        "Ready = Dask's `Scheduler at` and each worker's `Registered to` in their logs; Spark's master `/json/` "
        "showing `aliveworkers == 2`.",
        "- *jobs*: `oasis/demo/wordcount_*.py` over the demo's text "
        f"({DATA.stat().st_size // 1024} KiB). oasis: `POST /v2/jobs` until a `GET` shows `SUCCEEDED`. direct: "
        "`spark-submit --master spark://… --deploy-mode client` (same confs as oasis's launcher), or "
        "`python wordcount_dask.py` with `DASK_SCHEDULER_ADDRESS` of a directly started cluster; wall time of "
        "the process. Both outputs were compared: "
        f"{'identical top 10' if d.get('same_words') and s.get('same_words') else 'they DIFFER'}.",
        "- *end → seen*: the end time the job's launcher writes on the master instance (`result`, full "
        "precision) against the wall clock of the first API poll that returned the terminal status.",
        "- Runs alternate which of oasis and direct goes first. A 2-core machine is noisy: read ±20%.", "",
        "Samples (seconds):", "",
    ]
    for plugin, r in ((p, res[p]) for p in MASTER):
        for key in ("oasis_create", "direct_create", "oasis_job", "oasis_job_no_report", "direct_job", "lag",
                    "start_step"):
            if not r[key]:
                continue
            vals = ", ".join("–" if v is None else f"{v:.2f}" for v in r[key])
            label = {"start_step": "oasis 'Start the following process(es)' step"}.get(key, key.replace("_", " "))
            lines.append(f"- {plugin} {label}: {vals}")
    return "\n".join(lines) + "\n"


def _java() -> str:
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
        return out.replace('"', "").replace("openjdk version", "OpenJDK").split(" 20")[0]
    except (OSError, IndexError):
        return "no Java"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 repetitions instead of 5")
    ap.add_argument("--reps", type=int, help="repetitions (default 5, or 2 with --quick)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results.md")
    args = ap.parse_args()
    reps = args.reps or (2 if args.quick else 5)
    work = Path(tempfile.mkdtemp(prefix="oasis-bench-"))
    t0 = time.monotonic()
    try:
        with removing_new_project_users():  # as root: the local host's instance base and project users
            res = bench(reps, work)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except (RuntimeError, TimeoutError, OSError, OasisError) as e:
        log(f"benchmark failed: {e} (work dir kept: {work})")
        return 1
    text = render(res, reps, time.monotonic() - t0)
    args.out.write_text(text)
    shutil.rmtree(work, ignore_errors=True)
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
