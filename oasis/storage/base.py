"""Object stores behind one small interface. The deployment's own store keeps `internal-db://` binaries.

Every store (filesystem, Swift, S3) is a flat namespace of keys inside one container or bucket: `put`, `get`,
`delete`, `exists`, and `list(prefix)` giving the keys that start with `prefix` with their sizes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[ObjectInfo]: ...


class ObjectNotFound(KeyError):
    pass


class StoreError(Exception):
    """A store refused or failed a request. Messages never carry credentials, tokens or signatures."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
