"""The Unix users oasis makes for projects (`oasis-…`, see oasis/remote/agent.py `prepare`) when a test runs
instances as root. oasis removes a user with its project's last instance on the machine; what a test that failed
half-way leaves behind is cleaned up at the session's end: the users that appeared during the session and that no
instance uses any longer (no process, no instance directory still there), and the `local` host bases made meanwhile that no process
uses any longer. A user still in use may belong to another test run or a demo on this machine: it is never touched, and
no process is ever killed here."""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from oasis.bootstrap import LOCAL_INSTANCES
from oasis.procs import processes_under

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


def unused(name: str, uid: int) -> bool:
    """No process of the user runs, and no instance directory it was recorded for is still there (a record names
    its instance's directory: one that is gone was left by an instance that died with its test)."""
    try:
        recorded = [Path(r.read_text().strip()) for r in (USERS_DIR / name).iterdir()]
    except FileNotFoundError:
        recorded = []
    except OSError:
        return False  # unreadable: leave it be
    return not any(d.exists() for d in recorded) and not processes_of(uid)


def remove_unused_user(name: str) -> None:
    subprocess.run(["userdel", name], check=False, capture_output=True)
    shutil.rmtree(USERS_DIR / name, ignore_errors=True)


def remove_user(name: str, uid: int) -> None:
    """A user a test made itself, under a name of its own (tests/unit/test_agent.py): its processes are that
    test's, so they are stopped first."""
    for pid in processes_of(uid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
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
        # The bases first: a user is unused once the instance directories it was recorded for are gone, and
        # those of dead instances go with their base.
        for base in (set(LOCAL_INSTANCES.iterdir()) if LOCAL_INSTANCES.is_dir() else set()) - bases:
            if base.is_dir() and not processes_under(base):  # what is left there (the agent, dead instances)
                shutil.rmtree(base, ignore_errors=True)
        for name, uid in project_users().items():
            if name not in users and unused(name, uid):
                remove_unused_user(name)
