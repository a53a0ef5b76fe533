"""oasis-agent, the launcher on every host: idempotent starts, whole-tree stops, exit codes kept."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

AGENT = Path(__file__).parents[2] / "oasis" / "remote" / "agent.py"


def agent(*args: str) -> str:
    return subprocess.run([sys.executable, str(AGENT), *args], check=True, capture_output=True, text=True).stdout


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_start_is_idempotent_and_stop_ends_the_group(tmp_path: Path) -> None:
    d = str(tmp_path)
    pid = int(agent("start", d, "svc", "--", "sh", "-c", "sleep 60 & echo ready; wait"))
    assert int(agent("start", d, "svc", "--", "sh", "-c", "echo second")) == pid  # not started twice
    agent("wait-log", d, "svc", "ready", "10")
    children = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 2
    agent("stop", d, "svc", "--grace", "5")
    assert not any(alive(int(c)) for c in children)
    assert not (tmp_path / "svc.pid").exists()
    agent("stop", d, "svc")  # stopping twice is fine


def test_wait_log_fails_fast_when_the_daemon_dies(tmp_path: Path) -> None:
    agent("start", str(tmp_path), "bad", "--", "sh", "-c", "echo boom; exit 1")
    r = subprocess.run([sys.executable, str(AGENT), "wait-log", str(tmp_path), "bad", "never", "30"],
                       capture_output=True, text=True)
    assert r.returncode == 3 and "boom" in r.stderr


def test_job_result_output_and_single_launch(tmp_path: Path) -> None:
    d = str(tmp_path / "job")
    pid = agent("run", d, "--env", "X=42", "--", "sh", "-c", "echo out $X; echo err >&2; exit 7")
    assert agent("run", d, "--", "sh", "-c", "echo again") == pid  # a second launch is a no-op
    status = json.loads(agent("wait", d, "10"))
    assert status["done"] and status["rc"] == 7 and not status["cancelled"]
    assert (tmp_path / "job" / "stdout").read_text() == "out 42\n"
    assert (tmp_path / "job" / "stderr").read_text() == "err\n"


def test_cancel_kills_the_whole_tree(tmp_path: Path) -> None:
    d = str(tmp_path / "job")
    pid = int(agent("run", d, "--", "sh", "-c", "sleep 120 & sleep 120; wait"))
    deadline = time.time() + 10
    while len(subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True).stdout.split()) < 3:
        assert time.time() < deadline
        time.sleep(0.02)
    tree = [int(p) for p in subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True).stdout.split()]
    assert json.loads(agent("wait", d, "0.1"))["done"] is False
    agent("cancel", d, "--grace", "5")
    status = json.loads(agent("wait", d, "10"))
    assert status["done"] and status["cancelled"]
    assert not any(alive(p) for p in tree)


def _group(pid: int) -> list[int]:
    return [int(p) for p in subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True).stdout.split()]


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _until(condition, seconds: float = 10) -> None:  # noqa: ANN001
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_signal_suspends_and_resumes_the_whole_group(tmp_path: Path) -> None:
    d = str(tmp_path / "job")
    pid = int(agent("run", d, "--", "sh", "-c", "sleep 120 & sleep 120; wait"))
    _until(lambda: len(_group(pid)) >= 3)
    tree = _group(pid)
    assert json.loads(agent("signal", d, "STOP")) == {"running": True}
    _until(lambda: all(_state(p) == "T" for p in tree))
    # A stopped job has not ended: `wait` keeps saying so.
    assert json.loads(agent("wait", d, "0.3"))["done"] is False
    assert json.loads(agent("signal", d, "CONT")) == {"running": True}
    _until(lambda: all(_state(p) in ("S", "R") for p in tree))
    agent("cancel", d, "--grace", "5")
    assert json.loads(agent("wait", d, "10"))["done"]
    # Once the job has ended there is nothing to signal.
    assert json.loads(agent("signal", d, "STOP")) == {"running": False}


def test_cancel_ends_a_suspended_job_without_waiting_for_the_kill(tmp_path: Path) -> None:
    d = str(tmp_path / "job")
    pid = int(agent("run", d, "--", "sh", "-c", "sleep 120 & sleep 120; wait"))
    _until(lambda: len(_group(pid)) >= 3)
    tree = _group(pid)
    agent("signal", d, "STOP")
    _until(lambda: all(_state(p) == "T" for p in tree))
    started = time.time()
    agent("cancel", d, "--grace", "30")  # SIGTERM is acted on only because the group is continued too
    assert time.time() - started < 10
    status = json.loads(agent("wait", d, "10"))
    assert status["done"] and status["cancelled"]
    assert not any(alive(p) for p in tree)


def test_signal_refuses_unknown_signals_and_unlaunched_jobs(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(AGENT), "signal", str(tmp_path), "KILL"], capture_output=True, text=True)
    assert r.returncode == 2 and "STOP or CONT" in r.stderr
    assert json.loads(agent("signal", str(tmp_path / "never"), "STOP")) == {"running": False}
