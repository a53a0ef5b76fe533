"""From a host row to a way of reaching it, as DESIGN.md's "Reaching instances" says: the floating address
where the site uses them and the host has one, else the fixed address on the management network; through the
site's gateway host or its proxy command when the controller has no route; through a cluster's proxy gateway
node when it has one. One pooled Remote per route, reused by every operation of an engine."""
from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from oasis.db.models import Host, Site
from oasis.remote.agent_client import AGENT_NAME, Agent
from oasis.remote.agent_session import AgentSession
from oasis.remote.base import Remote
from oasis.remote.limits import OVERALL, PER_CLUSTER, Limited
from oasis.remote.local import LocalRemote
from oasis.remote.ssh import SshRemote, SshTarget


@dataclass(frozen=True)
class Context:
    """What a proxy command template may name besides the address: the cluster's project and network."""

    tenant_id: str = ""
    network_id: str = ""


def management_address(host: Host, site: Site | None) -> str:
    floating = (host.spec or {}).get("floating_address")
    if site is not None and floating and site.spec.get("use_floating_ips"):
        return floating
    return host.address


def project_user(project_id: str) -> str:
    """The Unix user a project's instances run as on a host: `oasis-` and 12 hex digits of the project id (of
    its hash when the id is not hex), a valid system user name on every Linux (at most 32 characters)."""
    digits = project_id.replace("-", "").lower()
    if not re.fullmatch(r"[0-9a-f]{12,}", digits):
        digits = hashlib.sha256(project_id.encode()).hexdigest()
    return f"oasis-{digits[:12]}"


class Remotes:
    def __init__(self, overall: int = OVERALL, per_cluster: int = PER_CLUSTER) -> None:
        self._remotes: dict[tuple, Remote] = {}
        self._overall = asyncio.Semaphore(overall)
        self._per_cluster_size = per_cluster
        self._per_cluster: dict[str, asyncio.Semaphore] = {}
        self._installs: dict[tuple[str, str], asyncio.Lock] = {}
        self._sessions: dict[tuple, AgentSession] = {}

    def for_host(self, host: Host, site: Site | None = None, via: Remote | None = None,
                 context: Context = Context(), client_key: str | None = None) -> Remote:
        """`client_key`: a cluster's own key, for its instances; the site's key (host enrollment) otherwise."""
        if host.access == "local":
            return self._pooled(("local", host.id), lambda: LocalRemote(host.address))
        if site is None:
            raise ValueError(f"host {host.name}: reaching it over SSH needs its site")
        # Through a cluster's proxy gateway, the fixed address is used: only the gateway needs to be reachable.
        address = host.address if via is not None else management_address(host, site)
        spec, access = host.spec, site.spec.get("access", "direct")
        key = client_key or site.secrets["ssh_private_key"]
        target = SshTarget(address=address, host_key=spec["host_key"], client_key=key,
                           username=spec.get("ssh_user", "root"), port=int(spec.get("ssh_port", 22)), label=host.name)
        gateway = via
        if via is None and address == host.address:  # a floating address is reached directly
            if access == "gateway":
                gateway = self._site_gateway(site)
            elif access == "proxy_command":
                target.proxy_command = site.spec["proxy_command"].format(
                    host=address, port=target.port, tenant_id=context.tenant_id, network_id=context.network_id,
                    site=site.name)
        pool_key = ("ssh", host.id, address, id(gateway) if gateway else None, target.proxy_command, hash(key))
        return self._pooled(pool_key, lambda: SshRemote(target, gateway))

    def limited(self, remote: Remote, cluster_id: str) -> Remote:
        """The same remote, counted against the overall limit and the cluster's own."""
        sem = self._per_cluster.setdefault(cluster_id, asyncio.Semaphore(self._per_cluster_size))
        return Limited(remote, sem, self._overall)

    def _site_gateway(self, site: Site) -> Remote:
        gw = site.spec["gateway"]
        target = SshTarget(address=gw["address"], host_key=gw["host_key"], client_key=site.secrets["ssh_private_key"],
                           username=gw.get("ssh_user", "root"), port=int(gw.get("ssh_port", 22)),
                           label=f"{site.name} gateway")
        return self._pooled(("gateway", site.id, gw["address"]), lambda: SshRemote(target))

    def _pooled(self, key: tuple, make) -> Remote:  # type: ignore[no-untyped-def]
        remote = self._remotes.get(key)
        if remote is None:
            remote = self._remotes[key] = make()
        return remote

    def agent(self, remote: Remote, host: Host, python: str, owner: dict[str, Any] | None = None,
              home: str | None = None) -> Agent:
        """`owner` (an instance's recorded Unix user) and `home` (its directory): the agent starts, stops and
        watches that instance's daemons and jobs as that user."""
        path = f"{host.base_dir}/{AGENT_NAME}"
        # keyed by address and path, not by remote: several routes (site key, cluster key) lead to one host
        lock = self._installs.setdefault((remote.address, path), asyncio.Lock())
        return Agent(remote, python, path, lock, owner, home, self.session(remote, path, python))

    def session(self, remote: Remote, path: str, python: str) -> AgentSession:
        """The agent session of one route to a host (its pooled remote, whatever limits wrap it), agent path and
        Python: one per route, not per host, so that work done with a cluster's key keeps to that key."""
        base = getattr(remote, "remote", remote)  # a Limited remote: the session is its remote's
        key = (id(base), path, python)
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = AgentSession(base, python, path)
        return session

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
        for remote in self._remotes.values():
            close = getattr(remote, "close", None)
            if close is not None:
                await close()
        self._remotes.clear()
