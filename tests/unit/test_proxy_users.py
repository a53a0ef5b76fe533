"""Proxy users (oasis.identity.proxy) without a Keystone: which leftovers the clean-up removes, what the
configuration accepts, how a refused trust undoes the user, and how a job's jobkit reaches Swift as its proxy
user (a stand-in Keystone and Swift on loopback). The real thing: tests/integration/test_proxy_users.py."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from oasis import jobkit
from oasis.config import Settings
from oasis.configfile import ConfigError, read_config
from oasis.identity import open_proxy_users
from oasis.identity.base import IdentityError
from oasis.identity.principal import Principal
from oasis.identity.proxy import Leftover, ProxyUsers, to_remove, user_name

JOB = "0b5c7a52-2f0e-4d9a-9d59-6a3f8c1e2d40"
OTHER = "7e1d2c3b-4a59-4f68-8e7d-9c0b1a2d3e4f"
NOW = datetime(2026, 12, 2, 12, 0, 0)


def test_the_clean_up_removes_users_of_ended_jobs_and_old_orphans_only() -> None:
    ended, running = Leftover("u1", JOB, NOW), Leftover("u2", OTHER, NOW)
    old_orphan = Leftover("u3", "11111111-1111-4111-8111-111111111111", NOW - timedelta(hours=1))
    young_orphan = Leftover("u4", "22222222-2222-4222-8222-222222222222", NOW - timedelta(minutes=1))
    unnamed_orphan = Leftover("u5", "33333333-3333-4333-8333-333333333333", None)
    foreign = Leftover("u6", None, NOW - timedelta(days=30))
    gone = to_remove([ended, running, old_orphan, young_orphan, unnamed_orphan, foreign],
                     live_jobs={OTHER}, known_jobs={JOB, OTHER}, now=NOW)
    assert [u.user_id for u in gone] == ["u1", "u3"]


class FakeKeystone:
    """The user administration a ProxyUsers needs, in memory."""

    public_url = "http://keystone.test/v3"
    name = "keystone"

    def __init__(self, refuse_trust: bool = False) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.refuse_trust = refuse_trust
        self.trusts: list[dict[str, Any]] = []

    def domain_id(self, name: str) -> str:
        return f"domain-{name}"

    def create_user(self, domain_id: str, name: str, password: str, description: str) -> str:
        user_id = f"id-{len(self.users)}"
        self.users[user_id] = {"id": user_id, "name": name, "domain_id": domain_id, "description": description}
        return user_id

    def delete_user(self, user_id: str) -> None:
        self.users.pop(user_id, None)

    def list_users(self, domain_id: str) -> list[dict[str, Any]]:
        return [u for u in self.users.values() if u["domain_id"] == domain_id]

    def create_trust(self, user_token: str, trustor: Principal, **kwargs: Any) -> str:
        if self.refuse_trust:
            raise IdentityError("refused")
        self.trusts.append(kwargs)
        return "trust-1"


ALICE = Principal(user_id="alice", user_name="alice", project_id="alpha", project_name="alpha", roles=["member"],
                  is_admin=False)


def test_a_proxy_user_gets_a_trust_limited_to_swifts_roles_and_is_listed_by_its_job() -> None:
    keystone = FakeKeystone()
    proxies = ProxyUsers(keystone, "oasis_proxy", ["member"])  # type: ignore[arg-type]
    record = proxies.make(JOB, "token", ALICE)
    assert record["name"] == user_name(JOB) and record["trust_id"] == "trust-1" and len(record["password"]) >= 32
    trust = keystone.trusts[0]
    assert trust["roles"] == ["member"] and trust["impersonation"] is False
    assert trust["trustee_user_id"] == record["user_id"] and trust["expires_at"] > datetime.utcnow()
    listed = proxies.listed()
    assert [(u.job_id, u.user_id) for u in listed] == [(JOB, record["user_id"])]
    assert listed[0].made is not None and abs(listed[0].made - datetime.utcnow()) < timedelta(minutes=1)
    proxies.remove(record)
    assert keystone.users == {}


def test_a_refused_trust_leaves_no_proxy_user_behind() -> None:
    keystone = FakeKeystone(refuse_trust=True)
    with pytest.raises(IdentityError):
        ProxyUsers(keystone, "oasis_proxy", ["member"]).make(JOB, "token", ALICE)  # type: ignore[arg-type]
    assert keystone.users == {}


def _conf(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "oasis.conf"
    path.write_text(text)
    path.chmod(0o600)
    return path


KEYSTONE = ("[identity]\nbackend = keystone\n[keystone_authtoken]\nauth_url = http://ks.test:5000/v3\n"
            "username = oasis\npassword = secret\n")


def test_the_proxy_section_needs_keystone_and_names_roles(tmp_path: Path) -> None:
    got = read_config(_conf(tmp_path, KEYSTONE + "[proxy]\ndomain = oasis_proxy\nroles = member, swiftoperator\n"))
    assert got["proxy_domain"] == "oasis_proxy" and got["proxy_roles"] == ["member", "swiftoperator"]
    with pytest.raises(ConfigError, match=r"\[proxy\] domain needs \[identity\] backend = keystone"):
        read_config(_conf(tmp_path, "[proxy]\ndomain = oasis_proxy\n"))
    with pytest.raises(ConfigError, match=r"\[proxy\] roles: must name at least one role"):
        read_config(_conf(tmp_path, KEYSTONE + "[proxy]\ndomain = d\nroles = ,\n"))
    assert open_proxy_users(Settings(state_dir=tmp_path), object()) is None  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs the keystone identity backend"):
        open_proxy_users(Settings(state_dir=tmp_path, proxy_domain="d"), object())  # type: ignore[arg-type]


# --- jobkit as a proxy user, against a stand-in Keystone and Swift -------------------------------------------


class Stand(BaseHTTPRequestHandler):
    """POST /v3/auth/tokens gives a token for the one proxy user on its trust; /v1/AUTH_alpha/c/... holds
    objects for that token only."""

    objects: dict[str, bytes] = {}
    tokens_issued = 0

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = body["auth"]["identity"]["password"]["user"]
        ok = (user == {"id": "px", "password": "pw"} and body["auth"]["scope"]["OS-TRUST:trust"]["id"] == "tr")
        self.send_response(201 if ok else 401)
        if ok:
            type(self).tokens_issued += 1
            self.send_header("X-Subject-Token", "tok")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _allowed(self) -> bool:
        if self.headers.get("X-Auth-Token") == "tok":
            return True
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_GET(self) -> None:
        if self._allowed():
            data = self.objects[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    def do_PUT(self) -> None:
        if self._allowed():
            self.objects[self.path] = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()


@pytest.fixture
def stand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stand)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    entry = {"kind": "swift-proxy", "auth_url": f"{url}/v3", "user_id": "px", "password": "pw", "trust_id": "tr",
             "storage_url": f"{url}/v1/AUTH_alpha", "container": "c", "key": "in", "prefix": "in/",
             "objects": [["in/a.txt", 4]], "methods": ["GET", "PUT"]}
    access = tmp_path / "access.json"
    access.write_text(json.dumps({"swift://c/in": entry, "swift://c/ro": {**entry, "key": "ro", "prefix": "ro/",
                                                                          "methods": ["GET"]}}))
    monkeypatch.setenv(jobkit.FILE_ENV, str(access))
    jobkit._tokens.clear()
    Stand.objects, Stand.tokens_issued = {"/v1/AUTH_alpha/c/in/a.txt": b"a b\n"}, 0
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        jobkit._tokens.clear()


def test_jobkit_reads_and_writes_as_the_jobs_proxy_user(stand: str) -> None:
    assert jobkit.list_objects("swift://c/in") == ["swift://c/in/a.txt"]
    assert jobkit.read_text("swift://c/in") == "a b\n"
    jobkit.write_text("swift://c/in/out.txt", "x\n")
    assert Stand.objects["/v1/AUTH_alpha/c/in/out.txt"] == b"x\n"
    # what a worker gets: the object's URL and the job's token, and nothing of the password
    where = jobkit.reader_urls("swift://c/in")[0]
    assert where == (f"{stand}/v1/AUTH_alpha/c/in/a.txt", {"X-Auth-Token": "tok"})
    assert jobkit.fetch_lines(where) == ["a b"]
    assert Stand.tokens_issued == 1  # one token for the job's requests
    with pytest.raises(jobkit.AccessDenied, match="may not PUT"):
        jobkit.write_text("swift://c/ro/x", "no")


def test_jobkit_says_the_access_is_gone_once_the_proxy_user_is(stand: str) -> None:
    access = Path(jobkit.os.environ[jobkit.FILE_ENV])
    entries = json.loads(access.read_text())
    entries["swift://c/in"]["password"] = "deleted"  # as Keystone answers once the user is gone
    access.write_text(json.dumps(entries))
    with pytest.raises(jobkit.AccessDenied, match="proxy user was refused"):
        jobkit.read_text("swift://c/in")
