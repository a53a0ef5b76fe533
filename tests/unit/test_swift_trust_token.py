"""A Swift connection on tokens someone else obtains (a trust-scoped one): asked for on first use and again after a
401, never a user or key; and which swift:// sources take that path."""
from __future__ import annotations

import httpx

from oasis.edp.access import uses_trust
from oasis.storage.swift import SwiftConnection


def test_a_token_source_is_asked_first_and_again_after_a_401() -> None:
    handed: list[str] = []

    def source() -> tuple[str, str]:
        handed.append(f"tok{len(handed)}")
        return handed[-1], "http://swift.test/v1/AUTH_p"

    def answer(request: httpx.Request) -> httpx.Response:
        assert str(request.url).startswith("http://swift.test/v1/AUTH_p")
        return httpx.Response(401 if request.headers["X-Auth-Token"] == "tok0" else 204)

    conn = SwiftConnection.with_token(source)
    conn.http = httpx.Client(transport=httpx.MockTransport(answer))
    assert conn.request("HEAD").status_code == 204
    assert handed == ["tok0", "tok1"] and conn.storage_url == "http://swift.test/v1/AUTH_p"
    assert "tok" not in repr(conn)


def test_only_swift_sources_without_a_user_use_the_trust() -> None:
    assert uses_trust("swift://c/in", {})
    assert not uses_trust("swift://c/in", {"user": "u", "password": "p"})
    assert not uses_trust("s3://b/in", {})
