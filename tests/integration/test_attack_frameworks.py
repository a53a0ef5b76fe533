"""Attacks on the frameworks from outside a cluster: real Dask and real Spark clusters on the `local` site, reached
with no credentials, with a second project's, and with another cluster's certificate or a wrong secret, each
refused; the same with the credentials of GET /v2/clusters/{id}/client-config (through `oasis cluster connect`)
succeed."""
from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration import workflow as wf
from tests.integration.services import Oasis

pytestmark = pytest.mark.service(clean_log=True)

PASSWORD_B = "tenant-b-pass-1"

# A Dask client in a process of its own (a refused connection must not leave threads behind in pytest's): it
# prints CONNECTED with a computed value, or REFUSED with the exception's type.
DASK_PROBE = textwrap.dedent("""
    import json, sys
    from distributed import Client, Security
    address, paths = sys.argv[1], json.loads(sys.argv[2])
    security = Security(**paths, require_encryption=True) if paths else None
    try:
        with Client(address, security=security, timeout=8) as client:
            print("CONNECTED", client.submit(sum, [1, 2, 3]).result(timeout=30), flush=True)
    except BaseException as e:  # noqa: BLE001 - whatever refuses the connection is the finding
        print("REFUSED", type(e).__name__, e, flush=True)
""")

SPARK_JOB = textwrap.dedent("""
    from pyspark.sql import SparkSession
    spark = SparkSession.builder.appName("attack").getOrCreate()
    print("SUM", spark.sparkContext.parallelize(range(10), 2).sum(), flush=True)
    spark.stop()
""")


@pytest.fixture(scope="module")
def tenant_b(service: Oasis) -> Iterator[httpx.Client]:
    """A second project with a member of its own, made by the administrator (clouds.yaml's user)."""
    _, client = service.add_project("tenant-b", "mallory", PASSWORD_B)
    yield client
    client.close()


@pytest.fixture(scope="module")
def clusters(service: Oasis, tenant_b: httpx.Client) -> dict[str, dict]:
    """Project A's Dask and Spark clusters and project B's Dask cluster, made at once."""
    ids = {"dask_a": wf.create_cluster(service.client, "dask", "dask-a", workers=1, flavor="1"),
           "spark_a": wf.create_cluster(service.client, "spark", "spark-a", workers=1, flavor="1"),
           "dask_b": wf.create_cluster(tenant_b, "dask", "dask-b", workers=1, flavor="1")}
    return {k: wf.wait_cluster(tenant_b if k == "dask_b" else service.client, cid, timeout=240)
            for k, cid in ids.items()}


