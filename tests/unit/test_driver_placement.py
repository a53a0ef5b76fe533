"""Where a job's driver runs (`edp.oasis.driver`) and where a retry after a lost host goes
(`edp.oasis.retry_elsewhere`): the configs and their 400s, the pure choice, the plugins' side (which instances, the
Spark driver's address), and a job through the job machine on two fake hosts whose first attempt's host is lost."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import select

from oasis.db.models import Host, Image, Instance, Job
from oasis.edp import retries
from oasis.edp.driver import Candidate, DriverError, Previous, driver_order, placement_of
from oasis.engine import waiting
from oasis.engine.clusters import cluster_machine
from oasis.engine.jobs import job_machine
from oasis.plugins.base import ClusterView, InstanceView, PluginError
from oasis.plugins.dask import DaskPlugin
from oasis.plugins.spark import SparkPlugin
from oasis.remote.base import Unreachable

from tests.unit.conftest import World, cluster_body
from tests.unit.fake_host import FakeHost, FakeRemotes
from tests.unit.test_api_edp import active_cluster, binary, template
from tests.unit.test_history import confs

# --- the configs ---------------------------------------------------------------------------------------------


def test_the_driver_placement_config() -> None:
    assert placement_of(None) == placement_of({}) == placement_of({"edp.oasis.driver": ""}) == "master"
    assert placement_of({"edp.oasis.driver": "worker"}) == "worker"
    assert placement_of({"edp.oasis.driver": " Master "}) == "master"
    for bad in ("anywhere", 1, True, ["worker"]):
        with pytest.raises(DriverError, match="must be one of master, worker"):
            placement_of({"edp.oasis.driver": bad})


def test_retry_elsewhere_is_on_unless_turned_off() -> None:
    assert retries.policy_of({}).elsewhere
    assert not retries.policy_of({"edp.oasis.retry_elsewhere": "false"}).elsewhere
    assert not retries.policy_of({"edp.oasis.retry_elsewhere": False}).elsewhere
    assert retries.policy_of({"edp.oasis.retry_elsewhere": "TRUE"}).elsewhere
    for bad in ("perhaps", 1, "0"):
        with pytest.raises(retries.RetryError, match="must be true or false"):
            retries.policy_of({"edp.oasis.retry_elsewhere": bad})


def test_the_api_refuses_placements_and_flags_it_does_not_know(world: World) -> None:
    cid = active_cluster(world)
    jt = template(world, "Spark", [binary(world, "main.py")["id"]])

    def post(configs: dict[str, Any]):  # noqa: ANN202
        return world.post("/v2/jobs", {"job_template_id": jt["id"], "cluster_id": cid,
                                       "job_configs": {"configs": configs}})

    for bad in ({"edp.oasis.driver": "anywhere"}, {"edp.oasis.driver": 7},
                {"edp.oasis.retry_elsewhere": "perhaps"}):
        r = post(bad)
        assert r.status_code == 400 and r.json()["error_name"] == "INVALID_DATA", r.text
        assert "edp.oasis." in r.json()["error_message"]
    r = post({"edp.oasis.driver": "worker", "edp.oasis.retry_elsewhere": "false"})
    assert r.status_code == 202, r.text


# --- the choice (pure) ---------------------------------------------------------------------------------------


def _c(name: str, host: str, jobs: int = 0, away: bool = False, with_master: bool = False) -> Candidate:
    return Candidate(f"id-{name}", name, host, jobs, away, with_master)


def test_the_first_attempt_goes_to_the_least_loaded_worker() -> None:
    a, b, c = _c("w1", "h1", jobs=2), _c("w2", "h2", jobs=0), _c("w3", "h3", jobs=1)
    assert [x.name for x in driver_order([a, b, c])] == ["w2", "w3", "w1"]


def test_between_equals_a_worker_off_the_masters_host_then_by_name() -> None:
    beside = _c("w1", "h1", with_master=True)
    assert [x.name for x in driver_order([beside, _c("w3", "h3"), _c("w2", "h2")])] == ["w2", "w3", "w1"]
    # load first: a busier worker off the master's host comes after an idle one beside it
    assert [x.name for x in driver_order([beside, _c("w2", "h2", jobs=1)])] == ["w1", "w2"]


def test_a_retry_after_a_lost_host_goes_elsewhere_first() -> None:
    on_lost, other = _c("w1", "h1"), _c("w2", "h2", jobs=5)
    lost = Previous("id-w1", "h1", host_lost=True)
    assert [x.name for x in driver_order([on_lost, other], lost)] == ["w2", "w1"]  # the lost host only if all else fails
    # an attempt that ended otherwise (a non-zero exit code) does not move the next one
    assert [x.name for x in driver_order([on_lost, other], Previous("id-w1", "h1", host_lost=False))] == ["w1", "w2"]
    # hosts that the health check found away come after those that answer
    away = _c("w3", "h3", away=True)
    assert [x.name for x in driver_order([away, on_lost, other], lost)] == ["w2", "w3", "w1"]


def test_a_retry_that_may_not_move_waits_for_its_instance() -> None:
    on_lost, other = _c("w1", "h1"), _c("w2", "h2")
    lost = Previous("id-w1", "h1", host_lost=True)
    assert [x.name for x in driver_order([on_lost, other], lost, elsewhere=False)] == ["w1"]
    # unless the instance is gone from the cluster (scaled down): then the others, as for a first attempt
    assert [x.name for x in driver_order([other], lost, elsewhere=False)] == ["w2"]


# --- the plugins ---------------------------------------------------------------------------------------------


def _inst(name: str, processes: list[str], address: str) -> InstanceView:
    return InstanceView(f"id-{name}", name, "ng", processes, address, f"/base/{name}", {"master": 7077}, 2, 2048,
                        remote=None, agent=None)  # type: ignore[arg-type]


def _view(*instances: InstanceView) -> ClusterView:
    runtime = {"python": "/usr/bin/python3", "spark_home": "/opt/spark"}
    return ClusterView("c1", "c", "4.3", {}, runtime, list(instances), secrets={"insecure": True})


def test_which_instances_a_driver_may_run_on() -> None:
    m, w1, w2 = _inst("m", ["master"], "10.0.0.1"), _inst("w1", ["worker"], "10.0.0.2"), _inst("w2", ["worker"], "10.0.0.3")
    spark = SparkPlugin()
    assert spark.driver_instances(_view(m, w1, w2), "master") == [m]
    assert spark.driver_instances(_view(m, w1, w2), "worker") == [w1, w2]
    both = _inst("mw", ["master", "worker"], "10.0.0.1")
    assert spark.driver_instances(_view(both, w1), "worker") == [w1]  # off the master
    assert spark.driver_instances(_view(both), "worker") == [both]  # its only worker is on the master

    class MasterOnly(DaskPlugin):
        drivers_on_workers = False

    with pytest.raises(PluginError, match="on the master instance only"):
        MasterOnly().driver_instances(_view(_inst("s", ["scheduler"], "10.0.0.1"), w1), "worker")


def test_a_spark_driver_on_a_worker_binds_that_workers_address() -> None:
    m, w = _inst("m", ["master"], "10.0.0.1"), _inst("w1", ["worker"], "10.0.0.2")
    launch = SparkPlugin().launch(_view(m, w), "Spark", "/base/w1/jobs/j/main.py", [], {}, [], "/base/w1/jobs/j",
                                  driver=w)
    assert confs(launch.argv)["spark.driver.host"] == "10.0.0.2"  # executors connect back to the driver here
    assert launch.argv[launch.argv.index("--master") + 1] == "spark://10.0.0.1:7077"  # the one master
    assert launch.env["SPARK_LOCAL_IP"] == "10.0.0.2" and launch.env["SPARK_CONF_DIR"] == "/base/w1/conf"
    default = SparkPlugin().launch(_view(m, w), "Spark", "main.py", [], {}, [], "/base/m/jobs/j")
    assert confs(default.argv)["spark.driver.host"] == "10.0.0.1"  # no driver given: the master, as before


# --- through the job machine on two fake hosts ---------------------------------------------------------------


class Losable(FakeHost):
    """A fake host that can be lost (then every command fails as an unreachable host's does), or that is lost the
    moment it launched a job (`lose_on_run`)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name, self.lost, self.lose_on_run = name, False, False
        self.jobs_die = False  # its agent answers that a job's supervisor died without its end (a reboot)

    def agent(self, args: list[str], stdin: bytes | None = None) -> str:
        if self.lost:
            raise Unreachable(self.name, "connection refused")
        if self.jobs_die and args[0] == "wait":
            return json.dumps({"done": True, "rc": None, "lost": True})
        out = super().agent(args, stdin)
        self.lost = self.lose_on_run and args[0] == "run"
        return out


class LosableRemotes(FakeRemotes):
    def for_host(self, host, site=None, via=None, context=None, client_key=None):  # noqa: ANN001, ANN201
        remote = super().for_host(host, site, via, context, client_key)
        run = remote.run

        async def run_or_fail(argv: list[str], **kw: Any):  # noqa: ANN202
            if remote.host.lost:
                raise Unreachable(remote.host.name, "connection refused")
            return await run(argv, **kw)
        remote.run = run_or_fail
        return remote


def _two_hosts(world: World) -> dict[str, Losable]:
    with world.db.session() as s:
        s.get(Image, world.image_id).runtime = {"python": "/usr/bin/python3"}
        s.add(Host(site_id=world.site_id, name="h2", address="127.0.0.2", vcpus=8, ram_mb=16384, disk_gb=100,
                   base_dir="/srv/h2"))
        s.flush()
        hosts = {}
        for h in s.scalars(select(Host).where(Host.site_id == world.site_id)):
            h.access, h.base_dir, h.spec = "ssh", f"/srv/{h.name}", {"authorized_keys": "/root/.ssh/authorized_keys"}
            hosts[h.id] = Losable(h.name)
    return hosts


def _worker_job(world: World, hosts: dict[str, Losable], configs: dict[str, Any]) -> tuple[str, str]:
    r = world.post("/v2/clusters", cluster_body("c1", plugin="dask", workers=2, anti_affinity=["worker"]))
    assert r.status_code == 202, r.text
    cid = r.json()["cluster"]["id"]
    asyncio.run(cluster_machine(world.db, FakeRemotes(hosts))(cid))
    jt = template(world, "Dask", [binary(world, "job.py")["id"]])
    r = world.post("/v2/jobs", {"job_template_id": jt["id"], "cluster_id": cid,
                                "job_configs": {"configs": {"edp.oasis.driver": "worker", **configs}}})
    assert r.status_code == 202, r.text
    return cid, r.json()["job"]["id"]


def _placed(world: World, cid: str) -> dict[str, tuple[str, str]]:
    """Instance id -> (its node group's processes joined, its host's name)."""
    with world.db.session() as s:
        out = {}
        for inst in s.scalars(select(Instance).where(Instance.cluster_id == cid)):
            out[inst.id] = ("scheduler" if "master" in inst.name else "worker", s.get(Host, inst.host_id).name)
        return out


def test_a_job_whose_host_is_lost_runs_again_on_the_other_workers_host(world: World,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_pause(self) -> None:  # noqa: ANN001 - the machine's wait between tries, not the subject here
        await asyncio.sleep(0)
    monkeypatch.setattr(waiting.Backoff, "pause", no_pause)
    hosts = _two_hosts(world)
    cid, jid = _worker_job(world, hosts, {"edp.oasis.max_retries": 1, "edp.oasis.retry_backoff": 0})
    placed = _placed(world, cid)
    master_host = next(h for kind, h in placed.values() if kind == "scheduler")
    for h in hosts.values():  # whichever host the first attempt runs on is lost once it launched it
        h.lose_on_run = True
    machine = job_machine(world.db, LosableRemotes(hosts), world.store, unreachable_grace=0)
    asyncio.run(machine(jid))
    with world.db.session() as s:
        job = s.get(Job, jid)
        assert (job.status, job.op, job.runtime["attempt"]) == ("PENDING", "run", 2), (job.status, job.info)
    lost = [h.name for h in hosts.values() if h.lost]
    assert len(lost) == 1 and lost != [master_host]  # off the scheduler's host, both workers being idle
    for h in hosts.values():  # the lost host is back, but its attempt may still run there unseen: not there again
        h.lose_on_run = h.lost = False
    asyncio.run(machine(jid))
    shown = world.get(f"/v2/jobs/{jid}").json()["job"]
    assert shown["info"]["status"] == "SUCCEEDED", shown["info"]
    first, second = shown["attempts"]
    assert (first["number"], first["status"], first["host_lost"]) == (1, "FAILED", True)
    assert [first["host"]] == lost
    assert placed[first["instance_id"]] == ("worker", first["host"])
    assert "for more than 0s while the job ran" in first["status_description"]
    assert (second["number"], second["status"], second["host_lost"]) == (2, "SUCCEEDED", False)
    assert second["host"] == master_host != first["host"]  # the other worker's host, which answers
    assert placed[second["instance_id"]] == ("worker", second["host"]) and second["instance"].startswith("c1-worker-")


def test_a_job_whose_processes_died_with_its_host_runs_again_elsewhere(world: World) -> None:
    hosts = _two_hosts(world)
    cid, jid = _worker_job(world, hosts, {"edp.oasis.max_retries": 1, "edp.oasis.retry_backoff": 0})
    for h in hosts.values():  # the host answers again, but the job's processes there are gone (it restarted)
        h.jobs_die = True
    machine = job_machine(world.db, LosableRemotes(hosts), world.store)
    asyncio.run(machine(jid))
    for h in hosts.values():
        h.jobs_die = False
    asyncio.run(machine(jid))
    shown = world.get(f"/v2/jobs/{jid}").json()["job"]
    assert shown["info"]["status"] == "SUCCEEDED", shown["info"]
    first, second = shown["attempts"]
    assert (first["status"], first["host_lost"]) == ("FAILED", True)
    assert f"on host {first['host']} ended without an exit code" in first["status_description"]
    assert second["host"] != first["host"] and _placed(world, cid)[second["instance_id"]][0] == "worker"


def test_with_retry_elsewhere_off_the_retry_waits_for_its_host(world: World,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_pause(self) -> None:  # noqa: ANN001
        await asyncio.sleep(0)
    monkeypatch.setattr(waiting.Backoff, "pause", no_pause)
    hosts = _two_hosts(world)
    _cid, jid = _worker_job(world, hosts, {"edp.oasis.max_retries": 1, "edp.oasis.retry_backoff": 0,
                                           "edp.oasis.retry_elsewhere": "false"})
    for h in hosts.values():
        h.lose_on_run = True
    machine = job_machine(world.db, LosableRemotes(hosts), world.store, unreachable_grace=0)
    asyncio.run(machine(jid))
    lost = next(h for h in hosts.values() if h.lost)
    for h in hosts.values():
        h.lose_on_run = False
    asyncio.run(machine(jid))  # the second attempt waits for the lost host within the grace (0 here), then fails
    shown = world.get(f"/v2/jobs/{jid}").json()["job"]
    assert shown["info"]["status"] == "FAILED", shown["info"]
    assert "unreachable" in shown["info"]["status_description"]
    assert [a["host_lost"] for a in shown["attempts"]] == [True, False]
    assert shown["attempts"][0]["host"] == lost.name
    assert not any(d.endswith("-2") for h in hosts.values() for d in h.dirs)  # nowhere else


def test_a_worker_whose_host_does_not_answer_is_passed_over(world: World) -> None:
    hosts = _two_hosts(world)
    cid, jid = _worker_job(world, hosts, {})
    placed = _placed(world, cid)
    master_host = next(h for kind, h in placed.values() if kind == "scheduler")
    preferred = next(h for h in hosts.values() if h.name != master_host)
    preferred.lost = True  # the worker off the scheduler's host would be first; its host does not answer
    asyncio.run(job_machine(world.db, LosableRemotes(hosts), world.store)(jid))
    job = world.get(f"/v2/jobs/{jid}").json()["job"]
    assert job["info"]["status"] == "SUCCEEDED", job["info"]
    assert [(a["number"], a["host"]) for a in job["attempts"]] == [(1, master_host)]


def test_a_job_on_the_master_stays_there(world: World) -> None:
    hosts = _two_hosts(world)
    r = world.post("/v2/clusters", cluster_body("c1", plugin="dask", workers=2, anti_affinity=["worker"]))
    cid = r.json()["cluster"]["id"]
    asyncio.run(cluster_machine(world.db, FakeRemotes(hosts))(cid))
    jt = template(world, "Dask", [binary(world, "job.py")["id"]])
    r = world.post("/v2/jobs", {"job_template_id": jt["id"], "cluster_id": cid})
    jid = r.json()["job"]["id"]
    asyncio.run(job_machine(world.db, LosableRemotes(hosts), world.store)(jid))
    attempt = world.get(f"/v2/jobs/{jid}").json()["job"]["attempts"][0]
    assert attempt["status"] == "SUCCEEDED" and _placed(world, cid)[attempt["instance_id"]][0] == "scheduler"
