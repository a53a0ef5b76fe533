"""Workflows: the DAG logic (oasis/edp/workflow.py), the API (oasis/api/workflows.py) and the run's operation
(oasis/engine/workflows.py) driven by the real machine over the world's database, its jobs' ends written as the
job machine writes them."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from oasis.db.models import Cluster, Job, Trust, WorkflowRun
from oasis.edp import statuses as st
from oasis.edp import workflow as wf
from oasis.engine.workflows import workflow_machine
from oasis.identity import open_identity

from tests.unit.conftest import World
from tests.unit.test_api_edp import active_cluster, binary, template


def step(name: str, *deps: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "job_template_id": "jt", "depends_on": list(deps), **extra}


DIAMOND = [step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c")]


def records(**statuses: str) -> dict[str, dict[str, Any]]:
    return {name: wf.record(status) for name, status in statuses.items()}


# --- the DAG --------------------------------------------------------------------------------------------------


def test_order_puts_each_step_after_its_dependencies() -> None:
    got = wf.order([step("d", "b", "c"), step("c", "a"), step("b", "a"), step("a")])
    assert got.index("a") < got.index("b") < got.index("d") and got.index("c") < got.index("d")


@pytest.mark.parametrize(("steps", "message"), [
    ([step("a", "b"), step("b", "c"), step("c", "a")], "cycle: a -> b -> c -> a"),
    ([step("a", "a")], "cycle: a -> a"),
    ([step("a"), step("b", "x")], "step 'b' depends on unknown step"),
    ([step("a"), step("a")], "unique: a given more than once"),
    ([step("a b")], "letters, digits"),
])
def test_a_bad_dag_is_refused(steps: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(wf.WorkflowError, match=message):
        wf.order(steps)


def test_what_runs_next() -> None:
    assert wf.ready(DIAMOND, records(a="PENDING", b="PENDING", c="PENDING", d="PENDING")) == ["a"]
    assert wf.ready(DIAMOND, records(a="SUCCEEDED", b="PENDING", c="PENDING", d="PENDING")) == ["b", "c"]
    assert wf.ready(DIAMOND, records(a="SUCCEEDED", b="SUCCEEDED", c="RUNNING", d="PENDING")) == []
    assert wf.ready(DIAMOND, records(a="SUCCEEDED", b="SUCCEEDED", c="SUCCEEDED", d="PENDING")) == ["d"]


def test_a_failed_step_stops_its_dependants_and_the_run_fails() -> None:
    now = records(a="SUCCEEDED", b="FAILED", c="SUCCEEDED", d="PENDING")
    assert wf.stopped(DIAMOND, now) == {"d": "not run: step 'b' failed"}
    chain = [step("a"), step("b", "a"), step("c", "b")]
    assert set(wf.stopped(chain, records(a="FAILED", b="PENDING", c="PENDING"))) == {"b", "c"}
    assert wf.outcome(records(a="SUCCEEDED", b="FAILED", c="SUCCEEDED", d="SKIPPED")) == wf.FAILED
    assert wf.outcome(records(a="SUCCEEDED", b="RUNNING")) is None
    assert wf.outcome(records(a="SUCCEEDED", b="SUCCEEDED")) == wf.SUCCEEDED


def test_a_restart_keeps_what_succeeded() -> None:
    again = wf.for_restart(records(a="SUCCEEDED", b="FAILED", c="SUCCEEDED", d="SKIPPED"))
    assert {n: r["status"] for n, r in again.items()} == {"a": "SUCCEEDED", "b": "PENDING", "c": "SUCCEEDED",
                                                         "d": "PENDING"}
    with pytest.raises(wf.WorkflowError, match="only a run with a failed, killed or skipped step"):
        wf.for_restart(records(a="SUCCEEDED"))


def test_substitution_of_parameters_and_steps_values() -> None:
    recs = records(a="SUCCEEDED")
    recs["a"].update(output_url="file:///data/out-a", job_id="job-1")
    configs = {"args": ["{{ day }}", "in={{steps.a.output}}", 3], "params": {"FROM": "{{ steps.a.job_id }}"},
               "configs": {"k": "x-{{ day }}-y"}}
    assert wf.substitute(configs, {"day": "2026-12-02"}, recs) == {
        "args": ["2026-12-02", "in=file:///data/out-a", 3], "params": {"FROM": "job-1"},
        "configs": {"k": "x-2026-12-02-y"}}
    with pytest.raises(wf.WorkflowError, match="no parameter of that name"):
        wf.substitute({"args": ["{{ nope }}"]}, {}, recs)
    with pytest.raises(wf.WorkflowError, match="no step named 'z'"):
        wf.substitute({"args": ["{{ steps.z.output }}"]}, {}, recs)
    with pytest.raises(wf.WorkflowError, match="steps.NAME.output"):
        wf.substitute({"args": ["{{ steps.a.url }}"]}, {}, recs)


def test_references_are_checked_at_create() -> None:
    wf.check_references([step("a", output_id="ds"), step("b", "a", job_configs={"args": ["{{ steps.a.output }}"]})],
                        {})
    with pytest.raises(wf.WorkflowError, match="'c' is not a step it depends on"):
        wf.check_references([step("a"), step("c"), step("b", "a", job_configs={"args": ["{{ steps.c.job_id }}"]})],
                            {})
    with pytest.raises(wf.WorkflowError, match="has no output_id"):
        wf.check_references([step("a"), step("b", "a", job_configs={"args": ["{{ steps.a.output }}"]})], {})
    with pytest.raises(wf.WorkflowError, match="not one of the workflow's parameters"):
        wf.check_references([step("a", job_configs={"configs": {"k": "{{ day }}"}})], {"month": "12"})


def test_parameter_values() -> None:
    assert wf.parameter_values({"day": "1", "n": None}, {"n": 5}) == {"day": "1", "n": "5"}
    with pytest.raises(wf.WorkflowError, match="without a value or a default: n"):
        wf.parameter_values({"n": None}, {})
    with pytest.raises(wf.WorkflowError, match="unknown parameter"):
        wf.parameter_values({}, {"x": "1"})


# --- the API --------------------------------------------------------------------------------------------------


def shell_template(world: World) -> str:
    return template(world, "Shell", mains=[binary(world, "step.sh", b"#!/bin/sh\necho $1\n")["id"]])["id"]


def data_source(world: World, name: str, url: str) -> str:
    r = world.post("/v2/data-sources", {"name": name, "type": "hdfs", "url": url})
    assert r.status_code == 202, r.text
    return r.json()["data_source"]["id"]


def body(world: World, cluster_id: str, jt: str, **extra: Any) -> dict[str, Any]:
    out = data_source(world, "out-a", "hdfs://nn/out-a")
    return {"name": "etl", "placement": {"cluster_id": cluster_id}, "parameters": {"day": "1"},
            "steps": [{"name": "a", "job_template_id": jt, "output_id": out, "job_configs": {"args": ["{{ day }}"]}},
                      {"name": "b", "job_template_id": jt, "depends_on": ["a"],
                       "job_configs": {"args": ["{{ steps.a.output }}"]}},
                      {"name": "c", "job_template_id": jt, "depends_on": ["a"]}], **extra}


def test_api_create_show_list_and_another_projects_404(world: World) -> None:
    cid, jt = active_cluster(world), shell_template(world)
    data = body(world, cid, jt)
    r = world.post("/v2/workflows", data)
    assert r.status_code == 202, r.text
    made = r.json()["workflow"]
    assert [s["name"] for s in made["steps"]] == ["a", "b", "c"] and made["parameters"] == {"day": "1"}
    assert world.get(f"/v2/workflows/{made['id']}").json()["workflow"]["name"] == "etl"
    assert [w["id"] for w in world.get("/v2/workflows").json()["workflows"]] == [made["id"]]
    assert world.get(f"/v2/workflows/{made['id']}", who="bob").status_code == 404
    assert world.get("/v2/workflows", who="bob").json()["workflows"] == []
    assert world.post(f"/v2/workflows/{made['id']}/run", {}, who="bob").status_code == 404
    assert world.post("/v2/workflows", data | {"name": "x"}, who="carol").status_code == 403


@pytest.mark.parametrize(("change", "message"), [
    (lambda b: b["steps"][0].update(depends_on=["c"]), "cycle: a -> c -> a"),
    (lambda b: b["steps"][1].update(depends_on=["zz"]), "unknown step"),
    (lambda b: b["steps"][2].update(name="a"), "unique"),
    (lambda b: b["steps"][2].update(job_template_id="nope"), "Job template with id 'nope' not found"),
    (lambda b: b["steps"][2].update(input_id="nope"), "Data source with id 'nope' not found"),
    (lambda b: b.update(placement={"cluster_id": "nope"}), "Cluster with id 'nope' not found"),
    (lambda b: b.update(placement={"managed_cluster": {"name": "m", "plugin_name": "nope",
                                                       "plugin_version": "1"}}), "plugin with name 'nope'"),
    (lambda b: b["steps"][2].update(job_configs={"args": ["{{ month }}"]}), "not one of the workflow's"),
])
def test_api_refuses_a_bad_workflow(world: World, change: Any, message: str) -> None:
    cid, jt = active_cluster(world), shell_template(world)
    data = body(world, cid, jt)
    change(data)
    r = world.post("/v2/workflows", data)
    assert r.status_code == 400, r.text
    assert message in r.json()["error_message"]


def machine(world: World):  # noqa: ANN201
    return workflow_machine(world.db, identity=open_identity(world.settings, world.db), poll=0.01)


def run_once(world: World, run_id: str) -> None:
    asyncio.run(machine(world)(run_id))


async def drive_until(world: World, run_id: str, ends: dict[str, str]) -> None:
    """Run the machine; end each step's job (as the job machine would) once it exists, with `ends[step]`."""
    task = asyncio.create_task(machine(world)(run_id))
    while not task.done():
        with world.db.session() as s:
            for job in s.query(Job).filter(Job.status == st.PENDING):
                name = job.info["workflow_step"]
                job.status, job.op = ends[name], None
                if name == "a" and ends[name] == st.SUCCEEDED:
                    job.data_source_urls = {job.output_id: "hdfs://nn/out-a"}
        await asyncio.wait([task], timeout=0.02)
    task.result()


