"""Autoscaling: the decision (signals to targets, cooldown, min/max, no scale-down while busy), the plugins'
reading of their framework's load, the policy's validation on cluster create and update, and the engine's
request for a scale (as the API's scale writes it), with its event."""
from __future__ import annotations

import asyncio
import json
import sys

import pytest
from sqlalchemy import select

from oasis.db.models import Cluster, Image, Instance, ProvisionEvent, ProvisionStep
from oasis.db.states import ClusterOp
from oasis.engine.autoscale import STATE, Autoscaler, Decision, Policy, decide, policies
from oasis.plugins import spark_dynalloc
from oasis.plugins.base import ClusterView, InstanceView, Load
from oasis.plugins.dask import dask_load
from oasis.plugins.spark import SparkPlugin, spark_load
from oasis.plugins.spark_dynalloc import Ask
from oasis.remote.hosts import Remotes
from oasis.remote.local import LocalRemote

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


# --- Spark dynamic allocation: what a driver asks for ----------------------------------------------------------


def test_spark_load_counts_what_drivers_with_dynamic_allocation_ask_for_beyond_what_they_have() -> None:
    state = {"workers": [{"host": "10.0.0.2", "port": 7001, "cores": 1, "coresused": 1, "state": "ALIVE"}],
             "activeapps": [{"id": "app-1", "state": "RUNNING", "cores": 1},  # one executor, asks for 7
                            {"id": "app-2", "state": "WAITING", "cores": 0},  # dynamic, no task: asks for none
                            {"id": "app-3", "state": "WAITING", "cores": 0},  # static: one executor at least
                            {"id": "app-4", "state": "RUNNING", "cores": 1}]}  # dynamic, has what it asks for
    asks = {"app-1": Ask(7, 1), "app-2": Ask(0, 0), "app-4": Ask(1, 1), "app-gone": Ask(9, 0)}
    got = spark_load(state, {("10.0.0.2", 7001): "c-worker-0"}, executor_cores=2, asks=asks)
    assert (got.pending, got.asked_executors, got.waiting_apps) == ((6 + 1) * 2, 6, 2)
    assert got.describe() == ("14 requested cores, 2 waiting applications, 6 executors asked by dynamic allocation, "
                              "1 busy cores of 1")
    d = decide(Policy("worker", 1, 3), got, ["c-worker-0"], cores_per_worker=1)
    assert d is not None and d.target == 3 and "6 executors asked by dynamic allocation" in d.reason


def _spark_view(configs: dict | None = None) -> ClusterView:
    inst = InstanceView("i1", "m", "master", ["master"], "127.0.0.1", "/base/i1", {"master": 20000, "master_ui": 20001},
                        2, 2048, remote=None, agent=None)  # type: ignore[arg-type]
    return ClusterView("c1", "c", "4.3", configs or {}, {"python": "/usr/bin/python3", "spark_home": "/opt/spark"},
                       [inst], secrets={"insecure": True})


