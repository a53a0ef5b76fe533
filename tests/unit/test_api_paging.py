"""Paging read from the marker's place (oasis.api.query._keyset_page) gives exactly the rows and markers that
Sahara's slicing of the whole ordered listing gives: every sort, both directions, filters, ties, public rows of
another project, the administrator's view, and a marker that the filter leaves out."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from oasis.db.models import Cluster, Job, new_id
from tests.world import World

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 1)


def _seed(world: World) -> None:
    p1, p2 = world.projects["p1"], world.projects["p2"]
    clusters, jobs = [], []
    for i in range(23):
        # ties on created_at (every third pair), names and plugins that repeat: the id breaks the ties
        created = T0 + timedelta(seconds=(i // 2) * 10)
        clusters.append({"id": new_id(), "project_id": p1 if i % 4 else p2, "name": f"c{i % 7}-{i:02d}",
                         "plugin_name": ("spark", "dask")[i % 2], "plugin_version": "1", "site_id": world.site_id,
                         "status": ("Active", "Error", "Spawning")[i % 3], "is_public": i % 8 == 0,
                         "spec": {}, "info": {}, "op_target": {}, "created_at": created,
                         "updated_at": None if i % 5 == 0 else created + timedelta(seconds=i % 3)})
    for i in range(31):
        created = T0 + timedelta(seconds=(i // 3) * 10)
        jobs.append({"id": new_id(), "project_id": p1 if i % 5 else p2, "job_template_id": f"jt-{i % 4}",
                     "cluster_id": None if i % 6 == 0 else clusters[i % 23]["id"],
                     "status": ("PENDING", "RUNNING", "SUCCEEDED", "FAILED")[i % 4], "op_target": {},
                     "created_at": created, "updated_at": None if i % 4 == 0 else created})
    with world.db.session() as s:
        s.execute(insert(Cluster), clusters)
        s.execute(insert(Job), jobs)


def _expected(everything: list[str], marker: str | None, limit: int) -> tuple[list[str], Any]:
    """Sahara's page and markers, from the whole ordered listing (as oasis computed them before keyset paging)."""
    start = 0
    if marker is not None:
        if marker not in everything:
            return [], {"prev": None, "next": None}
        start = everything.index(marker) + 1
    chosen = everything[start:start + limit]
    nxt = chosen[-1] if start + limit < len(everything) else None
    prev = everything[start - 1 - limit] if marker is not None and start - 1 - limit >= 0 else None
    return chosen, ({"prev": prev, "next": nxt} if marker is not None or nxt or prev else None)


def _check(world: World, path: str, key: str, who: str, params: dict[str, str], other: list[str]) -> int:
    everything = [r["id"] for r in world.get(path, who=who, params=params).json()[key]]
    checked = 0
    for limit in (1, 2, 3, 5, 100):
        # every row of the listing as the marker, none, and a row the filter leaves out
        for marker in [None, *everything, *other[:2]]:
            q = {**params, "limit": str(limit), **({"marker": marker} if marker else {})}
            got = world.get(path, who=who, params=q)
            assert got.status_code == 200, got.text
            body = got.json()
            want, markers = _expected(everything, marker, limit)
            assert [r["id"] for r in body[key]] == want, (q, who)
            assert body.get("markers") == markers, (q, who)
            checked += 1
    return checked


@pytest.mark.parametrize("who", ["alice", "admin"])
def test_cluster_pages_match_the_whole_listing(world: World, who: str) -> None:
    _seed(world)
    checked = 0
    for sort in ("", "name", "-name", "created_at", "-created_at", "status", "-plugin_name", "id", "-id",
                 "updated_at", "-updated_at"):
        for filters in ({}, {"plugin_name": "spark"}):
            params = {**filters, **({"sort_by": sort} if sort else {})}
            dask = [r["id"] for r in world.get("/v2/clusters", who=who, params={"plugin_name": "dask"}).json()
                    ["clusters"]]
            checked += _check(world, "/v2/clusters", "clusters", who, params, dask if filters else [])
    assert checked > 1000


def test_job_pages_match_the_whole_listing(world: World) -> None:
    _seed(world)
    for sort in ("", "-created_at", "status", "-status", "cluster", "updated_at", "job_template"):
        for filters in ({}, {"status": "RUNNING"}):
            params = {**filters, **({"sort_by": sort} if sort else {})}
            pending = [r["id"] for r in world.get("/v2/jobs", params={"status": "PENDING"}).json()["jobs"]]
            _check(world, "/v2/jobs", "jobs", "alice", params, pending if filters else [])


def test_a_project_pages_through_its_rows_and_public_ones_only(world: World) -> None:
    _seed(world)
    p1 = world.projects["p1"]
    seen, marker = [], None
    while True:
        body = world.get("/v2/clusters", params={"limit": 4, **({"marker": marker} if marker else {})}).json()
        seen += body["clusters"]
        marker = (body.get("markers") or {}).get("next")
        if not marker:
            break
    assert all(c["project_id"] == p1 or c["is_public"] for c in seen)
    assert len(seen) == len({c["id"] for c in seen}) == 17 + 3  # p1's 17 clusters and p2's 3 public ones


@pytest.mark.parametrize("path", ["/v2/clusters", "/v2/jobs", "/v2/workflows", "/v2/workflow-runs", "/v2/pools",
                                  "/v2/job-templates", "/v2/data-sources", "/v2/cluster-templates", "/v1.1/clusters"])
def test_a_limit_beyond_any_table_is_the_whole_listing(world: World, path: str) -> None:
    """Sahara bounds no limit: one past SQL's 64-bit LIMIT (the API fuzzer's) is a page like any other."""
    huge = world.client.get(f"{path}?limit=29548682254364018655698616320", headers=world.h())
    whole = world.client.get(path, headers=world.h())
    assert huge.status_code == whole.status_code == 200, huge.text
    key = next(k for k, v in whole.json().items() if isinstance(v, list))
    assert huge.json()[key] == whole.json()[key]
