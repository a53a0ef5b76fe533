"""Jobs that recover: the retry policy and its backoff, the schedules of Sahara's job_execution_info (a fake clock:
every decision takes `now`), the engine's start of due jobs, a retried job through the job machine on a fake
host (each attempt its own directory, logs and record), and the API's checks."""
from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from oasis.db.models import Cluster, Host, Image, Job
from oasis.edp import joblogs, retries
from oasis.edp import schedule as sc
from oasis.edp.retries import RetryError, RetryPolicy, policy_of
from oasis.edp.schedule import Schedule, ScheduleError
from oasis.engine import attempts
from oasis.engine.clusters import cluster_machine
from oasis.engine.jobs import JobCannotRun, JobWork, job_machine
from oasis.identity import trusts

from tests.unit.conftest import World, cluster_body
from tests.unit.fake_host import FakeHost, FakeRemotes
from tests.unit.test_api_edp import active_cluster, binary, template

NOW = datetime(2030, 1, 1, 10, 0, 30)


# --- the retry policy ----------------------------------------------------------------------------------------


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RetryPolicy(max_retries=6, backoff=5, backoff_max=30)
    assert [policy.delay(n) for n in range(1, 7)] == [5, 10, 20, 30, 30, 30]


def test_only_failed_runs_are_retried_and_only_so_often() -> None:
    policy = RetryPolicy(max_retries=2)
    assert policy.allows(1, "DONEWITHERROR") and policy.allows(2, "FAILED")
    assert not policy.allows(3, "FAILED")  # the third attempt was the last
    assert not policy.allows(1, "KILLED") and not policy.allows(1, "SUCCEEDED")
    assert not RetryPolicy().allows(1, "FAILED")  # no retries unless asked


def test_policy_from_configs() -> None:
    assert policy_of({}) == RetryPolicy()
    assert policy_of({"edp.oasis.max_retries": "3", "edp.oasis.retry_backoff": 1.5}) == RetryPolicy(3, 1.5, 600)
    assert policy_of({"edp.oasis.retry_backoff": 900}).backoff_max == 900  # a cap below the backoff follows it
    for bad in ({"edp.oasis.max_retries": -1}, {"edp.oasis.max_retries": 1.5}, {"edp.oasis.max_retries": "x"},
                {"edp.oasis.max_retries": True}, {"edp.oasis.max_retries": 1000},
                {"edp.oasis.retry_backoff": "soon"},
                {"edp.oasis.retry_backoff": 60, "edp.oasis.retry_backoff_max": 10}):
        with pytest.raises(RetryError):
            policy_of(bad)


def test_attempts_view_ends_with_the_current_attempt() -> None:
    done = retries.attempt_record(1, "DONEWITHERROR", 1, "t0", "t1", {"instance_id": "i", "host": "h"}, "1@i", "")
    runtime = {"attempt": 2, "attempts": [done]}
    shown = retries.attempts_view("RUNNING", None, "t2", None, runtime, "2@i", None)
    assert [(a["number"], a["status"], a["return_code"]) for a in shown] == [(1, "DONEWITHERROR", 1), (2, "RUNNING", None)]
    assert shown[0]["host"] == "h" and shown[0]["instance_id"] == "i"
    over = retries.attempts_view("SUCCEEDED", 0, "t2", "t3", {"attempt": 2, "attempts": [done]}, "2@i", None)
    assert [(a["number"], a["status"], a["end_time"]) for a in over] == [(1, "DONEWITHERROR", "t1"),
                                                                          (2, "SUCCEEDED", "t3")]
    assert [a["status"] for a in retries.attempts_view("PENDING", None, None, None, {}, None, None)] == ["PENDING"]


def test_each_attempt_has_its_own_logs() -> None:
    assert joblogs.log_id("j", 1) == "j" and joblogs.final_key(joblogs.log_id("j"), "stdout") == "jobs/j/stdout"
    second = joblogs.final_key(joblogs.log_id("j", 2), "stdout")
    assert second == "jobs/j/attempts/2/stdout" and second.startswith(joblogs.job_prefix("j"))


def test_jobs_that_start_later_get_a_trust() -> None:
    assert not trusts.job_needs_trust(False)
    assert trusts.job_needs_trust(True) and trusts.job_needs_trust(False, starts_later=True)


# --- schedules -----------------------------------------------------------------------------------------------


def _parse(**info: Any) -> Schedule | None:
    return sc.parse({"job_execution_type": "scheduled", **info}, NOW)


def test_no_schedule_runs_now() -> None:
    assert sc.parse(None, NOW) is None and sc.parse({}, NOW) is None
    assert sc.parse({"job_execution_type": "workflow"}, NOW) is None


