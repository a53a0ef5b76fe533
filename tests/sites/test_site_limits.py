"""Per-site limits and failure handling without the lab: quotas from the manifest, refusals on a site in Error or
being deleted, host health, and the operation machine waiting for (not rolling back on) unreachable hosts."""
from __future__ import annotations

import asyncio
import socket
from typing import Any

import asyncssh
import pytest
from sqlalchemy import select

from oasis.db.models import (
    Cluster,
    Host,
    Instance,
    Job,
    NodeGroup,
    ProvisionEvent,
    ProvisionStep,
    Site,
)
from oasis.db.states import ClusterStatus
from oasis.engine import waiting
from oasis.engine.clusters import CLUSTER_FAILURES, ClusterWork
from oasis.engine.health import check_hosts
from oasis.engine.jobs import JOB_FAILURES, JobWork
from oasis.engine.machine import Machine, Operation, Step, Wait
from oasis.remote.base import RemoteError, Unreachable, unreachable_in
from oasis.remote.hosts import Remotes
from oasis.remote.ssh import SshRemote, SshTarget
from tests.unit.conftest import World, cluster_body
from tests.unit.test_api_edp import active_cluster

# spark: a master (m1.small) and two workers (m1.small): 3 instances, 3 vCPUs, 6144 MB
BODY = cluster_body()


def site_entry(**extra: Any) -> dict:
    return {"name": "edge-q", "access": "direct", "management_network": "net",
            "hosts": [{"name": "q1", "addresses": {"net": "10.99.0.2"}, "base_dir": "/tmp/q1",
                       "capacity": {"vcpus": 4, "ram_mb": 8192, "disk_gb": 50}, "host_key": "ssh-ed25519 AAAA"}],
            **extra}


def register(world: World, entry: dict):
    return world.post("/v2/sites", {"manifest": {"sites": [entry]}, "private_key": "k"}, who="admin")


def set_quotas(world: World, quotas: dict) -> None:
    with world.db.session() as s:
        site = s.get(Site, world.site_id)
        site.spec = {**site.spec, "quotas": quotas}


def add_instance(world: World, vcpus: int, ram_mb: int) -> None:
    """An instance of another cluster already on the site, as the engine would have placed it."""
    with world.db.session() as s:
        host = s.scalars(select(Host).where(Host.site_id == world.site_id)).first()
        c = Cluster(project_id="p", name=f"other-{vcpus}-{ram_mb}", plugin_name="dask", plugin_version="x",
                    site_id=world.site_id, status="Active")
        s.add(c)
        s.flush()
        ng = NodeGroup(cluster_id=c.id, name="w", count=1)
        s.add(ng)
        s.flush()
        s.add(Instance(cluster_id=c.id, node_group_id=ng.id, host_id=host.id, index=1, name=f"{c.name}-w-1",
                       internal_ip="127.0.0.1", management_ip="127.0.0.1", workdir="/tmp/x", vcpus=vcpus,
                       ram_mb=ram_mb, disk_gb=1))




# --- quotas ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("quotas, message", [
    ({"vcpus": -1}, "sites[0].quotas.vcpus: must be a non-negative integer"),
    ({"ram_mb": "lots"}, "sites[0].quotas.ram_mb: must be a non-negative integer"),
    ({"instances": 2.5}, "sites[0].quotas.instances: must be a non-negative integer"),
    ({"vcpus": True}, "sites[0].quotas.vcpus: must be a non-negative integer"),
    ({"disks": 3}, "sites[0].quotas: unknown quota(s) disks"),
    ([1, 2], "sites[0].quotas: must be a mapping"),
])
def test_manifest_quotas_are_validated(world: World, quotas: Any, message: str) -> None:
    r = register(world, site_entry(quotas=quotas))
    assert r.status_code == 400, r.text
    assert r.json()["error_name"] == "INVALID_DATA" and message in r.json()["error_message"], r.text
    with world.db.session() as s:
        assert s.scalars(select(Site).where(Site.name == "edge-q")).first() is None


def test_manifest_quotas_are_stored_and_shown(world: World) -> None:
    r = register(world, site_entry(quotas={"instances": 4, "vcpus": 0}))
    assert r.status_code == 202, r.text
    shown = world.get("/v2/sites/edge-q").json()["site"]
    assert shown["quotas"] == {"instances": 4, "vcpus": 0}
    assert shown["usage"] == {"instances": 0, "vcpus": 0, "ram_mb": 0, "volumes": 0, "volume_gb": 0}
    # registering again without quotas lifts them
    assert register(world, site_entry()).status_code == 202
    assert world.get("/v2/sites/edge-q").json()["site"]["quotas"] == {}


