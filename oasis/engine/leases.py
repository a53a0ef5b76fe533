"""Leases and liveness: an engine owns an operation while it holds its lease; one conditional UPDATE takes it,
so two engines never both hold it.

A lease is held while both are true: its owner renews it (every third of `lease_seconds`, from the task that
drives the operation) and its owner is alive (its heartbeat row, written every `HEARTBEAT_SECONDS` by a thread of
its own, is fresh). An engine that is SIGKILLed stops beating, so its operations are free after
`DEAD_AFTER_SECONDS`, not after a whole lease; an engine that is only slow (a long step, a busy event loop) keeps
beating from its thread and keeps its work. Whatever the timing, the fencing check in `oasis.db.session` keeps a
late engine from writing over its successor's work.
"""
from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
import zlib
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, exists, func, not_, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from oasis import metrics
from oasis.db.models import Heartbeat, PeriodicRun, utcnow
from oasis.db.session import Database

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = float(os.environ.get("OASIS_HEARTBEAT_SECONDS", "1"))
DEAD_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS  # three beats missed: the engine is gone
FORGET_AFTER_SECONDS = 60.0  # a dead engine's row is removed after this long


def _fresh_since():  # type: ignore[no-untyped-def]
    return utcnow() - timedelta(seconds=DEAD_AFTER_SECONDS)


def _free(model: Any):  # type: ignore[no-untyped-def]
    """Rows whose operation nobody holds: no owner, a lease that ran out, or an owner with no fresh heartbeat."""
    owner_alive = exists().where(Heartbeat.engine_id == model.lease_owner, Heartbeat.seen_at >= _fresh_since())
    return or_(model.lease_owner.is_(None), model.lease_expires < utcnow(), not_(owner_alive))


def alive(db: Database) -> list[str]:
    """The engines that beat lately, sorted."""
    with db.session() as s:
        return sorted(s.scalars(select(Heartbeat.engine_id).where(Heartbeat.seen_at >= _fresh_since())))


def share(db: Database, model: Any, engines: int, held: int) -> int:
    """How many more operations of `model` this engine should take now: its fair part of all those in progress
    (held or free), less what it holds. A burst is so spread over every engine alive instead of landing on the
    first one that looks."""
    with db.session() as s:
        pending = s.scalar(select(func.count()).select_from(model).where(model.op.is_not(None))) or 0
    return max(0, math.ceil(pending / max(1, engines)) - held)


def claimable(db: Database, model: Any, exclude: set[str], limit: int = 50) -> list[tuple[str, str]]:
    """(id, op) of up to `limit` rows with an operation that nobody holds, in random order so that engines
    looking at the same moment try different rows first."""
    if limit <= 0:
        return []
    with db.session() as s:
        rows = s.execute(select(model.id, model.op).where(model.op.is_not(None), _free(model)).limit(limit + 50))
        found = [(r.id, r.op) for r in rows if r.id not in exclude]
    random.shuffle(found)
    return found[:limit]


def claim(db: Database, model: Any, row_id: str, op: str, owner: str, seconds: float) -> bool:
    with db.session() as s:
        before = s.scalar(select(model.lease_owner).where(model.id == row_id))  # another engine's: a takeover
        res = s.execute(update(model).where(model.id == row_id, model.op == op, _free(model)).values(
            lease_owner=owner, lease_expires=utcnow() + timedelta(seconds=seconds), updated_at=model.updated_at))
        if res.rowcount == 1 and before not in (None, owner):
            metrics.LEASE_TAKEOVERS.labels(metrics.model_name(model.__tablename__)).inc()
        return res.rowcount == 1


def renew(db: Database, model: Any, row_id: str, owner: str, seconds: float) -> bool:
    with db.session() as s:
        res = s.execute(update(model).where(model.id == row_id, model.lease_owner == owner).values(
            lease_expires=utcnow() + timedelta(seconds=seconds), updated_at=model.updated_at))
        return res.rowcount == 1


def release(db: Database, model: Any, row_id: str, owner: str) -> None:
    with db.session() as s:
        s.execute(update(model).where(model.id == row_id, model.lease_owner == owner).values(
            lease_owner=None, lease_expires=None, updated_at=model.updated_at))


