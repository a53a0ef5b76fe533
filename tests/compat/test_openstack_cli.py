"""The `openstack dataprocessing` CLI (python-openstackclient + saharaclient's OSC plugin, unmodified) against
`oasis up`, with the clouds.yaml that `oasis up` writes. Each call costs a second or more, so each command group
is walked once, in an order that needs no extra calls."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.services import Oasis, wait_until

OPENSTACK = str(Path(sys.executable).parent / "openstack")


def run(service: Oasis, *args: str, auth: tuple[str, ...] | None = None, ok: bool = True) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["OS_CLIENT_CONFIG_FILE"] = str(service.state_dir / "clouds.yaml")
    argv = [OPENSTACK, *(auth or ("--os-cloud", "oasis")), "--os-data-processing-api-version", "2",
            "dataprocessing", *args]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr[-2000:]}"
    else:
        assert proc.returncode != 0, f"{' '.join(args)} should have failed: {proc.stdout}"
        return proc.stderr
    return proc.stdout


def js(service: Oasis, *args: str, **kw: object) -> object:
    return json.loads(run(service, *args, "-f", "json", **kw))


def write(tmp_path: Path, name: str, data: dict) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_dataprocessing_commands(oasis: Oasis, tmp_path: Path) -> None:
    plugins = js(oasis, "plugin", "list")
    assert {"dask", "spark"} <= {p["Name"] for p in plugins}
    dask = js(oasis, "plugin", "show", "dask")
    version = dask["Versions"].split(",")[0].strip()
    images = js(oasis, "image", "list")
    assert "local-runtime" in {i["Name"] for i in images}

    suffix = uuid.uuid4().hex[:6]
    ngt_name, ct_name = f"cli-workers-{suffix}", f"cli-ct-{suffix}"
    ngt = js(oasis, "node", "group", "template", "create", "--json", write(tmp_path, "ngt.json", {
        "name": ngt_name, "plugin_name": "dask", "plugin_version": version, "flavor_id": "2",
        "node_processes": ["worker"]}))
    assert ngt["Name"] == ngt_name and ngt["Plugin version"] == version
    assert ngt_name in {t["Name"] for t in js(oasis, "node", "group", "template", "list")}
    assert js(oasis, "node", "group", "template", "show", ngt_name)["Id"] == ngt["Id"]

    ct = js(oasis, "cluster", "template", "create", "--json", write(tmp_path, "ct.json", {
        "name": ct_name, "plugin_name": "dask", "plugin_version": version, "node_groups": [
            {"name": "master", "flavor_id": "2", "node_processes": ["scheduler"], "count": 1},
            {"name": "worker", "node_group_template_id": ngt["Id"], "count": 1}]}))
    assert ct["Name"] == ct_name
    assert ct_name in {t["Name"] for t in js(oasis, "cluster", "template", "list")}
    assert js(oasis, "cluster", "template", "show", ct_name)["Id"] == ct["Id"]

    # `--wait` polls `clusters.get` until the status, lower-cased, is "active".
    cluster = js(oasis, "cluster", "create", "--wait", "--json", write(tmp_path, "cluster.json", {
        "name": f"cli-{suffix}", "plugin_name": "dask", "plugin_version": version, "cluster_template_id": ct["Id"]}))
    assert cluster["Status"] == "Active"
    assert f"cli-{suffix}" in {c["Name"] for c in js(oasis, "cluster", "list")}
    run(oasis, "cluster", "delete", "--wait", f"cli-{suffix}")
    assert f"cli-{suffix}" not in {c["Name"] for c in js(oasis, "cluster", "list")}
    run(oasis, "cluster", "template", "delete", ct_name)
    run(oasis, "node", "group", "template", "delete", ngt_name)
    assert ngt_name not in {t["Name"] for t in js(oasis, "node", "group", "template", "list")}

    ds = js(oasis, "data", "source", "create", f"cli-ds-{suffix}", "--type", "hdfs", "--url", "hdfs://nn/input")
    assert ds["Url"] == "hdfs://nn/input"
    assert f"cli-ds-{suffix}" in {d["Name"] for d in js(oasis, "data", "source", "list")}
    assert js(oasis, "data", "source", "show", f"cli-ds-{suffix}")["Type"] == "hdfs"
    run(oasis, "data", "source", "delete", f"cli-ds-{suffix}")

    # An S3 binary: the v2 client's `job binary delete` would reach for job_binary_internals on an internal-db://
    # one, a manager saharaclient's v2 client does not have.
    jb = js(oasis, "job", "binary", "create", "--name", f"cli-jb-{suffix}", "--url", "s3://bucket/main.py",
            "--access-key", "AK", "--secret-key", "SK-not-shown", "--s3-endpoint", "http://192.0.2.1:1")  # TEST-NET: never fetched
    assert jb["Url"] == "s3://bucket/main.py" and "SK-not-shown" not in json.dumps(jb)
    assert f"cli-jb-{suffix}" in {b["Name"] for b in js(oasis, "job", "binary", "list")}
    assert js(oasis, "job", "binary", "show", f"cli-jb-{suffix}")["Id"] == jb["Id"]

    jt = js(oasis, "job", "template", "create", "--json", write(tmp_path, "jt.json", {
        "name": f"cli-jt-{suffix}", "type": "Dask", "mains": [jb["Id"]]}))
    assert jt["Type"] == "Dask"
    assert f"cli-jt-{suffix}" in {t["Name"] for t in js(oasis, "job", "template", "list")}
    assert js(oasis, "job", "template", "show", f"cli-jt-{suffix}")["Id"] == jt["Id"]
    run(oasis, "job", "template", "delete", f"cli-jt-{suffix}")
    run(oasis, "job", "binary", "delete", f"cli-jb-{suffix}")

    types = {t["Name"] for t in js(oasis, "job", "type", "list")}
    assert {"Dask", "Spark"} <= types

    # Errors come back as the CLI prints them, never as a traceback.
    err = run(oasis, "cluster", "template", "show", ct_name, ok=False)
    assert "Traceback" not in err


def test_admin_token_and_endpoint(oasis: Oasis) -> None:
    token = oasis.client.headers["X-Auth-Token"]
    auth = ("--os-auth-type", "admin_token", f"--os-token={token}", "--os-endpoint", f"{oasis.url}/v2")
    assert "dask" in {p["Name"] for p in js(oasis, "plugin", "list", auth=auth)}
    wrong = ("--os-auth-type", "admin_token", "--os-token", "not-a-token", "--os-endpoint", f"{oasis.url}/v2")
    err = run(oasis, "plugin", "list", auth=wrong, ok=False)
    assert "Traceback" not in err and "The token is invalid or has expired" in err, err


def test_cluster_update_keypair(oasis: Oasis, tmp_path: Path) -> None:
    """`openstack dataprocessing cluster update keypair` (v2 only) on a cluster that names a keypair of oasis's
    registry (`/v2/keypairs`, an oasis extension standing in for Nova's)."""
    suffix = uuid.uuid4().hex[:6]
    version = js(oasis, "plugin", "show", "dask")["Versions"].split(",")[0].strip()
    kp = f"cli-kp-{suffix}"
    r = oasis.client.post("/keypairs", json={"name": kp})
    assert r.status_code == 202, r.text
    name = f"cli-kp-{suffix}"
    cluster = js(oasis, "cluster", "create", "--wait", "--json", write(tmp_path, "kp-cluster.json", {
        "name": name, "plugin_name": "dask", "plugin_version": version, "user_keypair_id": kp, "node_groups": [
            {"name": "master", "flavor_id": "2", "node_processes": ["scheduler"], "count": 1},
            {"name": "worker", "flavor_id": "2", "node_processes": ["worker"], "count": 1}]}))
    try:
        assert cluster["Status"] == "Active" and cluster["User keypair id"] == kp
        out = run(oasis, "cluster", "update", "keypair", name)
        assert f'Cluster "{name}" keypair has been updated.' in out

        def updated() -> dict | None:
            body = oasis.client.get(f"/clusters/{cluster['Id']}", params={"show_progress": "true"}).json()
            steps = [s for s in body["cluster"]["provision_progress"]
                     if s["step_name"] == "Update the user keypair" and s["successful"] is not None]
            return steps[0] if steps else None

        assert wait_until(updated, 60, "keypair updated", interval=0.3)["successful"] is True
        # Without a keypair there is nothing to update: a clear error, not a traceback.
        oasis.client.delete(f"/keypairs/{kp}")
        err = run(oasis, "cluster", "update", "keypair", name, ok=False)
        assert "Traceback" not in err and "keypair" in err, err
    finally:  # through the API, so that a failure above is the one reported
        oasis.client.delete(f"/clusters/{cluster['Id']}")
        wait_until(lambda: oasis.client.get(f"/clusters/{cluster['Id']}").status_code == 404, 120, "cluster deleted")
        oasis.client.delete(f"/keypairs/{kp}")


@pytest.fixture(autouse=True)
def _cli_installed() -> None:
    assert Path(OPENSTACK).exists(), "the test extra installs python-openstackclient"