def connect_dir(service: Oasis, name: str, directory: Path, cloud_file: Path | None = None) -> dict:
    """`oasis cluster connect NAME --dir DIR`, run as a user would; returns what it printed with --json."""
    env = dict(os.environ, OS_CLIENT_CONFIG_FILE=str(cloud_file or service.state_dir / "clouds.yaml"))
    r = subprocess.run([sys.executable, "-m", "oasis.cli.main", "--json", "cluster", "connect", name,
                        "--dir", str(directory)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def dask_probe(address: str, paths: dict[str, str] | None = None, env: dict[str, str] | None = None) -> str:
    r = subprocess.run([sys.executable, "-c", DASK_PROBE, address, json.dumps(paths or {})],
                       env=dict(os.environ, **(env or {})), capture_output=True, text=True, timeout=90)
    return (r.stdout.strip() or r.stderr.strip()[-500:]) or f"rc={r.returncode}"


def security_paths(d: Path) -> dict[str, str]:
    return {"tls_ca_file": str(d / "ca.pem"), "tls_client_cert": str(d / "client.pem"),
            "tls_client_key": str(d / "client-key.pem")}


def https_get(url: str, ca: Path, cert_dir: Path | None) -> int | str:
    """The status of a GET, or the name of the error that stopped it (TLS refused, connection reset)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert_dir is not None:
        ctx.load_cert_chain(str(cert_dir / "client.pem"), str(cert_dir / "client-key.pem"))
    try:
        return httpx.get(url, verify=ctx, timeout=10).status_code
    except (httpx.HTTPError, ssl.SSLError, OSError) as e:
        return f"{type(e).__name__}: {e}"


def host_port(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    return host, int(port)


def test_client_config_is_for_the_owning_project_only(service: Oasis, tenant_b: httpx.Client,
                                                      clusters: dict[str, dict]) -> None:
    a, b = clusters["dask_a"], clusters["dask_b"]
    r = tenant_b.get(f"/clusters/{a['id']}/client-config")
    assert r.status_code == 404 and "PRIVATE KEY" not in r.text
    assert tenant_b.get(f"/clusters/{b['id']}/client-config").status_code == 200
    assert service.client.get(f"/clusters/{b['id']}/client-config").status_code == 404
    # `info` says what is true, and holds no credential
    info = json.dumps(a["info"])
    assert a["info"]["Dask"]["Scheduler"].startswith("tls://") and "PRIVATE" not in info
    assert clusters["spark_a"]["info"]["Spark"]["Web UI"].startswith("https://")


def test_dask_scheduler_answers_only_its_own_clusters_certificate(service: Oasis, tenant_b: httpx.Client,
                                                                  clusters: dict[str, dict], tmp_path: Path) -> None:
    address = clusters["dask_a"]["info"]["Dask"]["Scheduler"]
    own = tmp_path / "own"
    printed = connect_dir(service, "dask-a", own)
    assert printed["scheduler_address"] == address
    assert (own.stat().st_mode & 0o777) == 0o700
    assert all((f.stat().st_mode & 0o777) == 0o600 for f in own.iterdir())
    # B's member, with B's own cluster's credentials
    foreign = tmp_path / "foreign"
    b_cloud = tmp_path / "clouds-b.yaml"
    cloud = yaml.safe_load((service.state_dir / "clouds.yaml").read_text())
    cloud["clouds"]["oasis"]["auth"].update(username="mallory", password=PASSWORD_B, project_name="tenant-b")
    b_cloud.write_text(yaml.safe_dump(cloud))
    b_cloud.chmod(0o600)
    connect_dir(service, "dask-b", foreign, b_cloud)
    # ...who cannot get A's
    env = dict(os.environ, OS_CLIENT_CONFIG_FILE=str(b_cloud))
    r = subprocess.run([sys.executable, "-m", "oasis.cli.main", "cluster", "connect", clusters["dask_a"]["id"],
                        "--dir", str(tmp_path / "stolen")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and not (tmp_path / "stolen").exists()

    plain = "tcp://" + address.split("://", 1)[1]
    assert dask_probe(plain).startswith("REFUSED"), "plain tcp:// reached the scheduler"
    assert dask_probe(address, security_paths(foreign)).startswith("REFUSED"), "another cluster's certificate"
    # no certificate at all, at the TLS level: the handshake fails
    host, port = host_port(address)
    ctx = ssl.create_default_context(cafile=str(own / "ca.pem"))
    ctx.check_hostname = False
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with socket.create_connection((host, port), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
            tls.sendall(b"\0" * 8)
            assert tls.recv(1) != b"", "the scheduler answered a client without a certificate"
            raise ConnectionError("closed")  # an empty read: the scheduler hung up
    # the owner's credentials work, explicitly and through DASK_CONFIG (what jobs get)
    assert dask_probe(address, security_paths(own)) == "CONNECTED 6"
    assert dask_probe(address, None, {"DASK_CONFIG": str(own)}) == "CONNECTED 6"


def test_dask_dashboard_needs_the_clusters_client_certificate(service: Oasis, clusters: dict[str, dict],
                                                              tmp_path: Path) -> None:
    dashboard = clusters["dask_a"]["info"]["Dask"]["Dashboard"]
    assert dashboard.startswith("https://")
    health = dashboard.replace("/status", "/health")
    own, foreign = tmp_path / "own", tmp_path / "foreign"
    connect_dir(service, "dask-a", own)
    connect_dir(service, "spark-a", foreign)  # a certificate of another cluster's CA
    assert https_get(health, own / "ca.pem", None) != 200
    assert https_get(health, own / "ca.pem", foreign) != 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(health.replace("https://", "http://"), timeout=10).raise_for_status()
    assert https_get(health, own / "ca.pem", own) == 200


def test_spark_master_refuses_drivers_without_the_secret(service: Oasis, clusters: dict[str, dict],
                                                         tmp_path: Path) -> None:
    master = clusters["spark_a"]["info"]["Spark"]["Master"]
    own = tmp_path / "own"
    connect_dir(service, "spark-a", own)
    assert (own / "spark.properties").stat().st_mode & 0o777 == 0o600
    good = (own / "spark.properties").read_text()
    assert "spark.authenticate.secret " in good
    wrong = tmp_path / "wrong.properties"
    wrong.write_text("".join(line if not line.startswith("spark.authenticate.secret ")
                             else "spark.authenticate.secret not-the-clusters-secret\n"
                             for line in good.splitlines(keepends=True)))
    job = tmp_path / "job.py"
    job.write_text(SPARK_JOB)
    spark_home = Path(__import__("pyspark").__file__).parent
    env = dict(os.environ, SPARK_HOME=str(spark_home), PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1",
               SPARK_CONF_DIR=str(tmp_path / "no-conf"))

    def submit(properties: Path | None) -> subprocess.Popen:
        argv = [str(spark_home / "bin/spark-submit"), "--master", master, "--conf", "spark.driver.host=127.0.0.1",
                "--conf", "spark.ui.enabled=false", "--conf", "spark.executor.memory=512m"]  # flavor 1 workers
        if properties is not None:
            argv += ["--properties-file", str(properties)]
        return subprocess.Popen([*argv, str(job)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)

    # All three at once: a refused driver gives up only after the master's registration retries (about 60 s).
    procs = {"none": submit(None), "wrong": submit(wrong), "own": submit(own / "spark.properties")}
    results = {}
    try:
        for name, p in procs.items():
            out, err = p.communicate(timeout=240)
            results[name] = (p.returncode, out, err)
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()
    rc, out, err = results["own"]
    assert rc == 0 and "SUM 45" in out, err[-3000:]
    for name in ("none", "wrong"):
        rc, out, err = results[name]
        assert rc != 0 and "SUM" not in out, f"a driver with {name} secret ran on the cluster"
        assert any(s in err for s in ("SASL", "auth", "Auth")), err[-3000:]


def test_spark_web_uis_need_the_clusters_client_certificate(service: Oasis, clusters: dict[str, dict],
                                                            tmp_path: Path) -> None:
    ui = clusters["spark_a"]["info"]["Spark"]["Web UI"]
    own, foreign = tmp_path / "own", tmp_path / "foreign"
    connect_dir(service, "spark-a", own)
    connect_dir(service, "dask-a", foreign)
    assert https_get(ui, own / "ca.pem", None) != 200
    assert https_get(ui, own / "ca.pem", foreign) != 200
    assert https_get(ui, own / "ca.pem", own) == 200
    # the workers' UIs, as the master lists them
    ctx = ssl.create_default_context(cafile=str(own / "ca.pem"))
    ctx.load_cert_chain(str(own / "client.pem"), str(own / "client-key.pem"))
    workers = httpx.get(ui.rstrip("/") + "/json/", verify=ctx, timeout=10).json()["workers"]
    assert workers
    for w in workers:
        assert w["webuiaddress"].startswith("https://"), w
        assert https_get(w["webuiaddress"], own / "ca.pem", None) != 200
        assert https_get(w["webuiaddress"], own / "ca.pem", foreign) != 200
        assert https_get(w["webuiaddress"], own / "ca.pem", own) == 200


def test_no_secret_in_the_logs_or_the_api(service: Oasis, clusters: dict[str, dict]) -> None:
    secrets = []
    for c in clusters.values():
        client = service.client if c["name"] != "dask-b" else None
        if client is None:
            continue
        cfg = wf.ok(client.get(f"/clusters/{c['id']}/client-config"))["client_config"]
        secrets += [cfg["key"].splitlines()[1]] + list((cfg.get("spark_conf") or {}).values())[1:2]
    secrets = [s for s in secrets if len(s) > 16]
    assert secrets
    texts = [log.read_text(errors="replace") for log in service.state_dir.glob("*.log")]
    texts += [service.client.get(f"/clusters/{c['id']}", params={"show_progress": "true"}).text
              for c in clusters.values() if c["name"] != "dask-b"]
    for secret in secrets:
        assert not any(secret in t for t in texts), "a cluster secret is in a log or an API answer"
