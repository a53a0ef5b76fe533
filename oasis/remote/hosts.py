"""From a host row to a way of reaching it. One Remote per host, reused by every operation of an engine."""
from __future__ import annotations

from oasis.db.models import Host
from oasis.remote.agent_client import Agent
from oasis.remote.base import Remote
from oasis.remote.local import LocalRemote

AGENT_NAME = "oasis-agent.py"


class Remotes:
    def __init__(self) -> None:
        self._remotes: dict[str, Remote] = {}

    def for_host(self, host: Host) -> Remote:
        remote = self._remotes.get(host.id)
        if remote is None:
            if host.access != "local":
                raise NotImplementedError(f"host {host.name}: access '{host.access}' is not supported yet")
            remote = self._remotes[host.id] = LocalRemote(host.address)
        return remote

    def agent(self, host: Host, python: str) -> Agent:
        return Agent(self.for_host(host), python, f"{host.base_dir}/{AGENT_NAME}")

    async def close(self) -> None:
        self._remotes.clear()
