"""The one operation machine: every long operation of every model (cluster create, a job's run, a site's deploy…)
is declared as data, an `Operation` of `Step`s, and driven by `Machine`, the same for all.

- A step records itself on the row (`op_step`, and the status it shows) before it runs, and is idempotent: an
  engine that takes a dead engine's lease resumes at the recorded step and runs it again.
- A step that fails because hosts cannot be reached (their site cut off) keeps the operation and waits, with a
  capped backoff, saying so on the row; the wait's start is kept on the row (`op_target["unreachable"]`), so the
  grace counts on when another engine takes over. Past the grace (or at once, for a step that does not wait)
  the failure stands.
- A failure of the user's operation (one of the model's `failures`: a command that failed, a plugin's refusal,
  no capacity…) ends it through its `rollback`, which keeps the reason. Anything else is an engine bug: it
  propagates, the runner logs it and the operation is retried from its step, never shown as the user's failure.

Adding an operation is one `Operation(...)` in its model's table and its step functions.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

from oasis import metrics
from oasis.db.models import utcnow
from oasis.db.session import Database
from oasis.engine.waiting import Backoff, since_of, waiting_message
from oasis.remote.base import RemoteError, Unreachable, unreachable_in

log = logging.getLogger(__name__)


class OperationError(Exception):
    """The operation cannot go on, for a reason the user must see (its cluster is gone, a keypair was deleted,
    a flavor no longer exists…). Steps raise it instead of a bare LookupError, which would be a bug."""


class Wait(Enum):
    GRACE = "grace"  # wait for unreachable hosts up to the grace, then fail
    FOREVER = "forever"  # wait as long as it takes (a delete, a running job: giving up would leave work behind)
    NO = "no"  # fail at once


class Work:
    """One operation on one row, as its steps see it: the database, the row's id and what the steps share. A
    model subclasses it with its steps and says how a wait for hosts shows on its rows."""

    model: Any  # the Leased model class

    def __init__(self, db: Database, row_id: str, on_change: Callable[[], None]) -> None:
        self.db, self.id, self.on_change = db, row_id, on_change

    def row(self, s: Any) -> Any:
        return s.get(self.model, self.id)

    def set(self, **values: object) -> None:
        with self.db.session() as s:
            row = self.row(s)
            for k, v in values.items():
                setattr(row, k, v)
        self.on_change()

    def done(self, **values: object) -> None:
        """The operation is over: no op, no step, nothing to do; `values` besides."""
        self.set(op=None, op_step=None, op_target={}, **values)

    async def unreachable_host(self) -> Unreachable | None:
        """A failure not tied to an Unreachable may still come from a host that is gone (a worker that cannot
        reach its dead master): a model that can tell probes its hosts here."""
        return None

    def show_waiting(self, message: str, first: bool) -> None:
        """Say on the row (and its events) that the operation waits; `first`: the wait has just begun."""

    def show_resumed(self, message: str) -> None:
        """Say that the wait is over."""

    def gave_up(self, message: str) -> None:
        """Say that the wait ended past the grace."""

    # --- the wait, recorded on the operation -----------------------------------------------------------------

    def note_unreachable(self, op: str, gone: Unreachable, site: str) -> float:
        """Record the wait on the row; the seconds since it began. Nothing is written once another operation
        replaced `op` (this one is about to be cancelled)."""
        now = utcnow()
        with self.db.session() as s:
            row = self.row(s)
            if row is None or row.op != op:
                return 0.0
            record = (row.op_target or {}).get("unreachable")
            since = since_of(record, now)
            row.op_target = {**(row.op_target or {}), "unreachable": {
                "since": since.isoformat(), "host": gone.host, "reason": gone.reason}}
        message = waiting_message(site, gone.host, since, gone.reason)
        if record is None:
            log.warning("%s %s: %s", self.model.__tablename__, self.id, message)
        self.show_waiting(message, record is None)
        self.on_change()
        return (now - since).total_seconds()

    def note_reachable(self, op: str) -> None:
        with self.db.session() as s:
            row = self.row(s)
            record = (row.op_target or {}).get("unreachable") if row is not None and row.op == op else None
            if record is None:
                return
            row.op_target = {k: v for k, v in row.op_target.items() if k != "unreachable"}
        waited = (utcnow() - since_of(record, utcnow())).total_seconds()
        message = f"host {record.get('host')} answers again after {waited:.0f}s; resuming"
        log.info("%s %s: %s", self.model.__tablename__, self.id, message)
        self.show_resumed(message)
        self.on_change()

    def site_name(self) -> str:
        """The name of the site the operation's hosts belong to, for the words of a wait."""
        return "?"


