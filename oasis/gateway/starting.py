"""A cluster's Spark Connect server on demand: a Spark cluster runs none until someone opens a session (the default,
`oasis.spark.connect: on-demand`). Then the gateway asks the engines for it as the API asks for any work, an
operation on the cluster row (START_CONNECT), and holds the session's first call until the row says the server
runs; every other call, and every other gateway, waits on the same row. Nothing is kept here: a gateway restarted
meanwhile finds the operation under way and waits for it again."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable

import grpc
from sqlalchemy import select, update

from oasis.db.models import Cluster
from oasis.db.session import Database
from oasis.db.states import CONNECT_STARTED, ClusterOp
from oasis.gateway.routes import SERVING, Refused
from oasis.plugins.spark import CONNECT_READY_TIMEOUT

POLL = 0.25
# the engine's own bound on the server's start, and a little for an engine to take the operation up
START_WAIT = CONNECT_READY_TIMEOUT + 30


@dataclass(frozen=True)
class Seen:
    name: str
    status: str
    op: str | None
    started: bool
    description: str


def _read(db: Database, cluster_id: str) -> Seen | None:
    with db.session() as s:
        row = s.execute(select(Cluster.name, Cluster.status, Cluster.op, Cluster.spec, Cluster.status_description)
                        .where(Cluster.id == cluster_id)).first()
    if row is None:
        return None
    return Seen(row.name, row.status, row.op, bool((row.spec or {}).get(CONNECT_STARTED)), row.status_description)


def ask_for_start(db: Database, cluster_id: str) -> bool:
    """Ask for the start unless the cluster is busy (another operation, or not Active): whether this call asked."""
    with db.session() as s:
        done = s.execute(update(Cluster).where(Cluster.id == cluster_id, Cluster.op.is_(None),
                                               Cluster.status.in_(SERVING))
                         .values(op=ClusterOp.START_CONNECT, op_step=None, op_target={}))
        return bool(done.rowcount)


async def wait_started(db: Database, cluster_id: str, timeout: float,
                       notify: Callable[[], None] = lambda: None) -> None:
    """Return once the cluster's server runs, asking for its start if no one has; a Refused when it cannot."""
    deadline = time.monotonic() + min(timeout, START_WAIT)
    under_way = False
    while True:
        seen = await asyncio.to_thread(_read, db, cluster_id)
        if seen is None:
            raise Refused(grpc.StatusCode.NOT_FOUND, "the cluster is gone")
        if seen.started:
            return
        if seen.status not in SERVING:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION, f"cluster {seen.name} is {seen.status}, not Active")
        if seen.op == ClusterOp.START_CONNECT:
            under_way = True
        elif seen.op is None and under_way:  # the start ended, and not with a server
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION, seen.description or
                          f"the Spark Connect server of cluster {seen.name} did not start")
        elif seen.op is None and await asyncio.to_thread(ask_for_start, db, cluster_id):
            under_way = True
            notify()
        # else: busy with another operation (a scale, a keypair update): the start is asked for once it ends
        if time.monotonic() >= deadline:
            raise Refused(grpc.StatusCode.UNAVAILABLE, f"the Spark Connect server of cluster {seen.name} is still "
                                                       "starting; try again in a moment")
        await asyncio.sleep(POLL)
