"""Projects kept apart on real SSH hosts (the lab: sshd in network namespaces, reached as root): project A's and
project B's Dask clusters spread over the `central` site's hosts, and a job of B that attacks A from inside its
own cluster. It tries to read A's instance and job directories on every host (the lab's hosts share one
filesystem, so every path is within its reach but for the modes), to join A's scheduler with B's own cluster
credentials and with none, and it reports its uid. Every process of each cluster must run as its project's user,
and no process's environment may carry a secret. Needs root (CI has it)."""
from __future__ import annotations

import json
import pwd
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from oasis.remote.hosts import project_user
from tests.integration import workflow as wf
from tests.integration.services import Oasis, processes_under
from tests.lab_fixture import site_of

pytestmark = pytest.mark.service(lab=True)
SITE = "central"

# A Dask job of B: its arguments are A's scheduler address and the paths to try. It prints one JSON line.
ATTACK = textwrap.dedent("""
    import json, os, sys
    from distributed import Client
    from distributed.security import Security

    scheduler, paths = sys.argv[1], sys.argv[2:]
    out = {"uid": os.getuid(), "read": [], "listed": []}
    for p in paths:
        try:
            if os.path.isdir(p):
                os.listdir(p)
                out["listed"].append(p)
            else:
                open(p, "rb").read(1)
                out["read"].append(p)
        except OSError:
            pass

    def joins(address, **kw):
        try:
            with Client(address, timeout=5, **kw) as c:
                return c.submit(os.getuid).result(timeout=5) is not None
        except Exception:
            return False

    out["own_scheduler"] = joins(os.environ["DASK_SCHEDULER_ADDRESS"])  # the job's own cluster: must work
    out["a_with_b_credentials"] = joins(scheduler)
    # without TLS at all (this client would refuse plain tcp itself, were encryption required of it)
    out["a_plain_tcp"] = joins(scheduler.replace("tls://", "tcp://"), security=Security(require_encryption=False))
    print(json.dumps(out), flush=True)
""").encode()


@pytest.fixture(scope="module")
def tenants(service: Oasis) -> Iterator[dict]:
    project_b, bob = service.add_project("lab-tenant-b", "lab-bob", "lab-bob-password-1")
    with httpx.Client(base_url=service.url + "/v3", headers=dict(service.client.headers), timeout=30) as v3:
        project_a = wf.ok(v3.get("/projects", params={"name": "admin"}))["projects"][0]["id"]
    made = {"a": (service.client, wf.create_cluster(service.client, "dask", "lab-a", workers=2, flavor="1",
                                                     availability_zone=SITE)),
            "b": (bob, wf.create_cluster(bob, "dask", "lab-b", workers=2, flavor="1", availability_zone=SITE))}
    try:
        clusters = {t: wf.wait_cluster(client, cid, timeout=300) for t, (client, cid) in made.items()}
        yield {"a": {"client": service.client, "project": project_a, "cluster": clusters["a"]},
               "b": {"client": bob, "project": project_b, "cluster": clusters["b"]}}
    finally:
        for client, cid in made.values():
            client.delete(f"/clusters/{cid}")
        for client, cid in made.values():
            wf.wait_gone(client, cid, timeout=180)
        bob.close()


def instance_dirs(lab: dict, cluster_id: str) -> list[Path]:
    return sorted(d for h in site_of(lab, SITE)["hosts"] for d in Path(h["base_dir"]).glob(f"{cluster_id}/*"))


def uid_of(pid: int) -> tuple[int, ...]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return tuple(int(x) for x in line.split()[1:])
    raise AssertionError(f"no Uid line for {pid}")


def test_every_process_runs_as_its_project_on_every_host(lab: dict, tenants: dict) -> None:
    uids = {}
    for t, tenant in tenants.items():
        uid = uids[t] = pwd.getpwnam(project_user(tenant["project"])).pw_uid
        dirs = instance_dirs(lab, tenant["cluster"]["id"])
        assert len(dirs) == 3, dirs  # scheduler and two workers
        pids = [p for d in dirs for p in processes_under(d)]
        assert pids, f"no process of project {t} found"
        for pid in pids:
            assert uid_of(pid) == (uid,) * 4, f"process {pid} of project {t}"
        for d in dirs:
            st = d.stat()
            assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o700), d
    assert uids["a"] != uids["b"] and 0 not in uids.values()


def test_a_job_of_b_cannot_reach_a(lab: dict, tenants: dict) -> None:
    a, b = tenants["a"], tenants["b"]
    scheduler = a["cluster"]["info"]["Dask"]["Scheduler"]
    assert scheduler.startswith("tls://"), scheduler
    dirs = instance_dirs(lab, a["cluster"]["id"])
    targets = [str(p) for d in dirs
               for p in (d, d / "hosts", d / "proc", d / "conf/tls/node-key.pem", d / "conf/dask/dask.yaml")]
    template = wf.job_template(b["client"], "lab-attack", "Dask", wf.upload_binary(b["client"], "attack.py", ATTACK))
    job = wf.run_job(b["client"], template, b["cluster"]["id"], job_configs={"args": [scheduler, *targets]})
    j = wf.wait_job(b["client"], job, timeout=240)
    assert j["info"]["status"] == "SUCCEEDED", wf.logs(b["client"], job, "stderr")[-3000:]
    found = json.loads(wf.logs(b["client"], job).strip().splitlines()[-1])
    assert found["uid"] == pwd.getpwnam(project_user(b["project"])).pw_uid
    assert found["own_scheduler"] is True  # the probe can tell: its own cluster answers it
    assert (found["read"], found["listed"]) == ([], []), found
    assert found["a_with_b_credentials"] is False and found["a_plain_tcp"] is False, found


def test_no_secret_in_any_process_environment(lab: dict, tenants: dict) -> None:
    """The clusters' keys and certificates reach their processes as files only: no PEM, no private key and no
    oasis access map in the environment of any process running under the hosts' base dirs."""
    pids = [p for t in tenants.values() for d in instance_dirs(lab, t["cluster"]["id"]) for p in processes_under(d)]
    assert pids
    for pid in pids:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile
        assert not [v for v in env if b"PRIVATE KEY" in v or b"BEGIN CERTIFICATE" in v
                    or v.startswith(b"OASIS_DATA_ACCESS=")], pid
