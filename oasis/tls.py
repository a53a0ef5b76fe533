"""The control plane's own TLS material: `--tls auto` (a CA made once in the state dir, and a server certificate
from it for the names the API answers on) or a certificate and key the operator gives (`--tls-cert/--tls-key`,
with `--tls-ca` for the CA that signed them). What a client verifies with (`Settings.tls_ca`) goes into
clouds.yaml and the export bundle; the private keys never leave the state dir or the operator's files.

Files are mode 0600 in a 0700 directory from the moment they exist. Several processes may start on one state dir
at once (`oasis api` replicas): the CA is created with an exclusive link, so all of them end up with the same one,
and the server's key and certificate live in one file replaced atomically, so no process reads a key of one
certificate beside another certificate."""
from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
import socket
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtensionOID

from oasis.certs import Pem, issue, make_ca
from oasis.config import TLS_OFF, Settings

AUTO = "auto"
DIR = "tls"
CA_BUNDLE = "ca.pem"        # the CA certificate alone: what clients verify with (clouds.yaml `cacert`)
CA_PRIVATE = "ca-key.pem"   # the CA's key and certificate: signs the server certificate, never read by clients
SERVER = "server.pem"       # the server's key and certificate, in one file (see the module's docstring)
RENEW_BEFORE = dt.timedelta(days=30)


class TlsError(ValueError):
    """The TLS settings cannot be used; the message says why and what to give instead."""


def prepare(settings: Settings) -> Settings:
    """Settings with concrete files to serve with (`tls_cert`, `tls_key`) and to verify with (`tls_ca`), made
    or checked now; unchanged when TLS is off."""
    mode = (settings.tls or "").strip().lower()
    if mode in TLS_OFF:
        mode = ""
    elif mode != AUTO:
        raise TlsError(f"--tls takes 'auto' (or nothing, with --tls-cert and --tls-key), not {settings.tls!r}")
    if mode and (settings.tls_cert or settings.tls_key):
        raise TlsError("--tls auto makes its own certificate: give either --tls auto or --tls-cert/--tls-key")
    if mode:
        return dataclasses.replace(settings, tls=AUTO, **_auto(settings.state_dir, server_names(settings.host)))
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_ca is not None:
            raise TlsError("--tls-ca goes with --tls-cert and --tls-key")
        return dataclasses.replace(settings, tls="")
    if settings.tls_cert is None or settings.tls_key is None:
        raise TlsError("--tls-cert and --tls-key go together: give both (or --tls auto)")
    return dataclasses.replace(settings, tls="", **_given(settings.tls_cert, settings.tls_key, settings.tls_ca))


def ca_pem(settings: Settings) -> str | None:
    """The PEM text clients verify the API with, or None (TLS off, or a certificate from a CA they already
    trust)."""
    if settings.tls_ca is None:
        return None
    return Path(settings.tls_ca).read_text()


def server_names(host: str) -> list[str]:
    """The names the API is reached by on this machine: loopback, the host's names, and the listen address
    unless it is a wildcard."""
    names = ["127.0.0.1", "localhost", "::1"]
    if socket.gethostname():  # the name as configured: no resolver is asked (getfqdn would)
        names.append(socket.gethostname())
    try:
        if not ipaddress.ip_address(host).is_unspecified:
            names.append(host)
    except ValueError:
        if host:
            names.append(host)
    return list(dict.fromkeys(names))


# --- --tls auto -------------------------------------------------------------------------------------------------


def _auto(state_dir: Path, names: list[str]) -> dict[str, Path]:
    Path(state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)  # a new state dir private from the start
    d = Path(state_dir) / DIR
    d.mkdir(mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    ca = _ca(d)
    _write_once(d / CA_BUNDLE, ca.cert)  # the same text whichever process writes it
    server = d / SERVER
    if not _covers(server, ca, names):
        pem = issue(ca, "oasis api", names, server=True, client=False)
        _write_atomic(server, pem.key + pem.cert)
    return {"tls_cert": server, "tls_key": server, "tls_ca": d / CA_BUNDLE}


def _ca(d: Path) -> Pem:
    """The state dir's CA: made by the first start, kept ever after."""
    path = d / CA_PRIVATE
    if not path.exists():
        ca = make_ca("oasis control plane CA")
        fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{CA_PRIVATE}.")  # 0600 from the start
        try:
            with os.fdopen(fd, "w") as f:
                f.write(ca.key + ca.cert)
            os.link(tmp, path)  # fails if another process made one meanwhile: theirs is the one
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    text = path.read_text()
    key_end = text.index("-----END PRIVATE KEY-----") + len("-----END PRIVATE KEY-----\n")
    return Pem(cert=text[key_end:], key=text[:key_end])


def _covers(path: Path, ca: Pem, names: list[str]) -> bool:
    """Is the server certificate at `path` one of this CA's, for all of `names`, and not about to expire?"""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert.encode()))
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    have = {str(n) for n in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))
    wanted = {str(ipaddress.ip_address(n)) if _is_ip(n) else n for n in names}
    return wanted <= have and cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) > RENEW_BEFORE


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600 from the start
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_once(path: Path, text: str) -> None:
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    _write_atomic(path, text)


# --- --tls-cert/--tls-key ---------------------------------------------------------------------------------------


def _given(cert: Path, key: Path, ca: Path | None) -> dict[str, Path | None]:
    """The operator's files, checked now (readable, the key is the certificate's), so that a mistake is a
    message at start rather than a server that fails every handshake."""
    cert, key = Path(cert).expanduser().resolve(), Path(key).expanduser().resolve()
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except FileNotFoundError as e:
        raise TlsError(f"cannot read {e.filename}") from None
    except (OSError, ssl.SSLError) as e:
        raise TlsError(f"{cert} and {key} are not a certificate and its private key ({e})") from None
    if ca is not None:
        ca = Path(ca).expanduser().resolve()
        _check_ca(ca)
    elif _self_signed(cert):
        ca = cert  # a self-signed certificate is its own CA: clients verify with it
    return {"tls_cert": cert, "tls_key": key, "tls_ca": ca}


def _check_ca(path: Path) -> None:
    try:
        text = path.read_text()
        x509.load_pem_x509_certificates(text.encode())
    except OSError as e:
        raise TlsError(f"cannot read the CA {path}: {e.strerror}") from None
    except ValueError:
        raise TlsError(f"{path} is not a PEM certificate (the CA that signed --tls-cert)") from None
    if "PRIVATE KEY" in text:
        raise TlsError(f"{path} holds a private key: --tls-ca takes the CA's certificate only (it goes to every "
                       f"client and site)")


def _self_signed(path: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        cert.verify_directly_issued_by(cert)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False
