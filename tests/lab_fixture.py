"""The lab for the tests that need real SSH hosts (root only; CI runs as root): how it is built and taken down,
and `oasis up` on it. The fixtures (`lab`, built once per session, and `service`) are in tests/conftest.py."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml


@contextmanager
def built_lab(prefix: str) -> Iterator[dict]:
    """{"spec", "state_dir", "labmod", "manifest"} of a default lab that exists for the duration."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (CI runs as root)")
    from oasis.lab import lab as labmod
    from oasis.lab.model import load_lab
    from oasis.lab.requirements import ensure_packages

    ensure_packages()
    state_dir = Path(tempfile.mkdtemp(prefix=prefix))
    spec = load_lab()
    with labmod.exclusive_use():  # namespace names are machine-wide: test runs take turns
        try:
            result = labmod.up(spec, state_dir)
            yield {"spec": spec, "state_dir": state_dir, "labmod": labmod,
                   "manifest": yaml.safe_load(result.manifest.read_text())}
        finally:
            try:
                labmod.down(state_dir, spec)
            finally:
                shutil.rmtree(state_dir, ignore_errors=True)


def kill_host(namespace: str) -> None:
    """Every process of a lab host's namespace dies at once, its sshd first among equals: the host is gone as a
    machine that lost power is (`up` of the lab brings its sshd back)."""
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=True).stdout
    for pid in map(int, pids.split()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # it ended meanwhile
            pass


def site_of(lab: dict, name: str) -> dict:
    return next(s for s in lab["manifest"]["sites"] if s["name"] == name)


@contextmanager
def lab_service(lab: dict, state_dir: Path, register: bool = True, env: dict[str, str] | None = None) -> Iterator:
    """`oasis up` on `state_dir` with (when `register`) the lab's sites registered from its manifest; on the way
    out it is stopped and any process a test left on the lab's hosts (they run in the hosts' base dirs) is killed."""
    from tests.integration.services import Oasis, processes_under

    oasis = Oasis(state_dir)
    oasis.env.update(env or {})
    try:
        oasis.start_api("up")
        if register:
            key = Path(lab["manifest"]["controller"]["private_key"]).read_text()
            r = oasis.client.post("/sites", json={"manifest": lab["manifest"], "private_key": key})
            assert r.status_code == 202, r.text
        yield oasis
    finally:
        oasis.stop()
        for site in lab["manifest"]["sites"]:
            for host in site["hosts"]:
                for pid in processes_under(Path(host["base_dir"])):
                    os.kill(pid, signal.SIGKILL)
