"""Per-project quotas: the PUT's validation, who may read and set them, the counting from the rows (clusters,
node groups at their scale targets, flavors, volumes, jobs not ended), the QUOTA_ERROR of a create, a scale and a
job, what frees usage, the deployment's defaults (environment and configuration file), the CLI, and the lock
under threads on one SQLite file."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from oasis.cli import quotas as cli_quotas
from oasis.cli.client import OasisClient
from oasis.cli.main import app as cli
from oasis.config import Settings
from oasis.configfile import ConfigError, read_config
from oasis.db import quotas
from oasis.db.models import Cluster, Job, NodeGroup, ProjectQuota
from oasis.db.session import Database
from oasis.edp.statuses import TERMINAL

from tests.unit.conftest import World, cluster_body
from tests.unit.test_api_edp import active_cluster, binary, template

UNLIMITED = dict.fromkeys(quotas.KEYS, -1)
NOTHING = dict.fromkeys(quotas.KEYS, 0)


def set_quota(world: World, project: str, **limits: int | None) -> dict:
    r = world.put(f"/v2/quotas/{project}", {"quota": limits}, who="admin")
    assert r.status_code == 200, r.text
    return r.json()


def tiny(name: str, workers: int = 1) -> dict:
    """A cluster of m1.tiny instances (1 GB disk each): many fit on the world's one host."""
    body = cluster_body(name, workers=workers)
    return {**body, "node_groups": [{**ng, "flavor_id": "1"} for ng in body["node_groups"]]}


def refusal(r: httpx.Response) -> str:
    assert r.status_code == 400 and r.json()["error_name"] == "QUOTA_ERROR", r.text
    return r.json()["error_message"].split("\nError ID")[0]


# --- the API: validation and who may do what ------------------------------------------------------------------


def test_put_sets_the_keys_it_names_and_keeps_the_others(world: World) -> None:
    out = set_quota(world, "p1", clusters=2, instances=6)
    assert out["project_id"] == world.projects["p1"]
    assert out["quota"] == {**UNLIMITED, "clusters": 2, "instances": 6} and out["usage"] == NOTHING
    out = set_quota(world, "p1", instances=None, vcpus=0)  # null: unlimited; an absent key keeps its value
    assert out["quota"] == {**UNLIMITED, "clusters": 2, "vcpus": 0}
    out = set_quota(world, world.projects["p1"], clusters=-1)  # by id as well as by name
    assert out["quota"] == {**UNLIMITED, "vcpus": 0}
    assert world.get("/v2/quotas").json() == out  # the caller's own project
    assert world.get(f"/v2/{world.projects['p2']}/quotas", who="bob").json()["quota"] == UNLIMITED  # Sahara's project segment too


@pytest.mark.parametrize("body, says", [
    ({"quota": {"gpus": 1}}, "'gpus' was unexpected"),
    ({"quota": {"vcpus": -2}}, "quota.vcpus: -2 is less than the minimum of -1"),
    # what the fuzzer sent: more than the column holds was a 500
    ({"quota": {"instances": 3621686054516438859776}}, "is greater than the maximum of 2147483647"),
    ({"quota": {"vcpus": 1.5}}, "quota.vcpus: 1.5 is not of type"),
    ({"quota": {"vcpus": "4"}}, "quota.vcpus: '4' is not of type"),
    ({"quota": {"vcpus": True}}, "quota.vcpus: True is not of type"),
    ({"quota": []}, "quota: [] is not of type 'object'"),
    ({"clusters": 1}, "'quota' is a required property"),
])
def test_put_refuses_what_is_not_a_limit(world: World, body: dict, says: str) -> None:
    r = world.put("/v2/quotas/p1", body, who="admin")
    assert r.status_code == 400 and r.json()["error_name"] == "VALIDATION_ERROR", r.text
    assert says in r.json()["error_message"]
    with world.db.session() as s:
        assert s.get(ProjectQuota, world.projects["p1"]) is None  # nothing written


