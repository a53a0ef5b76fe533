"""A site and a TLS control plane: a real `oasis api --tls auto` exports a bundle (with `oasis export`, verified
with the CA of its clouds.yaml) whose Transport section says HTTPS and carries the CA; the standalone deploy's
join (the client side, oasis.cli.standalone.join, run as the site runs it: with the bundle alone) verifies the
control plane with that CA and joins; a control plane whose certificate comes from another CA (a second real
`oasis api --tls auto`, reached at the bundle's address as a hijacked name would be) gets no join, and a bundle
that says TLS is never sent over plain HTTP.

No host is reached here: the site's hosts are entries on loopback addresses, and no engine runs."""
from __future__ import annotations

import copy
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from oasis.certs import make_ca
from oasis.cli.standalone import Enrollment, StandaloneError, join, load_bundle
from tests.conftest import assert_clean_log
from tests.tls_service import TlsOasis

ROOT = Path(__file__).resolve().parents[2]


def start(base: Path, name: str) -> TlsOasis:
    service = TlsOasis(base / name / "state", ["--tls", "auto"])
    service.start_api("api")
    return service


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsOasis]:
    base = tmp_path_factory.mktemp("tls-join")
    service = start(base, "control-plane")
    try:
        yield service
    finally:
        service.stop()
    assert_clean_log(service.state_dir)


@pytest.fixture(scope="module")
def bundle_file(control_plane: TlsOasis, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`oasis export` as an operator runs it, against the TLS API with the CA its clouds.yaml names."""
    out = tmp_path_factory.mktemp("at-site") / "bundle.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "OASIS_"))}
    env.update(OS_CLIENT_CONFIG_FILE=str(control_plane.state_dir / "clouds.yaml"), PYTHONPATH=str(ROOT),
               HOME=str(out.parent))
    r = subprocess.run([sys.executable, "-m", "oasis.cli.main", "export", "-o", str(out)], cwd=out.parent, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def site_entry(name: str) -> dict:
    hosts = ("h1", "h2")
    return {"name": name, "access": "direct", "management_network": "mgmt",
            "networks": [{"name": "mgmt", "cidr": "127.77.0.0/24"}],
            "hosts": [{"name": f"{name}-{h}", "addresses": {"mgmt": f"127.77.0.{11 + i}"}, "ssh_user": "root",
                       "ssh_port": 22, "host_key": f"ssh-ed25519 AAAA{name}{h}", "base_dir": f"/srv/{name}-{h}",
                       "authorized_keys": f"/srv/{name}-{h}/.ssh/authorized_keys",
                       "capacity": {"vcpus": 2, "ram_mb": 2048, "disk_gb": 10}} for i, h in enumerate(hosts)]}


def enrollment(entry: dict) -> Enrollment:
    """What the site's own enrollment reports (the lab tests in test_standalone.py run the real one)."""
    return Enrollment(entry["name"], "Active", "",
                      hosts={h["name"]: {"host_key": h["host_key"], "measured": {"vcpus": 2, "ram_mb": 2048}}
                             for h in entry["hosts"]},
                      events=[{"step": "connect", "host": h["name"], "info": "connected", "successful": True}
                              for h in entry["hosts"]])


def site_join(bundle: dict, name: str) -> dict:
    entry = site_entry(name)
    return join(bundle, entry, {"python": sys.executable}, enrollment(entry), timeout=30)


def test_the_bundle_of_a_tls_control_plane_says_how_to_verify_it(control_plane: TlsOasis, bundle_file: Path) -> None:
    text = bundle_file.read_text()
    assert stat.S_IMODE(bundle_file.stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in text, "the CA's certificate only, never a key"
    bundle = load_bundle(bundle_file)
    transport = bundle["Transport"]
    assert transport == {"scheme": "https", "api_url": control_plane.url,
                         "ca_cert": control_plane.cacert.read_text(), "join_use_tls": True,
                         "callbacks_use_tls": True}
    endpoints = bundle["EndpointMap"]
    for key in ("api", "data_processing", "identity", "engine_callback"):
        assert endpoints[key].startswith(control_plane.url), (key, endpoints[key])


def test_a_site_joins_verifying_the_control_plane_with_the_bundles_ca(control_plane: TlsOasis,
                                                                     bundle_file: Path) -> None:
    bundle = load_bundle(bundle_file)
    site = site_join(bundle, "tls-edge")
    assert site["name"] == "tls-edge" and site["status"] == "Active", site
    shown = control_plane.client.get("/sites/tls-edge")
    assert shown.status_code == 200, shown.text
    assert any(e["step"] == "join" and "standalone" in e["info"] for e in shown.json()["site"]["events"])


def test_a_control_plane_with_another_ca_gets_no_join(control_plane: TlsOasis, bundle_file: Path,
                                                      tmp_path: Path) -> None:
    bundle = load_bundle(bundle_file)
    # the bundle's address answered by another oasis with a CA of its own (a hijacked name, a wrong address)
    impostor = start(tmp_path, "impostor")
    try:
        hijacked = copy.deepcopy(bundle)
        text = yaml.safe_dump({k: v for k, v in hijacked.items() if k != "Transport"})
        hijacked = {**yaml.safe_load(text.replace(control_plane.url, impostor.url)),
                    "Transport": {**bundle["Transport"], "api_url": impostor.url}}
        with pytest.raises(StandaloneError, match="is not the bundle's: its TLS certificate is not signed by the "
                                                  "CA in the bundle's Transport"):
            site_join(hijacked, "tls-hijacked")
        assert impostor.client.get("/sites/tls-hijacked").status_code == 404, "the impostor got no join"
    finally:
        impostor.stop()
    assert_clean_log(impostor.state_dir)

    # the real control plane, but the bundle names another CA: refused the same way, nothing recorded
    other = copy.deepcopy(bundle)
    other["Transport"]["ca_cert"] = make_ca("someone else's CA").cert
    with pytest.raises(StandaloneError, match="not signed by the CA in the bundle's Transport"):
        site_join(other, "tls-other-ca")
    assert control_plane.client.get("/sites/tls-other-ca").status_code == 404


def test_a_tls_bundle_is_never_sent_over_plain_http(control_plane: TlsOasis, bundle_file: Path) -> None:
    bundle = load_bundle(bundle_file)
    plain = f"http://127.0.0.1:{control_plane.port}"
    downgraded = copy.deepcopy(bundle)
    downgraded["EndpointMap"]["data_processing"] = f"{plain}/v2"
    with pytest.raises(StandaloneError, match="EndpointMap.data_processing: .* is not on the control plane's"):
        site_join(downgraded, "tls-plain")
    # the whole bundle rewritten to http but still saying TLS: refused as well
    everything = yaml.safe_load(yaml.safe_dump(bundle).replace(control_plane.url, plain))
    with pytest.raises(StandaloneError, match="Transport.api_url: .* is not an https:// URL"):
        site_join(everything, "tls-plain")
    assert control_plane.client.get("/sites/tls-plain").status_code == 404
