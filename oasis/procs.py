"""Small helpers about processes on this machine, shared by the demo, the benchmarks and the tests."""
from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def processes_under(path: Path) -> list[int]:
    """PIDs of the processes whose working directory is inside `path`. Every daemon and job of a cluster runs
    in its instance's directory, so this finds a cluster's processes, duplicates and orphans included (a removed
    directory still matches, as "... (deleted)")."""
    root, pids = str(Path(path).resolve()), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if cwd == root or cwd.startswith(root + "/"):
                pids.append(int(entry.name))
    return pids


def group_states(pgid: int) -> set[str]:
    """The states (R, S, T, ...) of the processes of process group `pgid`, from /proc: how a test sees a job's
    whole group stopped or running."""
    return set(group_members(pgid))


def group_members(pgid: int) -> list[str]:
    """The state of each process of process group `pgid`, one per process, sorted."""
    states = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command: state, ppid, pgrp, ...
        except OSError:
            continue
        if int(fields[2]) == pgid:
            states.append(fields[0])
    return sorted(states)


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll until `predicate` returns something true, and return it; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def log_has(path: Path, pattern: str, proc: subprocess.Popen) -> bool:
    """Whether the log of a process started by hand holds `pattern` yet; an error if the process has ended."""
    if proc.poll() is not None:
        raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}: {path.read_text()[-2000:]}")
    try:
        return pattern in path.read_text(errors="replace")
    except FileNotFoundError:
        return False