def test_a_scheduled_job_starts_at_its_time() -> None:
    once = _parse(start="2030-01-01 12:00:00")
    assert once.first(NOW) == datetime(2030, 1, 1, 12) and once.after(once.first(NOW)) is None
    assert not once.recurring
    # ISO 8601 with an offset is converted to UTC; a start that has passed starts at once
    assert _parse(start="2030-01-01T14:00:00+02:00").first(NOW) == datetime(2030, 1, 1, 12)
    assert _parse(start="2029-12-31 00:00:00").first(NOW) == datetime(2029, 12, 31)


def test_a_recurring_job_on_sahara_frequency_and_on_cron() -> None:
    every = _parse(start="2030-01-01 09:00:00", frequency=7)
    assert every.recurring and every.first(NOW) == datetime(2030, 1, 1, 10, 3)  # the next of 9:00 + 7n
    assert every.after(datetime(2030, 1, 1, 10, 3)) == datetime(2030, 1, 1, 10, 10)
    cron = _parse(cron="*/5 * * * *", end="2030-01-01 10:10:00")
    assert cron.first(NOW) == datetime(2030, 1, 1, 10, 5)
    assert cron.after(datetime(2030, 1, 1, 10, 5)) == datetime(2030, 1, 1, 10, 10)
    assert cron.after(datetime(2030, 1, 1, 10, 10)) is None  # past its end
    later = _parse(cron="0 6 * * *", start="2030-02-01 00:00:00")
    assert later.first(NOW) == datetime(2030, 2, 1, 6)
    assert Schedule.from_record(later.record()) == later


@pytest.mark.parametrize("info", [
    {"job_execution_type": "daily"}, {"start": "2030-01-01 00:00:00"},
    {"job_execution_type": "scheduled"}, {"job_execution_type": "scheduled", "start": "tomorrow"},
    {"job_execution_type": "scheduled", "start": "2030-01-01 00:00:00", "frequency": 0},
    {"job_execution_type": "scheduled", "start": "2030-01-01 00:00:00", "frequency": "often"},
    {"job_execution_type": "scheduled", "cron": "* * * *"}, {"job_execution_type": "scheduled", "cron": "* * * * * *"},
    {"job_execution_type": "scheduled", "cron": "61 * * * *"},
    {"job_execution_type": "scheduled", "cron": "* * * * *", "frequency": 5},
    {"job_execution_type": "scheduled", "start": "2030-01-02 00:00:00", "end": "2030-01-01 00:00:00"},
    {"job_execution_type": "scheduled", "cron": "* * * * *", "end": "2020-01-01 00:00:00"},
    {"job_execution_type": "scheduled", "start": "2030-01-01 00:00:00", "when": "now"},
])
def test_schedules_oasis_cannot_follow(info: dict[str, Any]) -> None:
    with pytest.raises(ScheduleError):
        sc.parse(info, NOW)


# --- the engine: due jobs, attempts --------------------------------------------------------------------------


def _waiting_job(world: World, cid: str, **values: Any) -> str:
    with world.db.session() as s:
        fields = {"op_target": {}, "info": {}, "runtime": {}, "job_configs": {"configs": {}}, **values}
        job = Job(project_id=world.projects["p1"], job_template_id="t", cluster_id=cid, status="PENDING", op=None,
                  **fields)
        s.add(job)
        s.flush()
        return job.id


def test_start_due_starts_only_jobs_whose_time_has_come(world: World) -> None:
    cid = active_cluster(world)
    due = _waiting_job(world, cid, runtime={"due": (NOW - timedelta(seconds=1)).isoformat(), "attempt": 2})
    later = _waiting_job(world, cid, runtime={"due": (NOW + timedelta(seconds=1)).isoformat()})
    assert attempts.start_due(world.db, NOW) == 1
    with world.db.session() as s:
        started, waiting = s.get(Job, due), s.get(Job, later)
        assert started.op == "run" and "due" not in started.runtime and started.runtime["attempt"] == 2
        assert waiting.op is None
    assert attempts.start_due(world.db, NOW) == 0  # started once


