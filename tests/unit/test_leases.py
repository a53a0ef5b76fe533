"""Leases between engines: a dead engine's work is free at once, a live one keeps it, a late engine cannot write
over its successor's work, work is shared out, and each period's periodic run has one owner. The same code runs
on PostgreSQL in tests/integration/test_replicas.py."""
from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from oasis.api.errors import duplicate_entry
from oasis.db.models import Cluster, Heartbeat, PeriodicRun, ProvisionStep, utcnow
from oasis.db.session import Database, LeaseLost, fenced
from oasis.engine import leases
from oasis.engine.events import EventLog
from tests.unit.conftest import World


def _cluster(world: World, name: str = "c1", op: str | None = "create") -> str:
    with world.db.session() as s:
        c = Cluster(project_id=world.projects["p1"], name=name, plugin_name="dask", plugin_version="1",
                    site_id=world.site_id, op=op, status="Spawning")
        s.add(c)
        s.flush()
        return c.id


def _pulse(db: Database, engine_id: str) -> leases.Pulse:
    pulse = leases.Pulse(db, engine_id)
    pulse.beat()
    return pulse


def _age_heartbeat(db: Database, engine_id: str, seconds: float) -> None:
    with db.session() as s:
        s.execute(update(Heartbeat).where(Heartbeat.engine_id == engine_id)
                  .values(seen_at=utcnow() - timedelta(seconds=seconds)))


def test_a_dead_engines_lease_is_free_at_once(world: World) -> None:
    cid = _cluster(world)
    _pulse(world.db, "engine-a"), _pulse(world.db, "engine-b")
    assert leases.claim(world.db, Cluster, cid, "create", "engine-a", 600)
    # A live owner keeps its lease: nobody else can take it, however long its step takes.
    assert leases.claimable(world.db, Cluster, set()) == []
    assert not leases.claim(world.db, Cluster, cid, "create", "engine-b", 600)
    # Its heartbeat stops (SIGKILL): the lease, 600 s from its end, is free once three beats are missed.
    _age_heartbeat(world.db, "engine-a", leases.DEAD_AFTER_SECONDS + 0.5)
    assert leases.claimable(world.db, Cluster, set()) == [(cid, "create")]
    assert leases.claim(world.db, Cluster, cid, "create", "engine-b", 600)
    assert leases.alive(world.db) == ["engine-b"]


def test_a_clean_stop_frees_the_engines_leases(world: World) -> None:
    cid = _cluster(world)
    pulse = leases.Pulse(world.db, "engine-a")
    pulse.start()
    assert leases.claim(world.db, Cluster, cid, "create", "engine-a", 600)
    pulse.stop()
    assert leases.claimable(world.db, Cluster, set()) == [(cid, "create")]


def test_the_heartbeat_thread_keeps_beating_while_the_event_loop_is_busy(world: World, monkeypatch) -> None:
    monkeypatch.setattr(leases, "HEARTBEAT_SECONDS", 0.05)
    pulse = leases.Pulse(world.db, "engine-a")
    pulse.start()
    try:
        with world.db.session() as s:
            first = s.get(Heartbeat, "engine-a").seen_at
        # This thread computes without pause for half a second, as a blocked event loop would.
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            pass
        with world.db.session() as s:
            assert s.get(Heartbeat, "engine-a").seen_at > first
    finally:
        pulse.stop()


def test_a_late_engine_cannot_write_over_its_successor(world: World) -> None:
    cid = _cluster(world)
    _pulse(world.db, "engine-a"), _pulse(world.db, "engine-b")
    assert leases.claim(world.db, Cluster, cid, "create", "engine-a", 600)
    with fenced(Cluster, cid, "engine-a"):
        with world.db.session() as s:
            s.get(Cluster, cid).status = "Waiting"  # still its own: written
        events = EventLog(world.db, cid, world.projects["p1"])
        events.note("written by a")
    # engine-b takes over (engine-a looked dead for a moment); engine-a goes on writing.
    _age_heartbeat(world.db, "engine-a", leases.DEAD_AFTER_SECONDS + 0.5)
    assert leases.claim(world.db, Cluster, cid, "create", "engine-b", 600)
    with fenced(Cluster, cid, "engine-a"):
        with pytest.raises(LeaseLost):
            with world.db.session() as s:
                s.get(Cluster, cid).status = "Error"
        with pytest.raises(LeaseLost):
            with world.db.session() as s:
                s.execute(update(Cluster).where(Cluster.id == cid).values(status_description="late"))
        with pytest.raises(LeaseLost):
            with world.db.session() as s:
                s.add(ProvisionStep(cluster_id=cid, project_id=world.projects["p1"], step_name="late",
                                    step_type="x", total=1))
        with world.db.session() as s:  # reading is harmless
            assert s.get(Cluster, cid).status == "Waiting"
    with world.db.session() as s:
        c = s.get(Cluster, cid)
        assert (c.status, c.status_description, c.lease_owner) == ("Waiting", "", "engine-b")
        assert [r.step_name for r in s.scalars(select(ProvisionStep))] == []


