"""The control plane's TLS material (oasis.tls), what clients verify with (clouds.yaml `cacert`, the CLI's
verify), and the bundle's Transport section and how a site checks it. Fast: files and certificates only; the
real servers and clients are in tests/compat/test_tls.py and tests/sites/test_tls_join.py."""
from __future__ import annotations

import copy
import ipaddress
import socket
import ssl
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtensionOID
from typer.testing import CliRunner

from oasis import tls
from oasis.bootstrap import write_clouds_yaml
from oasis.certs import issue, make_ca
from oasis.cli.client import ConfigError, verify_for
from oasis.cli.main import app
from oasis.cli.standalone import StandaloneError, control_plane_tls, load_bundle
from oasis.config import Settings
from oasis.sites.export import BundleError, check_transport, transport


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    return {str(n) for n in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))


# --- oasis.tls.prepare ------------------------------------------------------------------------------------------


def test_without_tls_nothing_changes(tmp_path: Path) -> None:
    settings = tls.prepare(Settings(state_dir=tmp_path / "state", tls=""))
    assert not settings.tls_on and settings.tls_cert is None and settings.tls_ca is None
    assert settings.public_url == "http://127.0.0.1:8386"
    assert not (tmp_path / "state" / "tls").exists()
    assert tls.ca_pem(settings) is None


def test_auto_makes_a_ca_once_and_serves_with_a_certificate_from_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    settings = tls.prepare(Settings(state_dir=state, tls="auto", host="10.1.2.3", tls_cert=None, tls_key=None,
                                    tls_ca=None))
    d = state / "tls"
    assert settings.tls_on and settings.public_url == "https://10.1.2.3:8386"
    assert settings.tls_ca == d / "ca.pem" and settings.tls_cert == settings.tls_key == d / "server.pem"
    assert mode(state) == 0o700 and mode(d) == 0o700
    assert {p.name: mode(p) for p in d.iterdir()} == {"ca.pem": 0o600, "ca-key.pem": 0o600, "server.pem": 0o600}
    ca_text = settings.tls_ca.read_text()
    assert "PRIVATE KEY" not in ca_text and tls.ca_pem(settings) == ca_text
    ca = x509.load_pem_x509_certificate(ca_text.encode())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    names = sans(settings.tls_cert)
    assert {"127.0.0.1", "localhost", "10.1.2.3", socket.gethostname()} <= names
    # the server's key and certificate in one file, and they belong together
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(settings.tls_cert, settings.tls_key)
    # a client trusting the CA accepts the certificate
    x509.load_pem_x509_certificate(settings.tls_cert.read_bytes()).verify_directly_issued_by(ca)

    # the next start: the same CA, the same server certificate (it covers the names)
    ca_key, server = (d / "ca-key.pem").read_text(), settings.tls_cert.read_text()
    again = tls.prepare(Settings(state_dir=state, tls="auto", host="10.1.2.3", tls_cert=None, tls_key=None,
                                 tls_ca=None))
    assert (d / "ca-key.pem").read_text() == ca_key and again.tls_ca.read_text() == ca_text
    assert again.tls_cert.read_text() == server

    # another listen address: a new server certificate, from the same CA; a wildcard is no name
    moved = tls.prepare(Settings(state_dir=state, tls="AUTO", host="0.0.0.0", tls_cert=None, tls_key=None,
                                 tls_ca=None))
    assert moved.tls_ca.read_text() == ca_text and (d / "ca-key.pem").read_text() == ca_key
    assert "0.0.0.0" not in sans(moved.tls_cert)
    fresh = tls.prepare(Settings(state_dir=state, tls="auto", host="oasis.example", tls_cert=None, tls_key=None,
                                 tls_ca=None))
    assert "oasis.example" in sans(fresh.tls_cert) and fresh.tls_cert.read_text() != server
    x509.load_pem_x509_certificate(fresh.tls_cert.read_bytes()).verify_directly_issued_by(ca)


