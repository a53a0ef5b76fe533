"""The event log of a cluster: Sahara's `provision_progress` steps, each with per-instance events."""
from __future__ import annotations

import time
from datetime import datetime
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy import or_, select

from oasis.db.models import Cluster, ProvisionEvent, ProvisionStep
from oasis.db.session import Database, LeaseLost
from oasis.remote.base import unreachable_in


@dataclass
class Step:
    db: Database
    id: str
    started: float = field(default_factory=time.monotonic)

    def event(self, instance_id: str | None, instance_name: str | None, node_group_id: str | None,
              info: str | None = None, successful: bool = True) -> None:
        """An event of the step; once: a step run again after a crash does not log it twice."""
        with self.db.session() as s:
            seen = s.scalars(select(ProvisionEvent.id).where(
                ProvisionEvent.step_id == self.id, ProvisionEvent.instance_id == instance_id,
                ProvisionEvent.event_info == info, ProvisionEvent.successful == successful)).first()
            if seen is None:
                s.add(ProvisionEvent(step_id=self.id, instance_id=instance_id, instance_name=instance_name,
                                     node_group_id=node_group_id, event_info=info, successful=successful))


class EventLog:
    def __init__(self, db: Database, cluster_id: str, project_id: str) -> None:
        self.db, self.cluster_id, self.project_id = db, cluster_id, project_id

    def _open(self, name: str, step_type: str, total: int) -> Step:
        with self.db.session() as s:
            # An engine that resumes re-runs the step it died in (or the one it had just finished): it continues
            # the same row, the one of that name that is open or that this operation made.
            cluster = s.get(Cluster, self.cluster_id)
            begun = _begun(cluster.op_target if cluster else None)
            mine = ProvisionStep.successful.is_(None)
            if begun is not None:
                mine = or_(mine, ProvisionStep.created_at >= begun)
            row = s.scalars(select(ProvisionStep).where(
                ProvisionStep.cluster_id == self.cluster_id, ProvisionStep.step_name == name, mine)
                .order_by(ProvisionStep.created_at.desc())).first()
            if row is None:
                row = ProvisionStep(cluster_id=self.cluster_id, project_id=self.project_id, step_name=name,
                                    step_type=step_type, total=total)
                s.add(row)
                s.flush()
            return Step(self.db, row.id)

    def _close(self, step: Step, successful: bool, info: str | None = None) -> None:
        with self.db.session() as s:
            row = s.get(ProvisionStep, step.id)
            if row is not None:
                row.successful = successful
                row.duration = round(time.monotonic() - step.started, 3)
                if not successful and info:
                    s.add(ProvisionEvent(step_id=step.id, event_info=info[:4000], successful=False))

    @asynccontextmanager
    async def step(self, name: str, step_type: str, total: int) -> AsyncIterator[Step]:
        step = self._open(name, step_type, total)
        try:
            yield step
        except LeaseLost:
            raise  # the step is the new owner's now: nothing more is written for it here
        except Exception as e:
            if unreachable_in(e) is None:
                self._close(step, False, str(e))
            # else: the step is run again once its hosts answer, and goes on in this same row
            raise
        self._close(step, True)

    def note(self, info: str, successful: bool = True, end: bool = False) -> None:
        """An event on the step in progress (the latest open one, else the latest one), e.g. what it waits for;
        with `end`, that step ends, as `successful` says."""
        with self.db.session() as s:
            latest = select(ProvisionStep).where(ProvisionStep.cluster_id == self.cluster_id).order_by(
                ProvisionStep.created_at.desc())
            row = s.scalars(latest.where(ProvisionStep.successful.is_(None))).first() or s.scalars(latest).first()
            if row is None:
                return
            s.add(ProvisionEvent(step_id=row.id, event_info=info[:4000], successful=successful))
            if end:
                row.successful = successful


def _begun(op_target: dict | None) -> datetime | None:
    """When the operation in progress began (the machine records it as it enters its first step)."""
    try:
        return datetime.fromisoformat(str((op_target or {})["begun"]))
    except (KeyError, ValueError):
        return None