def test_a_run_drives_its_dag_and_restarts_from_its_failed_step(world: World) -> None:
    cid, jt = active_cluster(world), shell_template(world)
    wid = world.post("/v2/workflows", body(world, cid, jt)).json()["workflow"]["id"]
    assert world.post(f"/v2/workflows/{wid}/run", {"parameters": {"nope": "1"}}).status_code == 400
    r = world.post(f"/v2/workflows/{wid}/run", {"parameters": {"day": "7"}})
    assert r.status_code == 202, r.text
    run = r.json()["workflow_run"]
    assert run["status"] == "PENDING" and [s["status"] for s in run["steps"]] == ["PENDING"] * 3
    with world.db.session() as s:
        trust_id = s.get(WorkflowRun, run["id"]).trust_id
        assert s.get(Trust, trust_id) is not None  # the run acts on its creator's trust

    asyncio.run(drive_until(world, run["id"], {"a": st.SUCCEEDED, "b": st.KILLED, "c": st.SUCCEEDED}))
    shown = world.get(f"/v2/workflow-runs/{run['id']}").json()["workflow_run"]
    assert shown["status"] == "FAILED" and "b" in shown["status_description"]
    steps = {s["name"]: s for s in shown["steps"]}
    assert {n: s["status"] for n, s in steps.items()} == {"a": "SUCCEEDED", "b": "FAILED", "c": "SUCCEEDED"}
    assert steps["a"]["output_url"] == "hdfs://nn/out-a" and "KILLED" in steps["b"]["reason"]
    with world.db.session() as s:
        jobs = {j.info["workflow_step"]: j for j in s.query(Job)}
        assert jobs["a"].job_configs["args"] == ["7"] and jobs["b"].job_configs["args"] == ["hdfs://nn/out-a"]
        assert jobs["a"].trust_id == trust_id and jobs["a"].runtime["shared_trust"]
        assert s.get(Trust, trust_id) is None  # released with the run's end
    assert world.get(f"/v2/workflow-runs/{run['id']}", who="bob").status_code == 404
    assert world.post(f"/v2/workflow-runs/{run['id']}/restart", {}, who="bob").status_code == 404

    r = world.post(f"/v2/workflow-runs/{run['id']}/restart", {})
    assert r.status_code == 202, r.text
    assert [s["status"] for s in r.json()["workflow_run"]["steps"]] == ["SUCCEEDED", "PENDING", "SUCCEEDED"]
    asyncio.run(drive_until(world, run["id"], {"b": st.SUCCEEDED}))
    shown = world.get(f"/v2/workflow-runs/{run['id']}").json()["workflow_run"]
    assert shown["status"] == "SUCCEEDED" and all(s["status"] == "SUCCEEDED" for s in shown["steps"])
    with world.db.session() as s:
        assert s.query(Job).count() == 4  # a and c kept, b run again
    r = world.post(f"/v2/workflow-runs/{run['id']}/restart", {})
    assert r.status_code == 400 and "only a FAILED or KILLED run" in r.json()["error_message"]
    assert [x["id"] for x in world.get("/v2/workflow-runs").json()["workflow_runs"]] == [run["id"]]


