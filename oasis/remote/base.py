"""One way to reach a host: run a command, move a file, talk HTTP to a port. LocalRemote and SshRemote
implement it; plugins and EDP only ever see this interface."""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Protocol


class RemoteError(Exception):
    pass


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


class Remote(Protocol):
    address: str

    async def run(self, argv: list[str], *, timeout: float | None = 300, check: bool = True,
                  stdin: bytes | None = None) -> Result: ...

    async def put(self, path: str, data: bytes, mode: int = 0o644) -> None: ...

    async def get(self, path: str) -> bytes: ...

    async def http_get(self, port: int, path: str, timeout: float = 10) -> bytes: ...


def quote(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