def test_given_files_are_checked_and_name_their_ca(tmp_path: Path) -> None:
    ca = make_ca("operator CA")
    server = issue(ca, "api", ["127.0.0.1"], client=False)
    files = {}
    for name, text in (("ca.pem", ca.cert), ("cert.pem", server.cert), ("key.pem", server.key),
                       ("other-key.pem", issue(ca, "x", ["x"]).key), ("ca-with-key.pem", ca.cert + ca.key)):
        files[name] = tmp_path / name
        files[name].write_text(text)
    base = dict(state_dir=tmp_path / "state", tls="")
    given = tls.prepare(Settings(**base, tls_cert=files["cert.pem"], tls_key=files["key.pem"],
                                 tls_ca=files["ca.pem"]))
    assert given.tls_on and given.public_url.startswith("https://")
    assert (given.tls_cert, given.tls_key, given.tls_ca) == (files["cert.pem"], files["key.pem"], files["ca.pem"])
    assert not (tmp_path / "state" / "tls").exists(), "nothing made when the operator gives the files"
    # a certificate from a CA the clients already trust: no CA to hand out
    public = tls.prepare(Settings(**base, tls_cert=files["cert.pem"], tls_key=files["key.pem"], tls_ca=None))
    assert public.tls_ca is None
    # a self-signed certificate is its own CA
    self_signed = tmp_path / "self.pem"
    self_signed.write_text(ca.cert)
    (tmp_path / "self.key").write_text(ca.key)
    assert tls.prepare(Settings(**base, tls_cert=self_signed, tls_key=tmp_path / "self.key",
                                tls_ca=None)).tls_ca == self_signed

    bad = {
        "the key of another certificate": dict(tls_cert=files["cert.pem"], tls_key=files["other-key.pem"]),
        "a missing file": dict(tls_cert=tmp_path / "nope.pem", tls_key=files["key.pem"]),
        "a certificate without its key": dict(tls_cert=files["cert.pem"], tls_key=None),
        "a CA with its private key": dict(tls_cert=files["cert.pem"], tls_key=files["key.pem"],
                                          tls_ca=files["ca-with-key.pem"]),
        "a CA that is not a certificate": dict(tls_cert=files["cert.pem"], tls_key=files["key.pem"],
                                               tls_ca=files["key.pem"]),
    }
    messages = {"the key of another certificate": "not a certificate and its private key",
                "a missing file": "cannot read", "a certificate without its key": "go together",
                "a CA with its private key": "holds a private key", "a CA that is not a certificate": "not a PEM"}
    for case, kwargs in bad.items():
        with pytest.raises(tls.TlsError, match=messages[case]):
            tls.prepare(Settings(**base, **{"tls_ca": None, **kwargs}))
    with pytest.raises(tls.TlsError, match="either --tls auto or --tls-cert"):
        tls.prepare(Settings(state_dir=tmp_path / "s", tls="auto", tls_cert=files["cert.pem"],
                             tls_key=files["key.pem"]))
    with pytest.raises(tls.TlsError, match="takes 'auto'"):
        tls.prepare(Settings(state_dir=tmp_path / "s", tls="yes please"))


def test_the_environment_turns_tls_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OASIS_TLS", "auto")
    settings = Settings(state_dir=tmp_path / "state")
    assert settings.tls_on and settings.public_url.startswith("https://")
    assert tls.prepare(settings).tls_ca == tmp_path / "state" / "tls" / "ca.pem"
    monkeypatch.setenv("OASIS_TLS", "off")
    assert not Settings(state_dir=tmp_path / "state").tls_on


def test_cli_refuses_unusable_tls_settings_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    for args, words in ((["--tls", "sometimes"], "takes 'auto'"),
                        (["--tls-cert", str(tmp_path / "c.pem")], "go together")):
        for command in ("up", "api"):
            r = runner.invoke(app, [command, "--state-dir", str(tmp_path / "state"), *args],
                              env={"OASIS_TLS": "", "OASIS_TLS_CERT": "", "OASIS_TLS_KEY": "", "OASIS_TLS_CA": ""})
            assert r.exit_code == 2, r.output
            assert words in r.output and "Traceback" not in r.output


# --- clients: clouds.yaml and the CLI ---------------------------------------------------------------------------


def test_clouds_yaml_names_the_ca_only_with_tls(tmp_path: Path) -> None:
    path = tmp_path / "clouds.yaml"
    write_clouds_yaml(path, "https://127.0.0.1:8386/v3", "admin", "pw", "admin", cacert=tmp_path / "tls" / "ca.pem")
    cloud = yaml.safe_load(path.read_text())["clouds"]["oasis"]
    assert cloud["cacert"] == str(tmp_path / "tls" / "ca.pem")
    assert cloud["auth"]["auth_url"] == "https://127.0.0.1:8386/v3"
    write_clouds_yaml(path, "http://127.0.0.1:8386/v3", "admin", "pw", "admin")
    assert "cacert" not in yaml.safe_load(path.read_text())["clouds"]["oasis"]


def test_cli_verifies_with_the_clouds_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(make_ca("x").cert)
    context = verify_for({"cacert": str(ca)})
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert len(context.get_ca_certs()) == 1
    assert verify_for({}) is True and verify_for(None) is True
    assert verify_for({"verify": False}) is False
    assert isinstance(verify_for({"verify": False}, cacert=ca), ssl.SSLContext), "--os-cacert wins"
    with pytest.raises(ConfigError, match="cannot use the CA file .*missing.pem.*clouds.yaml"):
        verify_for({"cacert": str(tmp_path / "missing.pem"), "_path": "/x/clouds.yaml"})


