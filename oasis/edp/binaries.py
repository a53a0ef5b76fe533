"""Job binaries: where their bytes come from. internal-db:// from the deployment's own store; swift:// and s3://
from the binary's own store, reached with the binary's `extra` credentials (decrypted here, never logged)."""
from __future__ import annotations

from oasis.db.models import JobBinary
from oasis.storage import StoreError, endpoints_of, store_for
from oasis.storage.base import ObjectNotFound, ObjectStore
from oasis.storage.secrets import SecretError, Secrets, is_encrypted
from oasis.storage.swift import SwiftConnection, SwiftStore, TokenSource
from oasis.storage.urls import parse

MAX_BYTES = 5120 * 1024 * 20  # a remote binary may be bigger than an internal one (5 MB); not unbounded


class BinaryError(Exception):
    pass


def internal_key(internal_id: str) -> str:
    return f"job-binary-internals/{internal_id}"


def fetch(store: ObjectStore, binary: JobBinary, secrets: Secrets | None = None,
          trusted_swift: TokenSource | None = None) -> bytes:
    """The binary's bytes. A swift:// binary stored without credentials is read on the job's trust
    (`trusted_swift`: a trust-scoped token and the project's storage URL; oasis.engine.jobs)."""
    scheme, _, rest = binary.url.partition("://")
    if scheme == "internal-db":
        return store.get(internal_key(rest))
    if scheme not in ("swift", "s3", "s3a"):
        raise BinaryError(f"job binary {binary.name}: {scheme}:// binaries are not supported")
    extra = binary.extra or {}
    if is_encrypted(extra):
        if secrets is None:
            raise BinaryError(f"job binary {binary.name}: its credentials are encrypted and no key was given")
        try:
            extra = secrets.decrypt_dict(extra)
        except SecretError as e:
            raise BinaryError(f"job binary {binary.name}: {e}") from None
    loc = parse(binary.url)
    if not loc.key:
        raise BinaryError(f"job binary {binary.name}: {binary.url} names no object")
    on_trust = loc.kind == "swift" and not (extra.get("user") or extra.get("username"))
    if on_trust and trusted_swift is None:
        raise BinaryError(f"job binary {binary.name}: a swift:// binary without credentials needs the Keystone "
                          f"identity backend and a trust")
    try:
        source = SwiftStore(SwiftConnection.with_token(trusted_swift), loc.container, create=False) if on_trust \
            else store_for(loc, extra, endpoints_of(store))
        data = source.get(loc.key)
    except ObjectNotFound:
        raise BinaryError(f"job binary {binary.name}: {binary.url} does not exist") from None
    except StoreError as e:
        raise BinaryError(f"job binary {binary.name}: {e}") from None
    if len(data) > MAX_BYTES:
        raise BinaryError(f"job binary {binary.name}: {len(data)} bytes is more than {MAX_BYTES}")
    return data
