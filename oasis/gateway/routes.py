"""Who may reach which cluster: a call's bearer token becomes a principal (the identity backend), and its
`x-oasis-cluster` header (a name or an id) a cluster of that principal's project, never another's: a cluster of
another project is "not found", exactly as one that does not exist. Both answers are kept for a few seconds
(TTL), so that a query's many RPCs do not each ask the database; a revoked token is refused within TTL. Answers
that calls used within the last KEEP_WARM seconds are checked again in the background every TTL/2
(Router.keep_warm), so a user's next session does not wait on the database either, and the bound holds."""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, TypeVar

import grpc
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from oasis.db.models import Cluster, Host, Instance, NodeGroup
from oasis.db.session import Database
from oasis.db.states import CONNECT_STARTED, ClusterStatus
from oasis.engine.views import host_remotes
from oasis.identity.base import Identity
from oasis.identity.policy import Forbidden, Policy
from oasis.identity.principal import Principal
from oasis.plugins.base import ClusterView
from oasis.plugins.spark import CONNECT_CONFIG, CONNECT_PORT, CONNECT_TOKEN, ConnectMode, connect_enabled, connect_mode
from oasis.remote.base import Remote
from oasis.remote.hosts import Remotes

log = logging.getLogger(__name__)
T = TypeVar("T")
AUTHORIZATION = "authorization"
CLUSTER = "x-oasis-cluster"
MAX_REF = 255  # a cluster's id is 36 characters, its name at most 80: anything longer names none
TTL = 5.0
KEEP_WARM = 60.0  # answers used within this long are checked again before they expire (Router.keep_warm)
ACTION = "cluster:connect:execute"  # the policy rule (oasis/identity/rules.py): a member's by default
# The statuses in which a cluster's master (and so its Connect server) runs; others are refused up front.
SERVING = (ClusterStatus.ACTIVE, ClusterStatus.DECOMMISSIONING, ClusterStatus.SCALING_SPAWNING,
           ClusterStatus.SCALING_WAITING, ClusterStatus.SCALING_PREPARING)


class Refused(Exception):
    """A call the gateway does not forward: the status code and a message safe to show the caller."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Route:
    cluster_id: str
    remote: Remote = field(repr=False, compare=False)
    address: str  # the Connect server's, as the master's host reaches it
    port: int
    token: str = field(repr=False)  # the server's own (`spark.connect.authenticate.token`); never shown
    starts: bool = False  # its server is on demand and not started yet (oasis/gateway/starting.py)


def header(metadata: Iterable[tuple[str, str | bytes]], name: str) -> str | None:
    for key, value in metadata:
        if key.lower() == name:
            return value.decode(errors="replace") if isinstance(value, bytes) else value
    return None


def bearer(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    value = (header(metadata, AUTHORIZATION) or "").strip()
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refused(grpc.StatusCode.UNAUTHENTICATED,
                      "an oasis token is needed: add ;token=<your token> to the sc:// connection string")
    return token.strip()


def cluster_ref(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    ref = (header(metadata, CLUSTER) or "").strip()
    if not ref:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                      "name the cluster: add ;x-oasis-cluster=<name or id> to the sc:// connection string")
    if len(ref) > MAX_REF:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"x-oasis-cluster is longer than {MAX_REF} characters")
    return ref


def find_route(session: Session, remotes: Remotes, project_id: str, ref: str) -> Route:
    """The Connect server of the project's cluster named (or identified by) `ref`."""
    # a pooled cluster is no one's until a create claims it (oasis/engine/pools.py): not found, as for the API
    c = session.scalars(select(Cluster).where(Cluster.project_id == project_id, Cluster.pool_id.is_(None),
                                              or_(Cluster.id == ref, Cluster.name == ref))
                        .order_by((Cluster.id == ref).desc())).first()
    if c is None or c.plugin_name != "spark":
        raise Refused(grpc.StatusCode.NOT_FOUND, f"no Spark cluster {ref!r} in your project")
    if c.status not in SERVING:
        raise Refused(grpc.StatusCode.FAILED_PRECONDITION, f"cluster {c.name} is {c.status}, not Active")
    groups = {ng.id: ng for ng in session.scalars(select(NodeGroup).where(NodeGroup.cluster_id == c.id))}
    masters = [ng.id for ng in groups.values() if "master" in ng.spec.get("node_processes", [])]
    master = session.scalars(select(Instance).where(Instance.node_group_id.in_(masters), Instance.state == "active")
                             .order_by(Instance.index)).first()
    view = ClusterView(c.id, c.name, c.plugin_version, c.spec.get("cluster_configs") or {}, {},
                       secrets=dict(c.secrets or {}))
    if master is None or not connect_enabled(view, dict(master.ports)):
        raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                      f"cluster {c.name} runs no Spark Connect server (it was created with the config "
                      f"{CONNECT_CONFIG}: false, or before oasis offered one)")
    host = session.get(Host, master.host_id)
    remote = host_remotes(session, remotes, c, [host], groups)[host.id]
    starts = connect_mode(view) == ConnectMode.ON_DEMAND and not (c.spec or {}).get(CONNECT_STARTED)
    return Route(c.id, remote, master.internal_ip, int(master.ports[CONNECT_PORT]), view.secrets[CONNECT_TOKEN],
                 starts)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Kept(Generic[T]):
    """An answer of the database, kept: `checked` when it was asked (the TTL counts from then), `used` when a call
    last took it; for a principal, the token it was checked with, to check it again."""
    value: T
    checked: float
    used: float
    token: str = field(default="", repr=False)


