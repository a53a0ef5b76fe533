"""Where a lab keeps its files (keys, sshd configs, host trees, state, manifest) under its state directory, and
the port its sshds listen on: shared by the builder (lab.py) and the manifest writer (manifest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SSH_PORT = 22


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.yaml"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def client_key(self) -> Path:
        return self.root / "keys" / "controller_ed25519"

    def host_dir(self, host: str) -> Path:
        return self.root / "hosts" / host

    def sshd_dir(self, host: str) -> Path:
        return self.host_dir(host) / "sshd"

    def host_key(self, host: str) -> Path:
        return self.sshd_dir(host) / "ssh_host_ed25519_key"

    def volumes_dir(self, host: str) -> Path:
        # where the host's volume image files live (loop devices are machine-wide: a lab's are the ones backed
        # by files under its root)
        return self.host_dir(host) / "volumes"

    def base_dir(self, host: str) -> Path:
        # namespaces share one filesystem, so each host gets its own writable tree
        return self.host_dir(host) / "base"
