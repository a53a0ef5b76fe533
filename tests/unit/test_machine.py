"""Crash at every step, proved: for every step of every operation, the operation is run on an in-memory host and
killed right after its step records itself (before it runs) and right after it ran (before the next records
itself); a fresh engine then resumes it, and the end state (rows, the host's processes, files and keys) must
equal that of the same operation run without a crash."""
from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select

from oasis.api.app import create_app
from oasis.config import Settings
from oasis.db import models
from oasis.db.models import Cluster, Host, Image, Job, Site
from oasis.db.session import Database
from oasis.db.states import CONNECT_STARTED
from oasis.engine.clusters import OPERATIONS as CLUSTER_OPERATIONS
from oasis.engine.clusters import cluster_machine
from oasis.engine.jobs import OPERATIONS as JOB_OPERATIONS
from oasis.engine.jobs import job_machine
from oasis.engine.machine import Machine
from oasis.engine.sites import OPERATIONS as SITE_OPERATIONS
from oasis.engine.sites import site_machine
from oasis.gateway.starting import ask_for_start
from oasis.storage.filesystem import FilesystemStore
from tests.world import Template, World, cluster_body, issue_tokens
from tests.unit.fake_host import FakeHost, FakeRemotes

PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@x"
# Columns that differ between two runs by nature: clocks, durations, leases.
VOLATILE = {"created_at", "updated_at", "duration", "start_time", "end_time", "lease_owner", "lease_expires"}
VOLATILE_KEYS = {"begun", "access_deadline"}  # the same, inside JSON columns


class Crash(BaseException):
    """The engine dies: nothing of the operation's own error handling runs (it is not an Exception)."""


@dataclass
class Run:
    world: World
    hosts: dict[str, FakeHost]
    row: str  # the id of the row whose operation is under test
    kind: str  # "cluster", "job" or "site"

    def machine(self, probe=None) -> Machine:  # noqa: ANN001
        remotes = FakeRemotes(self.hosts)  # a fresh engine: nothing carried over in memory
        db = self.world.db
        if self.kind == "cluster":
            return cluster_machine(db, remotes, probe=probe)
        if self.kind == "job":
            return job_machine(db, remotes, self.world.store, probe=probe)
        return site_machine(db, remotes, probe=probe)