class Router:
    """The gateway's decisions for one call, from its metadata; answers kept for `ttl` seconds."""

    def __init__(self, db: Database, identity: Identity, remotes: Remotes, policy: Policy, ttl: float = TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db, self.identity, self.remotes, self.policy = db, identity, remotes, policy
        self.ttl, self.clock = ttl, clock
        self._principals: dict[str, Kept[Principal]] = {}
        self._routes: dict[tuple[str, str], Kept[Route]] = {}

    async def route(self, metadata: Iterable[tuple[str, str | bytes]]) -> Route:
        metadata = list(metadata)
        token, ref = bearer(metadata), cluster_ref(metadata)
        principal = await self.principal(token)
        key = (principal.project_id, ref)
        hit = self._fresh(self._routes, key)
        if hit is not None:
            return hit
        asked = self.clock()
        route = await asyncio.to_thread(self._find, principal.project_id, ref)
        if not route.starts:  # one whose server is starting is found again, so that its start is seen at once
            self._routes[key] = Kept(route, asked, asked)
        return route

    async def principal(self, token: str) -> Principal:
        key = _digest(token)
        hit = self._fresh(self._principals, key)
        if hit is not None:
            return hit
        asked = self.clock()
        try:
            principal = await self._check(token)
        except Refused:
            self._principals.pop(key, None)
            raise
        self._principals[key] = Kept(principal, asked, asked, token)
        self._forget_expired(asked)
        return principal

    def _fresh(self, kept: dict[Any, Kept[T]], key: Any) -> T | None:
        hit, now = kept.get(key), self.clock()
        if hit is None or now - hit.checked >= self.ttl:
            return None
        hit.used = now
        return hit.value

    async def _check(self, token: str) -> Principal:
        principal = await asyncio.to_thread(self.identity.authenticate_token, token)
        if principal is None:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "the token is not valid (unknown, expired or revoked)")
        try:
            self.policy.authorize(principal, ACTION)
        except Forbidden as e:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, str(e)) from None
        return principal

    def _find(self, project_id: str, ref: str) -> Route:
        with self.db.session() as s:
            return find_route(s, self.remotes, project_id, ref)

    async def refresh(self) -> None:
        """Check again every answer used within KEEP_WARM that is older than TTL/2; forget the others, and every
        answer that is now refused (a revoked token, a cluster gone). An answer that cannot be checked (the
        database does not answer) is left to expire by its TTL."""
        now = self.clock()

        async def again(kept: dict[Any, Kept[Any]], check: Callable[[Any, Kept[Any]], Any]) -> None:
            for key, hit in list(kept.items()):
                if now - hit.used > KEEP_WARM:
                    kept.pop(key, None)
                    continue
                if now - hit.checked < self.ttl / 2:
                    continue
                try:
                    value = await check(key, hit)
                except Refused:
                    kept.pop(key, None)
                    continue
                except Exception as e:  # noqa: BLE001 - the database or the identity backend: try next time
                    log.warning("spark connect: cannot check a kept answer again: %s", e)
                    continue
                if kept.get(key) is hit:  # not replaced by a call meanwhile
                    kept[key] = Kept(value, now, hit.used, hit.token)

        async def principal(_: str, hit: Kept[Principal]) -> Principal:
            return await self._check(hit.token)

        async def route(key: tuple[str, str], _: Kept[Route]) -> Route:
            found = await asyncio.to_thread(self._find, *key)
            if found.starts:
                raise Refused(grpc.StatusCode.UNAVAILABLE, "starting")
            return found

        await again(self._principals, principal)
        await again(self._routes, route)

    async def keep_warm(self, stop: asyncio.Event) -> None:
        """Refresh every TTL/2 until `stop` is set (the gateway's serve runs it beside the server)."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.ttl / 2)
            except asyncio.TimeoutError:
                await self.refresh()

    def _forget_expired(self, now: float) -> None:
        if len(self._principals) > 1000:
            self._principals = {k: v for k, v in self._principals.items() if now - v.checked < self.ttl}
        if len(self._routes) > 1000:
            self._routes = {k: v for k, v in self._routes.items() if now - v.checked < self.ttl}