def test_a_recurring_job_makes_a_new_job_at_each_time(world: World) -> None:
    cid = active_cluster(world)
    every = _parse(cron="*/5 * * * *", end="2030-01-01 10:12:00")
    first = every.first(NOW)
    parent = _waiting_job(world, cid, trust_id="trust-1",
                          job_configs={"configs": {"x": "1"}, "job_execution_info": {"job_execution_type": "scheduled"}},
                          runtime={"schedule": every.record(), "due": first.isoformat()})
    assert attempts.start_due(world.db, first) == 1
    with world.db.session() as s:
        kids = s.scalars(select(Job).where(Job.id != parent)).all()
        assert len(kids) == 1 and kids[0].op == "run" and kids[0].info["scheduled_by"] == parent
        assert kids[0].job_configs == {"configs": {"x": "1"}}  # its settings, less the schedule
        assert kids[0].trust_id == "trust-1" and kids[0].runtime == {"shared_trust": True}
        row = s.get(Job, parent)
        assert row.status == "PENDING" and row.runtime["due"] == datetime(2030, 1, 1, 10, 10).isoformat()
    # engines were down past 10:10: one run for the missed time, then the schedule is over (its end is 10:12)
    assert attempts.start_due(world.db, datetime(2030, 1, 1, 10, 11)) == 1
    with world.db.session() as s:
        row = s.get(Job, parent)
        assert row.status == "SUCCEEDED" and row.info["runs"] == 2 and "due" not in row.runtime
        assert len(s.scalars(select(Job).where(Job.id != parent)).all()) == 2


class FailingFirst(FakeHost):
    """A fake host whose job fails (exit code 1) in its first attempt's directory and succeeds in later ones."""

    def agent(self, args: list[str], stdin: bytes | None = None) -> str:
        rest = args[1:]
        while rest[:1] in (["--user"], ["--home"]):  # acting as the instance's user
            rest = rest[2:]
        if args[0] == "wait" and rest[0] in self.jobs and not re.search(r"-[0-9]{1,3}\Z", rest[0]):
            return json.dumps({"done": True, "rc": 1, "started": 1.7e9, "ended": 1.7e9 + 1, "cancelled": False})
        return super().agent(args, stdin)


def _fake_hosts(world: World) -> dict[str, FakeHost]:
    with world.db.session() as s:
        s.get(Image, world.image_id).runtime = {"python": "/usr/bin/python3"}
        ids = []
        for h in s.scalars(select(Host)):
            h.access, h.base_dir, h.spec = "ssh", "/srv/hosts", {"authorized_keys": "/root/.ssh/authorized_keys"}
            ids.append(h.id)
    return {i: FailingFirst() for i in ids}


def _dask_job(world: World, hosts: dict[str, FakeHost], configs: dict[str, Any]) -> tuple[str, str]:
    r = world.post("/v2/clusters", cluster_body("c1", plugin="dask", workers=1))
    assert r.status_code == 202, r.text
    cid = r.json()["cluster"]["id"]
    asyncio.run(cluster_machine(world.db, FakeRemotes(hosts))(cid))
    jt = template(world, "Dask", [binary(world, "job.py")["id"]])
    r = world.post("/v2/jobs", {"job_template_id": jt["id"], "cluster_id": cid, "job_configs": {"configs": configs}})
    assert r.status_code == 202, r.text
    return cid, r.json()["job"]["id"]


def test_a_failed_attempt_is_run_again_with_its_own_directory_and_logs(world: World) -> None:
    hosts = _fake_hosts(world)
    _cid, jid = _dask_job(world, hosts, {"edp.oasis.max_retries": 2, "edp.oasis.retry_backoff": 30})
    machine = job_machine(world.db, FakeRemotes(hosts), world.store)
    asyncio.run(machine(jid))
    with world.db.session() as s:
        job = s.get(Job, jid)
        assert (job.status, job.op, job.return_code) == ("PENDING", None, None)
        assert job.runtime["attempt"] == 2 and "dir" not in job.runtime
        due = datetime.fromisoformat(job.runtime["due"])
        assert "attempt 1 ended DONEWITHERROR (exit code 1); attempt 2 of 3" in job.info["status_description"]
    shown = world.get(f"/v2/jobs/{jid}").json()["job"]["attempts"]
    assert [(a["number"], a["status"], a["return_code"]) for a in shown] == [(1, "DONEWITHERROR", 1),
                                                                             (2, "PENDING", None)]
    assert shown[0]["host"] and shown[0]["instance_id"] and shown[0]["start_time"] and shown[0]["end_time"]
    assert attempts.start_due(world.db, due - timedelta(seconds=1)) == 0  # its backoff first
    assert attempts.start_due(world.db, due) == 1
    asyncio.run(machine(jid))
    with world.db.session() as s:
        job = s.get(Job, jid)
        assert (job.status, job.return_code, job.op) == ("SUCCEEDED", 0, None)
    shown = world.get(f"/v2/jobs/{jid}").json()["job"]["attempts"]
    assert [(a["number"], a["status"], a["return_code"]) for a in shown] == [(1, "DONEWITHERROR", 1), (2, "SUCCEEDED", 0)]
    dirs = sorted(d for host in hosts.values() for d in host.jobs)
    assert len(dirs) == 2 and dirs[1] == f"{dirs[0]}-2"  # the launcher starts a directory once: a new one
    # each attempt's logs under its own keys; attempt=N picks them, the latest by default
    world.store.put("jobs/" + joblogs.log_id(jid, 1) + "/stdout", b"first\n")
    world.store.put("jobs/" + joblogs.log_id(jid, 2) + "/stdout", b"second\n")
    assert world.get(f"/v2/jobs/{jid}/logs", params={"attempt": 1}).text == "first\n"
    assert world.get(f"/v2/jobs/{jid}/logs").text == "second\n"
    for bad in ("3", "0", "x"):
        r = world.get(f"/v2/jobs/{jid}/logs", params={"attempt": bad})
        assert r.status_code == 400 and r.json()["error_name"] == "INVALID_DATA"


