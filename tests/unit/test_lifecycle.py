"""Lifecycle limits: what a request may set (seconds or '2h', a future UTC time; 400 otherwise), how the cluster's
view shows them, and the engine's decisions on a fake clock (which limit deletes which cluster, with its event;
a job or a client in use keeps an idle cluster; a protected one is never deleted; one sweep per period)."""
from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from oasis.db import lifecycle
from oasis.db.models import Cluster, Job, ProvisionEvent, ProvisionStep, utcnow
from oasis.db.states import ClusterOp, ClusterStatus
from oasis.engine.lifecycle import Lifecycle, probe_every
from tests.unit.conftest import World, cluster_body

pytestmark = pytest.mark.unit

T0 = datetime(2030, 1, 1, 12, 0, 0)


# --- validation (pure) ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, seconds", [(3600, 3600), ("2h", 7200), ("1h30m", 5400), ("90s", 90), ("1d", 86400),
                                             ("45", 45), (0, 0), (None, 0), (2.5, 2)])
def test_idle_takes_seconds_or_a_duration_and_zero_or_null_is_never(value: Any, seconds: int) -> None:
    assert lifecycle.parse({"idle_delete_after": value}, T0) == {"idle_delete_after": seconds}


@pytest.mark.parametrize("body, words", [
    ({"idle_delete_after": -5}, "positive"), ({"idle_delete_after": "soon"}, "duration such as"),
    ({"idle_delete_after": True}, "number of seconds"), ({"idle_delete_after": "2h 5x"}, "duration such as"),
    ({"max_age": 0}, "positive"), ({"max_age": "-1h"}, "duration such as"),
    ({"max_age": 10 ** 12}, "ten years"),
    ({"delete_at": "2029-12-31T00:00:00Z"}, "must be in the future"), ({"delete_at": "tomorrow"}, "ISO 8601"),
    ({"delete_at": "2099-01-01T00:00:00Z"}, "ten years ahead"), ({"ttl": 5}, "no limit 'ttl'"),
])
def test_bad_limits_are_refused_with_the_reason(body: dict[str, Any], words: str) -> None:
    with pytest.raises(lifecycle.LimitError, match=words):
        lifecycle.parse(body, T0)


def test_delete_at_is_kept_as_utc() -> None:
    assert lifecycle.parse({"delete_at": "2030-01-01T15:00:00+02:00"}, T0) == {"delete_at": "2030-01-01T13:00:00Z"}
    assert lifecycle.parse({"delete_at": "2030-01-01T13:00:00"}, T0) == {"delete_at": "2030-01-01T13:00:00Z"}
    # null removes a limit on update
    assert lifecycle.merged({"max_age": 5, "delete_at": "x"}, {"max_age": None}) == {"delete_at": "x"}


def test_the_probe_interval_is_a_tenth_of_the_limit_within_bounds() -> None:
    assert probe_every(5) == 10.0 and probe_every(600) == 60.0 and probe_every(86400) == 300.0


# --- the API ------------------------------------------------------------------------------------------------------


def _create(world: World, name: str = "c1", **extra: Any) -> dict[str, Any]:
    r = world.post("/v2/clusters", cluster_body(name, plugin="dask", **extra))
    assert r.status_code == 202, r.text
    return r.json()["cluster"]