def test_a_run_resumes_after_an_engine_dies_mid_dag(world: World) -> None:
    """The machine is stopped after each look; the next one picks up from the rows alone."""
    cid, jt = active_cluster(world), shell_template(world)
    wid = world.post("/v2/workflows", body(world, cid, jt)).json()["workflow"]["id"]
    run_id = world.post(f"/v2/workflows/{wid}/run", {}).json()["workflow_run"]["id"]

    async def one_look() -> None:
        task = asyncio.create_task(machine(world)(run_id))
        await asyncio.wait([task], timeout=0.2)
        task.cancel()  # the engine dies
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(one_look())
    with world.db.session() as s:
        jobs = list(s.query(Job))
        assert [j.info["workflow_step"] for j in jobs] == ["a"]
        jobs[0].status, jobs[0].data_source_urls = st.SUCCEEDED, {jobs[0].output_id: "hdfs://nn/out-a"}
    asyncio.run(one_look())
    with world.db.session() as s:
        assert sorted(j.info["workflow_step"] for j in s.query(Job)) == ["a", "b", "c"]  # no step started twice
    asyncio.run(drive_until(world, run_id, {"b": st.SUCCEEDED, "c": st.SUCCEEDED}))
    assert world.get(f"/v2/workflow-runs/{run_id}").json()["workflow_run"]["status"] == "SUCCEEDED"


