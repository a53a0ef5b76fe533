"""Autoscaling: the decision (signals to targets, cooldown, min/max, no scale-down while busy), the plugins'
reading of their framework's load, the policy's validation on cluster create and update, and the engine's
request for a scale (as the API's scale writes it), with its event."""
from __future__ import annotations

import asyncio
import sys

import pytest
from sqlalchemy import select

from oasis.db.models import Cluster, Image, Instance, ProvisionEvent, ProvisionStep
from oasis.db.states import ClusterOp
from oasis.engine.autoscale import STATE, Autoscaler, Decision, Policy, decide, policies
from oasis.plugins.base import Load
from oasis.plugins.dask import dask_load
from oasis.plugins.spark import spark_load
from oasis.remote.hosts import Remotes

from tests.unit.conftest import World, cluster_body
from tests.unit.test_api_clusters import create, set_status

W3 = ["w0", "w1", "w2"]
P = Policy("worker", 1, 3, 30)


def load(pending: int = 0, busy: int = 0, total: int = 2, busy_workers: list[str] | None = None) -> Load:
    return Load(pending, busy, total, busy_workers or [])


# --- the decision ---------------------------------------------------------------------------------------------


def test_pending_work_grows_the_group_to_the_cores_it_needs_clamped_to_max() -> None:
    d = decide(P, load(pending=40, busy=2, total=2, busy_workers=["w0"]), ["w0"], cores_per_worker=2)
    assert d == Decision("worker", 1, 3, "scaled worker 1 → 3: 40 pending tasks, 2 busy cores of 2")
    d = decide(Policy("worker", 1, 10), load(pending=3, busy=2), ["w0"], cores_per_worker=2)
    assert d is not None and d.target == 3  # ceil((2 + 3) / 2)


def test_no_change_when_the_cores_cover_the_work() -> None:
    assert decide(P, load(pending=0, busy=2), ["w0"], 2) is None
    assert decide(P, load(pending=1, busy=3, busy_workers=["w0", "w1"]), ["w0", "w1"], 2) is None


def test_cooldown_holds_a_change_back_until_it_has_passed() -> None:
    busy = load(pending=10, busy=2)
    assert decide(P, busy, ["w0"], 2, now=100.0, last_change=90.0) is None
    assert decide(P, busy, ["w0"], 2, now=121.0, last_change=90.0) is not None


def test_a_group_below_min_or_above_max_is_brought_back_whatever_the_cooldown() -> None:
    d = decide(Policy("worker", 2, 3, 300), load(), ["w0"], 2, now=1.0, last_change=0.0)
    assert d is not None and d.target == 2
    d = decide(Policy("worker", 1, 2, 300), load(), W3, 2, now=1.0, last_change=0.0)
    assert d is not None and d.target == 1 and d.remove == ["w2", "w1"]


def test_never_below_min() -> None:
    d = decide(Policy("worker", 2, 3), load(), W3, 2)
    assert d is not None and d.target == 2 and d.remove == ["w2"]
    assert decide(Policy("worker", 2, 3), load(), ["w0", "w1"], 2) is None


def test_idle_workers_go_from_the_last_and_busy_ones_stay() -> None:
    d = decide(P, load(busy=1, busy_workers=["w2"]), W3, 2)
    assert d is not None and d.target == 1 and d.remove == ["w1", "w0"][:2] and "w2" not in d.remove
    assert d.reason.startswith("scaled worker 3 → 1: 0 pending tasks, 1 busy cores of 2; removing idle w1, w0")


def test_no_scale_down_while_work_waits_or_every_candidate_is_busy() -> None:
    # work waiting for a core (a stage would lose it): never shrink, even when the target says fewer
    assert decide(Policy("worker", 1, 3), load(pending=1, busy=0), W3, 4) is None
    # every worker holds running work: nothing can go, whatever the cores say
    assert decide(P, load(busy=2, busy_workers=W3), W3, 2) is None


def test_other_worker_groups_count_towards_the_cores() -> None:
    d = decide(Policy("extra", 0, 4), load(pending=6, busy=2), [], 2, other_workers=2)
    assert d is not None and d.target == 2


def test_policies_from_the_spec() -> None:
    spec = {"autoscaling": {"node_groups": {"b": {"min": 0, "max": 2, "cooldown": 5}, "a": {"min": 1, "max": 1}}}}
    assert policies(spec) == [Policy("a", 1, 1, 0.0), Policy("b", 0, 2, 5.0)]
    assert policies({}) == []


# --- the plugins' signals -------------------------------------------------------------------------------------


