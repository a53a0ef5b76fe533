"""Leases: an engine owns an operation while its lease runs; one conditional UPDATE takes it, so two engines
can never both hold it. An engine that dies simply stops renewing, and another takes over at expiry."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update

from oasis.db.models import utcnow
from oasis.db.session import Database


def claimable(db: Database, model: Any, exclude: set[str], limit: int = 50) -> list[tuple[str, str]]:
    """(id, op) of rows with an operation that nobody holds."""
    now = utcnow()
    with db.session() as s:
        rows = s.execute(select(model.id, model.op).where(
            model.op.is_not(None), or_(model.lease_owner.is_(None), model.lease_expires < now)).limit(limit))
        return [(r.id, r.op) for r in rows if r.id not in exclude]


def claim(db: Database, model: Any, row_id: str, op: str, owner: str, seconds: float) -> bool:
    now = utcnow()
    with db.session() as s:
        res = s.execute(update(model).where(
            model.id == row_id, model.op == op,
            or_(model.lease_owner.is_(None), model.lease_expires < now),
        ).values(lease_owner=owner, lease_expires=now + timedelta(seconds=seconds), updated_at=model.updated_at))
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
