"""A real Keystone 30 for the tests: its own venv (`.venv-keystone`, built by `OASIS_SETUP_TESTS=1 scripts/setup`
from constraints-keystone.txt, since its pins fight oasis's), SQLite and Fernet keys in a state dir, served by
gunicorn on a free loopback port, stopped by its PID.

Once up it holds, beside the bootstrap admin (project `admin`): the service project `service` with oasis's
service user (admin role there, as Sahara's had, so that it may delete trusts), and two projects `alpha` and
`beta` with users: alice (member of alpha), rita (reader of alpha), bob (member of beta)."""
from __future__ import annotations

import grp
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from keystoneclient.v3 import client as ks_client

from devtools.devswift import KeystoneAuth as SwiftKeystoneAuth
from devtools.devswift import SwiftServer, memcached_binary
from tests.integration.services import Oasis, free_port, stop_process, wait_until

REPO = Path(__file__).resolve().parent.parent
# gunicorn's worker would parse gunicorn's own argv with oslo.config and crash-loop: the wrapper clears it.
WRAPPER = "import sys; sys.argv = sys.argv[:1]\nfrom keystone.wsgi.api import application  # noqa: E402,F401\n"
SERVICE_USER = "oasis"
SERVICE_PROJECT = "service"
# name -> (project, role)
USERS = {"alice": ("alpha", "member"), "rita": ("alpha", "reader"), "bob": ("beta", "member")}


def keystone_venv() -> Path:
    """Where Keystone's venv is: $OASIS_KEYSTONE_VENV, else .venv-keystone beside the source."""
    venv = Path(os.environ.get("OASIS_KEYSTONE_VENV") or REPO / ".venv-keystone")
    if not (venv / "bin" / "keystone-manage").exists():
        raise RuntimeError(f"Keystone is not installed in {venv}: run OASIS_SETUP_TESTS=1 scripts/setup")
    return venv


@dataclass
class KeystoneServer:
    base: Path
    token_expiration: int = 3600  # seconds: `[token] expiration`
    port: int = field(default_factory=free_port)
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    service_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    passwords: dict[str, str] = field(default_factory=lambda: {u: secrets.token_urlsafe(12) for u in USERS})
    proc: subprocess.Popen | None = None
    projects: dict[str, str] = field(default_factory=dict)  # name -> id

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v3"

    @property
    def conf(self) -> Path:
        return self.base / "keystone.conf"

    def _manage(self, venv: Path, *args: str) -> None:
        subprocess.run([str(venv / "bin" / "keystone-manage"), "--config-file", str(self.conf), *args],
                       check=True, capture_output=True, cwd=self.base)

    def start(self) -> None:
        venv = keystone_venv()
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o700)
        self.conf.write_text(
            "[DEFAULT]\nlog_file = keystone.log\nlog_dir = {base}\n"
            "[database]\nconnection = sqlite:///{base}/keystone.db\n"
            "[token]\nprovider = fernet\nexpiration = {exp}\n"
            "[fernet_tokens]\nkey_repository = {base}/fernet-keys\n"
            "[credential]\nkey_repository = {base}/credential-keys\n"
            .format(base=self.base, exp=self.token_expiration))
        user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
        self._manage(venv, "db_sync")
        self._manage(venv, "fernet_setup", "--keystone-user", user, "--keystone-group", group)
        self._manage(venv, "credential_setup", "--keystone-user", user, "--keystone-group", group)
        # The password is given in the environment, not on the command line (bootstrap reads OS_BOOTSTRAP_*).
        subprocess.run([str(venv / "bin" / "keystone-manage"), "--config-file", str(self.conf), "bootstrap",
                        "--bootstrap-admin-url", self.url, "--bootstrap-internal-url", self.url,
                        "--bootstrap-public-url", self.url, "--bootstrap-region-id", "RegionOne"],
                       check=True, capture_output=True, cwd=self.base,
                       env=dict(os.environ, OS_BOOTSTRAP_PASSWORD=self.admin_password))
        (self.base / "ksapp.py").write_text(WRAPPER)
        log = open(self.base / "gunicorn.log", "wb")
        self.proc = subprocess.Popen(
            [str(venv / "bin" / "gunicorn"), "--no-control-socket", "--chdir", str(self.base),
             "--bind", f"127.0.0.1:{self.port}", "--workers", "1", "--threads", "4", "ksapp:application"],
            env=dict(os.environ, OS_KEYSTONE_CONFIG_FILES=str(self.conf)), stdout=log, stderr=subprocess.STDOUT,
            cwd=self.base)

        def answers() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"keystone exited with {self.proc.returncode}: "
                                   f"{(self.base / 'gunicorn.log').read_text()[-2000:]}")
            try:
                return httpx.get(self.url, timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answers, 90, "Keystone to answer GET /v3", 0.2)
        self._populate()

    def admin_session(self) -> ks_session.Session:
        return ks_session.Session(auth=v3.Password(
            auth_url=self.url, username="admin", password=self.admin_password, user_domain_name="Default",
            project_name="admin", project_domain_name="Default"))

    def admin_client(self) -> ks_client.Client:
        return ks_client.Client(session=self.admin_session(), interface="public")

    def _populate(self) -> None:
        ks = self.admin_client()
        roles = {r.name: r for r in ks.roles.list()}
        for name in ("admin", "member", "reader"):
            if name not in roles:
                roles[name] = ks.roles.create(name)
        for name in (SERVICE_PROJECT, "alpha", "beta"):
            self.projects[name] = ks.projects.create(name, domain="default").id
        self.projects["admin"] = next(p.id for p in ks.projects.list(name="admin"))
        service = ks.users.create(SERVICE_USER, domain="default", password=self.service_password)
        ks.roles.grant(roles["admin"], user=service, project=self.projects[SERVICE_PROJECT])
        for user, (project, role) in USERS.items():
            u = ks.users.create(user, domain="default", password=self.passwords[user])
            ks.roles.grant(roles[role], user=u, project=self.projects[project])

    def user_session(self, user: str, project: str | None = None) -> ks_session.Session:
        """A session of a test user (or "admin") scoped to its project."""
        password = self.admin_password if user == "admin" else self.passwords[user]
        project = project or ("admin" if user == "admin" else USERS[user][0])
        return ks_session.Session(auth=v3.Password(
            auth_url=self.url, username=user, password=password, user_domain_name="Default",
            project_name=project, project_domain_name="Default"))

    def token(self, user: str, project: str | None = None) -> str:
        token = self.user_session(user, project).get_token()
        assert token
        return token

    def revoke(self, token: str) -> None:
        r = self.admin_session().delete(f"{self.url}/auth/tokens", headers={"X-Subject-Token": token})
        assert r.status_code == 204, r.text

    def config_section(self, cache_time: float = 30) -> str:
        """The `[keystone_authtoken]` of an oasis configuration file for this Keystone."""
        return (f"[keystone_authtoken]\nwww_authenticate_uri = {self.url}\nauth_url = {self.url}\n"
                f"username = {SERVICE_USER}\npassword = {self.service_password}\nproject_name = {SERVICE_PROJECT}\n"
                f"user_domain_name = Default\nproject_domain_name = Default\ntoken_cache_time = {cache_time}\n")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM)
            self.proc = None