METRICS = """# HELP dask_scheduler_tasks Number of tasks known by scheduler
# TYPE dask_scheduler_tasks gauge
dask_scheduler_tasks{state="released"} 0.0
dask_scheduler_tasks{state="waiting"} 1.0
dask_scheduler_tasks{state="no-worker"} 2.0
dask_scheduler_tasks{state="queued"} 37.0
dask_scheduler_tasks{state="processing"} 3.0
dask_scheduler_tasks{state="memory"} 10.0
"""


def test_dask_load_from_the_schedulers_metrics_and_identity() -> None:
    identity = {"workers": {
        "tls://a:1": {"name": "c-worker-0", "nthreads": 2, "metrics": {"task_counts": {"executing": 2, "ready": 1,
                                                                                       "memory": 5}}},
        "tls://b:1": {"name": "c-worker-1", "nthreads": 2, "metrics": {"task_counts": {"memory": 5}}}}}
    got = dask_load(METRICS, identity)
    # queued and no-worker wait, and one task was sent to c-worker-0 beyond its two threads
    assert (got.pending, got.busy_cores, got.total_cores) == (40, 2, 4)
    assert got.busy == ["c-worker-0"] and got.workers == ["c-worker-0", "c-worker-1"]
    assert got.describe() == "40 pending tasks, 2 busy cores of 4"


def test_spark_load_from_the_masters_state() -> None:
    state = {"workers": [{"host": "10.0.0.2", "port": 7001, "cores": 2, "coresused": 2, "state": "ALIVE"},
                         {"host": "10.0.0.3", "port": 7002, "cores": 2, "coresused": 0, "state": "ALIVE"},
                         {"host": "10.0.0.4", "port": 7003, "cores": 2, "coresused": 0, "state": "DEAD"}],
             "activeapps": [{"state": "RUNNING", "cores": 2}, {"state": "WAITING", "cores": 0},
                            {"state": "WAITING", "cores": 0}]}
    names = {("10.0.0.2", 7001): "c-worker-0", ("10.0.0.3", 7002): "c-worker-1"}
    got = spark_load(state, names, executor_cores=2)
    assert (got.pending, got.busy_cores, got.total_cores, got.waiting_apps) == (4, 2, 4, 2)
    assert got.busy == ["c-worker-0"]
    assert got.describe() == "4 requested cores, 2 waiting applications, 2 busy cores of 4"


# --- the policy's validation ------------------------------------------------------------------------------------


def _error(r) -> tuple[int, str, str]:  # noqa: ANN001
    return r.status_code, r.json().get("error_name", ""), r.json().get("error_message", "")


def test_create_keeps_a_valid_policy_and_shows_it(world: World) -> None:
    c = create(world, cluster_body(plugin="dask", workers=1,
                                   autoscaling={"node_groups": {"worker": {"min": 1, "max": 4, "cooldown": 30}}}))
    assert c["autoscaling"] == {"node_groups": {"worker": {"min": 1, "max": 4, "cooldown": 30}}}
    got = world.get(f"/v2/clusters/{c['id']}").json()["cluster"]
    assert got["autoscaling"]["node_groups"]["worker"]["max"] == 4


@pytest.mark.parametrize("policy, message", [
    ({"worker": {"min": 3, "max": 2}}, "min 3 above max 2"),
    ({"nope": {"min": 1, "max": 2}}, "node group 'nope', which the cluster does not have"),
    ({"master": {"min": 1, "max": 2}}, "runs the scheduler"),
    ({"worker": {"min": 0, "max": 2}}, "needs at least one worker"),
])
def test_create_refuses_a_policy_that_does_not_fit(world: World, policy: dict, message: str) -> None:
    r = world.post("/v2/clusters", cluster_body(plugin="dask", workers=1, autoscaling={"node_groups": policy}))
    status, _, text = _error(r)
    assert status == 400 and message in text, r.text


@pytest.mark.parametrize("policy", [
    {"node_groups": {"worker": {"min": 1, "max": 100000}}},  # beyond MAX_INSTANCES
    {"node_groups": {"worker": {"min": 1}}},
    {"node_groups": {"worker": {"min": 1, "max": 2, "cooldown": -1}}},
    {"node_groups": {"worker": {"min": 1, "max": 2, "extra": 1}}},
    {"groups": {}},
])
def test_create_refuses_a_malformed_policy(world: World, policy: dict) -> None:
    r = world.post("/v2/clusters", cluster_body(plugin="dask", workers=1, autoscaling=policy))
    assert r.status_code == 400, r.text


