"""Leases: an engine owns an operation while its lease runs; one conditional UPDATE takes it, so two engines
can never both hold it. An engine that dies simply stops renewing, and another takes over at expiry."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update

from oasis.db.models import utcnow
from oasis.db.session import Database


def claimable(db: Database, model: Any, exclude: set[str], limit: int = 50) -> list[str]:
    now = utcnow()
    with db.session() as s:
        ids = s.scalars(select(model.id).where(
            model.op.is_not(None), or_(model.lease_owner.is_(None), model.lease_expires < now)).limit(limit))
        return [i for i in ids if i not in exclude]


def claim(db: Database, model: Any, row_id: str, owner: str, seconds: float) -> bool:
    now = utcnow()
    with db.session() as s:
        res = s.execute(update(model).where(
            model.id == row_id, model.op.is_not(None),
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


def lost(db: Database, model: Any, held: set[str], owner: str) -> list[str]:
    """Of the rows this engine drives, those whose lease is no longer its own."""
    if not held:
        return []
    with db.session() as s:
        return list(s.scalars(select(model.id).where(
            model.id.in_(held), or_(model.lease_owner.is_(None), model.lease_owner != owner))))
