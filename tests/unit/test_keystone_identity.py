"""KeystoneIdentity without a Keystone: its session answers from a table, and the clock is the test's, so the
cache's rules (hash key, bound, expiry, no negative caching) and the 401/503 paths are checked fast."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from oasis.config import KeystoneAuth
from oasis.identity.base import IdentityError
from oasis.identity.keystone import KeystoneIdentity, identity_url, map_roles, principal_of

NOW = datetime(2030, 1, 1, 12, 0, 0)


class Resp:
    def __init__(self, status: int, body: dict | None = None) -> None:
        self.status_code, self._body, self.reason = status, body or {}, ""

    def json(self) -> dict:
        return self._body


def token_body(expires: datetime, roles: tuple[str, ...] = ("member", "reader")) -> dict[str, Any]:
    return {"token": {"user": {"id": "u1", "name": "alice"}, "project": {"id": "p1", "name": "alpha"},
                      "roles": [{"name": r} for r in roles], "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
                      "issued_at": NOW.strftime("%Y-%m-%dT%H:%M:%S.000000Z")}}


class FakeSession:
    def __init__(self) -> None:
        self.valid: dict[str, dict] = {}
        self.calls: list[dict] = []
        self.down = False

    def request(self, url: str, method: str, **kw: Any) -> Resp:
        self.calls.append({"url": url, "method": method, **kw})
        if self.down:
            from keystoneauth1 import exceptions
            raise exceptions.ConnectFailure("down")
        token = kw["headers"]["X-Subject-Token"]
        return Resp(200, self.valid[token]) if token in self.valid else Resp(404)


@pytest.fixture
def ks() -> tuple[KeystoneIdentity, FakeSession, list[float]]:
    clock = [0.0]
    identity = KeystoneIdentity(KeystoneAuth(auth_url="http://ks:5000", username="oasis", password="pw",
                                             token_cache_time=30), clock=lambda: clock[0], wall=lambda: NOW)
    session = FakeSession()
    identity.session = session  # type: ignore[assignment]
    return identity, session, clock


def test_mapping() -> None:
    assert identity_url("http://ks:5000") == identity_url("http://ks:5000/v3/") == "http://ks:5000/v3"
    assert map_roles(["_member_", "reader", "swiftoperator"]) == ["member", "reader", "swiftoperator"]
    p = principal_of(token_body(NOW + timedelta(hours=1), ("admin", "member"))["token"])
    assert p is not None and p.is_admin and p.project_name == "alpha" and p.issued_at == NOW
    assert principal_of({"user": {"id": "u"}, "roles": []}) is None  # unscoped: oasis owns by project


def test_cached_for_the_bound_by_a_hash_of_the_token(ks: tuple) -> None:
    identity, session, clock = ks
    session.valid["tok-secret"] = token_body(NOW + timedelta(hours=1))
    assert identity.authenticate_token("tok-secret") is not None
    assert identity.authenticate_token("tok-secret") is not None
    assert identity.validations == 1
    assert "tok-secret" not in repr(identity._cache)  # keyed by its hash, never the token
    del session.valid["tok-secret"]  # revoked
    clock[0] = 29.9
    assert identity.authenticate_token("tok-secret") is not None
    clock[0] = 30.1
    assert identity.authenticate_token("tok-secret") is None and identity.validations == 2


def test_never_cached_past_the_tokens_expiry(ks: tuple) -> None:
    identity, session, clock = ks
    session.valid["short"] = token_body(NOW + timedelta(seconds=5))
    assert identity.authenticate_token("short") is not None
    clock[0] = 5.5
    identity.authenticate_token("short")
    assert identity.validations == 2  # asked again after 5 s, not 30


def test_refusals_are_not_cached(ks: tuple) -> None:
    identity, session, _ = ks
    assert identity.authenticate_token("later") is None
    session.valid["later"] = token_body(NOW + timedelta(hours=1))
    assert identity.authenticate_token("later") is not None
    assert identity.authenticate_token("") is None and identity.validations == 2


def test_an_expired_token_keystone_still_returns_is_refused(ks: tuple) -> None:
    identity, session, _ = ks
    session.valid["old"] = token_body(NOW - timedelta(seconds=1))
    assert identity.authenticate_token("old") is None


def test_keystone_down_is_an_identity_error_not_a_refusal(ks: tuple) -> None:
    identity, session, _ = ks
    session.down = True
    with pytest.raises(IdentityError, match="cannot be reached"):
        identity.authenticate_token("any")


def test_the_api_says_503_when_keystone_is_down_and_401_with_the_uri(world, monkeypatch: pytest.MonkeyPatch,
                                                                     ks: tuple) -> None:  # noqa: ANN001
    identity, session, _ = ks
    deps = world.client.app.state.deps
    monkeypatch.setattr(deps, "identity", identity)
    monkeypatch.setattr(deps.settings, "identity_backend", "keystone")
    monkeypatch.setattr(deps.settings, "keystone", identity.auth)
    r = world.client.get("/v2/clusters", headers={"X-Auth-Token": "unknown"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Keystone uri="http://ks:5000"'
    session.down = True
    r = world.client.get("/v2/clusters", headers={"X-Auth-Token": "unknown"})
    assert r.status_code == 503 and "Traceback" not in r.text
    assert world.client.get("/v3").status_code == 404  # the builtin shim is not the identity service now


# --- the builtin shim, as Keystone behaves -------------------------------------------------------------------


def test_builtin_issued_at_is_the_time_of_issue(world) -> None:  # noqa: ANN001
    from oasis.identity import builtin

    with world.db.session() as s:
        p = builtin.check_token(s, world.tokens["alice"])
    assert p is not None and p.issued_at is not None
    assert p.issued_at <= p.expires_at - timedelta(minutes=59)  # issued an hour before it expires
    r = world.client.get("/v3/auth/tokens", headers={**world.h("alice"), "X-Subject-Token": world.tokens["alice"]})
    assert r.json()["token"]["issued_at"] == p.issued_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert builtin.issued_at_of("no-part") is None


def test_builtin_only_owner_admin_or_service_may_validate_or_revoke(world) -> None:  # noqa: ANN001
    bob_token = {"X-Subject-Token": world.tokens["bob"]}
    for method in ("GET", "HEAD", "DELETE"):
        r = world.client.request(method, "/v3/auth/tokens", headers={**world.h("alice"), **bob_token})
        assert r.status_code == 403, (method, r.text)
    assert world.client.get("/v3/auth/tokens", headers={**world.h("admin"), **bob_token}).status_code == 200
    assert world.client.get("/v3/auth/tokens", headers={**world.h("bob"), **bob_token}).status_code == 200
    assert world.client.delete("/v3/auth/tokens", headers={**world.h("admin"), **bob_token}).status_code == 204
    assert world.get("/v2/clusters", who="bob").status_code == 401
