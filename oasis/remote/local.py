"""The `local` site's host: this machine, reached without SSH."""
from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import httpx

from oasis.remote.base import Channel, CommandFailed, RemoteError, Result, quote


class LocalRemote:
    def __init__(self, address: str = "127.0.0.1") -> None:
        self.address = address

    async def run(self, argv: list[str], *, timeout: float | None = 300, check: bool = True,
                  stdin: bytes | None = None) -> Result:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as e:  # no such program, or no process left: the host's failure, as on SSH
            raise RemoteError(f"cannot run {quote(argv)}: {e}") from e
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            try:
                proc.kill()
            except ProcessLookupError:  # it ended on its own meanwhile: the cancellation still goes on
                pass
            await proc.wait()
            raise
        result = Result(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and result.rc != 0:
            raise CommandFailed(quote(argv), result)
        return result

    async def put(self, path: str, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
        try:
            await asyncio.to_thread(_write_atomic, Path(path), data, mode, owner)
        except OSError as e:  # a full disk, a directory in the way: the host's failure, as on SSH
            raise RemoteError(f"cannot write {path}: {e}") from e

    async def get(self, path: str) -> bytes:
        try:
            return await asyncio.to_thread(_read_no_link, path)
        except OSError as e:
            raise RemoteError(str(e)) from e

    async def http_get(self, port: int, path: str, timeout: float = 10) -> bytes:
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                r = await client.get(f"http://{self.address}:{port}{path}")
                r.raise_for_status()
                return r.content
        except httpx.HTTPError as e:
            raise RemoteError(f"GET {path} on port {port}: {e}") from e

    async def tunnel(self, address: str, port: int) -> tuple[str, int]:
        return address, port


    async def open_channel(self, argv: list[str]) -> Channel:
        try:
            # answers may be large (a job's new log bytes): no line limit below what one may hold
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, limit=1 << 24, start_new_session=True)
        except OSError as e:
            raise RemoteError(f"cannot run {quote(argv)}: {e}") from e

        async def close() -> None:
            if proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except asyncio.TimeoutError:
                try:
                    proc.kill()
                except ProcessLookupError:
                    pass
                await proc.wait()

        return Channel(proc.stdin, proc.stdout, proc.stderr, close)


def _read_no_link(path: str) -> bytes:
    # Files read back from instances (job logs) are in directories their project user owns: a link planted
    # there in place of a log must not make this process (root, or the controller's user) read what it points to.
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
        return f.read()


def _make_parents(path: Path, owner: tuple[int, int] | None) -> None:
    """The missing parents of `path`; those made for an owner's file are the owner's too."""
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        if owner is not None:
            os.lchown(d, *owner)


def _write_atomic(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None = None) -> None:
    _make_parents(path, owner)
    # A name of this write's own: two puts of one path at once (two clusters installing a host's agent)
    # each rename a whole file of their own, and the last one wins.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    # created with its final mode: a private file (a job's access file) is never readable by others
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o777), "wb") as f:
            f.write(data)
            if owner is not None:  # before the rename: the file has the owner's name only once it is theirs
                os.fchown(f.fileno(), *owner)
        tmp.chmod(mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
