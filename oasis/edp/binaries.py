"""Job binaries: where their bytes come from."""
from __future__ import annotations

from oasis.db.models import JobBinary
from oasis.storage.base import ObjectStore


class BinaryError(Exception):
    pass


def internal_key(internal_id: str) -> str:
    return f"job-binary-internals/{internal_id}"


def fetch(store: ObjectStore, binary: JobBinary) -> bytes:
    scheme, _, rest = binary.url.partition("://")
    if scheme == "internal-db":
        return store.get(internal_key(rest))
    raise BinaryError(f"job binary {binary.name}: {scheme}:// binaries are not supported yet")
