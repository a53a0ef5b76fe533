"""The compatibility suite drives a real `oasis up` (one per test module) with the unmodified clients of the
Sahara ecosystem: python-saharaclient, the `openstack dataprocessing` CLI, and a schemathesis run against the
published OpenAPI document."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.services import Oasis


@pytest.fixture(scope="module")
def oasis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Oasis]:
    service = Oasis(tmp_path_factory.mktemp("compat") / "state")
    try:
        service.start_api("up")
        yield service
    finally:
        service.stop()
        assert_clean_log(service.state_dir)


def cloud(service: Oasis) -> dict:
    return yaml.safe_load((service.state_dir / "clouds.yaml").read_text())["clouds"]["oasis"]


def assert_clean_log(state_dir: Path) -> None:
    """No unhandled error, and no credential of clouds.yaml, ever reached the server's log."""
    password = yaml.safe_load((state_dir / "clouds.yaml").read_text())["clouds"]["oasis"]["auth"]["password"]
    for log in state_dir.glob("*.log"):
        text = log.read_text(errors="replace")
        assert "Traceback" not in text and "INTERNAL_SERVER_ERROR" not in text, f"{log}:\n{text[-3000:]}"
        assert password not in text, f"{log} contains the admin password"
        assert not re.search(r"X-Subject-Token: \S{20,}", text), f"{log} contains a token"