def test_a_managed_run_creates_waits_for_and_deletes_its_cluster(world: World) -> None:
    from tests.unit.conftest import cluster_body
    jt = shell_template(world)
    data = body(world, "unused", jt)
    data["placement"] = {"managed_cluster": cluster_body("wfc", plugin="spark", workers=1)}
    r = world.post("/v2/workflows", data)
    assert r.status_code == 202, r.text
    run = world.post(f"/v2/workflows/{r.json()['workflow']['id']}/run", {}).json()["workflow_run"]
    assert run["managed_cluster"] and run["cluster_id"]
    with world.db.session() as s:
        cluster = s.get(Cluster, run["cluster_id"])
        assert cluster.name.startswith("wfc-") and cluster.op == "create"
        cluster.status, cluster.op = "Active", None  # as the cluster machine leaves it

    asyncio.run(drive_until(world, run["id"], {"a": st.SUCCEEDED, "b": st.SUCCEEDED, "c": st.SUCCEEDED}))
    assert world.get(f"/v2/workflow-runs/{run['id']}").json()["workflow_run"]["status"] == "SUCCEEDED"
    with world.db.session() as s:
        assert s.get(Cluster, run["cluster_id"]).op == "delete"


def test_a_managed_cluster_in_error_fails_the_run_without_running_a_step(world: World) -> None:
    from tests.unit.conftest import cluster_body
    jt = shell_template(world)
    data = body(world, "unused", jt)
    data["placement"] = {"managed_cluster": cluster_body("wfe", plugin="spark", workers=1)}
    wid = world.post("/v2/workflows", data).json()["workflow"]["id"]
    run = world.post(f"/v2/workflows/{wid}/run", {}).json()["workflow_run"]
    with world.db.session() as s:
        s.get(Cluster, run["cluster_id"]).status = "Error"
    run_once(world, run["id"])
    shown = world.get(f"/v2/workflow-runs/{run['id']}").json()["workflow_run"]
    assert shown["status"] == "FAILED" and "Error" in shown["status_description"]
    assert all(s["status"] == "SKIPPED" for s in shown["steps"])
    with world.db.session() as s:
        assert s.query(Job).count() == 0 and s.get(Cluster, run["cluster_id"]).op == "delete"


