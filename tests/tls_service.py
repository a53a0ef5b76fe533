"""A real `oasis up` or `oasis api` serving HTTPS (`--tls auto`, or given files) on a loopback port, for the TLS
tests (tests/compat/test_tls.py, tests/sites/test_tls_join.py): started here, ready when it answers HTTPS that
verifies with the CA its clouds.yaml names, stopped by its PID."""
from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from tests.integration.services import Oasis, wait_until


class TlsOasis(Oasis):
    def __init__(self, state_dir: Path, tls_args: list[str]) -> None:
        super().__init__(state_dir)
        self.tls_args = tls_args
        self.url = f"https://127.0.0.1:{self.port}"
        for name in ("OASIS_TLS", "OASIS_TLS_CERT", "OASIS_TLS_KEY", "OASIS_TLS_CA"):
            self.env.pop(name, None)  # only the arguments say how it serves

    def spawn(self, command: str, port: int | None = None) -> subprocess.Popen:
        argv = [sys.executable, "-m", "oasis.cli.main", command, "--state-dir", str(self.state_dir),
                "--port", str(port or self.port), *self.tls_args]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir / f"{command}-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    @property
    def cloud(self) -> dict:
        return yaml.safe_load((self.state_dir / "clouds.yaml").read_text())["clouds"]["oasis"]

    @property
    def cacert(self) -> Path:
        return Path(self.cloud["cacert"])

    def verify(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cacert))

    def wait_answering(self, proc: subprocess.Popen, url: str | None = None) -> None:
        url = url or self.url

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"oasis {proc.args[3]} exited with {proc.returncode}; see {self.state_dir}")
            try:
                if "cacert" not in self.cloud:
                    return False
            except (OSError, TypeError, KeyError, yaml.YAMLError):
                return False  # clouds.yaml not written yet
            try:
                return httpx.get(url + "/", timeout=1, verify=self.verify()).status_code in (200, 300)
            except httpx.TransportError:
                return False

        wait_until(up, 60, f"oasis at {url} to answer HTTPS")

    def login(self, url: str | None = None) -> httpx.Client:
        url = url or self.url
        auth = self.cloud["auth"]
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": auth["username"], "password": auth["password"], "domain": {"name": "Default"}}}},
            "scope": {"project": {"name": auth["project_name"], "domain": {"name": "Default"}}}}}
        r = httpx.post(url + "/v3/auth/tokens", json=body, timeout=10, verify=self.verify())
        r.raise_for_status()
        return httpx.Client(base_url=url + "/v2", headers={"X-Auth-Token": r.headers["X-Subject-Token"]},
                            timeout=30, verify=self.verify())
