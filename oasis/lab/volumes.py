"""The lab's block storage: its hosts keep their volumes as image files under the lab's root (manifest.py names
the directory per host), attached to loop devices and mounted inside instance directories, all under the root too.
Loop devices and mounts are machine-wide, so the lab's are exactly those: `release` takes them down (at `oasis lab
down`, and in tests that must leave nothing behind) without touching anyone else's."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path


def _under(path: str, root: Path) -> bool:
    return path == str(root) or path.startswith(str(root).rstrip("/") + "/")


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(root: Path) -> list[tuple[str, str]]:
    """(mount point, source) of the mounts at or below `root`, deepest first."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        rest = fields[fields.index("-") + 1:]
        point = _unescape(fields[4])
        if _under(point, root):
            out.append((point, _unescape(rest[1]) if len(rest) > 1 else ""))
    return sorted(out, key=lambda m: m[0].count("/"), reverse=True)


def loop_devices_under(root: Path) -> list[str]:
    """The loop devices whose backing file lies below `root` (a deleted file's name ends in " (deleted)")."""
    p = subprocess.run(["losetup", "--list", "--json", "--output", "NAME,BACK-FILE"], capture_output=True, text=True)
    if p.returncode != 0 or not p.stdout.strip():
        return []
    devices = json.loads(p.stdout).get("loopdevices") or []
    return [d["name"] for d in devices
            if _under(str(d.get("back-file") or "").removesuffix(" (deleted)"), root)]


def release(root: Path) -> list[str]:
    """Unmount every mount below `root` and detach every loop device backed by a file below it; what was done."""
    done = []
    for point, _source in mounts_under(root):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", point], capture_output=True)
        done.append(f"mount {point}")
    for device in loop_devices_under(root):
        if subprocess.run(["losetup", "--detach", device], capture_output=True).returncode == 0:
            done.append(f"loop device {device}")
    return done