def test_create_over_quota_is_refused_naming_what_is_over(world: World) -> None:
    add_instance(world, vcpus=2, ram_mb=1000)
    set_quotas(world, {"instances": 3, "ram_mb": 100000})
    r = world.post("/v2/clusters", BODY)
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["error_name"] == "QUOTA_ERROR" and err["error_code"] == 400
    assert "availability zone 'local'" in err["error_message"]
    assert "instances: requested 3, used 1, limit 3" in err["error_message"], err
    assert "ram_mb" not in err["error_message"]  # only what is over is named

    set_quotas(world, {"vcpus": 4, "ram_mb": 7000})
    msg = world.post("/v2/clusters", BODY).json()["error_message"]
    assert "vcpus: requested 3, used 2, limit 4" in msg and "ram_mb: requested 6144, used 1000, limit 7000" in msg

    set_quotas(world, {"instances": 4, "vcpus": 5, "ram_mb": 7144})  # exactly at the limits: allowed
    assert world.post("/v2/clusters", BODY).status_code == 202
    shown = world.get("/v2/sites/local").json()["site"]
    assert shown["quotas"] == {"instances": 4, "vcpus": 5, "ram_mb": 7144}
    assert shown["usage"]["instances"] == 1  # the new cluster's instances exist once the engine places them


def test_scale_over_quota_is_refused(world: World) -> None:
    cid = active_cluster(world, "grow", workers=2)
    add_instance(world, vcpus=1, ram_mb=2048)
    set_quotas(world, {"instances": 2})
    r = world.put(f"/v2/clusters/{cid}", {"resize_node_groups": [{"name": "worker", "count": 4}]})
    assert r.status_code == 400 and r.json()["error_name"] == "QUOTA_ERROR", r.text
    assert "instances: requested 2, used 1, limit 2" in r.json()["error_message"]
    set_quotas(world, {"instances": 3})
    r = world.put(f"/v2/clusters/{cid}", {"resize_node_groups": [{"name": "worker", "count": 4}]})
    assert r.status_code == 202, r.text


# --- sites in Error or being deleted ------------------------------------------------------------------------------


def test_create_and_scale_refused_on_a_site_in_error(world: World) -> None:
    cid = active_cluster(world, "stays", workers=2)
    with world.db.session() as s:
        site = s.get(Site, world.site_id)
        site.status, site.status_description = "Error", "host h1: connect failed: connection refused"
    r = world.post("/v2/clusters", cluster_body("new"))
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["error_name"] == "SITE_UNAVAILABLE"
    assert "'local' is Error" in err["error_message"] and "connection refused" in err["error_message"]
    r = world.put(f"/v2/clusters/{cid}", {"resize_node_groups": [{"name": "worker", "count": 3}]})
    assert r.status_code == 400 and r.json()["error_name"] == "SITE_UNAVAILABLE", r.text
    with world.db.session() as s:
        assert s.get(Cluster, cid).op is None

    with world.db.session() as s:
        site = s.get(Site, world.site_id)
        site.status, site.op = "Deleting", "delete"
    r = world.post("/v2/clusters", cluster_body("new"))
    assert r.status_code == 400 and "being deleted" in r.json()["error_message"], r.text

    with world.db.session() as s:
        site = s.get(Site, world.site_id)
        site.status, site.op, site.status_description = "Active", None, ""
    assert world.post("/v2/clusters", cluster_body("new")).status_code == 202


# --- health -----------------------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_health_check_records_reachable_and_unreachable_hosts(world: World) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    with world.db.session() as s:
        site = s.get(Site, world.site_id)
        site.secrets = {"ssh_private_key": key.export_private_key().decode()}
        s.add(Host(site_id=site.id, name="h-dead", access="ssh", address="127.0.0.1", vcpus=1, ram_mb=1, disk_gb=1,
                   base_dir="/tmp/h-dead", spec={"host_key": key.export_public_key().decode().strip(),
                                                 "ssh_port": closed_port()}))
    assert world.get("/v2/sites/local").json()["site"]["health"]["status"] == "unknown"

    async def check() -> None:
        remotes = Remotes()
        try:
            await check_hosts(world.db, remotes, [world.site_id])
        finally:
            await remotes.close()

    asyncio.run(check())
    site = world.get("/v2/sites/local").json()["site"]
    hosts = {h["name"]: h["health"] for h in site["hosts"]}
    assert hosts["h1"]["reachable"] is True and hosts["h1"]["last_seen"] and hosts["h1"]["error"] is None
    assert hosts["h-dead"]["reachable"] is False and hosts["h-dead"]["last_seen"] is None
    assert hosts["h-dead"]["error"] == "connection refused" and hosts["h-dead"]["unreachable_since"]
    assert site["health"]["status"] == "degraded" and site["health"]["unreachable"] == ["h-dead"]
    listed = {s["name"]: s for s in world.get("/v2/sites").json()["sites"]}
    assert listed["local"]["health"]["reachable"] == 1
    assert "BEGIN OPENSSH" not in str(site)


