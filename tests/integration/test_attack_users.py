"""Instances run as their project, not as oasis (issue 12, item 2), attacked from a second project: on the
`local` site run as root, a job of project B tries to read project A's instance directory, its job directory,
and the controller's state directory (`oasis.db`, `clouds.yaml`, `secret.key`), and every process of each
cluster is checked to run with its own project's uid (/proc/PID/status), never root's nor the other's.

The state directory is made in a directory everyone may pass through, so that what keeps a job out is oasis's
own doing and not pytest's 0700 temporary directories."""
from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from oasis.remote.hosts import project_user
from tests.integration import workflow as wf
from tests.integration.cluster_checks import cluster_dir, daemons
from tests.integration.services import Oasis, processes_under

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="projects' users need oasis to run as root (CI does)")

# Each path given as an argument: what the job could do with it. READ is a breach.
PROBE = rb"""
echo "uid $(id -u)"
for p in "$@"; do
  if cat "$p" >/dev/null 2>&1; then echo "READ $p"
  elif ls "$p" >/dev/null 2>&1; then echo "LISTED $p"
  else echo "DENIED $p"; fi
done
"""
# A job of A that leaves a file of its own in its job directory, then waits to be looked at.
KEEPER = b"echo private-to-a > mine.txt; echo ready; sleep 300\n"


@pytest.fixture(scope="module")
def oasis() -> Iterator[Oasis]:
    parent = Path(tempfile.mkdtemp(prefix="oasis-attack-"))
    parent.chmod(0o755)  # anyone may pass through: the state directory's own mode is what protects it
    service = Oasis(parent / "state")
    try:
        service.start_api("up")
        yield service
    finally:
        service.stop()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def tenants(oasis: Oasis) -> Iterator[dict]:
    """Project A (the admin's) and project B (bob, a member of tenant-b), each with a Dask cluster."""
    admin = oasis.client
    project_b, bob = oasis.add_project("tenant-b", "bob", "bob-password-1")
    v3 = httpx.Client(base_url=oasis.url + "/v3", headers=dict(admin.headers), timeout=30)
    project_a = wf.ok(v3.get("/projects", params={"name": "admin"}))["projects"][0]["id"]
    cluster_a = wf.create_cluster(admin, "dask", "a", workers=1)
    cluster_b = wf.create_cluster(bob, "dask", "b", workers=1)
    wf.wait_cluster(admin, cluster_a)
    wf.wait_cluster(bob, cluster_b)
    try:
        yield {"a": {"client": admin, "project": project_a, "cluster": cluster_a},
               "b": {"client": bob, "project": project_b, "cluster": cluster_b}}
    finally:
        for t, who in ((cluster_a, admin), (cluster_b, bob)):
            who.delete(f"/clusters/{t}")
        for t, who in ((cluster_a, admin), (cluster_b, bob)):
            wf.wait_gone(who, t)
        bob.close()
        v3.close()


