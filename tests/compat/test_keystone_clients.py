"""Sahara's unmodified clients against `oasis up --config FILE` with `backend = keystone`, authenticating at a real
Keystone 30 and finding oasis in its catalog, where `oasis keystone register --apply` put it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from saharaclient import client as sahara
from saharaclient.api.base import APIException

from tests.integration.services import Oasis
from tests.keystone_service import KeystoneServer, oasis_on_keystone

BIN = Path(sys.executable).parent


def oasis_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oasis.cli.main", *args], capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.fixture(scope="module")
def ks_oasis(keystone: KeystoneServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Oasis]:
    with oasis_on_keystone(keystone, tmp_path_factory.mktemp("ks-oasis"), cache_time=30) as service:
        yield service


@pytest.fixture(scope="module")
def registered(ks_oasis: Oasis, keystone: KeystoneServer, tmp_path_factory: pytest.TempPathFactory) -> Oasis:
    secret = tmp_path_factory.mktemp("secret") / "password"
    secret.write_text(keystone.service_password)
    secret.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(OS_AUTH_URL=keystone.url, OS_USERNAME="admin", OS_PASSWORD=keystone.admin_password,
               OS_PROJECT_NAME="admin")
    first = oasis_cli("keystone", "register", "--url", ks_oasis.url, "--apply", "--password-file", str(secret),
                      env=env)
    assert first.returncode == 0, first.stderr
    assert "created service sahara (data-processing)" in first.stdout
    assert first.stdout.count("endpoint") >= 3
    again = oasis_cli("keystone", "register", "--url", ks_oasis.url, "--apply", env=env)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout and "admin role" in again.stdout  # idempotent, and says why admin
    assert keystone.admin_password not in first.stdout + first.stderr + again.stdout + again.stderr
    return ks_oasis


def test_register_prints_what_it_would_do(ks_oasis: Oasis) -> None:
    r = oasis_cli("keystone", "register", "--url", ks_oasis.url)
    assert r.returncode == 0, r.stderr
    assert "openstack service create --name sahara" in r.stdout
    assert f"'{ks_oasis.url}/v1.1/%(tenant_id)s'" in r.stdout and "--password-prompt oasis" in r.stdout


def test_saharaclient_with_keystone_credentials(registered: Oasis, keystone: KeystoneServer) -> None:
    session = keystone.user_session("alice")
    c1, c2 = sahara.Client("1.1", session=session), sahara.Client("2", session=session)
    assert {"dask", "spark"} <= {p.name for p in c2.plugins.list()}
    assert c1.clusters.list() == [] and c2.clusters.list() == []
    version = c2.plugins.get("dask").versions[0]
    name = f"ks-ngt-{uuid.uuid4().hex[:6]}"
    ngt = c2.node_group_templates.create(name, "dask", version, "2", node_processes=["worker"])
    assert c1.node_group_templates.get(ngt.id).name == name
    # bob, of project beta, does not see alpha's template
    other = sahara.Client("2", session=keystone.user_session("bob"))
    with pytest.raises(APIException) as e:
        other.node_group_templates.get(ngt.id)
    assert e.value.error_code == 404
    # a reader may list but not create
    reader = sahara.Client("2", session=keystone.user_session("rita"))
    assert name in {t.name for t in reader.node_group_templates.list()}
    with pytest.raises(APIException) as e:
        reader.node_group_templates.create(f"{name}-r", "dask", version, "2", node_processes=["worker"])
    assert e.value.error_code == 403
    c2.node_group_templates.delete(ngt.id)


def test_openstack_dataprocessing_with_a_clouds_yaml_at_keystone(registered: Oasis, keystone: KeystoneServer,
                                                                 tmp_path: Path) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(yaml.safe_dump({"clouds": {"ks": {"auth": {
        "auth_url": keystone.url, "username": "alice", "password": keystone.passwords["alice"],
        "project_name": "alpha", "user_domain_name": "Default", "project_domain_name": "Default"},
        "identity_api_version": 3, "region_name": "RegionOne"}}}))
    clouds.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["OS_CLIENT_CONFIG_FILE"] = str(clouds)
    for version in ("1.1", "2"):
        proc = subprocess.run([str(BIN / "openstack"), "--os-cloud", "ks", "--os-data-processing-api-version",
                               version, "dataprocessing", "cluster", "list", "-f", "json"],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(proc.stdout) == []


def test_the_real_service_answers_401_with_where_to_authenticate(ks_oasis: Oasis, keystone: KeystoneServer) -> None:
    for headers in ({}, {"X-Auth-Token": "bogus"}):
        r = httpx.get(f"{ks_oasis.url}/v2/clusters", headers=headers)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == f'Keystone uri="{keystone.url}"'
    token = keystone.token("alice")
    assert httpx.get(f"{ks_oasis.url}/v2/clusters", headers={"X-Auth-Token": token}).status_code == 200
