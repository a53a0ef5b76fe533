"""The Unix users oasis makes for projects (`oasis-…`, see oasis/remote/agent.py `prepare`) when a test runs
instances as root: a session that made some removes them at its end, with their processes, their reference
records and the `local` host bases made meanwhile, and never touches a user that was there before it began."""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from oasis.bootstrap import LOCAL_INSTANCES

USERS_DIR = Path("/var/lib/oasis-agent/users")


def project_users() -> dict[str, int]:
    """name -> uid of the machine's oasis project users."""
    return {p.pw_name: p.pw_uid for p in pwd.getpwall() if p.pw_name.startswith("oasis-")}


def processes_of(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
                pids.append(int(entry.name))
    return pids


def remove_user(name: str, uid: int) -> None:
    deadline = time.time() + 10
    while (pids := processes_of(uid)) and time.time() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    subprocess.run(["userdel", "--force", name], check=False, capture_output=True)
    shutil.rmtree(USERS_DIR / name, ignore_errors=True)


@contextmanager
def removing_new_project_users() -> Iterator[None]:
    if os.geteuid() != 0:  # unprivileged: oasis makes no users
        yield
        return
    users = set(project_users())
    bases = set(LOCAL_INSTANCES.iterdir()) if LOCAL_INSTANCES.is_dir() else set()
    try:
        yield
    finally:
        for name, uid in project_users().items():
            if name not in users:
                remove_user(name, uid)
        for base in (set(LOCAL_INSTANCES.iterdir()) if LOCAL_INSTANCES.is_dir() else set()) - bases:
            shutil.rmtree(base, ignore_errors=True)
