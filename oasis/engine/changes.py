"""A broadcast of "some row changed" inside one engine: the machines' `on_change` (Engine.wake) fires it, and an
operation that waits on other rows (a workflow run on its steps' jobs and its cluster) wakes at once instead of at
its next poll. Only this engine's changes reach it; a change made by another engine or the API is seen at the
waiter's poll, which stays as the safety net."""
from __future__ import annotations

import asyncio


class Changes:
    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def notify(self) -> None:
        """Wake every waiter; call it on the engine's event loop (Engine.wake schedules it there)."""
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self, timeout: float) -> None:
        """Until the next change, or `timeout` seconds at most."""
        if self._event is None:
            self._event = asyncio.Event()
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            pass


async def sleep_only(timeout: float) -> None:
    """The waiter of a machine without a broadcast (a unit test's): the poll alone."""
    await asyncio.sleep(timeout)
