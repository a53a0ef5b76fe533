"""One way to reach a host: run a command, move a file, talk HTTP to a port. LocalRemote and SshRemote
implement it; plugins and EDP only ever see this interface."""
from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol


class RemoteError(Exception):
    pass


class Unreachable(RemoteError):
    """The host could not be reached (connection refused or timed out, its gateway or proxy down, the connection
    lost): a transport failure, not a command that ran and failed. The host may come back; callers may wait."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host}: unreachable ({reason})")
        self.host, self.reason = host, reason


def unreachable_in(error: BaseException | None) -> Unreachable | None:
    """The Unreachable that caused `error`, if any: plugins and agents may wrap it in their own errors."""
    seen = 0
    while error is not None and seen < 20:
        if isinstance(error, Unreachable):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


class CommandFailed(RemoteError):
    def __init__(self, command: str, result: "Result") -> None:
        self.result = result
        tail = (result.stderr or result.stdout).strip()[-2000:]
        super().__init__(f"command failed with exit code {result.rc}: {command}\n{tail}")


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str


@dataclass
class Channel:
    """A long-lived command on a host, talked to through its stdin and stdout (bytes): an agent's session.
    `writer` has write() and drain(), `reader` and `errors` (its stderr) readline() and readexactly();
    `close` ends it (its stdin first: the command sees the end of its input and leaves)."""

    writer: Any
    reader: Any
    errors: Any
    close: Callable[[], Awaitable[None]]


class Remote(Protocol):
    address: str

    async def run(self, argv: list[str], *, timeout: float | None = 300, check: bool = True,
                  stdin: bytes | None = None) -> Result: ...

    async def put(self, path: str, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
        """Write a whole file atomically, created with `mode`, and owned by `owner` (uid, gid) where given: the
        owner is set before the file takes its name, so no one else ever reads it there."""
        ...

    async def get(self, path: str) -> bytes: ...

    async def http_get(self, port: int, path: str, timeout: float = 10) -> bytes: ...

    async def tunnel(self, address: str, port: int) -> tuple[str, int]:
        """A (host, port) on this machine that reaches `address:port` as this host reaches it, for long-lived
        streams (the Spark Connect gateway's gRPC): the address itself on the local host, a forwarded port on
        loopback through the pooled SSH connection otherwise (made once, remade after the connection is lost)."""
        ...

    async def open_channel(self, argv: list[str]) -> Channel:
        """Start `argv` on the host for as long as the returned channel lives (one SSH channel, or a process)."""
        ...


def quote(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
