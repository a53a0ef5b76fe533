"""Database engine and sessions. SQLite (WAL) for one node, PostgreSQL for replicas: the same code on both.

Two guarantees for replicas live here, because every write goes through `Database.session()`:
- `setup_lock()`: processes that start together run the migrations and the bootstrap one at a time;
- fencing: a write made while an engine drives an operation (`fenced(...)`) first checks, in the same
  transaction, that the engine still holds the operation's lease; if it lost it, nothing is written
  (`LeaseLost`), so a late engine can never overwrite the work of the engine that took over.
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text, update
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from oasis.db.encrypted import bind_key, load_key

MIGRATIONS = Path(__file__).with_name("migrations")
# pg_advisory_lock key of the setup (migrations and bootstrap): any constant the deployment uses for nothing else
SETUP_LOCK_KEY = 0x6F61736973  # "oasis"


class LeaseLost(Exception):
    """The engine no longer holds the lease of the operation it was writing for: another engine took it over.
    Not an operation's failure: the engine stops driving it and leaves the row to its new owner."""


@dataclass(frozen=True)
class Fence:
    model: Any  # a Leased model class
    row_id: str
    owner: str


_fence: ContextVar[Fence | None] = ContextVar("oasis_fence", default=None)


@contextmanager
def fenced(model: Any, row_id: str, owner: str) -> Iterator[None]:
    """Every session opened inside (in this task and the tasks and threads it starts) checks the lease before
    its first write."""
    token = _fence.set(Fence(model, row_id, owner))
    try:
        yield
    finally:
        _fence.reset(token)


class Database:
    def __init__(self, url: str, key: bytes | None = None) -> None:
        """`key`: the state key that encrypts the secret columns (oasis/db/encrypted.py); every process opening
        this database must give the same one. Default: OASIS_SECRET_KEY, else, for SQLite, the `secret.key`
        beside the database file (the state dir); PostgreSQL without either can read and write no secret."""
        self.url = url
        if url.startswith("sqlite"):
            path = Path(url.removeprefix("sqlite:///"))
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _private_files(path)
            if key is None:
                key = load_key(path.parent)
            self.engine: Engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
            if key is None and os.environ.get("OASIS_SECRET_KEY"):
                key = os.environ["OASIS_SECRET_KEY"].encode()
        self._key = key
        if key is not None:
            bind_key(self.engine, key)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        event.listen(self._sessions, "before_flush", _check_fence_before_flush)
        event.listen(self._sessions, "do_orm_execute", _check_fence_before_dml)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One unit of work: committed on success, rolled back on any error."""
        with self._sessions() as s:
            s.info["fence"] = _fence.get()
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    @contextmanager
    def setup_lock(self) -> Iterator[None]:
        """Held while a process migrates and bootstraps: the others wait, then find the work done. An advisory
        lock on PostgreSQL (released with its connection, so a crashed holder never blocks the rest); on
        SQLite, an exclusive lock on a file beside the database."""
        if self.url.startswith("sqlite"):
            lock_path = Path(self.url.removeprefix("sqlite:///") + ".setup-lock")
            with open(lock_path, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
            return
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SETUP_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SETUP_LOCK_KEY})
                conn.commit()

    def migrate(self) -> None:
        cfg = alembic_config(self.url)
        cfg.attributes["oasis_key"] = self._key  # migration 0006 encrypts the rows written before encryption
        command.upgrade(cfg, "head")


def _check_fence(s: Session) -> None:
    """Once per transaction, before its first write: does the lease still belong to the fence's owner? On
    PostgreSQL the no-op UPDATE also locks the row until commit, so a takeover waits for this write to end; on
    SQLite it takes the database's write lock, with the same effect."""
    fence: Fence | None = s.info.get("fence")
    if fence is None:
        return
    connection = s.connection()  # begins the transaction if none has begun
    transaction = s.get_transaction()
    if s.info.get("fenced_in") is transaction:
        return
    m = fence.model
    res = connection.execute(update(m).where(m.id == fence.row_id, m.lease_owner == fence.owner)
                                 .values(lease_owner=m.lease_owner, updated_at=m.updated_at))
    if res.rowcount != 1:
        raise LeaseLost(f"{m.__tablename__} {fence.row_id}: the lease of {fence.owner} was taken over")
    s.info["fenced_in"] = transaction


def _check_fence_before_flush(s: Session, _context: Any, _instances: Any) -> None:
    _check_fence(s)


def _check_fence_before_dml(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        _check_fence(state.session)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _private_files(path: Path) -> None:
    """The database file and its companions (-wal, -shm, -journal, the setup lock) exist mode 0600 before SQLite
    opens them: SQLite creates its own with the database file's mode, and a file created 0600 is never readable
    by anyone else for a moment. Files an older oasis left readable are tightened."""
    for p in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal", ".setup-lock"))):
        if p.name.endswith(("-wal", "-shm", "-journal")) and not p.exists():
            continue  # SQLite makes these as it needs them, with the mode of the database file
        os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o600))
        if p.stat().st_mode & 0o077:
            os.chmod(p, 0o600)


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
