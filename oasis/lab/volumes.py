"""The lab's block storage: its hosts keep their volumes as image files under the lab's root (manifest.py names
the directory per host), attached to loop devices and mounted inside instance directories, all under the root too.
Loop devices are machine-wide, so the lab's are exactly those backed by files under its root: `release` takes
them down (at `oasis lab down`, and in tests that must leave nothing behind) without touching anyone else's.

The mounts are not the root namespace's: each host's sshd runs under `ip netns exec`, which gives it a mount
namespace of its own (a slave of the root's: mounts made there do not show here), so a host's volumes are
mounted, and seen, only by the host's own processes. They go with that namespace when its processes end (lab
down kills them first); `release` also unmounts them in the namespaces of the processes it is given."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path


def _under(path: str, root: Path) -> bool:
    return path == str(root) or path.startswith(str(root).rstrip("/") + "/")


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(root: Path, pid: int | str = "self") -> list[tuple[str, str]]:
    """(mount point, source) of the mounts at or below `root` in the mount namespace of process `pid`, deepest
    first."""
    out = []
    try:
        table = Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:  # the process has ended: its namespace's mounts went with it
        return []
    for line in table.splitlines():
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


def release(root: Path, pids: tuple[int, ...] = ()) -> list[str]:
    """Unmount every mount below `root` (here, and in the mount namespaces of `pids`) and detach every loop device
    backed by a file below it; what was done."""
    done = []
    for pid in ("self", *pids):
        enter = [] if pid == "self" else ["nsenter", "--target", str(pid), "--mount"]
        for point, _source in mounts_under(root, pid):
            if subprocess.run([*enter, "umount", point], capture_output=True).returncode != 0:
                subprocess.run([*enter, "umount", "--lazy", point], capture_output=True)
            done.append(f"mount {point}")
    for device in loop_devices_under(root):
        if subprocess.run(["losetup", "--detach", device], capture_output=True).returncode == 0:
            done.append(f"loop device {device}")
    return done