# --- the running_jobs quota, a cancel, the wake-up -------------------------------------------------------------


def two_independent(world: World, cid: str, jt: str) -> str:
    data = {"name": "pair", "placement": {"cluster_id": cid},
            "steps": [{"name": "a", "job_template_id": jt}, {"name": "b", "job_template_id": jt}]}
    r = world.post("/v2/workflows", data)
    assert r.status_code == 202, r.text
    return r.json()["workflow"]["id"]


def steps_of(world: World, run_id: str) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in world.get(f"/v2/workflow-runs/{run_id}").json()["workflow_run"]["steps"]}


def quota_machine(world: World, **kw: Any):  # noqa: ANN201
    return workflow_machine(world.db, identity=open_identity(world.settings, world.db),
                            quota_defaults=world.settings.quota_defaults, **kw)


def test_a_step_waits_for_a_running_jobs_slot_and_takes_it_once_freed(world: World) -> None:
    from tests.unit.test_quotas import set_quota
    cid, jt = active_cluster(world), shell_template(world)
    set_quota(world, "p1", running_jobs=1)
    run_id = world.post(f"/v2/workflows/{two_independent(world, cid, jt)}/run", {}).json()["workflow_run"]["id"]

    async def until(check) -> None:  # noqa: ANN001
        task = asyncio.create_task(quota_machine(world, poll=0.01)(run_id))
        try:
            while not check():
                assert not task.done(), task.result()
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(until(lambda: "waiting" in steps_of(world, run_id)["b"]["reason"]))
    steps = steps_of(world, run_id)
    assert steps["a"]["status"] == "RUNNING" and steps["b"]["status"] == "PENDING" and not steps["b"]["job_id"]
    assert steps["b"]["reason"] == "waiting: project over its running_jobs quota (used 1 of 1)"
    assert world.get("/v2/quotas").json()["usage"]["running_jobs"] == 1  # never past the limit
    with world.db.session() as s:  # the first step's job ends: its slot is free
        job = s.get(Job, steps["a"]["job_id"])
        job.status, job.op = st.SUCCEEDED, None
    asyncio.run(until(lambda: steps_of(world, run_id)["b"]["status"] == "RUNNING"))
    assert steps_of(world, run_id)["b"]["reason"] == ""
    assert world.get("/v2/quotas").json()["usage"]["running_jobs"] == 1
    with world.db.session() as s:
        assert s.query(Job).count() == 2  # each step's job made once


def test_a_run_wakes_when_told_of_a_change_not_only_at_its_poll(world: World) -> None:
    """With a poll of an hour, only the engine's broadcast of a change (a job's end) can move the run on."""
    from oasis.engine.changes import Changes
    cid, jt = active_cluster(world), shell_template(world)
    run_id = world.post(f"/v2/workflows/{two_independent(world, cid, jt)}/run", {}).json()["workflow_run"]["id"]
    changes = Changes()

    async def go() -> None:
        task = asyncio.create_task(quota_machine(world, poll=3600, wait=changes.wait)(run_id))
        while len([s for s in steps_of(world, run_id).values() if s["job_id"]]) < 2:
            await asyncio.sleep(0.01)
        with world.db.session() as s:
            for job in s.query(Job):
                job.status, job.op = st.SUCCEEDED, None
        changes.notify()  # what Engine.wake does when the job machine ends a job
        await asyncio.wait_for(task, 60)  # a guard against a hang, not a timing: the poll alone is an hour

    asyncio.run(go())
    assert world.get(f"/v2/workflow-runs/{run_id}").json()["workflow_run"]["status"] == "SUCCEEDED"