W = TypeVar("W", bound=Work)


@dataclass(frozen=True)
class Step(Generic[W]):
    name: str
    run: Callable[[W], Awaitable[None]]
    status: str | None = None  # what the row's status shows while the step runs; None: unchanged
    wait: Wait = Wait.GRACE


@dataclass(frozen=True)
class Operation(Generic[W]):
    steps: tuple[Step[W], ...]
    finish: Callable[[W], Awaitable[None]]  # after the last step: the row's end state
    rollback: Callable[[W, Exception], Awaitable[None]]  # after a failed step: undo, keep the reason


# Set by tests: called with (work, step name, "before" | "after") around every step, to crash an operation at
# every point and prove it resumes (tests/unit/test_machine.py).
Probe = Callable[[Work, str, str], None]


class Machine(Generic[W]):
    """Drives the operations of one model: `await machine(row_id)` runs the row's `op` from its `op_step`."""

    def __init__(self, make_work: Callable[[str], W], operations: Mapping[str, Operation[W]],
                 failures: tuple[type[BaseException], ...], grace: float, probe: Probe | None = None) -> None:
        self.make_work, self.operations = make_work, operations
        self.failures = (OperationError, *failures)
        self.grace = grace  # seconds a Wait.GRACE step waits for unreachable hosts
        self.probe = probe

    async def __call__(self, row_id: str) -> None:
        work = self.make_work(row_id)
        with work.db.session() as s:
            row = work.row(s)
            op, at = (row.op, row.op_step) if row is not None else (None, None)
        if op is None:
            return
        operation = self.operations.get(op)
        if operation is None:
            raise RuntimeError(f"{work.model.__tablename__} {row_id}: no operation '{op}' is declared")
        names = [step.name for step in operation.steps]
        start = names.index(at) if at in names else 0
        kind = metrics.model_name(work.model.__tablename__)
        log.info("%s %s: %s from step %s", work.model.__tablename__, row_id, op, names[start] if names else "-")
        if at not in names:  # a new operation: when it began, so that what it logs can be told from before
            with work.db.session() as s:
                row = work.row(s)
                row.op_target = {**(row.op_target or {}), "begun": utcnow().isoformat()}
        try:
            for step in operation.steps[start:]:
                values: dict[str, object] = {"op_step": step.name}
                if step.status is not None:
                    values["status"] = step.status
                work.set(**values)
                self._probe(work, step.name, "before")
                began = time.perf_counter()
                await self._run(work, op, step)
                took = time.perf_counter() - began
                metrics.STEP_DURATION.labels(kind, op, step.name).observe(took)
                log.info("%s %s: %s: step %s done in %.2fs", work.model.__tablename__, row_id, op, step.name, took)
                self._probe(work, step.name, "after")
        except self.failures as e:
            log.warning("%s %s: %s failed: %s", work.model.__tablename__, row_id, op, e)
            await operation.rollback(work, e)
            metrics.OPERATIONS.labels(kind, op, "failed").inc()
            work.on_change()
            return
        await operation.finish(work)
        metrics.OPERATIONS.labels(kind, op, "done").inc()
        log.info("%s %s: %s done", work.model.__tablename__, row_id, op)
        work.on_change()

    def _probe(self, work: W, step: str, when: str) -> None:
        if self.probe is not None:
            self.probe(work, step, when)

    async def _run(self, work: W, op: str, step: Step[W]) -> None:
        """Run one step; while it fails because hosts cannot be reached, wait as the step says and run it again
        (steps are idempotent)."""
        backoff = Backoff()
        while True:
            try:
                await step.run(work)
            except self.failures as e:
                if step.wait is Wait.NO:
                    raise
                gone = unreachable_in(e) or await work.unreachable_host()
                if gone is None:
                    raise
                waited = work.note_unreachable(op, gone, work.site_name())
                metrics.RETRIES.labels(metrics.model_name(work.model.__tablename__), op, "unreachable").inc()
                if step.wait is Wait.GRACE and waited > self.grace:
                    message = f"gave up after {waited:.0f}s: {gone}"
                    work.gave_up(message)
                    raise RemoteError(f"{gone} for more than {self.grace:g}s (the grace for unreachable "
                                      f"hosts)") from e
                await backoff.pause()
                continue
            work.note_reachable(op)
            return
