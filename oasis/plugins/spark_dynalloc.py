"""Spark dynamic allocation as an autoscaling signal: what a driver asks for and the master does not show.

A driver with `spark.dynamicAllocation.enabled=true` keeps a target number of executors (its
`ExecutorAllocationManager`, from its pending and running tasks) and asks the master for that many; the master
launches what its workers' free cores allow and shows only what it granted (an application with one executor is
RUNNING). So the master's `/json/` cannot say that a driver wants more. The driver's own metrics can: its
`ExecutorAllocationManager` source has the gauges `executors.numberTargetExecutors` (what it asks for) and
`executors.numberAllExecutors` (what it has). A job that enables dynamic allocation gets Spark's own `CsvSink`
on its driver, writing every second into the job's `metrics` directory on the master instance (inside the
instance's directory, which only the project's Unix user enters; no port opened). The load probe reads the last
value of both gauges of every application there and the master's `/json/` in one remote command, counts only the
applications the master still lists as active, and removes the files of the others.

Cores asked and not granted = (target - executors) x `spark.executor.cores` (the cluster's; what the master's
`/json/` does not say per application)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from oasis.plugins.base import ClusterView, InstanceView
from oasis.plugins.probe import CLIENT_CONTEXT, PROBE_TIMEOUT, ProbeFailed, run_python

METRICS_DIR = "metrics"  # in a job's directory on the master instance
ENABLED = "spark.dynamicAllocation.enabled"
# A sink of oasis's own name: a job's own `csv` sink, if it has one, is left as it is.
SINK = "spark.metrics.conf.driver.sink.oasisalloc"
GAUGES = "driver.ExecutorAllocationManager.executors"

# What a job with dynamic allocation gets unless it (or its cluster) says otherwise:
#   - shuffle tracking (there is no external shuffle service): an executor that holds shuffle files a running
#     job still needs is kept (its worker stays busy, so the autoscaler never removes it), so a later stage never
#     loses its input to a scale-down;
#   - an idle executor holding shuffle files that no running job needs released after 60 s (Spark's default is
#     never, until the JVM's garbage collector happens to clean the shuffle, which would keep its worker for as
#     long): decommission moves its shuffle blocks to the executors that stay first (DECOMMISSION_DEFAULTS), so
#     a later job that reuses them still finds them;
#   - idle executors released after 15 s (Spark's default is 60 s), which is what lets a worker become idle and
#     the autoscaler remove it;
#   - executors holding cached blocks released after 5 minutes idle (Spark's default: never, which would keep
#     their workers forever); their blocks move to the others on the way out.
DEFAULTS = {"spark.dynamicAllocation.shuffleTracking.enabled": "true",
            "spark.dynamicAllocation.shuffleTracking.timeout": "60s",
            "spark.dynamicAllocation.executorIdleTimeout": "15s",
            "spark.dynamicAllocation.cachedExecutorIdleTimeout": "300s"}


def enabled(cluster: ClusterView, configs: dict[str, Any]) -> bool:
    value = configs.get(ENABLED, cluster.config(ENABLED, False))
    return str(value).strip().lower() == "true"


def driver_conf(cluster: ClusterView, configs: dict[str, Any], workdir: str) -> dict[str, str]:
    """The `--conf`s a job's driver gets for dynamic allocation: none unless the job or its cluster enables it;
    then DEFAULTS where neither sets the key, and the metrics sink the autoscaler reads (always oasis's)."""
    if not enabled(cluster, configs):
        return {}
    out = {k: v for k, v in DEFAULTS.items() if k not in configs and cluster.config(k) is None}
    out.update(sink_conf(f"{workdir}/{METRICS_DIR}"))
    return out


def sink_conf(directory: str) -> dict[str, str]:
    """Spark's own CsvSink on a driver, writing its gauges every second into `directory` (which must exist)."""
    return {f"{SINK}.class": "org.apache.spark.metrics.sink.CsvSink", f"{SINK}.period": "1",
            f"{SINK}.unit": "seconds", f"{SINK}.directory": directory}


# Runs on the master's host with its Python (-I -S): the gauges first, then the master's state, so that every
# application whose files were read is one the master already knew (an application registers before its driver
# writes a metric): the files of one it no longer lists as active are its last, and are removed.
LOAD_CODE = CLIENT_CONTEXT + r'''
import glob, os, urllib.request
pattern, gauges, url, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])


def last(path):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 256))
            line = f.read().decode("ascii", "replace").strip().splitlines()[-1]
        return int(float(line.split(",")[1]))
    except (OSError, IndexError, ValueError):
        return None


asks = {}
suffix = "." + gauges + ".numberTargetExecutors.csv"
for path in glob.glob(os.path.join(pattern, "*" + suffix)):
    app = os.path.basename(path)[:-len(suffix)]
    target = last(path)
    have = last(path[:-len("numberTargetExecutors.csv")] + "numberAllExecutors.csv")
    if target is not None and have is not None:
        asks[app] = {"target": target, "all": have, "dir": os.path.dirname(path)}
try:
    with urllib.request.urlopen(url, context=context, timeout=timeout) as response:
        state = json.loads(response.read().decode("utf-8", "replace"))
except Exception as e:
    reason = getattr(e, "reason", None) or e
    sys.stderr.write("%s: %s" % (type(e).__name__, reason))
    sys.exit(3)
active = {a.get("id") for a in state.get("activeapps") or [] if isinstance(a, dict)}
for app, ask in list(asks.items()):
    if app not in active:
        del asks[app]
        for stale in glob.glob(os.path.join(glob.escape(ask["dir"]), glob.escape(app) + ".*")):
            try:
                os.unlink(stale)
            except OSError:
                pass
json.dump({"state": state, "asks": {a: {"target": v["target"], "all": v["all"]} for a, v in asks.items()}},
          sys.stdout)
'''


@dataclass(frozen=True)
class Ask:
    """A driver's own view of its executors: how many it asks for, and how many it has."""

    target: int
    have: int

    @property
    def missing(self) -> int:
        return max(0, self.target - self.have)


async def read(master: InstanceView, python: str, url: str, creds: dict[str, str] | None) -> tuple[dict, dict[str, Ask]]:
    """The master's `/json/` state and the asks of the drivers it lists as active (by application id), read on
    the master's host in one command."""
    pattern = f"{master.workdir}/jobs/*/{METRICS_DIR}"
    out = await run_python(master, python, LOAD_CODE, [pattern, GAUGES, url, str(PROBE_TIMEOUT)], creds)
    try:
        got = json.loads(out)
    except ValueError:
        raise ProbeFailed(f"{url} did not answer with JSON") from None
    asks = {str(app): Ask(int(a["target"]), int(a["all"])) for app, a in (got.get("asks") or {}).items()}
    return got.get("state") or {}, asks
