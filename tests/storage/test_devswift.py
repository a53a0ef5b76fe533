"""`oasis demo --object-store swift` starts the development Swift of the checkout (devtools/devswift.py, not part
of the `oasis` package) in a process of its own, uses it as the deployment's store, and stops it by its PID."""
from __future__ import annotations

import uuid

import httpx
import pytest

from devtools.devswift import memcached_binary
from oasis.cli.demo import DevSwift
from oasis.storage import open_store


def test_the_demo_starts_the_checkouts_swift_and_stops_it(tmp_path) -> None:
    if memcached_binary() is None:
        pytest.fail("memcached is not installed: scripts/setup must apt-get install memcached")
    swift = DevSwift()
    try:
        store = open_store(swift.store_spec(f"demo-{uuid.uuid4().hex[:8]}"), tmp_path)
        store.put("a/b.txt", b"over swift")
        assert store.get("a/b.txt") == b"over swift"
        r = httpx.get(swift.auth_url, headers={"X-Auth-User": swift.user, "X-Auth-Key": swift.key}, timeout=10)
        assert r.status_code == 200 and r.headers["X-Auth-Token"]
    finally:
        swift.stop()
    assert swift.proc.returncode == 0, "the launcher stops on SIGTERM, stopping its servers"
    with pytest.raises(httpx.TransportError):
        httpx.get(swift.auth_url, timeout=2)
