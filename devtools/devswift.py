"""A real OpenStack Swift (from PyPI) on loopback, for development: the tests, the benchmarks and
`oasis demo --object-store swift`. Account, container, object and proxy servers plus memcached, tempauth and s3api
in the proxy pipeline, in a temporary directory on free ports. Started here, stopped by PID, directory removed.
It lives outside the `oasis` package: a deployment brings its own Swift. One user `test:tester` / `testing` (an
admin of account AUTH_test) and a second, `other:user` / `secret`, of another account.

    with SwiftServer() as swift:
        swift.auth_url  # http://127.0.0.1:PORT/auth/v1.0   (native Swift, tempauth)
        swift.endpoint  # http://127.0.0.1:PORT             (S3 through s3api: access key test:tester, secret testing)

`SwiftServer(keystone=KeystoneAuth(...))` authenticates with Keystone instead: keystonemiddleware's `authtoken`
(validating tokens with the given service user) and Swift's `keystoneauth` in the pipeline, `reseller_prefix
AUTH_`, so that a project's account is `AUTH_<project id>` and its members (roles `admin`, `member`) own it;
tempurl stays in front (with `delay_auth_decision`, a temp URL needs no token); no tempauth, no s3api.
`swift.storage_url_template` is what to register as the `object-store` endpoint in Keystone's catalog.
keystonemiddleware must be importable by the proxy (the test extra).

`SwiftServer(bind_ip=ADDRESS)` serves the proxy (the only public part) on another local address, for example the
lab's controller link (root side), so that hosts in the lab's namespaces reach it; the account, container and
object servers and memcached stay on loopback. A wildcard address is refused: nothing here listens on every
interface.

From a shell (or another program, as `oasis demo` does): `python devtools/devswift.py [--json]` starts one,
prints its endpoints (`--json`: one JSON line with auth_url, endpoint, user, key) and stops it on SIGTERM or
Ctrl-C.
"""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

USER, KEY, ACCOUNT = "test:tester", "testing", "AUTH_test"
OTHER_USER, OTHER_KEY = "other:user", "secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    """The venv's console script (swift's servers are installed next to the interpreter)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        found = shutil.which(name)
        if not found:
            raise RuntimeError(f"{name} not found: install the test extra (pip install -e '.[test]')")
        return found
    return str(path)


def memcached_binary() -> str | None:
    return shutil.which("memcached") or next((p for p in ("/usr/bin/memcached", "/usr/local/bin/memcached")
                                              if os.path.exists(p)), None)


@dataclass(frozen=True)
class KeystoneAuth:
    """Where the proxy's authtoken validates tokens, and the service user it does so as."""

    auth_url: str  # Keystone's v3 root, e.g. http://127.0.0.1:5000/v3
    username: str
    password: str = field(repr=False)
    project_name: str = "service"
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"


