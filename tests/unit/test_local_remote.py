"""The local remote's command runner, where its edge cases are: a command cancelled just as it ended."""
from __future__ import annotations

import asyncio

import pytest

from oasis.remote import local
from oasis.remote.local import LocalRemote


def test_a_command_cancelled_after_it_ended_is_cancelled_not_a_lookup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine cancels a job's wait (a cancel took over the job) at the moment the agent's process exits: the
    wait must end as cancelled, never as ProcessLookupError (which the engine takes for a bug of its own)."""
    real_wait_for = asyncio.wait_for

    async def ended_then_cancelled(awaitable, timeout):  # noqa: ANN001, ANN202
        await real_wait_for(awaitable, timeout)  # the process has exited and been reaped
        raise asyncio.CancelledError

    monkeypatch.setattr(local.asyncio, "wait_for", ended_then_cancelled)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(LocalRemote().run(["true"]))
