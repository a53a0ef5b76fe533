"""AgentSession: one long-lived `oasis-agent serve` per host route, carrying every agent call as a framed request
over one channel (the way mitogen serves Ansible): a call costs a fork on the host, not an SSH channel and a
Python start. Calls are multiplexed by id and answered as they end; a session that dies is reopened and its
calls sent again (every agent command is idempotent)."""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from typing import Any

from oasis.remote.base import Channel, Remote, RemoteError, Result, Unreachable

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 30.0
RETRY_AFTER = 60.0  # a host where a session could not be opened is called one process per call this long


class SessionUnavailable(RemoteError):
    """No session could be opened on the host (its Python cannot run `serve`): calls go one process each."""


class AgentMissing(SessionUnavailable):
    """The agent of this version is not on the host: install it, then open the session again."""


class SessionLost(RemoteError):
    """The session's channel ended while calls were in flight."""


def frame(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj).encode()
    return b"%d\n" % len(data) + data


async def read_frame(reader: Any) -> dict[str, Any] | None:
    """The next frame from `reader`, or None at the end of the stream."""
    head = await reader.readline()
    if not head:
        return None
    try:
        size = int(head)
    except ValueError:
        raise SessionLost(f"not a frame: {head[:200]!r}") from None
    return json.loads(await reader.readexactly(size))


class AgentSession:
    def __init__(self, remote: Remote, python: str, path: str) -> None:
        self.remote, self.python, self.path = remote, python, path
        self.name = getattr(remote, "name", remote.address)
        self.server_pid: int | None = None  # the serve process on the host (from its hello)
        self.opened = 0  # how many times a channel was opened (a lab test counts them)
        self._channel: Channel | None = None
        self._reader: asyncio.Task | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self._unavailable_until = 0.0

    @property
    def argv(self) -> list[str]:
        # -S: no site-packages to scan; the agent needs only the standard library, and starts faster
        return [self.python, "-S", self.path, "serve"]

    async def call(self, argv: list[str], timeout: float | None, stdin: str | None = None) -> Result:
        """Run one agent command (`argv`: its name and arguments) through the session; its Result, whatever its
        exit code. Raises SessionUnavailable where no session can be had (the caller runs a process instead)."""
        for attempt in (1, 2):
            channel = await self._open()
            cid = next(self._ids)
            answer: asyncio.Future = asyncio.get_running_loop().create_future()
            self._pending[cid] = answer
            try:
                request: dict[str, Any] = {"id": cid, "argv": argv}
                if stdin is not None:
                    request["stdin"] = stdin
                try:
                    channel.writer.write(frame(request))
                    await channel.writer.drain()
                except Exception as e:  # noqa: BLE001 - any failure to write is the channel's end
                    self._lost(channel, f"cannot send: {e}")
                    raise SessionLost(str(e)) from e
                try:
                    msg = await asyncio.wait_for(answer, timeout)
                except asyncio.TimeoutError:
                    await self._kill(channel, cid)
                    raise RemoteError(f"{self.name}: timed out after {timeout}s: oasis-agent {' '.join(argv)[:200]}"
                                      ) from None
                except asyncio.CancelledError:
                    await self._kill(channel, cid)
                    raise
                return Result(int(msg.get("rc", -1)), str(msg.get("stdout") or ""), str(msg.get("stderr") or ""))
            except SessionLost as e:
                if attempt == 2:
                    raise RemoteError(f"{self.name}: agent session lost twice: {e}") from e
                log.info("%s: agent session lost (%s); reopening it", self.name, e)
            finally:
                self._pending.pop(cid, None)
        raise AssertionError("unreachable")

    async def _kill(self, channel: Channel, cid: int) -> None:
        """The caller gave up on a call: its child on the host is killed, as a timed-out process would be."""
        if channel is self._channel:
            try:
                channel.writer.write(frame({"id": cid, "kill": True}))
            except Exception:  # noqa: BLE001 - a channel that is gone has nothing to kill
                pass

    async def _open(self) -> Channel:
        async with self._lock:
            if self._channel is not None:
                return self._channel
            if time.monotonic() < self._unavailable_until:
                raise SessionUnavailable(f"{self.name}: no agent session (retried later)")
            open_channel = getattr(self.remote, "open_channel", None)
            if open_channel is None:  # a remote that can only run commands
                self._unavailable_until = float("inf")
                raise SessionUnavailable(f"{self.name}: this remote keeps no sessions")
            channel = await open_channel(self.argv)  # Unreachable propagates: the host is gone
            try:
                hello = await asyncio.wait_for(read_frame(channel.reader), HELLO_TIMEOUT)
            except (asyncio.TimeoutError, SessionLost, ValueError, asyncio.IncompleteReadError, OSError) as e:
                hello = None
                log.warning("%s: agent session did not start: %s", self.name, e)
            if not hello or not hello.get("serve"):
                errors = await _tail(channel)
                await channel.close()
                if "can't open file" in errors or "No such file" in errors:
                    raise AgentMissing(f"{self.name}: {self.path} is not there")
                self._unavailable_until = time.monotonic() + RETRY_AFTER
                log.warning("%s: no agent session, one process per call for %.0fs: %s", self.name, RETRY_AFTER,
                            errors.strip()[-500:])
                raise SessionUnavailable(f"{self.name}: agent session did not start: {errors.strip()[-500:]}")
            self.server_pid, self.opened = hello.get("pid"), self.opened + 1
            self._channel = channel
            self._reader = asyncio.ensure_future(self._read(channel))
            return channel

    async def _read(self, channel: Channel) -> None:
        reason = "the channel closed"
        try:
            while True:
                msg = await read_frame(channel.reader)
                if msg is None:
                    break
                waiter = self._pending.get(msg.get("id"))
                if waiter is not None and not waiter.done():
                    waiter.set_result(msg)
        except asyncio.CancelledError:
            reason = "closed"
            raise
        except Exception as e:  # noqa: BLE001 - whatever ends the stream ends the session
            reason = str(e) or type(e).__name__
        finally:
            self._lost(channel, reason)

    def _lost(self, channel: Channel, reason: str) -> None:
        if self._channel is not channel:
            return
        self._channel = None
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(SessionLost(reason))
        asyncio.ensure_future(channel.close())

    async def close(self) -> None:
        channel, reader = self._channel, self._reader
        if channel is None:
            return
        self._channel = self._reader = None
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(SessionLost("the session was closed"))
        if reader is not None:
            reader.cancel()
        await channel.close()


async def _tail(channel: Channel) -> str:
    """What a session that did not start said on stderr."""
    try:
        return (await asyncio.wait_for(channel.errors.read(65536), 5)).decode(errors="replace")
    except (asyncio.TimeoutError, OSError, Exception):  # noqa: BLE001
        return ""


__all__ = ["AgentMissing", "AgentSession", "SessionLost", "SessionUnavailable", "Unreachable"]