def test_fencing_reaches_the_tasks_and_threads_an_operation_starts(world: World) -> None:
    cid = _cluster(world)
    _pulse(world.db, "engine-b")
    assert leases.claim(world.db, Cluster, cid, "create", "engine-b", 600)

    def write() -> None:
        with world.db.session() as s:
            s.get(Cluster, cid).status = "Error"

    async def drive() -> list:
        return await asyncio.gather(asyncio.to_thread(write), asyncio.to_thread(write), return_exceptions=True)

    with fenced(Cluster, cid, "engine-a"):
        outcomes = asyncio.run(drive())
    assert all(isinstance(o, LeaseLost) for o in outcomes), outcomes


def test_work_is_shared_out_over_the_engines_alive(world: World) -> None:
    ids = [_cluster(world, f"c{i}") for i in range(9)]
    for e in ("a", "b", "c"):
        _pulse(world.db, f"engine-{e}")
    engines = len(leases.alive(world.db))
    assert engines == 3
    # The first engine to look takes its third, not the whole burst.
    wanted = leases.share(world.db, Cluster, engines, held=0)
    assert wanted == 3
    taken = [row for row, op in leases.claimable(world.db, Cluster, set(), wanted)
             if leases.claim(world.db, Cluster, row, op, "engine-a", 600)]
    assert len(taken) == 3
    # The next one, with 6 left, takes its 3; one holding its share takes nothing more.
    assert leases.share(world.db, Cluster, engines, held=0) == 3
    assert leases.share(world.db, Cluster, engines, held=3) == 0
    assert len(leases.claimable(world.db, Cluster, set(), 50)) == len(ids) - 3


def test_each_period_has_one_run(world: World) -> None:
    winners = [leases.claim_period(world.db, "health:x", 3600, f"engine-{i}") for i in range(5)]
    assert len([w for w in winners if w is not None]) == 1
    with world.db.session() as s:
        assert len(list(s.scalars(select(PeriodicRun)))) == 1


def test_per_row_periodic_work_is_claimed_by_shard_once_per_period(world: World) -> None:
    """Each row's run of a period goes to exactly one engine, the claims cost at most one row per shard however
    many rows, and an engine looks once per period."""
    rows = [f"row-{i}" for i in range(500)]
    engines = [leases.Sharded("task", 3600) for _ in range(3)]
    got = []
    for n, e in enumerate(engines):
        assert e.due()
        got.append(e.claim(world.db, f"engine-{n}", rows))
    assert sorted(r for mine in got for r in mine) == sorted(rows)  # every row once, none twice
    assert got[0] == rows  # the first to look wins every shard; the others find them taken
    with world.db.session() as s:
        claims = list(s.scalars(select(PeriodicRun.task)))
    assert len(claims) == leases.SHARDS
    assert not engines[0].due()  # once per period
    late = leases.Sharded("task", 3600)
    assert late.due() and late.claim(world.db, "engine-late", rows) == []
    # engines looking at different rows of the same task share the shards out
    a, b = leases.Sharded("other", 3600), leases.Sharded("other", 3600)
    assert a.due() and b.due()
    first = a.claim(world.db, "a", rows[:1])
    second = b.claim(world.db, "b", rows)
    assert first == rows[:1] and rows[0] not in second
    assert len(second) == len([r for r in rows if leases.shard_of(r) != leases.shard_of(rows[0])])


def test_a_duplicate_name_from_the_database_reads_as_name_already_exists(world: World) -> None:
    _cluster(world, "same")
    with pytest.raises(IntegrityError) as caught:
        _cluster(world, "same")
    error = duplicate_entry(caught.value, "same")
    assert (error.name, error.message) == ("NAME_ALREADY_EXISTS", "Cluster with name 'same' already exists")
    with pytest.raises(IntegrityError) as caught:
        with world.db.session() as s:
            s.add(Heartbeat(engine_id="x", seen_at=utcnow()))
            s.add(Heartbeat(engine_id="x", seen_at=utcnow()))
    assert duplicate_entry(caught.value, None).name == "DB_DUPLICATE_ENTRY"
