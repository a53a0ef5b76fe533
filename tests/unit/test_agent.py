"""oasis-agent, the launcher on every host: idempotent starts, whole-tree stops, exit codes kept."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.project_users import USERS_DIR, processes_of, project_users, remove_user

AGENT = Path(__file__).parents[2] / "oasis" / "remote" / "agent.py"


def agent(*args: str) -> str:
    return subprocess.run([sys.executable, str(AGENT), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def sleeper_dir(tmp_path: Path) -> Iterator[str]:
    """The directory of a job of sleepers; whatever a failing test left of it is cancelled at the end."""
    d = str(tmp_path / "job")
    yield d
    if Path(d).exists():
        subprocess.run([sys.executable, str(AGENT), "cancel", d, "--grace", "1"], capture_output=True)


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


def test_cancel_kills_the_whole_tree(sleeper_dir: str) -> None:
    d = sleeper_dir
    pid = int(agent("run", d, "--", "sh", "-c", "sleep 120 & sleep 120; wait"))
    _until(lambda: len(_group(pid)) >= 3)
    tree = _group(pid)
    assert json.loads(agent("wait", d, "0.1"))["done"] is False
    agent("cancel", d, "--grace", "5")
    status = json.loads(agent("wait", d, "10"))
    assert status["done"] and status["cancelled"]
    assert not any(alive(p) for p in tree)


def _group(pid: int) -> list[int]:
    return [int(p) for p in subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True).stdout.split()]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def _states(pids: list[int]) -> dict[int, str]:
    return {p: _state(p) for p in pids}


def _until(condition, seconds: float = 10, seen=lambda: None) -> None:  # noqa: ANN001
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"condition not met in time; seen: {seen()}"
        time.sleep(0.02)


def test_signal_suspends_and_resumes_the_whole_group(sleeper_dir: str) -> None:
    d = sleeper_dir
    pid = int(agent("run", d, "--", "sh", "-c", "sleep 120 & sleep 120; wait"))
    _until(lambda: len(_group(pid)) >= 3)
    tree = _group(pid)
    assert json.loads(agent("signal", d, "STOP")) == {"running": True}
    _until(lambda: all(_state(p) == "T" for p in tree), seen=lambda: _states(tree))
    # A stopped job has not ended: `wait` keeps saying so.
    assert json.loads(agent("wait", d, "0.3"))["done"] is False
    assert json.loads(agent("signal", d, "CONT")) == {"running": True}
    _until(lambda: all(_state(p) in ("S", "R") for p in tree))
    agent("cancel", d, "--grace", "5")
    assert json.loads(agent("wait", d, "10"))["done"]
    # Once the job has ended there is nothing to signal.
    assert json.loads(agent("signal", d, "STOP")) == {"running": False}


def test_cancel_ends_a_suspended_job_without_waiting_for_the_kill(sleeper_dir: str) -> None:
    d = sleeper_dir
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
        await remotes.close()

    asyncio.run(main())
    assert AGENT_NAME.startswith("oasis-agent-") and (tmp_path / AGENT_NAME).read_bytes() == AGENT_CODE
    assert Counting.puts == 2


# --- project users (root only, as CI runs) --------------------------------------------------------------------


as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root (CI runs as root)")


def run_agent(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(AGENT), *args], capture_output=True, text=True)


@pytest.fixture
def users() -> Iterator[list[str]]:
    """Names for project users of this test only; whichever of them exist at its end are removed."""
    names = [f"oasis-t{uuid.uuid4().hex[:10]}" for _ in range(2)]
    yield names
    for name, uid in project_users().items():
        if name in names:
            remove_user(name, uid)


@pytest.fixture
def base() -> Iterator[Path]:
    """A host base directory that project users can pass through to (pytest's tmp_path is under a 0700 one)."""
    d = Path(tempfile.mkdtemp(prefix="oasis-agent-test-"))
    d.chmod(0o755)
    yield d / "base"
    shutil.rmtree(d, ignore_errors=True)


def _uid_of(pid: int) -> int:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(status["Uid"].split()[0])


@as_root
def test_a_project_user_lives_as_long_as_an_instance_of_it(users: list[str], base: Path) -> None:
    user = users[0]
    one, two = base / "c1" / "i1", base / "c2" / "i2"
    owner = json.loads(agent("prepare", str(one), user, "k1"))
    pw = pwd.getpwnam(user)
    assert owner == {"name": user, "uid": pw.pw_uid, "gid": pw.pw_gid}
    assert pw.pw_dir == "/nonexistent" and pw.pw_shell == "/usr/sbin/nologin" and pw.pw_uid < 1000  # a system user
    assert json.loads(agent("prepare", str(two), user, "k2")) == owner  # the same user for the same project
    assert json.loads(agent("prepare", str(one), user, "k1")) == owner  # prepare again: no change
    for d in (one, one / "proc", two):
        st = d.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (pw.pw_uid, pw.pw_gid, 0o700)
    for d in (base, base / "c1"):  # parents: the agent's, traversable by the user, listable by nobody else
        assert (d.stat().st_uid, d.stat().st_mode & 0o777) == (0, 0o711)
    assert sorted(p.name for p in (USERS_DIR / user).iterdir()) == ["k1", "k2"]

    agent("release", str(one), user, "k1")
    assert not one.exists() and pwd.getpwnam(user).pw_uid == pw.pw_uid  # the other instance still uses it
    agent("release", str(one), user, "k1")  # twice is fine
    agent("release", str(two), user, "k2")
    assert not two.exists() and user not in project_users() and not (USERS_DIR / user).exists()
    agent("release", str(two), user, "k2")  # after the user is gone too


@as_root
def test_the_last_release_ends_every_process_of_the_user(users: list[str], base: Path) -> None:
    user = users[0]
    inst = base / "c" / "i"
    agent("prepare", str(inst), user, "k")
    pid = int(agent("start", "--user", user, "--home", str(inst), str(inst / "proc"), "svc", "--",
                    "sh", "-c", "setsid sleep 300 & sleep 300"))
    _until(lambda: len(processes_of_user(user)) >= 3)  # sh, and both sleeps (one escaped the group)
    agent("release", str(inst), user, "k")
    assert not alive(pid) and user not in project_users() and not inst.exists()


def processes_of_user(name: str) -> list[int]:
    return processes_of(pwd.getpwnam(name).pw_uid)


@as_root
def test_daemons_and_jobs_run_as_the_instance_user(users: list[str], base: Path) -> None:
    user = users[0]
    inst = base / "c" / "i"
    agent("prepare", str(inst), user, "k")
    uid = pwd.getpwnam(user).pw_uid
    me = ["--user", user, "--home", str(inst)]
    try:
        # "ready" once "up" is written, so the groups line may follow a moment later: its end marks it whole
        pid = int(agent("start", *me, str(inst / "proc"), "svc", "--ready", "up", "--timeout", "10", "--",
                        "sh", "-c", "echo up HOME=$HOME; id -G; echo groups-done; exec sleep 300"))
        assert _uid_of(pid) == uid
        _until(lambda: "groups-done" in (inst / "proc" / "svc.log").read_text())
        log = (inst / "proc" / "svc.log").read_text()
        assert f"HOME={inst}" in log and log.split("\n")[1].split() == [str(pwd.getpwnam(user).pw_gid)]
        assert (inst / "proc" / "svc.pid").stat().st_uid == uid
        agent("stop", *me, str(inst / "proc"), "svc", "--grace", "5")
        assert not alive(pid)

        # a job's directory, made by the engine (root), is given to the user; its output is the user's
        job = inst / "jobs" / "j1"
        job.mkdir(parents=True)
        (job / "main.sh").write_text("id -u; cat main.sh >/dev/null && echo read")
        (job / "main.sh").chmod(0o600)
        agent("run", *me, str(job), "--", "sh", "main.sh")
        status = json.loads(agent("wait", *me, str(job), "10"))
        assert status["done"] and status["rc"] == 0, (job / "stderr").read_text()
        assert (job / "stdout").read_text() == f"{uid}\nread\n"
        assert all(p.stat().st_uid == uid for p in [job, *job.iterdir()])
    finally:
        agent("stop-all", *me, str(inst / "proc"), "--grace", "1")


@as_root
def test_a_pid_file_the_user_rewrote_cannot_aim_the_agent_at_others(users: list[str], base: Path) -> None:
    user = users[0]
    inst = base / "c" / "i"
    agent("prepare", str(inst), user, "k")
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)  # root's, in a group of its own
    try:
        (inst / "proc" / "svc.pid").write_text(str(victim.pid))
        agent("stop", "--user", user, str(inst / "proc"), "svc", "--grace", "5")
        r = run_agent("signal", "--user", user, str(inst / "proc"), "STOP")
        assert victim.poll() is None and _state(victim.pid) != "T", r.stdout
    finally:
        victim.kill()
        victim.wait()