def superseded(db: Database, model: Any, held: dict[str, str | None], owner: str) -> list[str]:
    """Of the rows this engine drives (id -> the op it is driving), those it must stop: their op was replaced
    (a delete or a cancel asked for meanwhile) or their lease is no longer its own."""
    if not held:
        return []
    with db.session() as s:
        rows = s.execute(select(model.id, model.op, model.lease_owner).where(model.id.in_(held)))
        return [r.id for r in rows if r.op != held[r.id] or r.lease_owner != owner]


def claim_period(db: Database, task: str, period: float, owner: str) -> int | None:
    """Take this period's run of `task`: its slot (the period's number) for exactly one engine per period, None
    for the others. The primary key (task, slot) settles a race; nothing depends on the engines agreeing on who
    is alive."""
    slot = int(time.time() // period)
    try:
        with db.session() as s:
            if s.get(PeriodicRun, (task, slot)) is not None:
                return None  # taken already: the usual case, answered without a failed insert
            s.add(PeriodicRun(task=task, slot=slot, engine_id=owner))
        return slot
    except IntegrityError:
        return None


SHARDS = 16  # the parts a per-row periodic task's period is claimed in (see Sharded)


def shard_of(row_id: str) -> int:
    """The shard a row falls in: the same on every engine."""
    return zlib.crc32(row_id.encode()) % SHARDS


class Sharded:
    """One engine's part of a periodic task done per row (a cluster's verification or autoscale look, a site's
    health check). The period is claimed per shard of the rows (at most SHARDS claims), not per row, and each
    engine looks once per period: a period costs a bounded number of writes however many rows there are, and
    the rows still spread over the engines alive. Each period's run of each row is done by exactly one engine,
    the one that won its shard's claim."""

    def __init__(self, task: str, period: float) -> None:
        self.task, self.period = task, period
        self.slot: int | None = None  # the period this engine last looked at

    def due(self) -> bool:
        """True on this engine's first look in a new period, False for the rest of it."""
        slot = int(time.time() // self.period)
        if slot == self.slot:
            return False
        self.slot = slot
        return True

    def claim(self, db: Database, owner: str, row_ids: list[str]) -> list[str]:
        """Of `row_ids`, those whose shard this engine won for the period `due` started: one read, then one
        insert per shard nobody has taken yet, in one transaction (a race lost to another engine's insert undoes
        only its own savepoint)."""
        assert self.slot is not None, "claim follows due()"
        names = {shard_of(r): f"{self.task}#{shard_of(r)}" for r in row_ids}
        if not names:
            return []
        won: set[int] = set()
        with db.session() as s:
            taken = set(s.scalars(select(PeriodicRun.task).where(PeriodicRun.task.in_(names.values()),
                                                                 PeriodicRun.slot == self.slot)))
            for shard, name in sorted(names.items()):
                if name in taken:
                    continue
                try:
                    with s.begin_nested():
                        s.add(PeriodicRun(task=name, slot=self.slot, engine_id=owner))
                    won.add(shard)
                except IntegrityError:
                    pass
        return [r for r in row_ids if shard_of(r) in won]


class Pulse:
    """The engine's heartbeat, from a thread of its own so that a busy event loop never makes it look dead."""

    def __init__(self, db: Database, engine_id: str) -> None:
        self.db, self.engine_id = db, engine_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {engine_id}", daemon=True)

    def start(self) -> None:
        self.beat()  # alive before the first claim, or the new leases would look like a dead engine's
        self._thread.start()

    def beat(self) -> None:
        now = utcnow()
        with self.db.session() as s:
            res = s.execute(update(Heartbeat).where(Heartbeat.engine_id == self.engine_id).values(seen_at=now))
            if res.rowcount == 0:
                s.add(Heartbeat(engine_id=self.engine_id, seen_at=now))
            s.execute(delete(Heartbeat).where(Heartbeat.seen_at < now - timedelta(seconds=FORGET_AFTER_SECONDS)))
            s.execute(delete(PeriodicRun).where(PeriodicRun.started_at < now - timedelta(hours=1)))

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.beat()
            except SQLAlchemyError as e:  # the database may be away for a moment; the next beat tries again
                log.warning("engine %s: heartbeat failed: %s", self.engine_id, e)

    def stop(self) -> None:
        """A clean stop: the row goes, and with it every lease the engine still held."""
        self._stop.set()
        self._thread.join(timeout=10)
        with self.db.session() as s:
            s.execute(delete(Heartbeat).where(Heartbeat.engine_id == self.engine_id))
