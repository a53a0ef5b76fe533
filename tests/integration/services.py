"""Real processes for integration tests: PostgreSQL, and oasis's own `api`, `engine` and `up`, each started
here and stopped by its PID."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

from oasis.procs import processes_under, wait_until  # noqa: F401 (re-exported for the tests)


@contextmanager
def open_dir(prefix: str, writable: bool = False) -> Iterator[Path]:
    """A temporary directory that jobs can look into (`writable`: and write to, sticky as /tmp is): they run as
    their project's Unix user, who cannot pass through pytest's own temporary directories (0700). Removed at
    the end."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    d.chmod(0o1777 if writable else 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Postgres:
    """A throwaway PostgreSQL server in a temporary directory, run as the `postgres` user."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            raise RuntimeError("PostgreSQL is not installed (scripts/test installs it)")
        self.bin = bins[-1].parent
        self.proc: subprocess.Popen | None = None

    def _as_postgres(self) -> dict:
        """PostgreSQL refuses to run as root: run it as `postgres` (its PID is then the server's own)."""
        return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}

    def start(self) -> str:
        data = self.base / "data"
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
        subprocess.run([str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync",
                        "-E", "UTF8", "--locale=C.UTF-8"], check=True, capture_output=True, cwd=self.base,
                       **self._as_postgres())
        self.proc = subprocess.Popen([
            str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.base),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL, stderr=open(self.base / "server.log", "wb"), cwd=self.base,
            **self._as_postgres())

        def ready() -> bool:
            r = subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                               capture_output=True)
            return r.returncode == 0

        wait_until(ready, 30, "PostgreSQL to accept connections", 0.1)
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def create_database(self, name: str) -> str:
        subprocess.run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name],
                       check=True, capture_output=True)
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGINT)


class NotReady(Exception):
    """The service has not written what a client needs to reach it yet."""


class Oasis:
    """oasis processes on one state directory and database: `api` and any number of `engine`s, or `up`."""

    def __init__(self, state_dir: Path, database_url: str | None = None, lease_seconds: float = 15) -> None:
        self.state_dir, self.database_url = state_dir, database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.first_port = 20000 + (self.port % 100) * 100  # a port range of its own, as other oasis may run here
        self.env = dict(os.environ, OASIS_LEASE_SECONDS=str(lease_seconds), OASIS_POLL_SECONDS="0.1",
                        OASIS_LOCAL_PORTS=f"{self.first_port}-{self.first_port + 99}")
        # the Spark Connect gateway of `oasis up` on a port of its own too (not Spark Connect's usual 15002)
        self.connect_port = free_port()
        self.env["OASIS_CONNECT_PORT"] = str(self.connect_port)
        self.procs: list[subprocess.Popen] = []
        self.client: httpx.Client | None = None
        self.serve_args: list[str] = []  # more arguments of `oasis up|api` (tests/tls_service.py: --tls ...)

    def spawn(self, command: str, port: int | None = None) -> subprocess.Popen:
        """Start `oasis COMMAND` (api, engine or up) without waiting for it; an API on `port`, else the
        service's own."""
        argv = [sys.executable, "-m", "oasis.cli.main", command, "--state-dir", str(self.state_dir)]
        if command in ("up", "api"):
            argv += ["--port", str(port or self.port), *self.serve_args]
        if self.database_url:
            argv += ["--database-url", self.database_url]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir / f"{command}-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def wait_answering(self, proc: subprocess.Popen, url: str | None = None) -> None:
        url = url or self.url

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"oasis {proc.args[3]} exited with {proc.returncode}; see {self.state_dir}")
            try:
                return httpx.get(url + "/", timeout=1, verify=self.verify()).status_code in (200, 300)
            except (httpx.TransportError, NotReady):
                return False

        wait_until(up, 60, f"oasis at {url} to answer")

    def start_api(self, command: str = "api") -> None:
        self.wait_answering(self.spawn(command))
        self.client = self.login()

    def start_engine(self) -> subprocess.Popen:
        return self.spawn("engine")

    def login(self, url: str | None = None) -> httpx.Client:
        """A client of the administrator of clouds.yaml."""
        cloud = yaml.safe_load((self.state_dir / "clouds.yaml").read_text())["clouds"]["oasis"]["auth"]
        return self.login_as(cloud["username"], cloud["password"], cloud["project_name"], url)

    def login_as(self, user: str, password: str, project: str, url: str | None = None) -> httpx.Client:
        url = url or self.url
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "password": password, "domain": {"name": "Default"}}}},
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
        r = httpx.post(url + "/v3/auth/tokens", json=body, timeout=10, verify=self.verify())
        r.raise_for_status()
        return httpx.Client(base_url=url + "/v2", headers={"X-Auth-Token": r.headers["X-Subject-Token"]},
                            timeout=30, verify=self.verify())

    def verify(self) -> ssl.SSLContext | bool:
        """What clients of this service verify its certificate with (raises NotReady while it cannot say)."""
        return True

    def add_project(self, name: str, user: str, password: str) -> tuple[str, httpx.Client]:
        """A second project with a member of its own, made by the administrator: (its id, the member's client)."""
        with httpx.Client(base_url=self.url + "/v3", headers=dict(self.client.headers), timeout=30) as v3:
            project = v3.post("/projects", json={"project": {"name": name}})
            assert project.status_code == 201, project.text
            pid = project.json()["project"]["id"]
            made = v3.post("/users", json={"user": {"name": user, "password": password, "default_project_id": pid}})
            assert made.status_code == 201, made.text
            role = v3.put(f"/projects/{pid}/users/{made.json()['user']['id']}/roles/member")
            assert role.status_code == 204, role.text
        return pid, self.login_as(user, password, name)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        for proc in reversed(self.procs):
            stop_process(proc)
        # Clusters outlive their engine by design; whatever a test left running under its state dir ends here.
        # (as root the local host's base is outside the state dir, linked from it: processes_under resolves it)
        for pid in processes_under(self.state_dir) + processes_under(self.state_dir / "hosts" / "localhost"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
