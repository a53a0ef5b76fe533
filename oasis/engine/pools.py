"""Warm pools, kept full: periodic work that, for each pool (its own period's claim, so pools are shared out
over the engines and each pool's refill is done once per period), asks for the creates that bring the pool back
to its size, as the API would (the rows oasis/db/clusterrows.py writes, from what the API validated when the
pool was made), and for the deletion of what it holds beyond its size or of a pooled cluster that failed.

A refill acts for the pool's creator: on its trust, which, gone, stops the refill (the pool shows Error). Each
new pooled cluster counts against the project's quota like any create (the same locked check): one that would
exceed it is not made, and the pool shows Waiting with the quota's reason until room is freed. A pooled cluster
waits by design, so it has no idle limit; the pool's `max_age` is its lifecycle limit, after which the
lifecycle sweep deletes it and the refill replaces it."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from sqlalchemy import select

from oasis.db import quotas
from oasis.db.capacity import PlacementError, check_fits
from oasis.db.clusterrows import demands, write_cluster
from oasis.db.models import Cluster, ClusterPool
from oasis.db.pools import counts, members, note, release
from oasis.db.session import Database
from oasis.db.states import ClusterStatus
from oasis.engine import leases
from oasis.identity import trusts
from oasis.identity.base import Identity, IdentityError

log = logging.getLogger(__name__)

PERIOD_SECONDS = 2.0  # how soon a claimed cluster's replacement is asked for


def pooled_name(pool: ClusterPool, serial: int) -> str:
    return f"pool-{pool.name}-{serial}"


class Pools:
    """What one engine runs of the pools' refill: the pools whose period it claimed, in a thread (the identity
    may be a remote Keystone), never two runs at once."""

    def __init__(self, db: Database, engine_id: str, identity: Identity | None, quota_defaults: Mapping[str, int],
                 wake: Callable[[], None]) -> None:
        self.db, self.engine_id, self.identity = db, engine_id, identity
        self.quota_defaults, self.wake = quota_defaults, wake
        self._task: asyncio.Task | None = None

    def tick(self) -> None:
        if self._task is not None and not self._task.done():
            return
        with self.db.session() as s:
            ids = list(s.scalars(select(ClusterPool.id)))
        mine = [i for i in ids if leases.claim_period(self.db, f"pool:{i}", PERIOD_SECONDS, self.engine_id)]
        if mine:
            self._task = asyncio.create_task(asyncio.to_thread(self.refill_all, mine))
            self._task.add_done_callback(_log_failure)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def refill_all(self, pool_ids: list[str]) -> int:
        asked = sum(self.refill(pool_id) for pool_id in pool_ids)
        if asked:
            self.wake()
        return asked

    def refill(self, pool_id: str) -> int:
        """One look at one pool: the operations it asked for (creates and deletes)."""
        with self.db.session() as s:
            pool = s.get(ClusterPool, pool_id)
            if pool is None:
                return 0
            held = members(s, pool.id)
            asked = 0
            failed = [c for c in held if c.status == ClusterStatus.ERROR]
            for c in failed:  # replaced, not repaired: the reason stays on the pool and in the engine's log
                log.warning("pool %s: pooled cluster %s failed: %s", pool.name, c.name, c.status_description)
                asked += release(s, pool.id, c.id, "Replaced by its warm pool after it failed")
            live = [c for c in held if c.status != ClusterStatus.ERROR]
            # Too many (the size shrank): the youngest go first, those still starting before the ready ones.
            youngest = sorted(live, key=lambda c: c.created_at, reverse=True)
            for c in sorted(youngest, key=lambda c: c.status == ClusterStatus.ACTIVE)[:max(0, len(live) - pool.size)]:
                asked += release(s, pool.id, c.id, f"Its warm pool {pool.name} shrank to {pool.size}")
            missing = pool.size - len(live)
            if failed:
                pool.status, pool.status_description = "Filling", \
                    f"A pooled cluster failed and is replaced: {failed[0].status_description}"[:2000]
                return asked  # made again next period, not in a loop with what made it fail
            if missing <= 0:
                pool.status, pool.status_description = ("Ready" if counts(live)["ready"] >= pool.size
                                                        else "Filling"), ""
                return asked
            try:
                trusts.act_on(self.identity, pool.trust_id, "refill the warm pool")
            except trusts.TrustGone as e:
                pool.status, pool.status_description = "Error", str(e)[:2000]
                return asked
            except IdentityError as e:  # the identity is away: next period
                pool.status_description = f"Waiting for the identity service: {e}"[:2000]
                return asked
            for _ in range(missing):
                problem = self._room_for(s, pool)
                if problem:
                    pool.status, pool.status_description = "Waiting", problem[:2000]
                    return asked
                self._make(s, pool)
                asked += 1
            pool.status, pool.status_description = "Filling", ""
            return asked

    def _room_for(self, s, pool: ClusterPool) -> str | None:  # noqa: ANN001
        """Why one more pooled cluster cannot be made now (quota, the site's room), or None. The quota check
        holds the project's lock until the cluster's rows are committed, as the API's does."""
        wanted = demands(s, [(g, g["count"]) for g in pool.spec["groups"]])
        try:
            quotas.check(s, pool.project_id, pool.project_id, quotas.demand(wanted, clusters=1), self.quota_defaults)
            check_fits(s, pool.site_id, wanted)
        except quotas.QuotaExceeded as e:
            return f"Waiting for quota: {e}"
        except PlacementError as e:
            return f"Waiting for room on the site: {e}"
        return None

    def _make(self, s, pool: ClusterPool) -> Cluster:  # noqa: ANN001
        serial = pool.serial + 1
        while s.scalars(select(Cluster.id).where(Cluster.project_id == pool.project_id,
                                                 Cluster.name == pooled_name(pool, serial))).first():
            serial += 1  # a user took the name
        pool.serial = serial
        data = {**pool.spec["data"], "lifecycle": {"idle_delete_after": 0,
                                                   **({"max_age": pool.max_age} if pool.max_age else {})}}
        row = write_cluster(s, pool.project_id, pooled_name(pool, serial), data, pool.site_id, pool.spec["groups"],
                            trust_id=None, pool_id=pool.id)
        note(s, row, f"Made for pool {pool.name}", f"Made to wait, ready, in warm pool {pool.name} ({pool.id})")
        s.flush()
        log.info("pool %s: asked for pooled cluster %s", pool.name, row.name)
        return row


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("a pool refill failed; tried again next period", exc_info=task.exception())