def test_cancel_kills_the_running_steps_stops_the_rest_and_a_restart_takes_it_up(world: World) -> None:
    cid, jt = active_cluster(world), shell_template(world)
    wid = world.post("/v2/workflows", body(world, cid, jt)).json()["workflow"]["id"]
    run_id = world.post(f"/v2/workflows/{wid}/run", {}).json()["workflow_run"]["id"]

    async def first_step() -> None:
        task = asyncio.create_task(machine(world)(run_id))
        while not steps_of(world, run_id)["a"]["job_id"]:
            await asyncio.sleep(0.01)
        task.cancel()  # as the engine does once the cancel supersedes the run operation
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(first_step())
    assert world.post(f"/v2/workflow-runs/{run_id}/cancel", {}, who="bob").status_code == 404
    r = world.post(f"/v2/workflow-runs/{run_id}/cancel", {})
    assert r.status_code == 202, r.text
    assert r.json()["workflow_run"]["status"] == "TOBEKILLED"
    assert world.post(f"/v2/workflow-runs/{run_id}/cancel", {}).status_code == 202  # asked again: no change
    with world.db.session() as s:
        run = s.get(WorkflowRun, run_id)
        assert run.op == wf.CANCEL_OP and run.op_step is None
        trust_id = run.trust_id

    async def cancel() -> None:
        task = asyncio.create_task(machine(world)(run_id))
        job_id = steps_of(world, run_id)["a"]["job_id"]
        while not task.done():
            with world.db.session() as s:
                job = s.get(Job, job_id)
                if job.op == "cancel":  # as a job's cancel asks it; the job machine then kills it
                    assert job.status == st.TOBEKILLED
                    job.status, job.op = st.KILLED, None
            await asyncio.wait([task], timeout=0.02)
        task.result()

    asyncio.run(cancel())
    shown = world.get(f"/v2/workflow-runs/{run_id}").json()["workflow_run"]
    assert shown["status"] == "KILLED" and shown["end_time"]
    steps = {s["name"]: s for s in shown["steps"]}
    assert steps["a"]["status"] == "KILLED" and "the run was cancelled" in steps["a"]["reason"]
    assert {steps["b"]["status"], steps["c"]["status"]} == {"SKIPPED"}
    assert steps["b"]["reason"] == "not run: the run was cancelled"
    with world.db.session() as s:
        assert s.get(Trust, trust_id) is None and s.get(WorkflowRun, run_id).op is None
        assert s.query(Job).count() == 1
    r = world.post(f"/v2/workflow-runs/{run_id}/cancel", {})
    assert r.status_code == 409 and "has ended (KILLED)" in r.json()["error_message"]

    r = world.post(f"/v2/workflow-runs/{run_id}/restart", {})
    assert r.status_code == 202, r.text
    assert [s["status"] for s in r.json()["workflow_run"]["steps"]] == ["PENDING"] * 3
    asyncio.run(drive_until(world, run_id, {"a": st.SUCCEEDED, "b": st.SUCCEEDED, "c": st.SUCCEEDED}))
    assert world.get(f"/v2/workflow-runs/{run_id}").json()["workflow_run"]["status"] == "SUCCEEDED"


def test_cancelling_a_managed_run_deletes_its_cluster(world: World) -> None:
    from tests.unit.conftest import cluster_body
    jt = shell_template(world)
    data = body(world, "unused", jt)
    data["placement"] = {"managed_cluster": cluster_body("wfk", plugin="spark", workers=1)}
    wid = world.post("/v2/workflows", data).json()["workflow"]["id"]
    run = world.post(f"/v2/workflows/{wid}/run", {}).json()["workflow_run"]
    assert world.post(f"/v2/workflow-runs/{run['id']}/cancel", {}).status_code == 202  # before any step ran
    run_once(world, run["id"])
    shown = world.get(f"/v2/workflow-runs/{run['id']}").json()["workflow_run"]
    assert shown["status"] == "KILLED" and all(s["status"] == "SKIPPED" for s in shown["steps"])
    with world.db.session() as s:
        assert s.query(Job).count() == 0 and s.get(Cluster, run["cluster_id"]).op == "delete"


# --- a step's own proxy user ------------------------------------------------------------------------------------


