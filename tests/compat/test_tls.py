"""TLS on the API: a real `oasis up --tls auto` on a loopback port, and the unmodified clients of the Sahara
ecosystem against it with the clouds.yaml it writes: python-saharaclient on a keystoneauth session that verifies
with the CA, the `openstack dataprocessing` CLI, and oasis's own CLI. A client without the CA fails verification,
plain HTTP to the TLS port gets nothing, and `oasis api --tls-cert/--tls-key/--tls-ca` serves the operator's own
certificate."""
from __future__ import annotations

import json
import os
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography import x509
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from saharaclient import client as sahara

from oasis.certs import issue, make_ca
from tests.conftest import assert_clean_log
from tests.integration.services import free_port
from tests.tls_service import TlsOasis

OPENSTACK = str(Path(sys.executable).parent / "openstack")
ROOT = Path(__file__).resolve().parents[2]  # the CLI run from another directory runs this checkout's oasis


@pytest.fixture(scope="module")
def tls_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsOasis]:
    state_dir = tmp_path_factory.mktemp("tls-up") / "state"
    service = TlsOasis(state_dir, ["--tls", "auto"])
    try:
        service.start_api("up")
        yield service
    finally:
        service.stop()
    assert_clean_log(state_dir)


def keystone(service: TlsOasis, verify: bool | str) -> ks_session.Session:
    auth = service.cloud["auth"]
    return ks_session.Session(auth=v3.Password(
        auth_url=auth["auth_url"], username=auth["username"], password=auth["password"],
        project_name=auth["project_name"], user_domain_name="Default", project_domain_name="Default"),
        verify=verify)


def clean_env(**extra: str) -> dict[str, str]:
    trust = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")  # only what each test gives is trusted
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "OASIS_")) and k not in trust}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def openstack(clouds: Path, *args: str) -> subprocess.CompletedProcess:
    argv = [OPENSTACK, "--os-cloud", "oasis", "--os-data-processing-api-version", "2", "dataprocessing", *args]
    return subprocess.run(argv, env=clean_env(OS_CLIENT_CONFIG_FILE=str(clouds)), capture_output=True, text=True,
                          timeout=300)


def oasis_cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oasis.cli.main", *args], cwd=cwd, env=clean_env(HOME=str(cwd), **env),
                          capture_output=True, text=True, timeout=120)


def other_ca(tmp_path: Path) -> Path:
    path = tmp_path / "other-ca.pem"
    path.write_text(make_ca("not the control plane's CA").cert)
    return path