def uid_of(pid: int) -> tuple[int, ...]:
    """Real, effective, saved and filesystem uid of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return tuple(int(x) for x in line.split()[1:])
    raise AssertionError(f"no Uid line for {pid}")


def shell_job(client: httpx.Client, cluster: str, name: str, script: bytes, args: list[str]) -> str:
    name = f"{name}-{uuid.uuid4().hex[:8]}"  # templates and binaries have names unique per project
    template = wf.job_template(client, name, "Shell", wf.upload_binary(client, f"{name}.sh", script))
    return wf.run_job(client, template, cluster, job_configs={"args": args})


def test_each_project_runs_as_its_own_user(oasis: Oasis, tenants: dict) -> None:
    uids = {}
    for t in ("a", "b"):
        user = pwd.getpwnam(project_user(tenants[t]["project"]))
        uids[t] = user.pw_uid
        recorded = daemons(oasis.state_dir, tenants[t]["cluster"])
        assert len(recorded) == 2, recorded  # scheduler and worker
        everything = processes_under(cluster_dir(oasis.state_dir, tenants[t]["cluster"]))
        assert set(recorded.values()) <= set(everything)
        for pid in everything:
            assert uid_of(pid) == (user.pw_uid,) * 4, f"process {pid} of project {t}"
        for inst in cluster_dir(oasis.state_dir, tenants[t]["cluster"]).resolve().iterdir():
            st = inst.stat()
            assert (st.st_uid, st.st_mode & 0o777) == (user.pw_uid, 0o700), inst
    assert uids["a"] != uids["b"] and 0 not in uids.values()


def probe_as(tenant: dict, targets: list[str]) -> list[str]:
    """Run the probe as a job of `tenant` against `targets`; its output lines after the uid line, checked to
    come from the tenant's project user and to cover every target."""
    job = shell_job(tenant["client"], tenant["cluster"], "probe", PROBE, targets)
    j = wf.wait_job(tenant["client"], job)
    out = wf.logs(tenant["client"], job)
    assert j["info"]["status"] == "SUCCEEDED", wf.logs(tenant["client"], job, "stderr")
    lines = out.splitlines()
    assert lines[0] == f"uid {pwd.getpwnam(project_user(tenant['project'])).pw_uid}", out
    assert sorted(line.split(" ", 1)[1] for line in lines[1:]) == sorted(targets), out
    return lines[1:]


def test_a_job_of_b_reads_nothing_of_a(oasis: Oasis, tenants: dict) -> None:
    a, b = tenants["a"], tenants["b"]
    keeper = shell_job(a["client"], a["cluster"], "keeper", KEEPER, [])
    try:
        wf.wait_job(a["client"], keeper, ("RUNNING",))
        where = cluster_dir(oasis.state_dir, a["cluster"]).resolve()
        mine = wf.wait_until(lambda: next(where.glob(f"*/jobs/{keeper}/mine.txt"), None), 60,
                             "A's job to write its file")
        instances = sorted(where.iterdir())
        targets = [*(str(i / "hosts") for i in instances), *(str(i / "proc") for i in instances),
                   *(str(i) for i in instances), str(mine), str(mine.parent)]
        # As a check that the probe can tell: A's own job reads its own files.
        assert all(line.startswith(("READ ", "LISTED ")) for line in probe_as(a, [str(mine), str(mine.parent)]))
        refused = probe_as(b, targets)
    finally:
        a["client"].post(f"/jobs/{keeper}/cancel")
    assert [line for line in refused if not line.startswith("DENIED ")] == [], refused


def test_a_job_reads_nothing_of_the_controller(oasis: Oasis, tenants: dict) -> None:
    state = oasis.state_dir
    targets = [str(state / "oasis.db"), str(state / "clouds.yaml"), str(state / "secret.key"), str(state)]
    assert all(Path(t).exists() for t in targets)
    for t in ("a", "b"):
        refused = probe_as(tenants[t], targets)
        assert [line for line in refused if not line.startswith("DENIED ")] == [], refused


def test_a_job_runs_as_its_project_and_owns_only_its_directory(oasis: Oasis, tenants: dict) -> None:
    b = tenants["b"]
    job = shell_job(b["client"], b["cluster"], "whoami", b"cat /proc/self/status; ls -ln .\n", [])
    assert wf.wait_job(b["client"], job)["info"]["status"] == "SUCCEEDED"
    out = wf.logs(b["client"], job)
    uid = pwd.getpwnam(project_user(b["project"])).pw_uid
    assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}" in out and "Groups:\t" + str(pwd.getpwnam(
        project_user(b["project"])).pw_gid) in out, out
    job_dir = next(cluster_dir(oasis.state_dir, b["cluster"]).resolve().glob(f"*/jobs/{job}"))
    assert job_dir.stat().st_uid == uid and all(p.stat().st_uid == uid for p in job_dir.iterdir())
