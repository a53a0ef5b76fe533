"""Block storage rules shared by the API (what a request may ask for), placement (what a host can still give) and
the engine (what an instance gets): a host's volume backend from its row, a node group's volumes, and where an
instance's volumes are mounted. Pure functions of rows; nothing here reaches a host.

A node group's `volume_mount_prefix` (Sahara's default `/volumes/disk`) is read inside the instance's own
directory: volume N (from 1) of an instance is mounted at `<workdir><prefix>N`, e.g. `<workdir>/volumes/disk1`.
Several instances share a host (and the lab's hosts share one mount table), so a mount point outside the
instance's directory would collide; inside it, the instance's Unix user alone can reach it."""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any

DEFAULT_PREFIX = "/volumes/disk"
BACKENDS = ("loop",)  # an `lvm` backend needs device-mapper, which the kernel this was built on lacks
# Directories oasis itself keeps in an instance's directory: a volume mounted over one would hide it.
RESERVED = frozenset({"proc", "conf", "dask", "hosts", "jobs", "work", "tls", "spark.properties"})
PREFIX = re.compile(r"(/[A-Za-z0-9_][A-Za-z0-9_.-]*)+\Z")


@dataclass(frozen=True)
class Volumes:
    """What one instance of a node group asks for."""

    count: int
    size_gb: int
    type: str | None
    prefix: str

    @property
    def total_gb(self) -> int:
        return self.count * self.size_gb

    def mounts(self, workdir: str) -> list[str]:
        return [f"{workdir.rstrip('/')}{self.prefix}{n}" for n in range(1, self.count + 1)]


def of_node_group(spec: dict[str, Any]) -> Volumes:
    count = int(spec.get("volumes_per_node") or 0)
    return Volumes(count, int(spec.get("volumes_size") or 0) if count else 0, spec.get("volume_type") or None,
                   spec.get("volume_mount_prefix") or DEFAULT_PREFIX)


def prefix_problem(prefix: str | None) -> str | None:
    """Why a `volume_mount_prefix` cannot be used (None: it can)."""
    if prefix in (None, ""):
        return None
    if not PREFIX.match(prefix) or posixpath.normpath(prefix) != prefix:
        return (f"volume_mount_prefix {prefix!r} must be an absolute path of plain names (letters, digits, '_', "
                f"'.', '-'; none starting with '.'), such as {DEFAULT_PREFIX}")
    first = prefix.split("/")[1]
    if first in RESERVED:
        return (f"volume_mount_prefix {prefix!r}: an instance's volumes are mounted inside its own directory, where "
                f"'{first}' is oasis's own; choose another first component, such as {DEFAULT_PREFIX}")
    return None


def backend_of(host_spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """The host's volume backend as its site's manifest declared it ({backend, dir, size_gb, types}), or None."""
    return (host_spec or {}).get("volumes") or None


def offers(backend: dict[str, Any] | None, volume_type: str | None) -> bool:
    """Whether a backend can give volumes of this type: no type (None) is its default, and a named one must be
    among the types its manifest declares (`types`)."""
    if backend is None:
        return False
    return volume_type is None or volume_type in (backend.get("types") or [])


def capacity_gb(backend: dict[str, Any] | None) -> int:
    return int(backend["size_gb"]) if backend else 0
