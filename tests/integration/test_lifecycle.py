"""Lifecycle limits against real Dask clusters through `oasis up`: a cluster with an `idle_delete_after` of a few
seconds is deleted once idle that long, with the event naming the limit; a Dask client connected to it keeps it
(the engine asks the scheduler); one with `delete_at` a few seconds ahead is deleted then; a running job keeps an
idle cluster until it ends."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest

from oasis.cli.connect import client_files, write_private
from oasis.db.lifecycle import iso
from oasis.db.models import utcnow
from tests.integration import workflow as wf
from tests.integration.services import Oasis, stop_process, wait_until

pytestmark = pytest.mark.service()

IDLE = 4  # seconds
# The engine's sweep runs every 5 s: a limit fires within that of its time, plus the deletion itself.
MARGIN = 3 * 5

# A Dask client that stays connected until its stdin closes.
CLIENT = textwrap.dedent("""
    import sys
    from distributed import Client, Security
    address, d = sys.argv[1], sys.argv[2]
    security = Security(tls_ca_file=f"{d}/ca.pem", tls_client_cert=f"{d}/client.pem",
                        tls_client_key=f"{d}/client-key.pem", require_encryption=True)
    with Client(address, security=security, timeout=30) as client:
        print("CONNECTED", client.submit(sum, [1, 2, 3]).result(timeout=30), flush=True)
        sys.stdin.read()
""")

# A Dask job that runs until a file appears.
WAIT_FOR_FILE = textwrap.dedent("""
    import os, sys, time
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.2)
    print("RELEASED", flush=True)
""").encode()


def deleted_by(service: Oasis, cluster_id: str, limit: str) -> list[str]:
    """Poll the cluster until it is gone; every answer seen while it was being deleted carries the lifecycle
    event (written with the status, in one transaction). The events seen; the engine's log line is asserted."""
    seen: list[str] = []

    def gone() -> bool:
        c = wf.cluster(service.client, cluster_id, progress=True)
        if c is None:
            return True
        if c["status"] == "Deleting":
            events = [e["event_info"] for st in c["provision_progress"] if st["step_type"] == "Engine: lifecycle"
                      for e in st["events"]]
            assert events and f"Deleted by its {limit} limit" in events[0], c
            assert c["status_description"].startswith(f"Deleted by its {limit} limit"), c["status_description"]
            seen.extend(events)
        else:
            assert c["status"] == "Active", c["status"]
        return False

    wait_until(gone, 120 + MARGIN, f"cluster {cluster_id} to be deleted by its {limit}", 0.05)
    log = "".join(p.read_text(errors="replace") for p in service.state_dir.glob("*.log"))
    assert f"({cluster_id}): Deleted by its {limit} limit" in log
    return seen


def test_an_idle_cluster_is_deleted_with_the_event(service: Oasis) -> None:
    cid = wf.create_cluster(service.client, "dask", "idle", workers=1, lifecycle={"idle_delete_after": IDLE})
    c = wf.wait_cluster(service.client, cid)
    assert c["lifecycle"]["idle_delete_after"] == IDLE and c["lifecycle"]["idle_delete_after_from"] == "cluster"
    assert [d["limit"] for d in c["lifecycle"]["deletes"]] == ["idle_delete_after"]
    for info in deleted_by(service, cid, "idle_delete_after"):
        assert f"longer than its idle_delete_after of {IDLE} s" in info


def test_a_connected_client_keeps_an_idle_cluster(service: Oasis, tmp_path: Path) -> None:
    client = service.client
    cid = wf.create_cluster(client, "dask", "in-use", workers=1, lifecycle={"idle_delete_after": IDLE})
    wf.wait_cluster(client, cid)
    cfg = wf.ok(client.get(f"/clusters/{cid}/client-config"))["client_config"]
    write_private(tmp_path / "conn", client_files(cfg, tmp_path / "conn"))
    proc = subprocess.Popen([sys.executable, "-c", CLIENT, cfg["scheduler_address"], str(tmp_path / "conn")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "CONNECTED 6"
        connected = utcnow()

        def kept() -> bool:
            c = wf.cluster(client, cid)
            assert c is not None and c["status"] == "Active", "deleted while a client was connected"
            lc = c["lifecycle"]
            # the engine saw the client, again and again, past the time the limit would have deleted it
            return bool(lc["last_seen_in_use"]) and lc["idle_since"] >= iso(connected + timedelta(seconds=3 * IDLE))

        wait_until(kept, 120, "the engine to see the client past the idle limit", 0.2)
        assert "1 Dask client(s) connected" in wf.cluster(client, cid)["lifecycle"]["last_seen_in_use"]
    finally:
        proc.stdin.close()
        stop_process(proc)
    deleted_by(service, cid, "idle_delete_after")


def test_delete_at_deletes_the_cluster_at_its_time(service: Oasis) -> None:
    client = service.client
    cid = wf.create_cluster(client, "dask", "dated", workers=1, lifecycle={"idle_delete_after": 0})
    wf.wait_cluster(client, cid)
    at = iso(utcnow() + timedelta(seconds=5))
    c = wf.ok(client.patch(f"/clusters/{cid}", json={"lifecycle": {"delete_at": at}}), 202)["cluster"]
    assert c["lifecycle"]["delete_at"] == at and [d["limit"] for d in c["lifecycle"]["deletes"]] == ["delete_at"]
    for info in deleted_by(service, cid, "delete_at"):
        assert f"its delete_at time {at} has come" in info


def test_a_running_job_keeps_an_idle_cluster(service: Oasis) -> None:
    client = service.client
    # readable by the job's own Unix user, whoever runs the tests
    marker_dir = Path(tempfile.mkdtemp(prefix="oasis-lifecycle-"))
    marker_dir.chmod(0o755)
    try:
        cid = wf.create_cluster(client, "dask", "busy", workers=1, lifecycle={"idle_delete_after": IDLE})
        wf.wait_cluster(client, cid)
        main = wf.upload_binary(client, "wait_for_file.py", WAIT_FOR_FILE)
        template = wf.job_template(client, "wait-for-file", "Dask", main)
        jid = wf.run_job(client, template, cid, job_configs={"args": [str(marker_dir / "go")]})
        wf.wait_job(client, jid, ("RUNNING",))
        started = time.monotonic()

        def outlived() -> bool:
            c = wf.cluster(client, cid)
            assert c is not None and c["status"] == "Active", "deleted while its job ran"
            assert c["lifecycle"]["busy"] == "1 job(s) running or pending"
            # proving that something does not happen takes time: several sweeps past the limit
            return time.monotonic() - started > IDLE + MARGIN

        wait_until(outlived, 120, "the running job to outlive the idle limit", 0.2)
        (marker_dir / "go").write_text("")
        assert wf.wait_job(client, jid)["info"]["status"] == "SUCCEEDED"
        deleted_by(service, cid, "idle_delete_after")
    finally:
        shutil.rmtree(marker_dir, ignore_errors=True)
