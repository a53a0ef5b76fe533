"""The default lab, built for one test module and always taken down: shared by the tests that need real SSH
hosts (root only; CI runs as root)."""
from __future__ import annotations

import os
import shutil
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


def site_of(lab: dict, name: str) -> dict:
    return next(s for s in lab["manifest"]["sites"] if s["name"] == name)
