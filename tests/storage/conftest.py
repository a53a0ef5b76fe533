"""The storage tests use the session's Swift on 127.0.0.1 as users' data sources and binaries: a loopback address,
which oasis refuses for users' credentials unless the deployment allowlists it (oasis.storage.endpoints). These
tests are such a deployment: every test that uses the Swift allows exactly its proxy, in this process and in the
oasis processes it starts (which copy this environment)."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def allow_the_test_swift(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if "swift" in request.fixturenames:
        swift = request.getfixturevalue("swift")
        monkeypatch.setenv("OASIS_ALLOWED_ENDPOINTS", f"127.0.0.1:{swift.ports['proxy']}")
