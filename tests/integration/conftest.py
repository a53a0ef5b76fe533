from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.services import Oasis, Postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    # Not under pytest's tmp dir: that one is private to root, and the server runs as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="oasis-pg-"))
    pg = Postgres(base)
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Engine tests run on both databases: the same code on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return None
    pg: Postgres = request.getfixturevalue("postgres")
    return pg.create_database("oasis_" + uuid.uuid4().hex[:12])


@pytest.fixture
def split(tmp_path: Path, database_url: str | None) -> Iterator[Oasis]:
    """`oasis api` and `oasis engine` as separate processes on one database."""
    service = Oasis(tmp_path / "state", database_url)
    try:
        service.start_api("api")
        service.start_engine()
        yield service
    finally:
        service.stop()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Oasis]:
    """`oasis up`: the embedded default."""
    service = Oasis(tmp_path / "state")
    try:
        service.start_api("up")
        yield service
    finally:
        service.stop()