class SwiftServer:
    def __init__(self, base: Path | None = None, bind_ip: str = "127.0.0.1",
                 keystone: KeystoneAuth | None = None) -> None:
        if ipaddress.ip_address(bind_ip).is_unspecified:
            raise ValueError("the test Swift does not listen on every interface: give it one address")
        self.bind_ip = bind_ip
        self._own_base = base is None
        self.base = Path(base or tempfile.mkdtemp(prefix="oasis-swift-"))
        self.etc, self.devices = self.base / "etc", self.base / "srv" / "node"
        self.ports = {name: _free_port() for name in ("object", "container", "account", "proxy", "memcached")}
        self.url = f"http://{bind_ip}:{self.ports['proxy']}"
        self.auth_url = f"{self.url}/auth/v1.0"
        self.endpoint = self.url
        self.keystone = keystone
        # Keystone's catalog substitutes the project's id: each project's own account.
        self.storage_url_template = f"{self.url}/v1/AUTH_$(project_id)s"
        self.procs: list[subprocess.Popen] = []

    # --- config ---------------------------------------------------------------------------------------------

    def _default(self, port: int, bind_ip: str = "127.0.0.1") -> str:
        return (f"[DEFAULT]\nswift_dir = {self.etc}\ndevices = {self.devices}\nmount_check = false\n"
                f"bind_ip = {bind_ip}\nbind_port = {port}\nworkers = 0\nlog_name = swift\n"
                f"log_facility = LOG_LOCAL0\nlog_level = WARNING\n")

    def _write_configs(self) -> None:
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.devices / "d1").mkdir(parents=True, exist_ok=True)
        (self.etc / "swift.conf").write_text(
            "[swift-hash]\nswift_hash_path_prefix = oasis-test\nswift_hash_path_suffix = oasis-test\n\n"
            "[storage-policy:0]\nname = gold\ndefault = yes\n")
        for kind in ("object", "container", "account"):
            extra = ""
            if kind == "container":
                extra = "\n[container-sync]\n"
            (self.etc / f"{kind}-server.conf").write_text(
                self._default(self.ports[kind]) +
                f"\n[pipeline:main]\npipeline = healthcheck {kind}-server\n\n[app:{kind}-server]\nuse = egg:swift#{kind}\n"
                f"\n[filter:healthcheck]\nuse = egg:swift#healthcheck\n"
                f"\n[{kind}-replicator]\n\n[{kind}-auditor]\n{extra}")
        memcache = f"127.0.0.1:{self.ports['memcached']}"
        auth = "s3api tempauth" if self.keystone is None else "authtoken keystoneauth"
        conf = self.etc / "proxy-server.conf"
        conf.touch(mode=0o600)  # with Keystone it holds the service user's password
        conf.write_text(
            self._default(self.ports["proxy"], self.bind_ip) + f"""
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl {auth} copy slo dlo versioned_writes symlink proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
allow_account_management = true
account_autocreate = true

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = {KEY} .admin
user_other_user = {OTHER_KEY} .admin
reseller_prefix = AUTH
token_life = 3600

[filter:s3api]
use = egg:swift#s3api
location = us-east-1

[filter:tempurl]
use = egg:swift#tempurl

[filter:cache]
use = egg:swift#memcache
memcache_servers = {memcache}

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:bulk]
use = egg:swift#bulk

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo

[filter:versioned_writes]
use = egg:swift#versioned_writes

[filter:symlink]
use = egg:swift#symlink
""" + self._keystone_filters())

    def _keystone_filters(self) -> str:
        ks = self.keystone
        if ks is None:
            return ""
        return f"""
[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = {ks.auth_url}
auth_url = {ks.auth_url}
auth_type = password
username = {ks.username}
password = {ks.password}
project_name = {ks.project_name}
user_domain_name = {ks.user_domain_name}
project_domain_name = {ks.project_domain_name}
delay_auth_decision = True
token_cache_time = 10
service_token_roles_required = True

[filter:keystoneauth]
use = egg:swift#keystoneauth
reseller_prefix = AUTH_
operator_roles = admin, member
reseller_admin_role = ResellerAdmin
"""

    def _build_rings(self) -> None:
        builder = _bin("swift-ring-builder")
        for kind in ("object", "container", "account"):
            ring = str(self.etc / f"{kind}.builder")
            for args in (["create", "6", "1", "1"], ["add", f"r1z1-127.0.0.1:{self.ports[kind]}/d1", "100"],
                         ["rebalance"]):
                r = subprocess.run([builder, ring, *args], capture_output=True, text=True)
                if r.returncode not in (0, 1):  # rebalance answers 1 for "balanced with warnings"
                    raise RuntimeError(f"swift-ring-builder {' '.join(args)} failed: {r.stdout}{r.stderr}")

    # --- processes ------------------------------------------------------------------------------------------

    def _spawn(self, argv: list[str], name: str) -> subprocess.Popen:
        log = open(self.base / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.base,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def _healthy(self, port: int, address: str = "127.0.0.1") -> bool:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a swift process exited with {proc.returncode}: see {self.base}/*.log")
        try:
            return httpx.get(f"http://{address}:{port}/healthcheck", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def start(self, timeout: float = 60) -> "SwiftServer":
        memcached = memcached_binary()
        if memcached is None:
            raise RuntimeError("memcached is not installed (apt-get install memcached)")
        self._write_configs()
        self._build_rings()
        user = ["-u", "root"] if os.geteuid() == 0 else []
        self._spawn([memcached, "-l", "127.0.0.1", "-p", str(self.ports["memcached"]), "-U", "0", "-m", "16", *user],
                    "memcached")
        for kind in ("object", "container", "account", "proxy"):
            self._spawn([_bin(f"swift-{kind}-server"), str(self.etc / f"{kind}-server.conf")], kind)
        deadline = time.monotonic() + timeout
        for kind in ("object", "container", "account", "proxy"):
            while not self._healthy(self.ports[kind], self.bind_ip if kind == "proxy" else "127.0.0.1"):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"swift {kind} server not healthy after {timeout}s; see {self.base}")
                time.sleep(0.05)
        if self.keystone is not None:
            return self  # healthy proxy; authtoken asks Keystone on the first request that carries a token
        # The first token proves tempauth reaches memcached.
        while True:
            try:
                r = httpx.get(self.auth_url, headers={"X-Auth-User": USER, "X-Auth-Key": KEY}, timeout=5)
                if r.status_code == 200 and r.headers.get("X-Auth-Token"):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("tempauth did not hand out a token")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "SwiftServer":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    """Start a Swift, print where it is, serve until SIGTERM / SIGINT, stop it."""
    as_json = "--json" in argv
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # SystemExit: the `with` below stops the servers
    with SwiftServer() as server:
        if as_json:
            print(json.dumps({"auth_url": server.auth_url, "endpoint": server.endpoint, "user": USER, "key": KEY,
                              "pid": os.getpid()}), flush=True)
        else:
            print(f"swift auth: {server.auth_url} ({USER} / {KEY}); s3 endpoint: {server.endpoint}", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
