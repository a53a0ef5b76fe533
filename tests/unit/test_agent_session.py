"""oasis-agent's serve mode and AgentSession: many calls over one long-lived process, multiplexed by id."""
from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from oasis.remote.agent_client import Agent
from oasis.remote.agent_session import AgentSession, frame
from oasis.remote.base import CommandFailed, RemoteError
from oasis.remote.local import LocalRemote
from tests.project_users import project_users, remove_user

AGENT = str(Path(__file__).parents[2] / "oasis" / "remote" / "agent.py")


class CountingRemote(LocalRemote):
    """A local remote that counts the processes it starts: commands and channels."""

    def __init__(self) -> None:
        super().__init__()
        self.runs = self.channels = 0

    async def run(self, argv, **kw):  # type: ignore[no-untyped-def]
        self.runs += 1
        return await super().run(argv, **kw)

    async def open_channel(self, argv):  # type: ignore[no-untyped-def]
        self.channels += 1
        return await super().open_channel(argv)


def _serve() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-S", AGENT, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def _read(p: subprocess.Popen) -> dict:
    size = int(p.stdout.readline())
    return json.loads(p.stdout.read(size))


def test_serve_answers_framed_requests_in_the_order_they_end(tmp_path: Path) -> None:
    p = _serve()
    try:
        hello = _read(p)
        assert hello["serve"] == 1 and hello["pid"] == p.pid
        (tmp_path / "x.pid").write_text(str(os.getpid()))  # a daemon "x" that is alive: wait-log waits on it
        # a slow call first, a quick one after: the quick one is answered first, both on one stream
        p.stdin.write(frame({"id": 1, "argv": ["wait-log", str(tmp_path), "x", "never", "1.5"]}))
        p.stdin.write(frame({"id": 2, "argv": ["busy-ports", "127.0.0.1", "1"]}))
        p.stdin.write(frame({"id": 3, "argv": ["no-such-command", "a"]}))
        p.stdin.write(frame({"id": 4, "argv": ["prepare", str(tmp_path / "i"), "root", "k"]}))  # refused name
        p.stdin.flush()
        answers = [_read(p) for _ in range(4)]
        assert [a["id"] for a in answers][-1] == 1
        by_id = {a["id"]: a for a in answers}
        assert by_id[2] == {"id": 2, "rc": 0, "stdout": "[]\n", "stderr": ""}
        assert by_id[3]["rc"] == 2 and "oasis-agent" in by_id[3]["stderr"]
        assert by_id[4]["rc"] == 1 and "not a project user name" in by_id[4]["stderr"]  # SystemExit("…")
        assert by_id[1]["rc"] == 4 and "not ready" in by_id[1]["stderr"]
        # a frame split anywhere is put together again
        data = frame({"id": 5, "argv": ["busy-ports", "127.0.0.1", "2"]})
        for i in range(0, len(data), 3):
            p.stdin.write(data[i:i + 3])
            p.stdin.flush()
        assert _read(p)["id"] == 5
        # a call that is killed answers with its signal
        p.stdin.write(frame({"id": 6, "argv": ["wait-log", str(tmp_path), "x", "never", "60"]}))
        p.stdin.write(frame({"id": 6, "kill": True}))
        p.stdin.flush()
        assert _read(p) == {"id": 6, "rc": -signal.SIGKILL, "stdout": "", "stderr": ""}
    finally:
        p.stdin.close()
        assert p.wait(10) == 0  # the end of its input ends the session


def test_a_session_carries_every_call_in_one_process(tmp_path: Path) -> None:
    remote = CountingRemote()
    session = AgentSession(remote, sys.executable, AGENT)
    agent = Agent(remote, sys.executable, AGENT, session=session)

    async def main() -> None:
        d = str(tmp_path / "proc")
        pid = await agent.start(d, "svc", ["sh", "-c", "echo up; exec sleep 60"], {}, ready="up", timeout=10)
        try:
            # twenty calls at once: each answered with its own result
            results = await asyncio.gather(*(agent.busy_ports("127.0.0.1", [p]) for p in range(1, 21)))
            assert results == [[]] * 20
            assert await agent.start(d, "svc", ["false"], {}) == pid  # idempotent as ever
            with pytest.raises(CommandFailed) as e:
                await agent._call("signal", str(tmp_path), "KILL")
            assert e.value.result.rc == 2 and "STOP or CONT" in e.value.result.stderr
        finally:
            await agent.stop(d, "svc", grace=5)
        assert remote.channels == 1 and remote.runs == 0 and session.opened == 1
        await session.close()

    asyncio.run(main())


def test_a_dead_session_is_reopened_and_the_call_sent_again(tmp_path: Path) -> None:
    remote = CountingRemote()
    session = AgentSession(remote, sys.executable, AGENT)
    agent = Agent(remote, sys.executable, AGENT, session=session)

    async def main() -> None:
        assert await agent.busy_ports("127.0.0.1", [1]) == []
        first = session.server_pid
        (tmp_path / "x.pid").write_text(str(os.getpid()))
        # a call in flight when the serve process dies: sent again on a new session, and answered there
        waiting = asyncio.ensure_future(agent._call("wait-log", str(tmp_path), "x", "ready", "20"))
        await asyncio.sleep(0)  # the request is out
        os.kill(first, signal.SIGKILL)
        await asyncio.sleep(0.3)
        (tmp_path / "x.log").write_text("ready\n")
        assert await asyncio.wait_for(waiting, 30) == ""
        assert session.server_pid != first and session.opened == 2 and remote.channels == 2
        await session.close()

    asyncio.run(main())


