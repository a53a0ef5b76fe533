"""Calls to oasis-agent (remote/agent.py) on a host, through any Remote."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import posixpath
from pathlib import Path
from typing import Any

from oasis.remote.agent_session import AgentMissing, AgentSession, SessionUnavailable
from oasis.remote.base import CommandFailed, Remote, RemoteError, Unreachable, quote

AGENT_SOURCE = Path(__file__).with_name("agent.py")
AGENT_CODE = AGENT_SOURCE.read_bytes()
# Installed under a name of its own version: a new oasis never rewrites the agent that an older one (or a command
# of its own still running) uses, and a host that has this name has this agent.
AGENT_NAME = f"oasis-agent-{hashlib.sha256(AGENT_CODE).hexdigest()[:12]}.py"


class ProcessNotReady(RemoteError):
    pass


def _env_args(env: dict[str, str]) -> list[str]:
    return [a for k, v in env.items() for a in ("--env", f"{k}={v}")]


def owner_ids(owner: dict[str, Any] | None) -> tuple[int, int] | None:
    """(uid, gid) of an instance's recorded owner ({"name", "uid", "gid"}), for `Remote.put`."""
    return (int(owner["uid"]), int(owner["gid"])) if owner else None


class Agent:
    def __init__(self, remote: Remote, python: str, path: str, install_lock: asyncio.Lock | None = None,
                 owner: dict[str, Any] | None = None, home: str | None = None,
                 session: AgentSession | None = None) -> None:
        """`install_lock`: shared by every Agent of one host and path (Remotes hands them out), so that the
        clusters of one engine install a host's agent one at a time, and all but the first find it there.
        `owner`: the instance's Unix user ({"name", "uid", "gid"}), and `home` its directory: daemons and jobs
        are started, stopped and watched as that user (None: as the agent's own user). `session`: the host's
        long-lived agent session, which carries every call (None, or where it cannot be opened: a process per
        call)."""
        self.remote, self.python, self.path, self.session = remote, python, path, session
        self._install_lock = install_lock or asyncio.Lock()
        self.owner, self.home = owner, home

    @property
    def owner_ids(self) -> tuple[int, int] | None:
        return owner_ids(self.owner)

    def _as(self) -> list[str]:
        if not self.owner:
            return []
        return ["--user", str(self.owner["name"]), *(["--home", self.home] if self.home else [])]

    async def install(self) -> None:
        async with self._install_lock:
            try:
                if await self.remote.get(self.path) == AGENT_CODE:
                    return
            except Unreachable:
                raise
            except RemoteError:  # not there yet
                pass
            await self.remote.put(self.path, AGENT_CODE, 0o755)

    async def _call(self, *args: str, timeout: float | None = 120, stdin: str | None = None) -> str:
        # -S: no site-packages to scan; the agent needs only the standard library, and starts faster
        argv = [self.python, "-S", self.path, *args]
        if self.session is not None:
            try:
                return await self._session_call(argv, list(args), timeout, stdin)
            except SessionUnavailable:
                pass  # this host cannot keep a session: one process per call, as before
        data = stdin.encode() if stdin is not None else None
        try:
            return (await self.remote.run(argv, timeout=timeout, stdin=data)).stdout
        except CommandFailed as e:
            if e.result.rc != 2 or "can't open file" not in e.result.stderr:
                raise
        # This version of the agent is not on the host yet (oasis was upgraded while the cluster ran): the
        # command had not started, so it is safe to install and run it now.
        await self.install()
        return (await self.remote.run(argv, timeout=timeout, stdin=data)).stdout

    async def _session_call(self, argv: list[str], args: list[str], timeout: float | None,
                            stdin: str | None) -> str:
        assert self.session is not None
        hold = getattr(self.remote, "hold", None)  # the concurrency limits (remote/limits.py) count each call

        async def call() -> Any:
            return await (hold(self.session.call(args, timeout, stdin)) if hold else self.session.call(
                args, timeout, stdin))

        try:
            result = await call()
        except AgentMissing:
            await self.install()  # as below: nothing had started
            result = await call()
        if result.rc != 0:
            raise CommandFailed(quote(argv), result)
        return result.stdout

    async def start(self, d: str, name: str, argv: list[str], env: dict[str, str], ready: str | None = None,
                    timeout: float = 120, fail: tuple[str, ...] = ()) -> int:
        """Start a daemon unless it runs; with `ready`, return once that pattern is in its log, and fail as
        soon as the daemon exits or a `fail` pattern is in its log (the error carries those lines)."""
        wait = ["--ready", ready, *(a for f in fail for a in ("--fail", f)), "--timeout", str(timeout)] if ready else []
        try:
            out = await self._call("start", *self._as(), d, name, *_env_args(env), *wait, "--", *argv,
                                   timeout=timeout + 30)
        except CommandFailed as e:
            raise ProcessNotReady(e.result.stderr.strip() or str(e)) from None
        return int(out.split()[0])

    async def stop(self, d: str, name: str, grace: float = 10) -> None:
        await self._call("stop", *self._as(), d, name, "--grace", str(grace), timeout=grace + 60)

    async def stop_all(self, d: str, grace: float = 10) -> None:
        await self._call("stop-all", *self._as(), d, "--grace", str(grace), timeout=grace + 120)

    async def run_job(self, d: str, argv: list[str], env: dict[str, str]) -> int:
        return int(await self._call("run", *self._as(), d, *_env_args(env), "--", *argv) or 0)

    async def wait_job(self, d: str, timeout: float, offsets: dict[str, int] | None = None,
                       limit: int | None = None) -> dict[str, Any]:
        """The job's status once it ended or after `timeout` s. With `offsets` ({"stdout": n, "stderr": m}), also
        as soon as a stream grew beyond its offset, with the new bytes under "logs" ({stream: {"from", "data",
        "size"}}, `data` bytes, at most `limit` of each)."""
        follow = ["--from", str(offsets.get("stdout", 0)), str(offsets.get("stderr", 0))] if offsets else []
        if offsets and limit:
            follow += ["--max", str(limit)]
        out = json.loads(await self._call("wait", *self._as(), d, str(timeout), *follow, timeout=timeout + 60))
        for piece in (out.get("logs") or {}).values():
            piece["data"] = base64.b64decode(piece.get("data") or "")
        return out

    async def cancel_job(self, d: str, grace: float = 5) -> None:
        await self._call("cancel", *self._as(), d, "--grace", str(grace), timeout=grace + 60)

    async def signal_job(self, d: str, sig: str) -> bool:
        """Send STOP (suspend) or CONT (resume) to a job's process group; False if the job is no longer running."""
        return bool(json.loads(await self._call("signal", *self._as(), d, sig)).get("running"))

    async def prepare(self, d: str, user: str, key: str) -> dict[str, Any] | None:
        """Make an instance's directory and its procdir, owned by `user` of the cluster's project (made on the
        project's first instance of the machine); the owner to record, or None where the host cannot switch
        users (the agent's user then runs the instance)."""
        return json.loads(await self._call("prepare", d, user, key))

    async def provision(self, d: str, user: str, key: str, address: str, ports: list[int],
                        volumes: tuple[dict[str, Any], int, list[str]] | None = None) -> dict[str, Any]:
        """An instance's whole spawn in one call: `prepare`, then which of `ports` are held on `address` (if any
        are, nothing further is done: {"busy": [...]}), then its `volumes` ((the host's backend, size in GB,
        mount points inside `d`)). Returns {"owner", "busy", "volumes", "done": [the parts done]}. Idempotent."""
        spec: dict[str, Any] = {"dir": d, "user": user, "key": key, "address": address, "ports": ports}
        if volumes is not None:
            backend, size_gb, mounts = volumes
            spec["volumes"] = {"backend": backend["backend"], "where": backend["dir"], "size_gb": size_gb,
                               "mounts": [posixpath.relpath(m, d) for m in mounts]}
        # formatting takes a moment per volume; the agent does them one after another
        timeout = 120 + 60 * len(volumes[2] if volumes else [])
        return json.loads(await self._call("provision", stdin=json.dumps(spec), timeout=timeout))

    async def is_dir(self, d: str, timeout: float = 60) -> None:
        """Fails (CommandFailed) unless `d` is a directory on the host."""
        await self._call("is-dir", d, timeout=timeout)

    async def release(self, d: str, user: str, key: str) -> None:
        """Remove an instance's directory and its reference to `user` (deleted with its last). Idempotent."""
        await self._call("release", d, user, key)

    async def volumes_up(self, backend: dict[str, Any], key: str, size_gb: int, d: str, user: str,
                         mounts: list[str]) -> list[dict[str, str]]:
        """Give instance `key` (directory `d`, of Unix user `user`) one volume of `size_gb` GB per mount point
        (absolute, inside `d`), from the host's volume `backend` ({backend, dir, ...}); makes only what is missing.
        Returns [{name, device, mount}]."""
        relative = [posixpath.relpath(m, d) for m in mounts]
        # formatting takes a moment per volume; the agent does them one after another
        return json.loads(await self._call("volumes-up", backend["backend"], backend["dir"], key, str(size_gb), d,
                                           user, *relative, timeout=120 + 60 * len(mounts)))

    async def volumes_down(self, backend: dict[str, Any], key: str) -> None:
        """Unmount and remove every volume of instance `key` on the host, found by name. Idempotent."""
        await self._call("volumes-down", backend["backend"], backend["dir"], key)

    async def busy_ports(self, address: str, ports: list[int]) -> list[int]:
        if not ports:
            return []
        return json.loads(await self._call("busy-ports", address, *map(str, ports)))

    async def authorize(self, authorized_keys: str, keyline: str) -> None:
        await self._call("authorize", authorized_keys, keyline)

    async def unauthorize(self, authorized_keys: str, mark: str) -> None:
        await self._call("unauthorize", authorized_keys, mark)