def test_create_keeps_the_limits_and_the_view_shows_when_each_fires(world: World) -> None:
    at = (utcnow() + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    c = _create(world, lifecycle={"idle_delete_after": "1h", "max_age": 7200, "delete_at": at})
    lc = c["lifecycle"]
    assert (lc["idle_delete_after"], lc["idle_delete_after_from"], lc["max_age"], lc["delete_at"]) == \
        (3600, "cluster", 7200, at)
    # a cluster being created has no idle limit running yet: max_age first, then delete_at
    assert [d["limit"] for d in lc["deletes"]] == ["max_age", "delete_at"]
    assert 7100 < lc["deletes"][0]["seconds_left"] <= 7200
    shown = world.get(f"/v2/clusters/{c['id']}").json()["cluster"]["lifecycle"]
    assert shown["max_age"] == 7200 and "lifecycle" not in (shown.get("info") or {})


def test_without_limits_the_deployment_default_idle_applies(world: World) -> None:
    lc = _create(world)["lifecycle"]
    assert (lc["idle_delete_after"], lc["idle_delete_after_from"]) == (86400, "deployment")
    assert lc["max_age"] is None and lc["delete_at"] is None


def test_bad_limits_are_400s(world: World) -> None:
    for bad in ({"max_age": -1}, {"delete_at": "2001-01-01T00:00:00Z"}, {"idle_delete_after": "a while"},
                {"nope": 1}, {"max_age": [1]}):
        r = world.post("/v2/clusters", cluster_body("bad", plugin="dask", lifecycle=bad))
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error_name"] in ("INVALID_DATA", "VALIDATION_ERROR"), r.text
    assert world.get("/v2/clusters").json()["clusters"] == []


def test_v1_create_takes_the_field_too(world: World) -> None:
    body = cluster_body("v1c", plugin="dask", lifecycle={"max_age": "2d"})
    body["hadoop_version"] = body.pop("plugin_version")
    r = world.post(f"/v1.1/{world.projects['p1']}/clusters", body)
    assert r.status_code == 202, r.text
    assert r.json()["cluster"]["lifecycle"]["max_age"] == 172800


def test_update_changes_and_resets_the_limits(world: World) -> None:
    c = _create(world, lifecycle={"max_age": 7200})
    r = world.patch(f"/v2/clusters/{c['id']}", {"lifecycle": {"idle_delete_after": 0}})
    assert r.status_code == 202, r.text
    lc = r.json()["cluster"]["lifecycle"]
    assert (lc["idle_delete_after"], lc["idle_delete_after_from"], lc["max_age"]) == (None, "cluster", 7200)
    r = world.patch(f"/v2/clusters/{c['id']}", {"lifecycle": {"max_age": None, "idle_delete_after": "10m"}})
    lc = r.json()["cluster"]["lifecycle"]
    assert (lc["idle_delete_after"], lc["max_age"]) == (600, None)
    r = world.patch(f"/v2/clusters/{c['id']}", {"lifecycle": None})
    assert r.json()["cluster"]["lifecycle"]["idle_delete_after_from"] == "deployment"
    r = world.patch(f"/v2/clusters/{c['id']}", {"lifecycle": {"delete_at": "1999-01-01T00:00:00Z"}})
    assert r.status_code == 400 and "future" in r.json()["error_message"]


# --- the engine's decisions, on a fake clock ------------------------------------------------------------------


def _settle(world: World, cluster_id: str, status: str = ClusterStatus.ACTIVE, at: datetime = T0,
            **spec: Any) -> None:
    """The cluster as if its create had finished at `at`."""
    with world.db.session() as s:
        c = s.get(Cluster, cluster_id)
        c.status, c.op, c.op_step, c.created_at, c.updated_at = status, None, None, at, at
        if spec:
            c.spec = {**c.spec, **spec}


def _job(world: World, cluster_id: str, status: str, **times: datetime) -> None:
    with world.db.session() as s:
        s.add(Job(project_id=world.projects["p1"], job_template_id="t", cluster_id=cluster_id, status=status,
                  created_at=times.pop("created_at", T0), **times))


def _sweep(world: World, at: datetime, idle: float = 86400, grace: float = 3600,
           in_use: str | None = None) -> list[tuple[str, str]]:
    engine = Lifecycle(world.db, None, "e1", idle, grace)  # type: ignore[arg-type]

    async def probe(cluster_id: str) -> str | None:
        return in_use

    engine._probe = probe  # type: ignore[method-assign]
    return asyncio.run(engine.sweep(at))


def _row(world: World, cluster_id: str) -> Cluster:
    with world.db.session() as s:
        return s.get(Cluster, cluster_id)


def _events(world: World, cluster_id: str) -> list[tuple[str, str]]:
    with world.db.session() as s:
        return [(st.step_name, ev.event_info) for st, ev in s.execute(
            select(ProvisionStep, ProvisionEvent).join(ProvisionEvent, ProvisionEvent.step_id == ProvisionStep.id)
            .where(ProvisionStep.cluster_id == cluster_id, ProvisionStep.step_type == "Engine: lifecycle"))]


def test_an_idle_cluster_is_deleted_after_its_limit_with_an_event(world: World) -> None:
    c = _create(world, lifecycle={"idle_delete_after": 600})
    _settle(world, c["id"])
    assert _sweep(world, T0 + timedelta(seconds=599)) == []
    assert _row(world, c["id"]).status == ClusterStatus.ACTIVE
    assert _sweep(world, T0 + timedelta(seconds=601)) == [(c["id"], "idle_delete_after")]
    row = _row(world, c["id"])
    assert (row.status, row.op, row.op_target) == (ClusterStatus.DELETING, ClusterOp.DELETE, {"force": False})
    assert "idle_delete_after limit" in row.status_description
    [(step, info)] = _events(world, c["id"])
    assert step == "Lifecycle: idle_delete_after"
    assert "idle (no job running or pending, no client connected) since 2030-01-01T12:00:00Z" in info
    # asked once: a second sweep does not ask again, nor add an event
    assert _sweep(world, T0 + timedelta(seconds=700)) == [] and len(_events(world, c["id"])) == 1


def test_a_running_job_keeps_an_idle_cluster_and_its_end_restarts_the_clock(world: World) -> None:
    c = _create(world, lifecycle={"idle_delete_after": 600})
    _settle(world, c["id"])
    _job(world, c["id"], "RUNNING", start_time=T0 + timedelta(seconds=10))
    assert _sweep(world, T0 + timedelta(hours=5)) == []
    with world.db.session() as s:
        j = s.scalars(select(Job).where(Job.cluster_id == c["id"])).one()
        j.status, j.end_time = "SUCCEEDED", T0 + timedelta(hours=5)
    assert _sweep(world, T0 + timedelta(hours=5, seconds=599)) == []
    assert _sweep(world, T0 + timedelta(hours=5, seconds=601)) == [(c["id"], "idle_delete_after")]


def test_a_client_in_use_keeps_an_idle_cluster_and_is_remembered(world: World) -> None:
    c = _create(world, lifecycle={"idle_delete_after": 600})
    _settle(world, c["id"])
    at = T0 + timedelta(seconds=700)
    assert _sweep(world, at, in_use="1 Dask client(s) connected, 0 task(s) processing") == []
    row = _row(world, c["id"])
    assert row.status == ClusterStatus.ACTIVE and row.updated_at == T0  # the row's own change time stays
    view = world.get(f"/v2/clusters/{c['id']}").json()["cluster"]["lifecycle"]
    assert view["idle_since"] == "2030-01-01T12:11:40Z"
    assert view["last_seen_in_use"].startswith("1 Dask client")
    # the client went: idle counts from when it was last seen
    assert _sweep(world, at + timedelta(seconds=599)) == []
    assert _sweep(world, at + timedelta(seconds=601)) == [(c["id"], "idle_delete_after")]


def test_the_deployment_default_applies_unless_the_cluster_says_never(world: World) -> None:
    default, never, off = _create(world, "dflt"), _create(world, "never", lifecycle={"idle_delete_after": None}), \
        _create(world, "zero", lifecycle={"idle_delete_after": 0})
    for c in (default, never, off):
        _settle(world, c["id"])
    later = T0 + timedelta(days=2)
    assert _sweep(world, later) == [(default["id"], "idle_delete_after")]
    [(_, info)] = _events(world, default["id"])
    assert "(the deployment's default)" in info
    other = _create(world, "other")
    _settle(world, other["id"])
    assert _sweep(world, later, idle=0) == []  # OASIS_IDLE_DELETE_AFTER_SECONDS=0: off


def test_delete_at_and_max_age_fire_even_while_busy(world: World) -> None:
    at = _create(world, "at", lifecycle={"delete_at": (utcnow() + timedelta(hours=1)).isoformat() + "Z"})
    old = _create(world, "old", lifecycle={"max_age": 3600})
    _settle(world, old["id"])
    _job(world, old["id"], "RUNNING")
    _job(world, at["id"], "RUNNING")
    with world.db.session() as s:
        s.get(Cluster, at["id"]).status = ClusterStatus.ACTIVE
    deadline = lifecycle.limits(_row(world, at["id"]).spec, 0).delete_at
    now = max(deadline, T0 + timedelta(seconds=3601))
    assert sorted(_sweep(world, now)) == sorted([(at["id"], "delete_at"), (old["id"], "max_age")])
    assert "older than its max_age of 3600 s (created 2030-01-01T12:00:00Z)" in _events(world, old["id"])[0][1]
    assert "delete_at time" in _events(world, at["id"])[0][1]


def test_max_age_counts_from_creation_even_while_the_create_runs(world: World) -> None:
    c = _create(world, lifecycle={"max_age": 60})
    with world.db.session() as s:
        row = s.get(Cluster, c["id"])
        row.created_at, row.status, row.op = T0, ClusterStatus.WAITING, ClusterOp.CREATE
    assert _sweep(world, T0 + timedelta(seconds=61)) == [(c["id"], "max_age")]
    assert _row(world, c["id"]).op == ClusterOp.DELETE  # replaces the stuck create, as the API's delete does


def test_a_cluster_in_error_is_deleted_after_the_grace(world: World) -> None:
    c = _create(world, lifecycle={"idle_delete_after": 0})
    _settle(world, c["id"], status=ClusterStatus.ERROR)
    assert _sweep(world, T0 + timedelta(seconds=3599)) == []
    assert _sweep(world, T0 + timedelta(seconds=3601), grace=0) == []  # OASIS_ERROR_CLUSTER_GRACE_SECONDS=0: off
    assert _sweep(world, T0 + timedelta(seconds=3601)) == [(c["id"], "error_grace")]
    assert "in Error since 2030-01-01T12:00:00Z" in _events(world, c["id"])[0][1]


def test_a_protected_cluster_is_deleted_by_no_limit(world: World) -> None:
    c = _create(world, is_protected=True, lifecycle={"idle_delete_after": 60, "max_age": 60})
    _settle(world, c["id"])
    assert _sweep(world, T0 + timedelta(days=3)) == []
    assert world.get(f"/v2/clusters/{c['id']}").json()["cluster"]["lifecycle"]["deletes"] == []


def test_a_job_that_starts_between_the_look_and_the_deletion_keeps_the_cluster(world: World) -> None:
    c = _create(world, lifecycle={"idle_delete_after": 60})
    _settle(world, c["id"])
    engine = Lifecycle(world.db, None, "e1", 0, 0)  # type: ignore[arg-type]
    _job(world, c["id"], "PENDING")
    assert engine._delete(c["id"], "idle_delete_after", T0 + timedelta(hours=1)) is False
    assert _row(world, c["id"]).status == ClusterStatus.ACTIVE


def test_each_period_is_swept_by_one_engine(world: World) -> None:
    async def run() -> list[bool]:
        engines = [Lifecycle(world.db, None, f"e{n}", 60, 60) for n in (1, 2)]  # type: ignore[arg-type]
        for e in engines:
            e.tick()
        started = [e._task is not None for e in engines]
        await asyncio.gather(*(e.stop() for e in engines))
        return started

    assert sorted(asyncio.run(run())) == [False, True]


# --- the CLI ------------------------------------------------------------------------------------------------------

from tests.unit.test_cli import FakeService, fake, run  # noqa: E402,F401 (the CLI's fake service and its runner)


def test_cluster_show_has_the_lifecycle_table(fake: FakeService) -> None:  # noqa: F811
    fake.objects["clusters"].append({
        "id": "c1", "name": "alpha", "status": "Active", "plugin_name": "dask", "node_groups": [],
        "lifecycle": {"idle_delete_after": 3600, "idle_delete_after_from": "deployment", "max_age": 86400,
                      "delete_at": None, "idle_since": "2030-01-01T12:00:00Z", "busy": None,
                      "last_seen_in_use": None,
                      "deletes": [{"limit": "idle_delete_after", "at": "2030-01-01T13:00:00Z", "seconds_left": 3599},
                                  {"limit": "max_age", "at": "2030-01-02T12:00:00Z", "seconds_left": 90000}]}})
    out = run("cluster", "show", "alpha").stdout
    assert "Lifecycle (idle since 2030-01-01T12:00:00Z)" in out
    assert re.search(r"idle_delete_after\s+│ 3600 s idle \(deployment\)\s+│ 2030-01-01T13:00:00Z\s+│ 59m 59s", out)
    assert re.search(r"max_age\s+│ 86400 s after creation\s+│ 2030-01-02T12:00:00Z\s+│ 1d 1h 0m", out)


def test_cluster_create_and_lifecycle_send_the_limits(fake: FakeService) -> None:  # noqa: F811
    result = run("cluster", "create", "wc", "--plugin", "dask", "--idle-delete-after", "2h", "--max-age", "3600")
    assert result.exit_code == 0, result.output
    assert fake.bodies("POST", "/v2/clusters")[0]["lifecycle"] == {"idle_delete_after": "2h", "max_age": 3600}
    cid = fake.objects["clusters"][0]["id"]
    result = run("cluster", "lifecycle", "wc", "--idle-delete-after", "0", "--delete-at", "none")
    assert result.exit_code == 0, result.output
    assert fake.bodies("PATCH", f"/v2/clusters/{cid}") == [{"lifecycle": {"idle_delete_after": 0, "delete_at": None}}]
    assert run("cluster", "lifecycle", "wc", "--reset").exit_code == 0
    assert fake.bodies("PATCH", f"/v2/clusters/{cid}")[-1] == {"lifecycle": None}