def test_a_refused_connection_is_unreachable_not_a_failure() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    remote = SshRemote(SshTarget(address="127.0.0.1", port=closed_port(), label="h-gone",
                                 host_key=key.export_public_key().decode().strip(),
                                 client_key=key.export_private_key().decode()))
    with pytest.raises(Unreachable) as e:
        asyncio.run(remote.run(["true"]))
    assert e.value.host == "h-gone" and e.value.reason == "connection refused"
    wrapped = RemoteError("plugin could not start")
    wrapped.__cause__ = e.value
    assert unreachable_in(wrapped) is e.value and unreachable_in(RemoteError("exit 1")) is None


# --- the operation machine waits for unreachable hosts -----------------------------------------------------


def creating_cluster(world: World) -> str:
    r = world.post("/v2/clusters", cluster_body("waiting"))
    assert r.status_code == 202, r.text
    cid = r.json()["cluster"]["id"]
    with world.db.session() as s:
        c = s.get(Cluster, cid)
        c.op_step, c.status = "start", "Starting"
    return cid


class Outcome:
    """What an operation of one step ended with: finished, or rolled back with which error."""

    def __init__(self) -> None:
        self.finished, self.error = False, None

    async def finish(self, work) -> None:
        self.finished = True

    async def rollback(self, work, error: Exception) -> None:
        self.error = error


def one_step_cluster_machine(world: World, step, outcome: Outcome, grace: float = 600) -> Machine:
    """The real cluster work and machine, with a create of the one step `start` run by `step`."""
    operation = Operation(steps=(Step("start", step, ClusterStatus.STARTING),), finish=outcome.finish,
                          rollback=outcome.rollback)
    return Machine(lambda cid: ClusterWork(world.db, cid, lambda: None, Remotes()), {"create": operation},
                   CLUSTER_FAILURES, grace)