@as_root
def test_commands_for_a_user_that_is_gone_and_names_that_are_refused(users: list[str], base: Path) -> None:
    gone = users[1]
    assert agent("stop-all", "--user", gone, str(base / "x")) == ""
    assert json.loads(agent("wait", "--user", gone, str(base / "x"), "1"))["lost"]
    assert json.loads(agent("signal", "--user", gone, str(base / "x"), "STOP")) == {"running": False}
    assert run_agent("start", "--user", gone, str(base / "x"), "svc", "--", "true").returncode != 0
    for name in ("root", "oasis-../x", "daemon"):
        r = run_agent("prepare", str(base / "c" / "i"), name, "k")
        assert r.returncode != 0 and "not a project user name" in r.stderr
        assert run_agent("start", "--user", name, str(base), "svc", "--", "true").returncode != 0
    assert run_agent("prepare", str(base / "c" / "i"), users[0], "../k").returncode != 0


@as_root
def test_prepare_says_which_directory_a_user_cannot_pass(users: list[str], tmp_path: Path) -> None:
    # pytest's own temporary directories are 0700: project users cannot reach an instance under them
    r = run_agent("prepare", str(tmp_path / "base" / "c" / "i"), users[0], "k")
    assert r.returncode != 0 and "cannot reach their instance directories" in r.stderr and "chmod o+x" in r.stderr
    assert users[0] not in project_users() and not (USERS_DIR / users[0]).exists()  # nothing was made


def test_put_with_an_owner_gives_the_file_before_it_has_its_name(tmp_path: Path) -> None:
    import asyncio

    from oasis.remote.local import LocalRemote

    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    target = tmp_path / "inst" / "conf" / "a.conf"
    asyncio.run(LocalRemote().put(str(target), b"x", 0o600, (4242, 4343)))
    for p in (target, target.parent, target.parent.parent):
        assert (p.stat().st_uid, p.stat().st_gid) == (4242, 4343)
    assert target.stat().st_mode & 0o777 == 0o600


def test_local_get_does_not_follow_a_planted_link(tmp_path: Path) -> None:
    import asyncio

    from oasis.remote.base import RemoteError
    from oasis.remote.local import LocalRemote

    (tmp_path / "secret").write_text("s3cret")
    (tmp_path / "stdout").symlink_to(tmp_path / "secret")
    with pytest.raises(RemoteError):
        asyncio.run(LocalRemote().get(str(tmp_path / "stdout")))
