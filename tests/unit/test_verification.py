"""Cluster verification: the GREEN / YELLOW / RED decision from the framework's answer and the hosts' health,
the plugins' reading of their frameworks' answers, and the engine's driving (each verification run by one engine,
an outcome written only where it is still wanted, an event when the health changes)."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import select

from oasis.db.models import Cluster, Host, Instance, NodeGroup, ProvisionStep
from oasis.engine import verification as vf
from oasis.engine.verification import HostState, Verifications, decide
from oasis.plugins.base import ClusterView, FrameworkHealth, InstanceView
from oasis.plugins.dask import DaskPlugin
from oasis.plugins.spark import SparkPlugin
from oasis.remote.base import Result, Unreachable
from tests.unit.conftest import World, cluster_body

pytestmark = pytest.mark.unit


def up(registered: list[str], expected: tuple[str, ...] = ("w1", "w2")) -> FrameworkHealth:
    return FrameworkHealth("scheduler", True, "the scheduler on m answers", list(expected), registered)


HOSTS = [HostState("h1", True, masters=["m"], others=["w1"]), HostState("h2", True, others=["w2"])]


def by_name(checks: list[tuple[str, str, str]]) -> dict[str, tuple[str, str]]:
    return {name: (status, description) for name, status, description in checks}


def test_all_up_is_green() -> None:
    status, checks = decide(up(["w1", "w2"]), HOSTS)
    assert status == "GREEN" and {c[1] for c in checks} == {"GREEN"}
    assert by_name(checks)["Workers registered"][1] == "All 2 workers are registered with the scheduler"


def test_a_missing_worker_is_yellow_and_named() -> None:
    status, checks = decide(up(["w1"]), HOSTS)
    assert status == "YELLOW"
    assert by_name(checks)["Workers registered"] == (
        "YELLOW", "1 of 2 workers are registered with the scheduler; missing: w2")
    assert by_name(checks)["Scheduler alive"][0] == "GREEN"


def test_no_worker_registered_is_red() -> None:
    status, checks = decide(up([]), HOSTS)
    assert status == "RED" and by_name(checks)["Workers registered"][0] == "RED"


def test_a_master_that_does_not_answer_is_red_with_its_reason() -> None:
    fw = FrameworkHealth("scheduler", False, "the scheduler on m does not answer: ConnectionRefusedError", ["w1"])
    status, checks = decide(fw, HOSTS)
    assert status == "RED"
    assert by_name(checks)["Scheduler alive"] == ("RED", fw.detail)
    assert by_name(checks)["Workers registered"][0] == "RED"


def test_an_unreachable_host_of_workers_only_is_yellow() -> None:
    hosts = [HOSTS[0], HostState("h2", False, "connection refused", "2026-01-01T00:00:00", others=["w2"])]
    status, checks = decide(up(["w1", "w2"]), hosts)
    assert status == "YELLOW"
    state, why = by_name(checks)["Hosts reachable"]
    assert state == "YELLOW" and "h2" in why and "w2" in why and "connection refused" in why


def test_the_masters_host_unreachable_is_red() -> None:
    hosts = [HostState("h1", False, "timed out", masters=["m"], others=["w1"]), HOSTS[1]]
    status, checks = decide(up(["w1", "w2"]), hosts)
    assert status == "RED" and by_name(checks)["Hosts reachable"][0] == "RED"
    assert "scheduler's host" in by_name(checks)["Hosts reachable"][1]


def test_hosts_not_checked_yet_do_not_count_against_the_cluster() -> None:
    status, checks = decide(up(["w1", "w2"]), [HostState("h1", None, masters=["m"], others=["w1", "w2"])])
    assert status == "GREEN" and "not checked yet: h1" in by_name(checks)["Hosts reachable"][1]


# --- the plugins read their frameworks' answers ----------------------------------------------------------------


class Answers:
    """A Remote whose probe answers with `body` (or fails as given); it records what it was asked."""

    address = "10.0.0.1"

    def __init__(self, body: Any = None, rc: int = 0, error: Exception | None = None) -> None:
        self.body, self.rc, self.error, self.asked = body, rc, error, []

    async def run(self, argv, *, timeout=300, check=True, stdin=None):  # noqa: ANN001, ANN201
        self.asked.append((argv, stdin))
        if self.error is not None:
            raise self.error
        return Result(self.rc, json.dumps(self.body) if self.rc == 0 else "", "" if self.rc == 0 else
                      "URLError: [Errno 111] Connection refused")


def view(remote: Answers, master: str) -> ClusterView:
    def inst(name: str, procs: list[str], ports: dict[str, int]) -> InstanceView:
        return InstanceView(name, name, "ng", procs, "10.0.0.1", f"/w/{name}", ports, 1, 1024, remote,
                            None)  # type: ignore[arg-type]

    secrets = {"ca": {"cert": "CA", "key": "CAKEY"}, "client": {"cert": "CERT", "key": "KEY"}}
    return ClusterView("c", "c", "1", {}, {"python": "/usr/bin/python3"}, [
        inst("m", [master], {"scheduler": 1, "dashboard": 2, "master": 1, "master_ui": 2}),
        inst("w1", ["worker"], {"worker": 3, "nanny": 4}), inst("w2", ["worker"], {"worker": 5, "nanny": 6})],
        secrets)


def test_dask_reads_the_schedulers_workers_with_the_clusters_client_certificate() -> None:
    remote = Answers({"type": "Scheduler", "workers": {"tls://10.0.0.1:3": {"name": "w1"}}})
    fw = asyncio.run(DaskPlugin().health(view(remote, "scheduler")))
    assert fw.master_up and fw.expected == ["w1", "w2"] and fw.registered == ["w1"]
    argv, stdin = remote.asked[0]
    assert "https://10.0.0.1:2/json/identity.json" in argv
    assert "KEY" not in " ".join(argv) and json.loads(stdin) == {"ca": "CA", "cert": "CERT", "key": "KEY"}


def test_spark_counts_only_alive_workers_of_the_cluster() -> None:
    remote = Answers({"status": "ALIVE", "workers": [{"host": "10.0.0.1", "port": 3, "state": "ALIVE"},
                                                     {"host": "10.0.0.1", "port": 5, "state": "DEAD"}]})
    fw = asyncio.run(SparkPlugin().health(view(remote, "master")))
    assert fw.master_up and fw.registered == ["w1"]
    assert "https://10.0.0.1:2/json/" in remote.asked[0][0]


def test_a_master_that_refuses_or_a_host_away_is_reported_not_raised() -> None:
    refused = asyncio.run(DaskPlugin().health(view(Answers(rc=3), "scheduler")))
    assert not refused.master_up and "Connection refused" in refused.detail
    away = asyncio.run(SparkPlugin().health(view(Answers(error=Unreachable("h1", "timed out")), "master")))
    assert not away.master_up and "host unreachable (timed out)" in away.detail


# --- the engine's driving ---------------------------------------------------------------------------------------


def active_cluster(world: World) -> str:
    cid = world.post("/v2/clusters", cluster_body(workers=1)).json()["cluster"]["id"]
    with world.db.session() as s:
        c = s.get(Cluster, cid)
        c.status, c.op = "Active", None
        host = s.scalars(select(Host)).first()
        for i, ng in enumerate(s.scalars(select(NodeGroup).where(NodeGroup.cluster_id == cid))):
            s.add(Instance(cluster_id=cid, node_group_id=ng.id, host_id=host.id, index=0, name=f"i{i}",
                           internal_ip="127.0.0.1", management_ip="127.0.0.1", workdir="/tmp", vcpus=1, ram_mb=1,
                           disk_gb=1, state="active"))
    return cid


def run_engines(world: World, monkeypatch: pytest.MonkeyPatch, outcome: str, period: float = 0) -> list[str]:
    """Two engines tick at once, each verification they start running to its end; the clusters verified."""
    verified: list[str] = []

    async def fake_verify(db, remotes, cluster_id):  # noqa: ANN001, ANN202
        verified.append(cluster_id)
        return outcome, [("Scheduler alive", outcome, "as told")]

    monkeypatch.setattr(vf, "verify", fake_verify)

    async def both() -> None:
        engines = [Verifications(world.db, None, f"e{n}", period) for n in (1, 2)]  # type: ignore[arg-type]
        for e in engines:
            e.tick()
        await asyncio.gather(*(t for e in engines for t in e.tasks.values()))

    asyncio.run(both())
    return verified


def verification(world: World, cid: str) -> dict:
    return world.get(f"/v2/clusters/{cid}").json()["cluster"]["verification"]


def health_steps(world: World, cid: str) -> list[str]:
    with world.db.session() as s:
        return list(s.scalars(select(ProvisionStep.step_name).where(
            ProvisionStep.cluster_id == cid, ProvisionStep.step_type == vf.STEP_TYPE)
            .order_by(ProvisionStep.created_at)))


def test_a_requested_verification_is_run_once_and_written(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = active_cluster(world)
    asked = world.patch(f"/v2/clusters/{cid}", {"verification": {"status": "START"}}).json()["cluster"]
    with world.db.session() as s:
        stamp = s.get(Cluster, cid).updated_at
    assert run_engines(world, monkeypatch, "YELLOW") == [cid]  # two engines, one run
    v = verification(world, cid)
    assert v["id"] == asked["verification"]["id"] and v["status"] == "YELLOW"
    assert [c["name"] for c in v["checks"]] == ["Scheduler alive"] and v["checks"][0]["description"] == "as told"
    assert health_steps(world, cid) == ["Health: YELLOW"]
    with world.db.session() as s:
        c = s.get(Cluster, cid)
        assert c.updated_at == stamp and c.status == "Active"  # idle limits count on; the status is kept
    assert run_engines(world, monkeypatch, "YELLOW") == []  # done: nothing runs again


def test_the_periodic_verification_runs_once_per_period_and_logs_changes_only(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = active_cluster(world)
    assert run_engines(world, monkeypatch, "GREEN", period=3600) == [cid]
    assert verification(world, cid)["status"] == "GREEN"
    assert run_engines(world, monkeypatch, "GREEN", period=3600) == []  # this period's run is done
    vf.save(world.db, cid, None, "GREEN", [("Scheduler alive", "GREEN", "again")])
    vf.save(world.db, cid, None, "RED", [("Scheduler alive", "RED", "gone")])
    assert health_steps(world, cid) == ["Health: GREEN", "Health: RED"]
    assert run_engines(world, monkeypatch, "GREEN", period=0) == []  # 0: no periodic verification


def test_an_outcome_no_longer_wanted_is_not_written(world: World) -> None:
    cid = active_cluster(world)
    asked = world.patch(f"/v2/clusters/{cid}", {"verification": {"status": "START"}}).json()["cluster"]
    # a periodic check that ends while a request is CHECKING leaves it to the request
    assert not vf.save(world.db, cid, None, "GREEN", [("x", "GREEN", "")])
    # an outcome for a request that another one replaced
    assert not vf.save(world.db, cid, "another", "GREEN", [("x", "GREEN", "")])
    assert verification(world, cid)["status"] == "CHECKING"
    assert vf.save(world.db, cid, asked["verification"]["id"], "RED", [("x", "RED", "why")])
    assert verification(world, cid)["status"] == "RED"