@pytest.fixture
def make_world(tmp_path: Path, world_template: Template, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Worlds that are copies of one template (the same seeded rows) whose new ids come from a counter, so that
    two runs compare row by row."""
    from starlette.testclient import TestClient

    made: list[TestClient] = []

    def make(name: str) -> World:
        counter = itertools.count(1)
        monkeypatch.setattr(models.uuid, "uuid4", lambda: uuid.UUID(int=next(counter)))
        settings = Settings(state_dir=tmp_path / name)
        world_template.copy_to(settings.database_url)
        db = Database(settings.database_url)
        store = FilesystemStore(settings.objects_dir)
        with db.session() as s:
            s.get(Image, world_template.image_id).runtime = {"python": "/usr/bin/python3"}
            for h in s.scalars(select(Host)):  # reached over (fake) SSH: the cluster's and the user's keys go in
                h.access, h.base_dir = "ssh", "/srv/hosts"
                h.spec = {"authorized_keys": "/root/.ssh/authorized_keys"}
        tokens = issue_tokens(db)
        client = TestClient(create_app(settings, db, store), raise_server_exceptions=True)
        made.append(client)
        return World(settings, db, store, client, tokens, dict(world_template.projects), world_template.site_id,
                     world_template.image_id)

    yield make
    for client in made:
        client.close()


def _drive(run: Run, probe=None) -> None:  # noqa: ANN001
    asyncio.run(run.machine(probe)(run.row))


def _active_cluster(world: World, hosts: dict[str, FakeHost], body: dict[str, Any] | None = None,
                    **extra: Any) -> str:
    r = world.post("/v2/clusters", body or cluster_body("c1", plugin="dask", workers=2, **extra))
    assert r.status_code == 202, r.text
    cid = r.json()["cluster"]["id"]
    _drive(Run(world, hosts, cid, "cluster"))
    with world.db.session() as s:
        assert s.get(Cluster, cid).status == "Active"
    return cid


def _job(world: World, hosts: dict[str, FakeHost], cid: str) -> str:
    put = world.client.put("/v2/job-binary-internals/wc.py", content=b"print(1)\n",
                           headers={**world.h(), "Content-Type": "application/octet-stream"})
    binary = world.post("/v2/job-binaries", {"name": "wc.py",
                                             "url": f"internal-db://{put.json()['job_binary_internal']['id']}"})
    template = world.post("/v2/job-templates", {"name": "wc", "type": "Dask",
                                                "mains": [binary.json()["job_binary"]["id"]]})
    r = world.post("/v2/jobs", {"job_template_id": template.json()["job_template"]["id"], "cluster_id": cid})
    assert r.status_code == 202, r.text
    return r.json()["job"]["id"]


# Each scenario sets a world up to the moment its operation is asked for, and names the row to drive.


def create(world: World, hosts: dict[str, FakeHost]) -> Run:
    r = world.post("/v2/clusters", cluster_body("c1", plugin="dask", workers=2))
    return Run(world, hosts, r.json()["cluster"]["id"], "cluster")


def scale_up(world: World, hosts: dict[str, FakeHost]) -> Run:
    cid = _active_cluster(world, hosts)
    r = world.client.put(f"/v2/clusters/{cid}", json={"resize_node_groups": [{"name": "worker", "count": 3}]},
                         headers=world.h())
    assert r.status_code == 202, r.text
    return Run(world, hosts, cid, "cluster")


def scale_down(world: World, hosts: dict[str, FakeHost]) -> Run:
    cid = _active_cluster(world, hosts)
    r = world.client.put(f"/v2/clusters/{cid}", json={"resize_node_groups": [{"name": "worker", "count": 1}]},
                         headers=world.h())
    assert r.status_code == 202, r.text
    return Run(world, hosts, cid, "cluster")


def delete(world: World, hosts: dict[str, FakeHost]) -> Run:
    cid = _active_cluster(world, hosts)
    assert world.delete(f"/v2/clusters/{cid}").status_code == 204
    return Run(world, hosts, cid, "cluster")


def update_keypair(world: World, hosts: dict[str, FakeHost]) -> Run:
    assert world.post("/v2/keypairs", {"name": "mine", "public_key": PUBLIC_KEY}).status_code in (200, 202)
    cid = _active_cluster(world, hosts, user_keypair_id="mine")
    r = world.patch(f"/v2/clusters/{cid}", {"update_keypair": True})
    assert r.status_code == 202, r.text
    return Run(world, hosts, cid, "cluster")


def start_connect(world: World, hosts: dict[str, FakeHost]) -> Run:
    """A first Spark Connect session: the gateway asks for the on-demand server (oasis/gateway/starting.py)."""
    with world.db.session() as s:  # the fake hosts run any command: a Spark home is a name only
        image = s.get(Image, world.image_id)
        image.runtime = {**image.runtime, "spark_home": "/opt/spark"}
    cid = _active_cluster(world, hosts, cluster_body("c1", plugin="spark", workers=1))
    assert ask_for_start(world.db, cid), "an Active cluster without an operation takes the start"
    return Run(world, hosts, cid, "cluster")


def run_job(world: World, hosts: dict[str, FakeHost]) -> Run:
    return Run(world, hosts, _job(world, hosts, _active_cluster(world, hosts)), "job")


def _launched_job(world: World, hosts: dict[str, FakeHost], op: str) -> str:
    """A job launched and running on the cluster's master (its run stopped at the watch), then `op` asked."""
    run = run_job(world, hosts)

    def stop_at_watch(work, step: str, when: str) -> None:  # noqa: ANN001
        if (step, when) == ("watch", "before"):
            raise Crash()

    with pytest.raises(Crash):
        _drive(run, stop_at_watch)
    with world.db.session() as s:
        job = s.get(Job, run.row)
        job.op, job.op_step = op, None
        job.status = {"suspend": "TOBESUSPENDED", "cancel": "TOBEKILLED"}.get(op, job.status)
    return run.row


def resume(world: World, hosts: dict[str, FakeHost]) -> Run:
    row = _launched_job(world, hosts, "resume")
    with world.db.session() as s:
        s.get(Job, row).status = "SUSPENDED"
    return Run(world, hosts, row, "job")


def suspend(world: World, hosts: dict[str, FakeHost]) -> Run:
    return Run(world, hosts, _launched_job(world, hosts, "suspend"), "job")


def cancel(world: World, hosts: dict[str, FakeHost]) -> Run:
    return Run(world, hosts, _launched_job(world, hosts, "cancel"), "job")


def delete_job(world: World, hosts: dict[str, FakeHost]) -> Run:
    return Run(world, hosts, _launched_job(world, hosts, "delete"), "job")


def deploy_site(world: World, hosts: dict[str, FakeHost]) -> Run:
    version = world.post("/v2/exports", {}, who="admin").json()["export"]["version"]
    with world.db.session() as s:
        site = s.get(Site, world.site_id)
        site.op, site.op_step, site.generation, site.status = "deploy", None, 1, "Deploying"
        site.op_target = {"bundle_version": version, "hosts": ["h1"]}
    return Run(world, hosts, world.site_id, "site")


def scale_site(world: World, hosts: dict[str, FakeHost]) -> Run:
    """A host added to the site (the API writes it as enrolling) and the old one removed."""
    version = world.post("/v2/exports", {}, who="admin").json()["export"]["version"]
    with world.db.session() as s:
        site = s.get(Site, world.site_id)
        s.add(Host(site_id=site.id, name="h2", address="127.0.0.2", vcpus=8, ram_mb=16384, disk_gb=100,
                   base_dir="/srv/h2", access="ssh", status="enrolling",
                   spec={"authorized_keys": "/root/.ssh/authorized_keys"}))
        site.op, site.op_step, site.generation, site.status = "scale", None, 1, "Scaling"
        site.op_target = {"bundle_version": version, "hosts": ["h2"], "remove": ["h1"]}
    return Run(world, hosts, world.site_id, "site")


def update_site(world: World, hosts: dict[str, FakeHost]) -> Run:
    version = world.post("/v2/exports", {}, who="admin").json()["export"]["version"]
    with world.db.session() as s:
        site = s.get(Site, world.site_id)
        site.op, site.op_step, site.generation, site.status = "update", None, 1, "Updating"
        site.op_target = {"bundle_version": version, "hosts": None}
    return Run(world, hosts, world.site_id, "site")


def delete_site(world: World, hosts: dict[str, FakeHost]) -> Run:
    with world.db.session() as s:
        site = s.get(Site, world.site_id)
        site.op, site.op_step, site.generation, site.status = "delete", None, 1, "Deleting"
    return Run(world, hosts, world.site_id, "site")


def _with_volumes(world: World) -> dict[str, Any]:
    """A cluster body whose workers have two volumes each, on a host with a volume backend."""
    with world.db.session() as s:
        for h in s.scalars(select(Host)):
            h.spec = {**h.spec, "volumes": {"backend": "loop", "dir": "/srv/volumes", "size_gb": 100, "types": []}}
    body = cluster_body("c1", plugin="dask", workers=2)
    body["node_groups"][1].update(volumes_per_node=2, volumes_size=5)
    return body


def create_volumes(world: World, hosts: dict[str, FakeHost]) -> Run:
    r = world.post("/v2/clusters", _with_volumes(world))
    assert r.status_code == 202, r.text
    return Run(world, hosts, r.json()["cluster"]["id"], "cluster")


def scale_down_volumes(world: World, hosts: dict[str, FakeHost]) -> Run:
    cid = _active_cluster(world, hosts, _with_volumes(world))
    assert len(next(iter(hosts.values())).volumes) == 4
    r = world.client.put(f"/v2/clusters/{cid}", json={"resize_node_groups": [{"name": "worker", "count": 1}]},
                         headers=world.h())
    assert r.status_code == 202, r.text
    return Run(world, hosts, cid, "cluster")


def delete_volumes(world: World, hosts: dict[str, FakeHost]) -> Run:
    cid = _active_cluster(world, hosts, _with_volumes(world))
    assert world.delete(f"/v2/clusters/{cid}").status_code == 204
    return Run(world, hosts, cid, "cluster")


SCENARIOS = {  # scenario -> (its operation's declaration)
    create: CLUSTER_OPERATIONS["create"], scale_up: CLUSTER_OPERATIONS["scale"],
    scale_down: CLUSTER_OPERATIONS["scale"], delete: CLUSTER_OPERATIONS["delete"],
    update_keypair: CLUSTER_OPERATIONS["update_keypair"], start_connect: CLUSTER_OPERATIONS["start_connect"],
    run_job: JOB_OPERATIONS["run"],
    suspend: JOB_OPERATIONS["suspend"], resume: JOB_OPERATIONS["resume"], cancel: JOB_OPERATIONS["cancel"],
    delete_job: JOB_OPERATIONS["delete"], deploy_site: SITE_OPERATIONS["deploy"],
    scale_site: SITE_OPERATIONS["scale"], update_site: SITE_OPERATIONS["update"],
    delete_site: SITE_OPERATIONS["delete"], create_volumes: CLUSTER_OPERATIONS["create"],
    scale_down_volumes: CLUSTER_OPERATIONS["scale"], delete_volumes: CLUSTER_OPERATIONS["delete"],
}
CASES = [(scenario, step.name, when) for scenario, op in SCENARIOS.items() for step in op.steps
         for when in ("before", "after")]


def test_every_operation_of_every_model_is_covered() -> None:
    covered = {id(op) for op in SCENARIOS.values()}
    left = [f"{kind} {name}" for kind, ops in (("cluster", CLUSTER_OPERATIONS), ("job", JOB_OPERATIONS),
                                               ("site", SITE_OPERATIONS))
            for name, op in ops.items() if id(op) not in covered]
    assert not left, f"operations without a crash scenario here: {left}"


def _state(run: Run) -> dict[str, Any]:
    """The rows and the hosts, without what differs between two runs by nature."""
    rows: dict[str, list[str]] = {}
    with run.world.db.session() as s:
        for model in (models.Cluster, models.NodeGroup, models.Instance, models.HostPort, models.ProvisionStep,
                      models.ProvisionEvent, models.Job, models.Site, models.Host, models.SiteEvent):
            out = []
            for row in s.scalars(select(model)):
                values = {c.key: getattr(row, c.key) for c in inspect(model).column_attrs if c.key not in VOLATILE}
                if model is models.Cluster:
                    values["secrets"] = sorted(values.get("secrets") or {})
                for key in ("op_target", "runtime"):
                    if isinstance(values.get(key), dict):
                        values[key] = {k: v for k, v in values[key].items() if k not in VOLATILE_KEYS}
                if model in (models.ProvisionEvent, models.ProvisionStep):
                    values.pop("id")
                    values.pop("step_id", None)
                out.append(json.dumps(values, sort_keys=True, default=str))
            rows[model.__tablename__] = sorted(out)
    hosts = {}
    for host_id, host in run.hosts.items():
        state = host.state()
        # key lines carry generated key data: what matters is which marks are there
        state["files"] = {p: (sorted(line.split()[-1] for line in d.decode().splitlines())
                              if p.endswith("authorized_keys") else d) for p, d in state["files"].items()}
        # so do the clusters' certificates and keys (the row keeps which ones, `secrets`, compared by its keys)
        state["files"] = {p: ("a PEM credential" if isinstance(d, bytes) and d.startswith(b"-----BEGIN") else
                              "a keystore" if p.endswith((".p12", ".jks")) else d)
                          for p, d in state["files"].items()}
        hosts[host_id] = state
    return {"rows": rows, "hosts": hosts}


_BASELINES: dict[str, dict[str, Any]] = {}


def _baseline(scenario, make_world) -> dict[str, Any]:  # noqa: ANN001
    """The end state of the scenario's operation run without a crash (the same for each of its cases)."""
    if scenario.__name__ not in _BASELINES:
        run = scenario(make_world("baseline"), {})
        _drive(run)
        _BASELINES[scenario.__name__] = _state(run)
    return _BASELINES[scenario.__name__]


def _differences(got: Any, expected: Any, path: str = "") -> str:
    """Where two states differ, one line each: what the crashed run has, and what the uninterrupted one has."""
    if isinstance(got, dict) and isinstance(expected, dict):
        return "".join(_differences(got.get(k), expected.get(k), f"{path}/{k}") for k in {*got, *expected})
    if isinstance(got, list) and isinstance(expected, list) and len(got) == len(expected):
        return "".join(_differences(a, b, f"{path}[{i}]") for i, (a, b) in enumerate(zip(got, expected)))
    return "" if got == expected else f"\n{path}:\n  after the crash: {got}\n  without a crash: {expected}"


@pytest.mark.parametrize(("scenario", "step", "when"), CASES,
                         ids=[f"{s.__name__}-{step}-{when}" for s, step, when in CASES])
def test_a_crash_at_any_step_resumes_to_the_same_end(make_world, scenario, step: str, when: str,  # noqa: ANN001
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Keys are generated at random: the same ones in both runs, so that rows compare.
    monkeypatch.setattr("oasis.db.clusterrows.generate_keypair", lambda comment: ("PRIVATE", f"ssh-ed25519 AAAA {comment}"))
    monkeypatch.setattr("oasis.plugins.security.new_password", lambda: "the-same-secret")  # Spark's, in its files
    expected = _baseline(scenario, make_world)

    crashed = scenario(make_world("crashed"), {})
    hits = []

    def die(work, name: str, moment: str) -> None:  # noqa: ANN001
        if (name, moment) == (step, when) and not hits:
            hits.append(name)
            raise Crash()

    with pytest.raises(Crash):
        _drive(crashed, die)
    _drive(crashed)  # a fresh engine takes over at the recorded step
    assert hits == [step]
    got = _state(crashed)
    assert got == expected, _differences(got, expected)



def test_the_on_demand_connect_server_starts_on_the_master_only_when_asked(make_world) -> None:  # noqa: ANN001
    run = start_connect(make_world("connect"), {})
    daemons = lambda: {d.rsplit("/", 1)[-1] for h in run.hosts.values() for d in h.daemons}  # noqa: E731
    assert "connect" not in daemons(), "an Active cluster runs no server until someone connects"
    _drive(run)
    assert "connect" in daemons()
    with run.world.db.session() as s:
        c = s.get(Cluster, run.row)
        assert (c.status, c.op, c.spec.get(CONNECT_STARTED)) == ("Active", None, True)


def test_volumes_come_and_go_with_their_instances(make_world) -> None:  # noqa: ANN001
    """Each worker gets its two volumes, mounted inside its own directory; a scale-down removes the leaving
    worker's, a delete the rest."""
    run = scale_down_volumes(make_world("volumes"), {})
    host = next(iter(run.hosts.values()))
    with run.world.db.session() as s:
        workers = {i.id: i.workdir for i in s.scalars(select(models.Instance)) if "worker" in i.name}
    assert sorted(host.volumes) == sorted(f"/srv/volumes/oasis-{i}-{n}" for i in workers for n in (1, 2))
    assert sorted(host.volumes.values()) == sorted(f"{d}/volumes/disk{n}" for d in workers.values() for n in (1, 2))
    _drive(run)
    with run.world.db.session() as s:
        (left,) = [i.id for i in s.scalars(select(models.Instance)) if "worker" in i.name]
    assert sorted(host.volumes) == [f"/srv/volumes/oasis-{left}-1", f"/srv/volumes/oasis-{left}-2"]
    assert run.world.delete(f"/v2/clusters/{run.row}").status_code == 204
    _drive(run)
    assert host.volumes == {}
