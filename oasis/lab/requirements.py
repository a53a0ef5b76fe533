"""Debian packages the lab needs, installed only when missing.

The lab runs real OpenSSH servers inside network namespaces and wires them with iproute2 and
nftables; CI machines start bare, so the code path that builds a lab installs what it lacks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

# command -> (where we look for it, Debian package that ships it). sshd is looked up by absolute
# path because /usr/sbin is often missing from a non-login PATH.
REQUIRED: dict[str, tuple[str, str]] = {
    "sshd": ("/usr/sbin/sshd", "openssh-server"),
    "nc": ("nc", "netcat-openbsd"),
    "nft": ("nft", "nftables"),
    "ip": ("ip", "iproute2"),
    "unshare": ("unshare", "util-linux"),
    # block storage volumes: image files on loop devices, formatted ext4, mounted (see oasis/remote/agent.py)
    "losetup": ("losetup", "mount"),
    "mount": ("mount", "mount"),
    "mkfs.ext4": ("mkfs.ext4", "e2fsprogs"),
}

POLICY_RC = Path("/usr/sbin/policy-rc.d")


def _present(where: str) -> bool:
    if where.startswith("/"):
        return os.access(where, os.X_OK)
    return shutil.which(where) is not None or any(
        os.access(os.path.join(d, where), os.X_OK) for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
    )


def missing_packages() -> list[str]:
    """Debian packages whose command is not on this machine (in a stable order)."""
    packages: list[str] = []
    for where, package in REQUIRED.values():
        if not _present(where) and package not in packages:
            packages.append(package)
    return packages


def ensure_packages() -> list[str]:
    """Install (apt-get) whatever the lab needs and is missing; return what was installed.

    openssh-server's postinst would start a system sshd on port 22 of the root namespace where
    no policy-rc.d forbids it; the lab must not leave such a daemon behind, so while installing we
    put a policy-rc.d that denies service starts, and remove it again if it was ours.
    """
    packages = missing_packages()
    if not packages:
        return []
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    own_policy = not POLICY_RC.exists()
    if own_policy:
        POLICY_RC.write_text("#!/bin/sh\n# written by oasis lab while installing packages\nexit 101\n")
        POLICY_RC.chmod(0o755)
    try:
        subprocess.run(["apt-get", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", *packages],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    finally:
        if own_policy:
            POLICY_RC.unlink(missing_ok=True)
    still = missing_packages()
    if still:
        raise RuntimeError(f"packages still missing after apt-get install: {', '.join(still)}")
    return packages
