"""Waiting for hosts that cannot be reached (their site cut off: sshd down, gateway or proxy down), for the
operation machine (oasis/engine/machine.py): the capped backoff between attempts, the probe that tells "a host
is gone" from "a command failed", and the words the user sees while an operation waits."""
from __future__ import annotations

import asyncio
from datetime import datetime

from oasis.remote.base import Remote, Unreachable

BACKOFF_FIRST = 2.0  # seconds before the first retry: long enough for the failed attempt's siblings to settle
BACKOFF_CAP = 30.0
PROBE_TIMEOUT = 20.0


class Backoff:
    """Doubling pauses, from `first` up to `cap` seconds."""

    def __init__(self, first: float = BACKOFF_FIRST, cap: float = BACKOFF_CAP) -> None:
        self.next, self.cap = first, cap

    async def pause(self) -> None:
        await asyncio.sleep(self.next)
        self.next = min(self.next * 2, self.cap)


def waiting_message(site: str, host: str, since: datetime, reason: str) -> str:
    return f"Waiting for site {site}: host {host} unreachable since {since:%H:%M:%S} UTC ({reason}); retrying"


def since_of(record: dict | None, now: datetime) -> datetime:
    """When the wait recorded on an operation (`{"since": iso, ...}`) began; `now` if there is none."""
    try:
        return datetime.fromisoformat(str((record or {})["since"]))
    except (KeyError, ValueError):
        return now


async def probe(remotes: dict[str, Remote]) -> Unreachable | None:
    """Run `true` on each host (name -> Remote): the first host that cannot be reached, or None. A host that
    answers, even with an error, is reachable."""
    async def one(remote: Remote) -> None:
        await remote.run(["true"], timeout=PROBE_TIMEOUT, check=False)

    results = await asyncio.gather(*(one(r) for r in remotes.values()), return_exceptions=True)
    return next((r for r in results if isinstance(r, Unreachable)), None)