def test_a_step_waits_for_unreachable_hosts_then_resumes(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = creating_cluster(world)
    failures = [Unreachable("h1", "connection refused")] * 3
    seen: list[tuple[str, str, dict]] = []

    async def step(work) -> None:
        with world.db.session() as s:
            s.add(ProvisionStep(cluster_id=work.id, project_id="p", step_name="Start", step_type="t", total=1))
        if failures:
            raise failures.pop()

    async def pause(self) -> None:  # what the user sees while the step waits
        with world.db.session() as s:
            c = s.get(Cluster, cid)
            seen.append((c.status, c.status_description, dict(c.op_target)))
        self.next = min(self.next * 2, self.cap)

    monkeypatch.setattr(waiting.Backoff, "pause", pause)
    outcome = Outcome()
    asyncio.run(one_step_cluster_machine(world, step, outcome)(cid))

    assert outcome.finished and outcome.error is None
    assert len(seen) == 3
    for status, description, target in seen:
        assert status == "Starting"
        assert description.startswith("Waiting for site local: host h1 unreachable since ")
        assert description.endswith("(connection refused); retrying")
        assert target["unreachable"]["host"] == "h1"
    assert len({d for _, d, _ in seen}) == 1, "the time it waits since stays the first failure's"
    with world.db.session() as s:
        c = s.get(Cluster, cid)
        assert (c.op, c.op_step, c.status_description) == ("create", "start", "")
        assert "unreachable" not in c.op_target
        infos = [e.event_info for e in s.scalars(select(ProvisionEvent))]
    assert sum(i.startswith("Waiting for site local") for i in infos) == 1
    assert any("answers again" in i for i in infos)


def test_the_grace_counts_from_the_row(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine that takes over a waiting operation keeps counting from when the wait began."""
    cid = creating_cluster(world)
    with world.db.session() as s:
        c = s.get(Cluster, cid)
        c.op_target = {**c.op_target, "unreachable": {"since": "2026-01-01T00:00:00", "host": "h1",
                                                      "reason": "connection refused"}}

    async def step(work) -> None:
        raise Unreachable("h1", "connection refused")

    outcome = Outcome()
    asyncio.run(one_step_cluster_machine(world, step, outcome, grace=3600)(cid))
    assert isinstance(outcome.error, RemoteError) and "for more than 3600s" in str(outcome.error)


def test_past_the_grace_the_step_fails(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = creating_cluster(world)

    async def step(work) -> None:
        raise RemoteError("plugin failed") from Unreachable("h1", "connection timed out")

    async def pause(self) -> None:
        await asyncio.sleep(0.05)

    monkeypatch.setattr(waiting.Backoff, "pause", pause)
    outcome = Outcome()
    asyncio.run(one_step_cluster_machine(world, step, outcome, grace=0.2)(cid))
    assert "h1: unreachable (connection timed out) for more than 0.2s" in str(outcome.error)


def test_a_real_failure_is_not_waited_for(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = creating_cluster(world)
    calls = []

    async def step(work) -> None:
        calls.append(1)
        raise RemoteError("command failed with exit code 1")

    outcome = Outcome()
    asyncio.run(one_step_cluster_machine(world, step, outcome)(cid))
    assert calls == [1] and str(outcome.error) == "command failed with exit code 1"


# --- a job whose host cannot be reached ---------------------------------------------------------------------


class CutOffAgent:
    """The job's agent on a host that does not answer `wait` twice, then does (the job ended meanwhile)."""

    def __init__(self) -> None:
        self.calls = 0

    async def wait_job(self, d: str, timeout: float) -> dict:
        self.calls += 1
        if self.calls <= 2:
            raise Unreachable("h1", "connection refused")
        return {"done": True, "rc": 0, "ended": 1700000000.0}


def one_step_job_machine(world: World, name: str, agent: CutOffAgent, outcome: Outcome, grace: float,
                         wait: Wait) -> Machine:
    """The real job work and machine, with a run of the one step `name` that waits on `agent`."""
    async def step(work) -> None:
        await agent.wait_job("/tmp/job", 1.0)

    operation = Operation(steps=(Step(name, step, wait=wait),), finish=outcome.finish, rollback=outcome.rollback)
    return Machine(lambda jid: JobWork(world.db, jid, lambda: None, Remotes(), world.store, None, 900.0),
                   {"run": operation}, JOB_FAILURES, grace)


def test_a_job_stays_running_while_its_host_cannot_be_reached(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = active_cluster(world, "runs", workers=2)
    with world.db.session() as s:
        job = Job(project_id="p", job_template_id="t", cluster_id=cid, status="RUNNING", op="run", op_step="watch",
                  info={"kept": "yes"})
        s.add(job)
        s.flush()
        jid = job.id
    seen: list[tuple[str, dict]] = []

    async def pause(self) -> None:
        with world.db.session() as s:
            j = s.get(Job, jid)
            seen.append((j.status, dict(j.info)))

    monkeypatch.setattr(waiting.Backoff, "pause", pause)
    agent, outcome = CutOffAgent(), Outcome()
    asyncio.run(one_step_job_machine(world, "watch", agent, outcome, 0.0, Wait.FOREVER)(jid))

    assert outcome.finished and agent.calls == 3 and len(seen) == 2
    for status, info in seen:
        assert status == "RUNNING" and info["kept"] == "yes"
        assert info["status_description"].startswith("Waiting for site local: host h1 unreachable since ")
        assert "the job keeps running there" in info["status_description"]
    with world.db.session() as s:
        info = s.get(Job, jid).info
    assert info == {"kept": "yes"}, "the note goes once the host answers"


def test_a_job_not_yet_launched_waits_within_the_grace(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = active_cluster(world, "prep", workers=2)
    with world.db.session() as s:
        job = Job(project_id="p", job_template_id="t", cluster_id=cid, status="PENDING", op="run", info={})
        s.add(job)
        s.flush()
        jid = job.id
    notes: list[str] = []

    async def pause(self) -> None:
        with world.db.session() as s:
            notes.append(s.get(Job, jid).info["status_description"])

    monkeypatch.setattr(waiting.Backoff, "pause", pause)
    outcome = Outcome()
    asyncio.run(one_step_job_machine(world, "prepare", CutOffAgent(), outcome, 3600.0, Wait.GRACE)(jid))
    assert outcome.finished
    assert len(notes) == 2 and all(n.endswith("the job starts once it answers") for n in notes)
    # past the grace the unreachable host is the job's failure, as any other
    cut_off, outcome = CutOffAgent(), Outcome()
    asyncio.run(one_step_job_machine(world, "prepare", cut_off, outcome, -1.0, Wait.GRACE)(jid))
    assert "h1: unreachable (connection refused) for more than -1s" in str(outcome.error)
    assert cut_off.calls == 1