def test_who_may_read_and_set(world: World) -> None:
    set_quota(world, "p1", clusters=3)
    for who in ("alice", "carol"):  # a member and a reader of p1
        r = world.get(f"/v2/quotas/{world.projects['p1']}", who=who)
        assert r.status_code == 200 and r.json()["quota"]["clusters"] == 3
        r = world.put("/v2/quotas/p1", {"quota": {"clusters": 9}}, who=who)
        assert r.status_code == 403 and "data-processing:quotas:update" in r.json()["error_message"]
    # another project's, existing or not, is the same 404 (as its rows are): nothing is learnt of other projects
    for ref in ("p2", world.projects["p2"], "no-such-project"):
        r = world.get(f"/v2/quotas/{ref}", who="alice")
        assert r.status_code == 404 and r.json()["error_message"].startswith(f"Project '{ref}' not found"), r.text
    assert world.get("/v2/quotas/p2", who="admin").json()["quota"] == UNLIMITED  # an administrator: any
    r = world.get("/v2/quotas/no-such-project", who="admin")
    assert r.status_code == 404 and "Project 'no-such-project' not found" in r.json()["error_message"]
    assert world.put("/v2/quotas/no-such-project", {"quota": {"clusters": 1}}, who="admin").status_code == 404
    assert world.get(f"/v2/quotas/{world.projects['p1']}", who="alice").json()["quota"]["clusters"] == 3


# --- enforcement ----------------------------------------------------------------------------------------------


def test_cluster_create_over_quota_names_what_requested_used_and_limit(world: World) -> None:
    set_quota(world, "p1", instances=6, ram_mb=16384)
    assert world.post("/v2/clusters", cluster_body("a", workers=3)).status_code == 202  # 4 instances, 8192 MB
    message = refusal(world.post("/v2/clusters", cluster_body("b", workers=2)))  # 3 more
    assert message == "Quota exceeded for project 'p1': instances: requested 3, used 4, limit 6"
    assert world.post("/v2/clusters", cluster_body("b", workers=1)).status_code == 202  # 2 more: exactly 6
    message = refusal(world.post("/v2/clusters", {**cluster_body("m", workers=1), "count": 2}, who="alice"))
    assert message == ("Quota exceeded for project 'p1': instances: requested 4, used 6, limit 6; "
                       "ram_mb: requested 8192, used 12288, limit 16384")
    usage = world.get("/v2/quotas").json()["usage"]
    assert usage == {**NOTHING, "clusters": 2, "instances": 6, "vcpus": 6, "ram_mb": 12288}
    # another project is not bound by p1's quota
    assert world.post("/v2/clusters", cluster_body("a", workers=3), who="bob").status_code == 202


def test_clusters_limit_counts_a_multiple_create_as_its_count(world: World) -> None:
    set_quota(world, "p1", clusters=2)
    message = refusal(world.post("/v2/clusters", {**tiny("m"), "count": 3}))
    assert message == "Quota exceeded for project 'p1': clusters: requested 3, used 0, limit 2"
    assert world.post("/v2/clusters", {**tiny("m"), "count": 2}).status_code == 202
    with world.db.session() as s:
        assert s.query(Cluster).count() == 2  # the refused request wrote nothing


def test_deleting_a_cluster_frees_its_quota(world: World) -> None:
    set_quota(world, "p1", clusters=1)
    cid = world.post("/v2/clusters", cluster_body("a")).json()["cluster"]["id"]
    refusal(world.post("/v2/clusters", cluster_body("b")))
    assert world.delete(f"/v2/clusters/{cid}").status_code == 204  # Deleting: its delete cannot be taken back
    assert world.get("/v2/quotas").json()["usage"]["clusters"] == 0
    assert world.post("/v2/clusters", cluster_body("b")).status_code == 202


def test_scale_counts_new_instances_and_frees_removed_ones(world: World) -> None:
    cid = active_cluster(world, "c1", workers=2)  # 3 instances
    set_quota(world, "p1", instances=4, vcpus=4)
    message = refusal(world.put(f"/v2/clusters/{cid}", {"resize_node_groups": [{"name": "worker", "count": 4}]}))
    assert message == ("Quota exceeded for project 'p1': instances: requested 2, used 3, limit 4; "
                       "vcpus: requested 2, used 3, limit 4")
    r = world.put(f"/v2/clusters/{cid}", {"resize_node_groups": [{"name": "worker", "count": 3}]})
    assert r.status_code == 202, r.text
    # while the scale runs, its target counts: nothing more fits
    assert world.get("/v2/quotas").json()["usage"]["instances"] == 4
    refusal(world.post("/v2/clusters", cluster_body("c2", workers=1)))
    with world.db.session() as s:  # the engine's end of a scale-down to one worker
        c = s.get(Cluster, cid)
        c.status, c.op, c.op_target = "Active", None, {}
        for ng in s.query(NodeGroup).filter_by(cluster_id=cid, name="worker"):
            ng.count = 1
    assert world.get("/v2/quotas").json()["usage"]["instances"] == 2
    r = world.put(f"/v2/clusters/{cid}", {"add_node_groups": [
        {"name": "extra", "flavor_id": "2", "node_processes": ["worker"], "count": 2}]})
    assert r.status_code == 202, r.text
    assert world.get("/v2/quotas").json()["usage"]["instances"] == 4  # an added group counts at its target