def _confs(argv: list[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--conf")


def test_a_job_with_dynamic_allocation_gets_the_metrics_sink_and_sensible_defaults() -> None:
    plugin, workdir = SparkPlugin(), "/base/i1/jobs/j1"
    plain = _confs(plugin.launch(_spark_view(), "Spark", f"{workdir}/a.py", [], {}, [], workdir).argv)
    assert not any(k.startswith(("spark.metrics.", "spark.dynamicAllocation.")) for k in plain)
    got = _confs(plugin.launch(_spark_view(), "Spark", f"{workdir}/a.py", [], {
        "spark.dynamicAllocation.enabled": "true", "spark.dynamicAllocation.executorIdleTimeout": "2s"}, [],
        workdir).argv)
    assert got["spark.metrics.conf.driver.sink.oasisalloc.class"] == "org.apache.spark.metrics.sink.CsvSink"
    assert got["spark.metrics.conf.driver.sink.oasisalloc.directory"] == f"{workdir}/{spark_dynalloc.METRICS_DIR}"
    assert got["spark.metrics.conf.driver.sink.oasisalloc.period"] == "1"
    assert got["spark.dynamicAllocation.shuffleTracking.enabled"] == "true"
    assert got["spark.dynamicAllocation.shuffleTracking.timeout"] == "60s"
    assert got["spark.dynamicAllocation.executorIdleTimeout"] == "2s"  # the job's own wins
    # enabled for the whole cluster: its own settings win over oasis's defaults (they reach the driver through
    # the job's properties file), and the directory the driver writes into exists before it starts
    cluster = _spark_view({"general": {"spark.dynamicAllocation.enabled": "true",
                                       "spark.dynamicAllocation.cachedExecutorIdleTimeout": "60s"}})
    got = _confs(plugin.launch(cluster, "Spark", f"{workdir}/a.py", [], {}, [], workdir).argv)
    assert "spark.metrics.conf.driver.sink.oasisalloc.class" in got
    assert "spark.dynamicAllocation.cachedExecutorIdleTimeout" not in got
    assert f"{workdir}/{spark_dynalloc.METRICS_DIR}/README" in plugin.job_files(cluster, workdir)


def _gauges(d, app: str, target: int, have: int) -> None:  # noqa: ANN001
    d.mkdir(parents=True, exist_ok=True)
    for name, value in (("numberTargetExecutors", target), ("numberAllExecutors", have),
                        ("numberMaxNeededExecutors", target)):
        (d / f"{app}.{spark_dynalloc.GAUGES}.{name}.csv").write_text(f"t,value\n1,{value - 1}\n2,{value}\n")


def test_the_load_probe_reads_the_drivers_gauges_and_the_master_in_one_command_and_cleans_ended_apps(
        tmp_path) -> None:  # noqa: ANN001
    import http.server
    import threading

    state = {"status": "ALIVE", "workers": [], "activeapps": [{"id": "app-1", "state": "RUNNING"}],
             "completedapps": [{"id": "app-0"}]}

    class Master(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = json.dumps(state).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # noqa: ANN002
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Master)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    master = tmp_path / "i1"
    _gauges(master / "jobs" / "j1" / "metrics", "app-1", 5, 2)
    _gauges(master / "jobs" / "j0" / "metrics", "app-0", 3, 0)  # ended: ignored, and its files removed
    (master / "jobs" / "j0" / "metrics" / "README").write_text("kept")
    calls: list[list[str]] = []

    class Counting(LocalRemote):
        async def run(self, argv, **kwargs):  # noqa: ANN001, ANN003, ANN201
            calls.append(argv)
            return await super().run(argv, **kwargs)

    inst = InstanceView("i1", "m", "master", ["master"], "127.0.0.1", str(master), {}, 1, 1024, remote=Counting(),
                        agent=None)  # type: ignore[arg-type]
    try:
        got, asks = asyncio.run(spark_dynalloc.read(inst, sys.executable,
                                                    f"http://127.0.0.1:{server.server_port}/json/", None))
    finally:
        server.shutdown()
    assert got == state and asks == {"app-1": Ask(5, 2)} and asks["app-1"].missing == 3
    assert len(calls) == 1  # one remote command for the master's state and every driver's gauges
    assert sorted(p.name for p in (master / "jobs" / "j0" / "metrics").iterdir()) == ["README"]
    assert len(list((master / "jobs" / "j1" / "metrics").iterdir())) == 3


# --- worst cases -----------------------------------------------------------------------------------------------


def test_dead_workers_count_towards_max_are_replaced_within_it_and_go_first() -> None:
    # w0 died (the framework does not have it): its cores are replaced, but never beyond max
    dead = Load(pending=4, busy_cores=2, total_cores=2, busy=["w1", "w2"], workers=["w1", "w2"])
    assert decide(P, dead, W3, 1) is None  # at max already: no runaway growth however much waits
    d = decide(Policy("worker", 1, 5), dead, W3, 1)
    assert d is not None and d.target == 5  # 2 + 4 cores of registered workers, and the dead one
    # nothing waits: the dead one goes first, a registered busy one never
    idle = Load(pending=0, busy_cores=1, total_cores=2, busy=["w1"], workers=["w1", "w2"])
    d = decide(P, idle, W3, 1)
    assert d is not None and d.remove == ["w0", "w2"] and "w1" not in d.remove and "(not registered: w0)" in d.reason
    # every registered one busy: only the dead one goes
    d = decide(P, Load(0, 2, 2, ["w1", "w2"], ["w1", "w2"]), W3, 1)
    assert d is not None and d.remove == ["w0"] and d.target == 2


def test_flapping_load_around_a_boundary_changes_the_group_at_most_once_a_cooldown() -> None:
    policy = Policy("worker", 1, 3, cooldown=30)
    members, last, changes = ["w0", "w1"], 0.0, []
    for t in range(1, 120):  # the load crosses the boundary of 2 workers every second
        load = Load(pending=1 if t % 2 else 0, busy_cores=2 if t % 2 else 1, total_cores=len(members),
                    busy=["w0"], workers=list(members))
        d = decide(policy, load, members, 1, now=float(t), last_change=last)
        if d is not None:
            changes.append(t)
            members = [f"w{i}" for i in range(d.target)] if d.target > len(members) else \
                [m for m in members if m not in d.remove]
            last = float(t)
    assert changes and all(b - a >= 30 for a, b in zip(changes, changes[1:])), changes


def _scaler(world: World, value: Load, monkeypatch: pytest.MonkeyPatch, clock: list[float],
            quota: dict | None = None, on_load=None) -> Autoscaler:  # noqa: ANN001
    from types import SimpleNamespace

    from oasis.engine import autoscale
    from oasis.plugins import get_plugin
    real = get_plugin("dask")

    class Plugin(LoadOf):
        async def load(self, cluster) -> Load:  # noqa: ANN001
            if on_load is not None:
                on_load()
            return self.value

    monkeypatch.setattr(autoscale, "get_plugin", lambda name: Plugin(real, value))
    monkeypatch.setattr(autoscale, "time", SimpleNamespace(time=lambda: clock[0]))
    return Autoscaler(world.db, Remotes(), "engine-1", {**world.settings.quota_defaults, **(quota or {})},
                      lambda: None)


def _events(world: World, cid: str) -> list[tuple[str, str]]:
    with world.db.session() as s:
        steps = s.scalars(select(ProvisionStep).where(ProvisionStep.cluster_id == cid,
                                                      ProvisionStep.step_type == "Engine: autoscale")).all()
        return [(st.step_name, s.scalars(select(ProvisionEvent.event_info).where(
            ProvisionEvent.step_id == st.id)).one()) for st in steps]


def _end_scale(world: World, cid: str, failure: str = "") -> None:
    with world.db.session() as s:
        c = s.get(Cluster, cid)
        c.op, c.op_target, c.status, c.status_description = None, None, "Active", failure


def test_a_failed_scale_is_not_asked_again_every_period_it_backs_off_with_one_event(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from oasis.engine.autoscale import FAILURE_BACKOFF
    cid = _autoscaled(world, 1, {"min": 1, "max": 3, "cooldown": 0})
    clock = [1000.0]
    scaler = _scaler(world, Load(40, 1, 1, ["c1-worker-0"]), monkeypatch, clock)
    assert asyncio.run(scaler.look(cid)) is not None
    failure = "Scaling cluster failed for the following reason(s): no host has room"
    _end_scale(world, cid, failure)
    asks = 1
    for _ in range(20):  # 40 s of periods: it notes the failure, then waits
        clock[0] += 2
        if asyncio.run(scaler.look(cid)) is not None:
            asks += 1
            _end_scale(world, cid, failure)
    assert asks == 2  # the first ask, and one after FAILURE_BACKOFF (30 s)
    failed = [info for name, info in _events(world, cid) if name == "Autoscale: worker scale failed"]
    assert len(failed) == 1 and "no host has room" in failed[0] and f"waits {FAILURE_BACKOFF:.0f} s" in failed[0]
    with world.db.session() as s:
        state = s.get(Cluster, cid).spec[STATE]
    assert state["failures"] == 2 and state["retry_at"] - clock[0] > FAILURE_BACKOFF  # doubled
    # a scale that works ends the row of failures
    clock[0] = state["retry_at"] + 1
    assert asyncio.run(scaler.look(cid)) is not None
    _end_scale(world, cid)
    clock[0] += 2
    asyncio.run(scaler.look(cid))
    with world.db.session() as s:
        assert "failures" not in s.get(Cluster, cid).spec[STATE]


@pytest.mark.parametrize("change", ["scale", "delete"])
def test_a_scale_or_delete_by_the_user_between_the_decision_and_the_ask_wins(
        world: World, monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    cid = _autoscaled(world, 1, {"min": 1, "max": 3})
    theirs = {"resize": {"worker": 2}, "add": {}, "remove": []}

    def user() -> None:  # while the autoscaler reads the load, the user's request is written
        with world.db.session() as s:
            c = s.get(Cluster, cid)
            if change == "scale":
                c.op, c.op_target, c.status = ClusterOp.SCALE, theirs, "Validating"
            else:
                c.op, c.status = ClusterOp.DELETE, "Deleting"

    scaler = _scaler(world, Load(40, 1, 1, ["c1-worker-0"]), monkeypatch, [1000.0], on_load=user)
    assert asyncio.run(scaler.look(cid)) is None
    with world.db.session() as s:
        c = s.get(Cluster, cid)
        assert c.op == (ClusterOp.SCALE if change == "scale" else ClusterOp.DELETE)
        assert change != "scale" or c.op_target == theirs
        assert not (c.spec.get(STATE) or {}).get("asked")
    assert _events(world, cid) == []


def test_a_quota_refusal_is_one_event_and_the_growth_that_fits_is_asked(world: World,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cid = _autoscaled(world, 1, {"min": 1, "max": 3})  # a scheduler and a worker: 2 instances
    clock = [1000.0]
    wide = Load(40, 1, 1, ["c1-worker-0"])
    scaler = _scaler(world, wide, monkeypatch, clock, quota={"instances": 2})
    for _ in range(5):
        clock[0] += 2
        assert asyncio.run(scaler.look(cid)) is None
    refused = [info for name, info in _events(world, cid) if name == "Autoscale: worker not scaled"]
    assert len(refused) == 1 and "Quota exceeded" in refused[0], _events(world, cid)
    # the load stops asking for growth, then asks again: a new refusal is news
    asyncio.run(_scaler(world, Load(0, 1, 1, ["c1-worker-0"]), monkeypatch, clock, {"instances": 2}).look(cid))
    asyncio.run(_scaler(world, wide, monkeypatch, clock, {"instances": 2}).look(cid))
    assert len([n for n, _ in _events(world, cid) if n == "Autoscale: worker not scaled"]) == 2
    # room for one more instance: the group grows by one rather than not at all
    d = asyncio.run(_scaler(world, wide, monkeypatch, clock, {"instances": 3}).look(cid))
    assert d is not None and d.target == 2 and "scaled worker 1 → 2:" in d.reason and "(not 3: Quota" in d.reason
    with world.db.session() as s:
        assert s.get(Cluster, cid).op_target["resize"] == {"worker": 2}
