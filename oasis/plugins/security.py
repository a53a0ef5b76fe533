"""A cluster's own credentials, made by the controller: a CA per cluster and the certificates it signs (Dask TLS,
the Spark web UIs), Spark's shared authentication secret, and the Java key and trust stores Spark's Jetty reads.
Pure: no database and no connection; the engine stores what `make_*` returns in the cluster row's `secrets`."""
from __future__ import annotations

import hashlib
import os
import secrets as _random
import struct
import time
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from oasis.certs import Pem, issue, make_ca

# For the security bench only (bench/security.py sets it on the engine process): clusters then run as before
# this module existed, with no TLS, authentication or encryption. Nothing in the API can set it.
INSECURE_ENV = "OASIS_BENCH_INSECURE_FRAMEWORKS"


def insecure_for_bench() -> bool:
    return os.environ.get(INSECURE_ENV) == "1"


def new_password() -> str:
    return _random.token_urlsafe(32)


def make_cluster_ca(cluster_name: str, plugin: str) -> Pem:
    return make_ca(f"oasis {plugin} cluster {cluster_name}")


def client_pem(ca: Pem, cluster_name: str) -> Pem:
    """The certificate a job or a member of the project connects with: a client only, never a server."""
    return issue(ca, f"client of {cluster_name}", server=False, client=True)


def node_pem(ca: Pem, name: str, addresses: list[str]) -> Pem:
    return issue(ca, name, addresses, server=True, client=True)


def pem_of(d: dict[str, str]) -> Pem:
    return Pem(d["cert"], d["key"])


def as_dict(p: Pem) -> dict[str, str]:
    return {"cert": p.cert, "key": p.key}


# --- Java stores -------------------------------------------------------------------------------------------

# PBKDF2 rounds of the key store. Stretching slows the guessing of a weak password; the store's password is
# 256 random bits (`new_password`), which no count of rounds makes any harder to guess, and it sits next to the
# store, in spark-defaults.conf, with the same mode. At `cryptography`'s default (20000 rounds, for each of the
# two encrypted bags) a daemon's cold JVM spent about half a second deriving keys before its UI could start.
STORE_KDF_ROUNDS = 1


def pkcs12_keystore(alias: str, pem: Pem, ca_cert: str, password: str) -> bytes:
    """A PKCS12 key store (the key, its certificate and the CA above it), readable by Java 17: AES-256-CBC
    bags and an HMAC-SHA256 MAC, as `cryptography`'s best available encryption, with fewer rounds."""
    key = serialization.load_pem_private_key(pem.key.encode(), password=None)
    cert = x509.load_pem_x509_certificate(pem.cert.encode())
    ca = x509.load_pem_x509_certificate(ca_cert.encode())
    encryption = (serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(STORE_KDF_ROUNDS)
                  .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC).hmac_hash(hashes.SHA256())
                  .build(password.encode()))
    return pkcs12.serialize_key_and_certificates(alias.encode(), key, cert, [ca],  # type: ignore[arg-type]
                                                 encryption)


def jks_truststore(alias: str, ca_cert: str, password: str) -> bytes:
    """A JKS trust store holding one trusted certificate. Not PKCS12: Java trusts a PKCS12 certificate only with
    its own attribute (ORACLE_TrustedKeyUsage), which `cryptography` cannot write. The JKS layout: magic,
    version 2, one entry (tag 2: alias, time, type, DER), then SHA-1 over the password (UTF-16BE), the
    phrase Java uses, and everything before."""
    der = x509.load_pem_x509_certificate(ca_cert.encode()).public_bytes(serialization.Encoding.DER)

    def utf(s: str) -> bytes:
        b = s.encode()
        return struct.pack(">H", len(b)) + b

    body = (struct.pack(">III", 0xFEEDFEED, 2, 1) + struct.pack(">I", 2) + utf(alias)
            + struct.pack(">Q", int(time.time() * 1000)) + utf("X.509") + struct.pack(">I", len(der)) + der)
    digest = hashlib.sha1(password.encode("utf-16-be") + b"Mighty Aphrodite" + body).digest()  # noqa: S324
    return body + digest