# --- the bundle's Transport -------------------------------------------------------------------------------------


def bundle_for(api_url: str, ca_pem: str | None) -> dict:
    return {"version": 3, "EndpointMap": {"api": api_url, "data_processing": f"{api_url}/v2",
                                          "identity": f"{api_url}/v3", "engine_callback": api_url,
                                          "object_store": {"type": "file"}},
            "HostsEntry": [], "GlobalConfig": {}, "AllNodesConfig": {"sites": {}},
            "ControlPlaneAccess": {"ssh_public_key": "ssh-ed25519 AAAA oasis-control-plane"},
            "Transport": transport(api_url, ca_pem), "secrets": {"join_token": "t" * 43}}


def test_transport_section() -> None:
    ca = make_ca("cp").cert
    t = transport("https://10.0.0.1:8386", ca)
    assert t == {"scheme": "https", "api_url": "https://10.0.0.1:8386", "ca_cert": ca, "join_use_tls": True,
                 "callbacks_use_tls": True}
    assert transport("http://10.0.0.1:8386", ca) == {"scheme": "http", "api_url": "http://10.0.0.1:8386",
                                                     "ca_cert": None, "join_use_tls": False,
                                                     "callbacks_use_tls": False}
    with pytest.raises(ValueError, match="private key"):
        transport("https://10.0.0.1:8386", ca + make_ca("cp").key)


def test_site_checks_the_transport(tmp_path: Path) -> None:
    ca = make_ca("cp").cert
    good = bundle_for("https://10.0.0.1:8386", ca)
    assert check_transport(good)["ca_cert"] == ca
    context = control_plane_tls(good)
    assert isinstance(context, ssl.SSLContext) and len(context.get_ca_certs()) == 1
    assert control_plane_tls(bundle_for("http://10.0.0.1:8386", None)) is None
    assert control_plane_tls(bundle_for("https://10.0.0.1:8386", None)).get_ca_certs() is not None  # system CAs

    def broken(change) -> dict:  # noqa: ANN001
        b = copy.deepcopy(good)
        change(b)
        return b

    cases = [
        (lambda b: b.pop("Transport"), "Transport: not a mapping"),
        (lambda b: b["Transport"].update(scheme="ftp"), "neither http nor https"),
        (lambda b: b["Transport"].update(api_url="http://10.0.0.1:8386"), "is not an https:// URL"),
        (lambda b: b["Transport"].update(join_use_tls=False), "join_use_tls: must be true"),
        (lambda b: b["Transport"].update(callbacks_use_tls="yes"), "callbacks_use_tls: must be true"),
        (lambda b: b["Transport"].update(ca_cert="not a pem"), "not a PEM certificate"),
        (lambda b: b["Transport"].update(ca_cert=ca + make_ca("k").key), "nothing else"),
        (lambda b: b["EndpointMap"].update(data_processing="http://10.0.0.1:8386/v2"),
         "EndpointMap.data_processing: 'http://10.0.0.1:8386/v2' is not on"),
        (lambda b: b["EndpointMap"].update(engine_callback="https://evil.example:8386"), "engine_callback"),
    ]
    for change, message in cases:
        with pytest.raises(BundleError, match=message):
            check_transport(broken(change))
    plain = bundle_for("http://10.0.0.1:8386", None)
    plain["Transport"]["ca_cert"] = ca
    with pytest.raises(BundleError, match="no certificate to verify"):
        check_transport(plain)

    # the standalone deploy reads the bundle file the same way
    path = tmp_path / "bundle.yaml"
    path.write_text(yaml.safe_dump(broken(lambda b: b["EndpointMap"].update(
        data_processing="http://10.0.0.1:8386/v2"))))
    with pytest.raises(StandaloneError, match="bundle.yaml: EndpointMap.data_processing"):
        load_bundle(path)
    older = {k: v for k, v in good.items() if k != "Transport"}
    path.write_text(yaml.safe_dump(older))
    with pytest.raises(StandaloneError, match="has no Transport .*older control plane"):
        load_bundle(path)
    path.write_text(yaml.safe_dump(good))
    assert load_bundle(path)["Transport"]["scheme"] == "https"


def test_server_names() -> None:
    names = tls.server_names("192.0.2.7")
    assert names[:3] == ["127.0.0.1", "localhost", "::1"] and "192.0.2.7" in names
    assert socket.gethostname() in names
    assert all(not _wildcard(n) for n in tls.server_names("::"))


def _wildcard(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_unspecified
    except ValueError:
        return False