def test_auto_writes_the_ca_into_clouds_yaml(tls_up: TlsOasis) -> None:
    cloud = tls_up.cloud
    assert cloud["auth"]["auth_url"] == f"{tls_up.url}/v3"
    ca = tls_up.cacert
    assert ca == tls_up.state_dir / "tls" / "ca.pem"
    assert stat.S_IMODE(ca.stat().st_mode) == 0o600 and stat.S_IMODE(ca.parent.stat().st_mode) == 0o700
    assert "PRIVATE KEY" not in ca.read_text()
    # what the server presents was signed by that CA, for the address it is reached at
    served = ssl.get_server_certificate(("127.0.0.1", tls_up.port))
    leaf = x509.load_pem_x509_certificate(served.encode())
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.read_bytes()))
    # the catalog hands out the HTTPS endpoint, so that every client stays on it
    r = httpx.post(f"{tls_up.url}/v3/auth/tokens", verify=tls_up.verify(), json={"auth": {"identity": {
        "methods": ["password"], "password": {"user": {"name": "admin", "password": cloud["auth"]["password"],
                                                        "domain": {"name": "Default"}}}},
        "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}})
    assert r.status_code == 201, r.text
    urls = [e["url"] for s in r.json()["token"]["catalog"] for e in s["endpoints"]]
    assert urls and all(u.startswith(tls_up.url) for u in urls), urls


def test_saharaclient_verifies_with_the_cacert(tls_up: TlsOasis, tmp_path: Path) -> None:
    client = sahara.Client("2", session=keystone(tls_up, str(tls_up.cacert)))
    assert {"dask", "spark"} <= {p.name for p in client.plugins.list()}
    assert isinstance(client.clusters.list(), list)
    assert isinstance(sahara.Client("1.1", session=keystone(tls_up, str(tls_up.cacert))).clusters.list(), list)
    # without the CA (the system's CAs), or with another CA: the certificate is not trusted, nothing is sent
    for verify in (True, str(other_ca(tmp_path))):
        with pytest.raises(ks_exceptions.SSLError):
            sahara.Client("2", session=keystone(tls_up, verify)).plugins.list()


def test_openstack_cli_with_the_written_clouds_yaml(tls_up: TlsOasis, tmp_path: Path) -> None:
    clouds = tls_up.state_dir / "clouds.yaml"
    r = openstack(clouds, "plugin", "list", "-f", "json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert {"dask", "spark"} <= {p["Name"] for p in json.loads(r.stdout)}
    r = openstack(clouds, "cluster", "list", "-f", "json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert isinstance(json.loads(r.stdout), list)
    # the same cloud without its cacert: verification fails
    data = yaml.safe_load(clouds.read_text())
    del data["clouds"]["oasis"]["cacert"]
    no_ca = tmp_path / "clouds.yaml"
    no_ca.write_text(yaml.safe_dump(data))
    r = openstack(no_ca, "plugin", "list", "-f", "json")
    assert r.returncode != 0, r.stdout
    assert "CERTIFICATE_VERIFY_FAILED" in r.stderr or "SSL" in r.stderr, r.stderr[-2000:]


def test_oasis_cli_verifies_with_the_cacert(tls_up: TlsOasis, tmp_path: Path) -> None:
    clouds = str(tls_up.state_dir / "clouds.yaml")
    r = oasis_cli(tmp_path, "--json", "plugin", "list", OS_CLIENT_CONFIG_FILE=clouds)
    assert r.returncode == 0, r.stderr
    assert {"dask", "spark"} <= {p["name"] for p in json.loads(r.stdout)}
    token = tls_up.client.headers["X-Auth-Token"]
    # --url and --token: no clouds.yaml, so no CA; the certificate is not trusted, in one line
    r = oasis_cli(tmp_path, "--url", tls_up.url, "--token", token, "plugin", "list")
    assert r.returncode == 1 and "certificate is not trusted" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = oasis_cli(tmp_path, "--url", tls_up.url, "--token", token, "--os-cacert", str(other_ca(tmp_path)),
                  "plugin", "list")
    assert r.returncode == 1 and "certificate is not trusted" in r.stderr, r.stderr
    r = oasis_cli(tmp_path, "--url", tls_up.url, "--token", token, "--json", "plugin", "list",
                  OS_CACERT=str(tls_up.cacert))
    assert r.returncode == 0 and "dask" in r.stdout, r.stderr


def test_plain_http_to_the_tls_port_fails(tls_up: TlsOasis) -> None:
    plain = f"http://127.0.0.1:{tls_up.port}"
    with pytest.raises(httpx.TransportError):
        httpx.get(plain + "/", timeout=10)
    password = tls_up.cloud["auth"]["password"]
    with pytest.raises(httpx.TransportError):
        httpx.post(plain + "/v3/auth/tokens", timeout=10, json={"auth": {"identity": {"methods": ["password"],
                   "password": {"user": {"name": "admin", "password": password, "domain": {"name": "Default"}}}}}})
    # and the server goes on serving HTTPS
    assert tls_up.client.get("/plugins").status_code == 200


def test_given_certificate_and_key(tmp_path: Path) -> None:
    ca = make_ca("operator CA")
    server = issue(ca, "oasis api", ["127.0.0.1", "localhost"], client=False)
    files = tmp_path / "pki"
    files.mkdir(mode=0o700)
    for name, text in (("ca.pem", ca.cert), ("api.pem", server.cert), ("api.key", server.key)):
        (files / name).write_text(text)
        os.chmod(files / name, 0o600)
    state_dir = tmp_path / "state"
    service = TlsOasis(state_dir, ["--tls-cert", str(files / "api.pem"), "--tls-key", str(files / "api.key"),
                                   "--tls-ca", str(files / "ca.pem")])
    try:
        service.start_api("api")
        assert service.cacert == files / "ca.pem"
        assert not (state_dir / "tls").exists(), "nothing of --tls auto is made"
        served = ssl.get_server_certificate(("127.0.0.1", service.port))
        assert x509.load_pem_x509_certificate(served.encode()) == x509.load_pem_x509_certificate(server.cert.encode())
        client = sahara.Client("2", session=keystone(service, str(files / "ca.pem")))
        assert {"dask", "spark"} <= {p.name for p in client.plugins.list()}
        with pytest.raises(ks_exceptions.SSLError):
            sahara.Client("2", session=keystone(service, str(other_ca(tmp_path)))).plugins.list()
    finally:
        service.stop()
    assert_clean_log(state_dir)


def test_unusable_files_stop_the_start_with_a_message(tmp_path: Path) -> None:
    ca = make_ca("operator CA")
    (tmp_path / "api.pem").write_text(issue(ca, "api", ["127.0.0.1"]).cert)
    (tmp_path / "other.key").write_text(issue(ca, "other", ["127.0.0.1"]).key)
    r = oasis_cli(tmp_path, "up", "--state-dir", str(tmp_path / "state"), "--port", str(free_port()),
                  "--tls-cert", str(tmp_path / "api.pem"), "--tls-key", str(tmp_path / "other.key"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "not a certificate and its private key" in r.stderr and "Traceback" not in r.stdout + r.stderr