def test_running_jobs_counts_jobs_until_they_end(world: World) -> None:
    cid = active_cluster(world)
    jt = template(world, "Spark", [binary(world, "main.py")["id"]])
    set_quota(world, "p1", running_jobs=1)
    first = world.post("/v2/jobs", {"job_template_id": jt["id"], "cluster_id": cid})
    assert first.status_code == 202, first.text
    message = refusal(world.post("/v2/jobs", {"job_template_id": jt["id"], "cluster_id": cid}))
    assert message == "Quota exceeded for project 'p1': running_jobs: requested 1, used 1, limit 1"
    with world.db.session() as s:
        s.get(Job, first.json()["job"]["id"]).status = "SUCCEEDED"
    assert world.post("/v2/jobs", {"job_template_id": jt["id"], "cluster_id": cid}).status_code == 202


def test_a_limit_lowered_below_usage_refuses_only_what_adds_to_it(world: World) -> None:
    cid = active_cluster(world, workers=2)
    set_quota(world, "p1", instances=1)
    refusal(world.put(f"/v2/clusters/{cid}", {"resize_node_groups": [{"name": "worker", "count": 3}]}))
    r = world.put(f"/v2/clusters/{cid}", {"resize_node_groups": [{"name": "worker", "count": 1}]})
    assert r.status_code == 202, r.text  # a scale-down asks for nothing


def test_the_deployments_defaults_apply_where_a_project_has_none(world: World) -> None:
    world.settings.quota_clusters = 1
    assert world.get("/v2/quotas").json()["quota"] == {**UNLIMITED, "clusters": 1}
    assert world.post("/v2/clusters", cluster_body("a")).status_code == 202
    assert refusal(world.post("/v2/clusters", cluster_body("b"))).endswith("clusters: requested 1, used 1, limit 1")
    set_quota(world, "p1", clusters=-1)  # a project's own unlimited wins over the default
    assert world.post("/v2/clusters", cluster_body("b")).status_code == 202


# --- the counting and the check, in the database --------------------------------------------------------------


def _cluster(s, project: str, name: str, groups: list[tuple[str, str, int, dict]], **kw) -> Cluster:  # noqa: ANN001
    c = Cluster(project_id=project, name=name, plugin_name="dask", plugin_version="1", site_id=kw.pop("site_id"),
                **kw)
    s.add(c)
    s.flush()
    for ng_name, flavor, count, extra in groups:
        s.add(NodeGroup(cluster_id=c.id, name=ng_name, count=count,
                        spec={"flavor_id": flavor, "node_processes": ["worker"], **extra}))
    return c


def test_usage_counts_flavors_volumes_scale_targets_and_unended_jobs(world: World) -> None:
    site = world.site_id
    with world.db.session() as s:
        _cluster(s, "px", "a", [("w", "3", 2, {"volumes_per_node": 2, "volumes_size": 10})], site_id=site,
                 status="Active")
        _cluster(s, "px", "b", [("w", "1", 1, {}), ("new", "2", 0, {})], site_id=site, status="Validating",
                 op="scale", op_target={"resize": {"w": 3}, "add": {"new": 1}, "remove": []})
        _cluster(s, "px", "e", [("w", "1", 1, {})], site_id=site, status="Error")  # counts until deleted
        _cluster(s, "px", "gone", [("w", "5", 4, {})], site_id=site, status="Deleting", op="delete")
        _cluster(s, "py", "other", [("w", "5", 4, {})], site_id=site, status="Active")
        for status in ("PENDING", "RUNNING", "SUSPENDED", *TERMINAL):
            s.add(Job(project_id="px", job_template_id="t", cluster_id=None, status=status))
    with world.db.session() as s:
        used = quotas.usage(s, "px")
    # a: 2 x m1.medium (2 vCPUs, 4096 MB) with 20 GB of volumes each; b: 3 x m1.tiny + 1 x m1.small; e: 1 x m1.tiny
    assert used == {"clusters": 3, "instances": 2 + 4 + 1, "vcpus": 4 + 4 + 1, "ram_mb": 8192 + 3 * 512 + 2048 + 512,
                    "volume_gb": 40, "running_jobs": 3}