def test_a_retry_without_backoff_is_run_at_once(world: World) -> None:
    hosts = _fake_hosts(world)
    _cid, jid = _dask_job(world, hosts, {"edp.oasis.max_retries": 1, "edp.oasis.retry_backoff": 0})
    machine = job_machine(world.db, FakeRemotes(hosts), world.store)
    asyncio.run(machine(jid))
    with world.db.session() as s:  # no periodic start to wait for: the run operation is there already
        job = s.get(Job, jid)
        assert (job.status, job.op, job.runtime["attempt"]) == ("PENDING", "run", 2) and "due" not in job.runtime
    asyncio.run(machine(jid))
    with world.db.session() as s:
        assert (s.get(Job, jid).status, s.get(Job, jid).op) == ("SUCCEEDED", None)


def test_the_last_attempt_stands(world: World) -> None:
    hosts = _fake_hosts(world)
    _cid, jid = _dask_job(world, hosts, {})  # no retries: the first failure is the job's end
    asyncio.run(job_machine(world.db, FakeRemotes(hosts), world.store)(jid))
    job = world.get(f"/v2/jobs/{jid}").json()["job"]
    assert job["info"]["status"] == "DONEWITHERROR"
    assert [(a["number"], a["status"]) for a in job["attempts"]] == [(1, "DONEWITHERROR")]


def test_a_job_waits_for_its_cluster_and_fails_if_it_ends_in_error(world: World) -> None:
    hosts = _fake_hosts(world)
    r = world.post("/v2/clusters", cluster_body("coming", plugin="dask", workers=1))
    cid = r.json()["cluster"]["id"]
    jt = template(world, "Dask", [binary(world, "job.py")["id"]])
    r = world.post("/v2/jobs", {"job_template_id": jt["id"], "cluster_id": cid})
    assert r.status_code == 202, r.text  # Sahara's behaviour: taken, PENDING
    jid = r.json()["job"]["id"]
    assert r.json()["job"]["info"]["status"] == "PENDING"
    seen: list[str] = []

    async def clock(_seconds: float) -> None:  # each look at the cluster moves it on
        with world.db.session() as s:
            job, cluster = s.get(Job, jid), s.get(Cluster, cid)
            seen.append(job.info.get("status_description", ""))
            cluster.status = "Error" if len(seen) == 2 else "Starting"
            cluster.info = {"status_description": "no capacity"}

    with world.db.session() as s:
        s.get(Cluster, cid).op = None  # nobody drives its create here: the test moves it
    work = JobWork(world.db, jid, lambda: None, FakeRemotes(hosts), world.store, None, 900.0, sleep=clock)
    with pytest.raises(JobCannotRun, match="is Error, not Active: no capacity"):
        asyncio.run(work.prepare())
    assert "waiting for cluster coming to be Active" in seen[0]


def test_the_api_checks_retries_and_schedules(world: World) -> None:
    cid = active_cluster(world)
    jt = template(world, "Spark", [binary(world, "main.py")["id"]])

    def post(job_configs: dict[str, Any]):  # noqa: ANN202
        return world.post("/v2/jobs", {"job_template_id": jt["id"], "cluster_id": cid, "job_configs": job_configs})

    for bad in ({"configs": {"edp.oasis.max_retries": "many"}},
                {"job_execution_info": {"job_execution_type": "scheduled", "start": "soon"}}):
        r = post(bad)
        assert r.status_code == 400 and r.json()["error_name"] == "INVALID_DATA", r.text
    r = post({"job_execution_info": {"job_execution_type": "scheduled", "start": "2099-01-01 00:00:00"}})
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    assert job["info"]["status"] == "PENDING"
    assert job["info"]["status_description"] == "scheduled to start at 2099-01-01 00:00:00 UTC"
    with world.db.session() as s:
        row = s.get(Job, job["id"])
        assert row.op is None and row.runtime["due"] == "2099-01-01T00:00:00"
    with world.db.session() as s:
        s.get(Cluster, cid).status = "Deleting"
    r = post({})
    assert r.status_code == 400 and "is Deleting" in r.json()["error_message"]
