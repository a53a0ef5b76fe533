"""Waiting on clusters and jobs, with a live view: status, current provisioning step, elapsed time."""
from __future__ import annotations

import time
from typing import Any

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from oasis.cli.client import ApiError, OasisClient, OasisError
from oasis.cli.common import console

STAGES = ["Validating", "Spawning", "Waiting", "Preparing", "Configuring", "Starting", "Active"]
DELETE_STAGES = ["Deleting", "Deleted"]
JOB_TERMINAL = {"SUCCEEDED", "FAILED", "KILLED", "DONEWITHERROR", "SUSPENDFAILED"}


class ClusterFailed(OasisError):
    def __init__(self, cluster: dict[str, Any]) -> None:
        self.cluster = cluster
        reason = (cluster.get("status_description") or "no reason given").strip()
        failed = [s for s in cluster.get("provision_progress") or [] if s.get("successful") is False]
        detail = ""
        if failed:
            events = [e.get("event_info") for e in failed[0].get("events") or [] if e.get("event_info")]
            detail = f"\n  failed step: {failed[0].get('step_name')}" + "".join(f"\n    {e}" for e in events[:3])
        super().__init__(f"cluster {cluster.get('name')} went to Error: {reason}{detail}")


def current_step(cluster: dict[str, Any]) -> str:
    steps = cluster.get("provision_progress") or []
    running = [s for s in steps if s.get("successful") is None]
    step = (running or steps or [{}])[-1]
    return step.get("step_name") or ""


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[label]:<14}"), BarColumn(bar_width=24),
                    TextColumn("{task.fields[status]:<12}"), TextColumn("[dim]{task.fields[step]}"),
                    TimeElapsedColumn(), console=console, transient=False)


def wait_clusters(client: OasisClient, clusters: dict[str, str], status: str = "Active", timeout: float = 600,
                  interval: float = 0.25, started: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Wait until every cluster (id -> label) has `status`; returns the last view of each, with the wall time
    from `started[id]` (or from the call) to when the status was seen, under `_seconds`."""
    t0 = time.monotonic()
    started = started or {}
    done: dict[str, dict[str, Any]] = {}
    with _progress() as progress:
        tasks = {cid: progress.add_task("", total=len(STAGES) - 1, label=label, status="", step="")
                 for cid, label in clusters.items()}
        while len(done) < len(clusters):
            for cid, label in clusters.items():
                if cid in done:
                    continue
                c = client.cluster_or_none(cid, progress=True)
                if c is None:
                    raise OasisError(f"cluster {label} ({cid}) disappeared while waiting for {status}")
                step = current_step(c)
                stage = STAGES.index(c["status"]) if c["status"] in STAGES else 0
                progress.update(tasks[cid], completed=stage, status=c["status"], step=step)
                if c["status"] == "Error" and status != "Error":
                    raise ClusterFailed(c)
                if c["status"] == status:
                    c["_seconds"] = time.monotonic() - started.get(cid, t0)
                    done[cid] = c
                    progress.update(tasks[cid], completed=len(STAGES) - 1, step="")
            if len(done) < len(clusters):
                if time.monotonic() - t0 > timeout:
                    raise OasisError(f"timed out after {timeout:.0f}s waiting for {status}")
                time.sleep(interval)
    return done


def wait_gone(client: OasisClient, clusters: dict[str, str], timeout: float = 300, interval: float = 0.25) -> None:
    t0 = time.monotonic()
    gone: set[str] = set()
    with _progress() as progress:
        tasks = {cid: progress.add_task("", total=1, label=label, status="Deleting", step="")
                 for cid, label in clusters.items()}
        while len(gone) < len(clusters):
            for cid in clusters:
                if cid in gone:
                    continue
                c = client.cluster_or_none(cid, progress=True)
                if c is None:
                    gone.add(cid)
                    progress.update(tasks[cid], completed=1, status="deleted", step="")
                elif c["status"] == "Error":
                    raise ClusterFailed(c)
                else:
                    progress.update(tasks[cid], status=c["status"], step=current_step(c))
            if len(gone) < len(clusters):
                if time.monotonic() - t0 > timeout:
                    raise OasisError(f"timed out after {timeout:.0f}s waiting for clusters to be deleted")
                time.sleep(interval)


def wait_jobs(client: OasisClient, jobs: dict[str, str], timeout: float = 900, interval: float = 0.25,
              started: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Wait until every job (id -> label) reaches a terminal status; returns the last view of each, with the
    wall time from `started[id]` (or from the call) under `_seconds`."""
    t0 = time.monotonic()
    started = started or {}
    done: dict[str, dict[str, Any]] = {}
    with _progress() as progress:
        tasks = {jid: progress.add_task("", total=1, label=label, status="PENDING", step="")
                 for jid, label in jobs.items()}
        while len(done) < len(jobs):
            for jid in jobs:
                if jid in done:
                    continue
                try:
                    j = client.show("jobs", jid)
                except ApiError as e:
                    if e.code == 404:
                        raise OasisError(f"job {jobs[jid]} ({jid}) disappeared") from None
                    raise
                status = (j.get("info") or {}).get("status", "")
                progress.update(tasks[jid], status=status)
                if status in JOB_TERMINAL:
                    j["_seconds"] = time.monotonic() - started.get(jid, t0)
                    done[jid] = j
                    progress.update(tasks[jid], completed=1)
            if len(done) < len(jobs):
                if time.monotonic() - t0 > timeout:
                    raise OasisError(f"timed out after {timeout:.0f}s waiting for jobs")
                time.sleep(interval)
    return done


def job_status(job: dict[str, Any]) -> str:
    return (job.get("info") or {}).get("status", "")