def test_job_ended_is_edps_terminal() -> None:
    assert quotas.JOB_ENDED == TERMINAL


def test_over_limits_names_each_key_past_its_limit() -> None:
    limit = {**UNLIMITED, "instances": 6, "vcpus": 4, "ram_mb": 100}
    used = {**NOTHING, "instances": 4, "vcpus": 4, "ram_mb": 500}
    assert quotas.over_limits(limit, used, {**NOTHING, "instances": 2, "vcpus": 1}) == [("vcpus", 1, 4, 4)]
    assert quotas.over_limits(limit, used, {**NOTHING, "instances": 3}) == [("instances", 3, 4, 6)]
    assert quotas.over_limits(limit, used, NOTHING) == []  # ram_mb is over already, but nothing adds to it
    assert str(quotas.QuotaExceeded("alpha", [("instances", 3, 4, 6)])) == \
        "Quota exceeded for project 'alpha': instances: requested 3, used 4, limit 6"


def test_concurrent_creates_on_one_sqlite_file_never_exceed_the_limit(world: World) -> None:
    """Replicas on one SQLite file (a Database each), racing: each reads first, as the API does, then checks and
    writes. Exactly the limit's worth get through; the rest are refused with the numbers."""
    limit, racers, tries = 5, 6, 4
    with world.db.session() as s:
        s.add(ProjectQuota(project_id="race", clusters=limit))
    replicas = [Database(world.settings.database_url) for _ in range(racers)]
    start = threading.Barrier(racers)

    def racer(i: int) -> tuple[int, list[str]]:
        db, made, refused = replicas[i], 0, []
        start.wait()
        for n in range(tries):
            try:
                with db.session() as s:
                    s.query(Cluster).filter_by(project_id="race").count()  # a read before the lock
                    quotas.check(s, "race", "race", {"clusters": 1}, {})
                    _cluster(s, "race", f"c{i}-{n}", [], site_id=world.site_id)
                made += 1
            except quotas.QuotaExceeded as e:
                refused.append(str(e))
        return made, refused

    try:
        with ThreadPoolExecutor(racers) as pool:
            outcomes = list(pool.map(racer, range(racers)))
    finally:
        for db in replicas:
            db.engine.dispose()
    assert sum(m for m, _ in outcomes) == limit
    messages = [m for _, refused in outcomes for m in refused]
    assert len(messages) == racers * tries - limit
    assert set(messages) == {"Quota exceeded for project 'race': clusters: requested 1, used 5, limit 5"}
    with world.db.session() as s:
        assert s.query(Cluster).filter_by(project_id="race").count() == limit


# --- settings and the CLI -------------------------------------------------------------------------------------