def test_a_call_times_out_alone_and_its_child_is_killed(tmp_path: Path) -> None:
    remote = CountingRemote()
    session = AgentSession(remote, sys.executable, AGENT)

    async def main() -> None:
        (tmp_path / "x.pid").write_text(str(os.getpid()))
        with pytest.raises(RemoteError, match="timed out"):
            await session.call(["wait-log", str(tmp_path), "x", "never", "60"], timeout=0.5)
        # the session lives on
        assert (await session.call(["busy-ports", "127.0.0.1", "1"], timeout=10)).stdout == "[]\n"
        server = session.server_pid
        children = subprocess.run(["pgrep", "-P", str(server)], capture_output=True, text=True).stdout.split()
        assert children == []  # the timed-out call's child is gone
        await session.close()

    asyncio.run(main())


def test_an_agent_missing_from_the_host_is_installed_and_a_remote_without_sessions_is_called_per_process(
        tmp_path: Path) -> None:
    path = str(tmp_path / "agent.py")
    remote = CountingRemote()
    session = AgentSession(remote, sys.executable, path)
    agent = Agent(remote, sys.executable, path, session=session)

    class Plain:  # a remote that runs commands only (as some tests' fakes)
        address = "127.0.0.1"

        def __init__(self) -> None:
            self.local = LocalRemote()

        async def run(self, argv, **kw):  # type: ignore[no-untyped-def]
            return await self.local.run(argv, **kw)

    async def main() -> None:
        assert await agent.busy_ports("127.0.0.1", [1]) == []  # installed on first use, then served
        assert Path(path).exists() and session.opened == 1
        await session.close()
        plain = Plain()
        per_call = Agent(plain, sys.executable, AGENT, session=AgentSession(plain, sys.executable, AGENT))
        assert await per_call.busy_ports("127.0.0.1", [1]) == []

    asyncio.run(main())


as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root (CI runs as root)")


@as_root
def test_a_call_as_the_instance_user_switches_in_its_child_only(tmp_path: Path) -> None:
    import shutil
    import tempfile

    user = f"oasis-t{uuid.uuid4().hex[:10]}"
    base = Path(tempfile.mkdtemp(prefix="oasis-session-test-"))
    base.chmod(0o755)
    inst = base / "c" / "i"
    remote = LocalRemote()
    session = AgentSession(remote, sys.executable, AGENT)

    async def main() -> None:
        root_agent = Agent(remote, sys.executable, AGENT, session=session)
        owner = await root_agent.prepare(str(inst), user, "k")
        agent = Agent(remote, sys.executable, AGENT, owner=owner, home=str(inst), session=session)
        pid = await agent.start(str(inst / "proc"), "svc", ["sh", "-c", "echo up; exec sleep 60"], {},
                                ready="up", timeout=10)
        uid = pwd.getpwnam(user).pw_uid
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        assert int(status["Uid"].split()[0]) == uid
        # the session itself is still root's: a call without a user is made as root, after one with a user
        serve = dict(line.split(":", 1) for line in Path(f"/proc/{session.server_pid}/status").read_text()
                     .splitlines())
        assert int(serve["Uid"].split()[0]) == 0
        assert await root_agent.prepare(str(inst), user, "k") == owner  # needs root (the users' records)
        # a pid file the user rewrote still cannot aim a call at root's processes
        victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
        try:
            (inst / "proc" / "svc.pid").write_text(str(victim.pid))
            await agent.stop(str(inst / "proc"), "svc", grace=2)
            assert victim.poll() is None
        finally:
            victim.kill()
            victim.wait()
        os.kill(pid, signal.SIGKILL)
        await root_agent.release(str(inst), user, "k")
        await session.close()

    try:
        asyncio.run(main())
    finally:
        for name, uid in project_users().items():
            if name == user:
                remove_user(name, uid)
        shutil.rmtree(base, ignore_errors=True)


def test_provision_is_one_call_that_says_what_it_did_and_stops_at_held_ports(tmp_path: Path) -> None:
    import socket
    import shutil
    import tempfile

    user = f"oasis-t{uuid.uuid4().hex[:10]}"
    base = Path(tempfile.mkdtemp(prefix="oasis-provision-test-"))
    base.chmod(0o755)
    inst = base / "c" / "i"
    remote = CountingRemote()
    session = AgentSession(remote, sys.executable, AGENT)
    agent = Agent(remote, sys.executable, AGENT, session=session)
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    taken = held.getsockname()[1]

    async def main() -> None:
        out = await agent.provision(str(inst), user, "k", "127.0.0.1", [taken])
        assert out["busy"] == [taken] and out["done"] == ["prepare"]  # stopped before anything else
        again = await agent.provision(str(inst), user, "k", "127.0.0.1", [])  # the same call again: no harm
        assert again["done"] == ["prepare", "ports"] and again["owner"] == out["owner"]
        assert (inst / "proc").is_dir()
        if os.geteuid() == 0:
            assert again["owner"]["name"] == user and (inst / "proc").stat().st_uid == again["owner"]["uid"]
        await agent.is_dir(str(inst / "proc"))
        with pytest.raises(CommandFailed, match="no such directory"):
            await agent.is_dir(str(inst / "nowhere"))
        await agent.release(str(inst), user, "k")
        assert remote.runs == 0 and remote.channels == 1
        await session.close()

    try:
        asyncio.run(main())
    finally:
        held.close()
        for name, uid in project_users().items():
            if name == user:
                remove_user(name, uid)
        shutil.rmtree(base, ignore_errors=True)
