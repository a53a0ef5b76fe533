"""The Spark UIs' PKCS12 key store: few PBKDF2 rounds (its password is random, see security.STORE_KDF_ROUNDS), but
the same algorithms as `cryptography`'s best available encryption, never the legacy PKCS12 ones."""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12
from oasis.plugins import security

AES_256_CBC = bytes.fromhex("060960864801650304012a")  # 2.16.840.1.101.3.4.1.42
HMAC_SHA256 = bytes.fromhex("06082a864886f70d0209")  # 1.2.840.113549.2.9, PBKDF2's PRF
PBES2 = bytes.fromhex("06092a864886f70d01050d")  # 1.2.840.113549.1.5.13
LEGACY = {"pbeWithSHAAnd3-KeyTripleDES-CBC": bytes.fromhex("060a2a864886f70d010c0103"),
          "pbeWithSHAAnd40BitRC2-CBC": bytes.fromhex("060a2a864886f70d010c0106")}


@pytest.fixture(scope="module")
def store() -> tuple[bytes, str, security.Pem]:
    ca = security.make_cluster_ca("c", "spark")
    node = security.node_pem(ca, "c-master-001", ["127.0.0.1", "c-master-001"])
    password = security.new_password()
    return security.pkcs12_keystore("ui", node, ca.cert, password), password, node


def test_the_key_store_opens_with_its_password_only(store: tuple[bytes, str, security.Pem]) -> None:
    data, password, node = store
    loaded = pkcs12.load_pkcs12(data, password.encode())
    assert loaded.key is not None and loaded.cert is not None
    assert loaded.cert.certificate.public_bytes(Encoding.PEM).decode() == node.cert
    assert len(loaded.additional_certs) == 1  # the cluster's CA
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(data, b"not-the-password")


def test_both_bags_are_aes_256_with_pbkdf2_hmac_sha256(store: tuple[bytes, str, security.Pem]) -> None:
    data = store[0]
    # the certificates' bag and the key's bag
    assert data.count(PBES2) == 2 and data.count(AES_256_CBC) == 2 and data.count(HMAC_SHA256) == 2
    assert not [name for name, oid in LEGACY.items() if oid in data]


def test_the_password_is_random_enough_that_rounds_add_nothing() -> None:
    # 32 random bytes, url-safe base64: what makes one PBKDF2 round enough
    passwords = {security.new_password() for _ in range(50)}
    assert len(passwords) == 50 and all(len(p) == 43 for p in passwords)