def test_a_step_reaching_swift_on_trust_gets_its_own_proxy_user(world: World) -> None:
    """As `POST /v2/jobs` does, where there is a proxy domain: made by the API at `run` (with the user's token) for
    the job id the step's job will have, kept encrypted on the run and never shown, set on the job when the step
    starts; those of steps that never ran are removed at the run's end; the periodic clean-up leaves them be
    while the run goes on."""
    from oasis.engine.proxies import sweep
    from oasis.identity.proxy import ProxyUsers
    from oasis.storage.secrets import secrets_for
    from tests.unit.test_proxy_users import FakeKeystone
    keystone = FakeKeystone()
    proxies = ProxyUsers(keystone, "oasis_proxy", ["member"])  # type: ignore[arg-type]
    world.client.app.state.deps.proxy_users = proxies
    cid, jt = active_cluster(world), shell_template(world)
    swift_in = world.post("/v2/data-sources", {"name": "in", "type": "swift", "url": "swift://c/in"})
    assert swift_in.status_code == 202, swift_in.text
    swift_out = world.post("/v2/data-sources", {"name": "out", "type": "swift", "url": "swift://c/out"})
    plain = data_source(world, "plain", "hdfs://nn/x")
    flow = {"name": "swifty", "placement": {"cluster_id": cid},
            "steps": [{"name": "a", "job_template_id": jt, "input_id": swift_in.json()["data_source"]["id"]},
                      {"name": "b", "job_template_id": jt, "depends_on": ["a"], "input_id": plain},
                      {"name": "c", "job_template_id": jt, "depends_on": ["a"],
                       "output_id": swift_out.json()["data_source"]["id"]}]}
    wid = world.post("/v2/workflows", flow).json()["workflow"]["id"]
    r = world.post(f"/v2/workflows/{wid}/run", {})
    assert r.status_code == 202, r.text
    run_id = r.json()["workflow_run"]["id"]
    assert "proxy" not in r.text and "password" not in r.text
    assert "proxy" not in world.get(f"/v2/workflow-runs/{run_id}").text
    assert len(keystone.users) == 2  # a's and c's; b reaches no Swift
    with world.db.session() as s:
        planned = wf.planned_proxies(s.get(WorkflowRun, run_id).steps)
    assert sorted(planned) == ["a", "c"] and all("password" not in str(p) for p in planned.values())  # sealed

    for user in keystone.users.values():  # older than the clean-up's grace for users without a job row
        user["description"] = user["description"].split(", made")[0] + ", made 2020-01-01T00:00:00Z"
    assert sweep(world.db, proxies) == []  # the run holds them for its steps

    async def a_fails() -> None:
        engine_side = workflow_machine(world.db, identity=open_identity(world.settings, world.db), poll=0.01,
                                       secrets=secrets_for(world.settings.state_dir), proxy_users=proxies)
        task = asyncio.create_task(engine_side(run_id))
        while not task.done():
            with world.db.session() as s:
                for job in s.query(Job).filter(Job.status == st.PENDING):
                    assert job.id == planned["a"]["job_id"]  # the id the proxy user was made for
                    assert job.proxy["user_id"] in keystone.users and job.proxy["password"]
                    job.status, job.op = st.FAILED, None
            await asyncio.wait([task], timeout=0.02)
        task.result()

    asyncio.run(a_fails())
    assert world.get(f"/v2/workflow-runs/{run_id}").json()["workflow_run"]["status"] == "FAILED"
    with world.db.session() as s:
        a_job = s.get(Job, planned["a"]["job_id"])
        assert wf.planned_proxies(s.get(WorkflowRun, run_id).steps) == {}
    # c never ran: its user is gone; a's is its job's, removed by the job machine at the job's end
    assert list(keystone.users) == [a_job.proxy["user_id"]]

    r = world.post(f"/v2/workflow-runs/{run_id}/restart", {})  # a restart makes the steps' users again
    assert r.status_code == 202, r.text
    with world.db.session() as s:
        assert sorted(wf.planned_proxies(s.get(WorkflowRun, run_id).steps)) == ["a", "c"]
    assert len(keystone.users) == 3
