"""Limits on concurrent remote work: at most so many commands at once over all hosts, and per cluster, so that a
large cluster cannot starve the others and no host is flooded (Sahara: 100 overall, 70 per cluster)."""
from __future__ import annotations

import asyncio

from oasis.remote.base import Channel, Remote, Result

OVERALL = 100
PER_CLUSTER = 70


class Limited:
    """A Remote whose calls each hold every one of `semaphores` while they run."""

    def __init__(self, remote: Remote, *semaphores: asyncio.Semaphore) -> None:
        self.remote, self.semaphores = remote, semaphores
        self.address = remote.address

    async def hold(self, call):  # type: ignore[no-untyped-def]
        """Await `call` holding the limits: work that reaches the host another way (an agent's session)."""
        return await self._hold(call)

    async def _hold(self, call):  # type: ignore[no-untyped-def]
        for sem in self.semaphores:
            await sem.acquire()
        try:
            return await call
        finally:
            for sem in reversed(self.semaphores):
                sem.release()

    async def run(self, argv: list[str], *, timeout: float | None = 300, check: bool = True,
                  stdin: bytes | None = None) -> Result:
        return await self._hold(self.remote.run(argv, timeout=timeout, check=check, stdin=stdin))

    async def put(self, path: str, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
        await self._hold(self.remote.put(path, data, mode, owner))

    async def get(self, path: str) -> bytes:
        return await self._hold(self.remote.get(path))

    async def http_get(self, port: int, path: str, timeout: float = 10) -> bytes:
        return await self._hold(self.remote.http_get(port, path, timeout))

    async def tunnel(self, address: str, port: int) -> tuple[str, int]:
        # not held: a tunnel lives as long as its streams, and a command slot would be taken for all that time
        return await self.remote.tunnel(address, port)

    async def open_channel(self, argv: list[str]) -> Channel:
        # not held: a session lives long and carries many calls, and each of those holds the limits itself
        return await self.remote.open_channel(argv)
