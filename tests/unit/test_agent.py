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


# --- fail fast, one daemon and one job however many callers, writes that never collide --------------------------

def _agent_rc(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(AGENT), *args], capture_output=True, text=True, timeout=timeout)


def test_a_daemon_that_logs_a_bind_failure_and_stays_up_fails_its_start_at_once(tmp_path: Path) -> None:
    d = str(tmp_path)
    daemon = "echo starting; echo 'java.net.BindException: Failed to bind to /127.0.0.1:6066'; sleep 60"
    started = time.monotonic()
    r = _agent_rc("start", d, "master", "--ready", "New state: ALIVE", "--fail", "never printed",
                  "--fail", "BindException", "--timeout", "120", "--", "sh", "-c", daemon)
    assert time.monotonic() - started < 2, "not after the readiness timeout"
    assert r.returncode == 5
    assert r.stderr.startswith("master failed to start: java.net.BindException: Failed to bind to /127.0.0.1:6066")
    pid = int(r.stdout.split()[0])
    assert alive(pid)  # the agent reports; whoever started it stops it (a failed step rolls back)
    agent("stop", d, "master", "--grace", "5")
    assert not alive(pid)


def test_a_failure_pattern_wins_over_a_ready_line_after_it(tmp_path: Path) -> None:
    # distributed warns that its dashboard port is taken, binds another, and then says it is ready
    daemon = "echo 'UserWarning: Port 8787 is already in use.'; echo 'Scheduler at: tcp://x'; sleep 60"
    r = _agent_rc("start", str(tmp_path), "scheduler", "--ready", "Scheduler at:", "--fail", "is already in use",
                  "--", "sh", "-c", daemon)
    agent("stop", str(tmp_path), "scheduler", "--grace", "5")
    assert r.returncode == 5 and "Port 8787 is already in use" in r.stderr


def test_wait_log_takes_failure_patterns_too(tmp_path: Path) -> None:
    agent("start", str(tmp_path), "svc", "--", "sh", "-c", "echo 'could not bind'; sleep 60")
    r = _agent_rc("wait-log", str(tmp_path), "svc", "ready", "30", "--fail", "could not bind")
    agent("stop", str(tmp_path), "svc", "--grace", "5")
    assert r.returncode == 5 and "could not bind" in r.stderr


def test_a_new_daemon_is_judged_by_its_own_log_lines_only(tmp_path: Path) -> None:
    # What an earlier daemon of that name left in the log (its ready line, its failure) says nothing of this one.
    (tmp_path / "svc.log").write_text("ready\nBindException\n")
    r = _agent_rc("start", str(tmp_path), "svc", "--ready", "ready", "--fail", "BindException", "--timeout", "0.5",
                  "--", "sh", "-c", "echo booting; sleep 60")
    agent("stop", str(tmp_path), "svc", "--grace", "5")
    assert r.returncode == 4 and "not ready" in r.stderr


def _at_once(argvs: list[list[str]]) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for a in argvs]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=60)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def test_concurrent_starts_start_one_daemon(tmp_path: Path) -> None:
    d = str(tmp_path)
    argv = [sys.executable, str(AGENT), "start", d, "svc", "--ready", "up", "--timeout", "30", "--",
            "sh", "-c", "echo started >> starts; echo up; sleep 60"]
    results = _at_once([argv] * 8)
    try:
        assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
        assert len({int(r.stdout.split()[0]) for r in results}) == 1
        assert (tmp_path / "starts").read_text() == "started\n"
    finally:
        agent("stop", d, "svc", "--grace", "5")


def test_concurrent_launches_run_a_job_once_and_do_not_wait_for_it(tmp_path: Path) -> None:
    d = str(tmp_path / "job")
    argv = [sys.executable, str(AGENT), "run", d, "--", "sh", "-c", "echo launched; sleep 60"]
    started = time.monotonic()
    results = _at_once([argv] * 8)
    try:
        assert time.monotonic() - started < 20  # no launch waits on the job (nor on a lock the job holds)
        assert len({r.stdout for r in results}) == 1, [r.stdout for r in results]
        _until(lambda: (tmp_path / "job" / "stdout").exists() and (tmp_path / "job" / "stdout").read_text())
        assert (tmp_path / "job" / "stdout").read_text() == "launched\n"
    finally:
        agent("cancel", d, "--grace", "5")
    assert json.loads(agent("wait", d, "10"))["cancelled"]


def test_concurrent_puts_of_one_path_never_collide(tmp_path: Path) -> None:
    import asyncio

    from oasis.remote.local import LocalRemote

    target = tmp_path / "hosts" / "agent.py"

    async def main() -> None:
        remote = LocalRemote()
        await asyncio.gather(*(remote.put(str(target), bytes([65 + i]) * 100_000, 0o755) for i in range(32)))

    asyncio.run(main())
    data = target.read_bytes()
    assert len(set(data)) == 1 and len(data) == 100_000  # one whole write, whichever was last
    assert oct(target.stat().st_mode & 0o777) == "0o755"
    assert [p.name for p in target.parent.iterdir()] == ["agent.py"]  # no temporary file left


def test_agent_install_is_once_per_host_and_version_and_on_demand(tmp_path: Path) -> None:
    import asyncio

    from oasis.db.models import Host
    from oasis.remote.agent_client import AGENT_CODE, AGENT_NAME
    from oasis.remote.hosts import Remotes
    from oasis.remote.local import LocalRemote

    class Counting(LocalRemote):
        puts = 0

        async def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
            Counting.puts += 1
            await super().put(path, data, mode)

    host = Host(name="h", base_dir=str(tmp_path), address="127.0.0.1")
    remotes = Remotes()
    remote = Counting()

    async def main() -> None:
        # eight clusters of one engine install the host's agent at once: one write
        await asyncio.gather(*(remotes.agent(remote, host, sys.executable).install() for _ in range(8)))
        assert Counting.puts == 1
        # a host that lost it (or never had this version) gets it on first use
        (tmp_path / AGENT_NAME).unlink()
        assert await remotes.agent(remote, host, sys.executable).signal_job(str(tmp_path / "none"), "STOP") is False

    asyncio.run(main())
    assert AGENT_NAME.startswith("oasis-agent-") and (tmp_path / AGENT_NAME).read_bytes() == AGENT_CODE
    assert Counting.puts == 2