def test_update_sets_changes_and_removes_the_policy(world: World) -> None:
    c = create(world, cluster_body(plugin="spark", workers=2))
    path = f"/v2/clusters/{c['id']}"
    r = world.patch(path, {"autoscaling": {"node_groups": {"worker": {"min": 1, "max": 3}}}})
    assert r.status_code == 202, r.text
    assert r.json()["cluster"]["autoscaling"] == {"node_groups": {"worker": {"min": 1, "max": 3, "cooldown": 0}}}
    status, _, text = _error(world.patch(path, {"autoscaling": {"node_groups": {"master": {"min": 1, "max": 3}}}}))
    assert status == 400 and "runs the master" in text
    r = world.patch(path, {"autoscaling": None})
    assert r.status_code == 202 and "autoscaling" not in r.json()["cluster"]


# --- the engine's request ----------------------------------------------------------------------------------------


class LoadOf:
    """A plugin stand-in that reports a fixed load (the real plugins read it from their framework)."""

    def __init__(self, real, value: Load) -> None:  # noqa: ANN001
        self.real, self.value = real, value

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.real, name)

    async def load(self, cluster) -> Load:  # noqa: ANN001
        return self.value


def _autoscaled(world: World, workers: int, policy: dict) -> str:
    c = create(world, cluster_body(plugin="dask", workers=workers, autoscaling={"node_groups": {"worker": policy}}))
    set_status(world, c["id"], "Active", with_instances=True)
    with world.db.session() as s:  # the engine's view of the cluster wants its image's runtime
        image = s.get(Image, world.image_id)
        image.runtime = {**(image.runtime or {}), "python": sys.executable}
    return c["id"]


def _look(world: World, cluster_id: str, value: Load, monkeypatch: pytest.MonkeyPatch) -> Decision | None:
    from oasis.engine import autoscale
    from oasis.plugins import get_plugin
    real = get_plugin("dask")
    monkeypatch.setattr(autoscale, "get_plugin", lambda name: LoadOf(real, value))
    woken: list[int] = []
    scaler = Autoscaler(world.db, Remotes(), "engine-1", world.settings.quota_defaults, lambda: woken.append(1))
    out = asyncio.run(scaler.look(cluster_id))
    assert bool(woken) == (out is not None)
    return out


def test_the_engine_asks_for_a_scale_as_the_api_does_with_its_event(world: World,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cid = _autoscaled(world, 1, {"min": 1, "max": 3, "cooldown": 0})
    d = _look(world, cid, Load(40, 1, 1, ["c1-worker-0"]), monkeypatch)
    assert d is not None and d.target == 3
    with world.db.session() as s:
        c = s.get(Cluster, cid)
        assert (c.op, c.status) == (ClusterOp.SCALE, "Validating")
        assert c.op_target == {"resize": {"worker": 3}, "add": {}, "remove": []}
        assert c.spec[STATE]["asked"] is True
        step = s.scalars(select(ProvisionStep).where(ProvisionStep.cluster_id == cid)).one()
        assert step.step_name == "Autoscale: worker 1 → 3" and step.step_type == "Engine: autoscale"
        info = s.scalars(select(ProvisionEvent.event_info).where(ProvisionEvent.step_id == step.id)).one()
        assert info == "scaled worker 1 → 3: 40 pending tasks, 1 busy cores of 1"
    assert STATE not in world.get(f"/v2/clusters/{cid}").json()["cluster"]  # its own bookkeeping is not shown


def test_a_scale_down_names_the_idle_instances_and_the_cooldown_counts_from_its_end(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = _autoscaled(world, 3, {"min": 1, "max": 3, "cooldown": 600})
    d = _look(world, cid, Load(0, 1, 3, ["c1-worker-0"]), monkeypatch)
    assert d is not None and d.remove == ["c1-worker-2", "c1-worker-1"]
    with world.db.session() as s:
        c = s.get(Cluster, cid)
        names = {i.id: i.name for i in s.scalars(select(Instance).where(Instance.cluster_id == cid))}
        assert sorted(names[i] for i in c.op_target["remove"]) == ["c1-worker-1", "c1-worker-2"]
        c.op, c.status = None, "Active"  # the scale ended
    assert _look(world, cid, Load(50, 1, 1), monkeypatch) is None  # it notes the end of the scale
    with world.db.session() as s:
        assert s.get(Cluster, cid).spec[STATE]["asked"] is False
    assert _look(world, cid, Load(50, 1, 1), monkeypatch) is None  # cooling down for 600 s


def test_no_request_while_another_operation_is_in_flight(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = _autoscaled(world, 1, {"min": 1, "max": 3})
    with world.db.session() as s:
        s.get(Cluster, cid).op = ClusterOp.UPDATE_KEYPAIR
    assert _look(world, cid, Load(40, 1, 1), monkeypatch) is None
