from __future__ import annotations

from collections.abc import Iterator

import pytest

from oasis.storage.devswift import KEY, USER, SwiftServer, memcached_binary


@pytest.fixture(scope="session")
def swift() -> Iterator[SwiftServer]:
    """One real Swift (tempauth + s3api + memcached) for the storage tests, stopped by PID at the end."""
    if memcached_binary() is None:
        pytest.fail("memcached is not installed: scripts/setup must apt-get install memcached")
    with SwiftServer() as server:
        yield server


@pytest.fixture
def swift_creds(swift: SwiftServer) -> dict:
    return {"auth_url": swift.auth_url, "user": USER, "password": KEY}


@pytest.fixture
def s3_creds(swift: SwiftServer) -> dict:
    return {"endpoint": swift.endpoint, "accesskey": USER, "secretkey": KEY}