def test_defaults_from_the_environment_and_the_configuration_file(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    monkeypatch.setenv("OASIS_QUOTA_CLUSTERS", "3")
    monkeypatch.setenv("OASIS_QUOTA_INSTANCES", "")
    monkeypatch.setenv("OASIS_QUOTA_VCPUS", "-1")
    monkeypatch.setenv("OASIS_QUOTA_RAM_MB", "0")
    settings = Settings(state_dir=tmp_path)
    assert settings.quota_defaults == {**UNLIMITED, "clusters": 3, "ram_mb": 0}
    monkeypatch.setenv("OASIS_QUOTA_RUNNING_JOBS", "many")
    with pytest.raises(ValueError, match="OASIS_QUOTA_RUNNING_JOBS: must be an integer from 0 to 2147483647, or -1"):
        Settings(state_dir=tmp_path)
    monkeypatch.delenv("OASIS_QUOTA_RUNNING_JOBS")
    conf = tmp_path / "oasis.conf"
    conf.write_text("[quota]\ninstances = 20\nvolume_gb = -1\n")
    assert read_config(conf) == {"quota_instances": 20, "quota_volume_gb": -1}
    assert Settings(state_dir=tmp_path, **read_config(conf)).quota_defaults["instances"] == 20
    conf.write_text("[quota]\ngpus = 1\n")
    with pytest.raises(ConfigError, match=r"\[quota\] gpus: unknown option"):
        read_config(conf)
    conf.write_text("[quota]\nvcpus = -5\n")
    with pytest.raises(ConfigError, match=r"\[quota\] vcpus: must be an integer from 0 to 2147483647"):
        read_config(conf)


def test_cli_quota_set_and_show(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    who = {"name": "admin"}
    transport = world.client._transport  # the app in-process, as the world's TestClient reaches it
    monkeypatch.setattr(cli_quotas, "client", lambda _ctx: OasisClient(
        "http://testserver/v2", world.tokens[who["name"]], transport=transport))
    runner = CliRunner()
    r = runner.invoke(cli, ["quota", "set", "p1", "--clusters", "2", "--ram-mb", "8192"])
    assert r.exit_code == 0, r.output
    assert "quota of project p1 set: clusters 2, ram_mb 8192" in r.output
    who["name"] = "alice"
    assert world.post("/v2/clusters", cluster_body("a", workers=1)).status_code == 202
    r = runner.invoke(cli, ["--json", "quota", "show"])
    assert r.exit_code == 0, r.output
    assert '"clusters": 2' in r.output and '"ram_mb": 4096' in r.output
    r = runner.invoke(cli, ["quota", "show"])
    assert r.exit_code == 0 and "unlimited" in r.output and "8192" in r.output, r.output
    r = runner.invoke(cli, ["quota", "set", "p1", "--clusters", "5"])  # a member may not
    assert r.exit_code == 1 and "data-processing:quotas:update" in r.output and "Traceback" not in r.output
    r = runner.invoke(cli, ["quota", "set", "p1"])
    assert r.exit_code == 1 and "give at least one limit" in r.output


def test_a_recurring_job_waits_for_a_running_jobs_slot_and_fires_once_for_its_missed_times(world: World) -> None:
    """Its own row holds no slot (it never runs itself); each run does, checked when the engine makes it."""
    from datetime import datetime, timedelta

    from sqlalchemy import select

    from oasis.edp import schedule as sc
    from oasis.engine import attempts
    cid = active_cluster(world)
    set_quota(world, "p1", running_jobs=1)
    start = datetime(2030, 1, 1, 10, 0)
    every = sc.parse({"job_execution_type": "scheduled", "start": "2030-01-01 10:00:00", "frequency": 1}, start)
    with world.db.session() as s:
        parent = Job(project_id=world.projects["p1"], job_template_id="t", cluster_id=cid, status="PENDING", op=None,
                     op_target={}, info={}, job_configs={}, runtime={"schedule": every.record(),
                                                                     "due": start.isoformat()})
        busy = Job(project_id=world.projects["p1"], job_template_id="t", cluster_id=cid, status="RUNNING", op=None,
                   op_target={}, info={}, job_configs={}, runtime={})
        s.add_all([parent, busy])
    assert world.get("/v2/quotas").json()["usage"]["running_jobs"] == 1  # the running job, not the schedule

    defaults = world.settings.quota_defaults
    for minute in range(3):  # three of its times go by while the slot is taken
        assert attempts.start_due(world.db, start + timedelta(minutes=minute), defaults) == 0
    with world.db.session() as s:
        row = s.get(Job, parent.id)
        assert row.info["status_description"].startswith(
            "waiting: project over its running_jobs quota (used 1 of 1); its run for 2030-01-01 10:00:00 UTC")
        assert s.scalars(select(Job).where(Job.info["scheduled_by"].as_string() == parent.id)).first() is None
        s.get(Job, busy.id).status = "SUCCEEDED"
    later = start + timedelta(minutes=3, seconds=10)
    assert attempts.start_due(world.db, later, defaults) == 1
    assert attempts.start_due(world.db, later, defaults) == 0  # once for all the missed times
    with world.db.session() as s:
        row = s.get(Job, parent.id)
        assert row.info["runs"] == 1 and row.runtime["due"] == datetime(2030, 1, 1, 10, 4).isoformat()
    assert world.get("/v2/quotas").json()["usage"]["running_jobs"] == 1  # its run