@contextmanager
def running_keystone(token_expiration: int = 3600) -> Iterator[KeystoneServer]:
    """A Keystone up for the block, stopped by PID and its state removed after, even when the block fails."""
    base = Path(tempfile.mkdtemp(prefix="oasis-keystone-"))
    server = KeystoneServer(base / "ks", token_expiration=token_expiration)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def swift_on_keystone(keystone: KeystoneServer) -> Iterator[SwiftServer]:
    """A Swift authenticating at `keystone` (authtoken + keystoneauth), registered there as the projects'
    object-store; its service user, service and endpoint are removed again at the end."""
    if memcached_binary() is None:
        raise RuntimeError("memcached is not installed: scripts/setup must apt-get install memcached")
    admin = keystone.admin_client()
    name, password = f"swift-{secrets.token_hex(3)}", secrets.token_urlsafe(16)
    user = admin.users.create(name, domain="default", password=password)
    service = endpoint = None
    try:
        admin.roles.grant(next(r for r in admin.roles.list() if r.name == "admin"), user=user,
                          project=keystone.projects[SERVICE_PROJECT])
        with SwiftServer(keystone=SwiftKeystoneAuth(keystone.url, name, password, SERVICE_PROJECT)) as swift:
            service = admin.services.create("swift", type="object-store")
            endpoint = admin.endpoints.create(service, swift.storage_url_template, interface="public",
                                              region="RegionOne")
            yield swift
    finally:
        if endpoint is not None:
            admin.endpoints.delete(endpoint)
        if service is not None:
            admin.services.delete(service)
        admin.users.delete(user)


@contextmanager
def oasis_on_keystone(keystone: KeystoneServer, base: Path, cache_time: float, env: dict[str, str] | None = None,
                      secrets_: tuple[str, ...] = (), config: str = "") -> Iterator[Oasis]:
    """`oasis up --config` with Keystone as its identity (a 0600 configuration file naming the test Keystone's
    service user), stopped by PID at the end; then its logs must hold no traceback, no password of the test
    Keystone (nor any of `secrets_`) and no token."""
    conf = base / "oasis.conf"
    conf.write_text("[identity]\nbackend = keystone\n" + keystone.config_section(cache_time=cache_time) + config)
    conf.chmod(0o600)
    service = Oasis(base / "state")
    service.serve_args = ["--config", str(conf)]
    service.env.update(env or {})
    try:
        # not start_api: it logs in at oasis's own /v3, which issues no tokens with Keystone as the backend
        service.wait_answering(service.spawn("up"))
        yield service
    finally:
        service.stop()
    for log in service.state_dir.glob("*.log"):
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, f"{log}:\n{text[-3000:]}"
        for secret in (keystone.service_password, keystone.admin_password, *keystone.passwords.values(), *secrets_):
            assert secret not in text, f"{log} holds a password"
        assert not re.search(r"X-Subject-Token: \S{20,}", text), f"{log} holds a token"
