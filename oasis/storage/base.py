"""Object stores behind one small interface. The deployment's own store keeps `internal-db://` binaries."""
from __future__ import annotations

from typing import Protocol


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...


class ObjectNotFound(KeyError):
    pass
