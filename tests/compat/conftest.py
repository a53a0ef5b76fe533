"""The compatibility suite drives a real `oasis up` (one per test module: the `service` fixture, whose log is
checked to be clean once it stops) with the unmodified clients of the Sahara ecosystem: python-saharaclient, the
`openstack dataprocessing` CLI, and a schemathesis run against the published OpenAPI document."""
from __future__ import annotations

import pytest
import yaml

from tests.integration.services import Oasis


@pytest.fixture(scope="module")
def oasis(service: Oasis) -> Oasis:
    """The compat tests' name for their module's `service` (tests/conftest.py)."""
    return service


def cloud(service: Oasis) -> dict:
    return yaml.safe_load((service.state_dir / "clouds.yaml").read_text())["clouds"]["oasis"]
