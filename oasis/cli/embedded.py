"""An embedded `oasis up` in a child process, for the demo and the benchmark: started on a free port, ready
when GET / answers, stopped by its PID."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from oasis.cli.client import OasisError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str, timeout: float = 1.0) -> bool:
    """Does an oasis (or any Sahara) service answer its version document at `url`?"""
    try:
        return httpx.get(url.rstrip("/") + "/", timeout=timeout).status_code in (200, 300)
    except httpx.HTTPError:
        return False


class EmbeddedService:
    def __init__(self, state_dir: Path, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, **(env or {}))
        # its Spark Connect gateway on a free port too, unless told: several of these may run on one machine
        self.env.setdefault("OASIS_CONNECT_PORT", str(free_port()))
        self.connect_port = int(self.env["OASIS_CONNECT_PORT"])
        self.proc: subprocess.Popen | None = None
        self.log_path = self.state_dir / "oasis-up.log"

    def start(self, timeout: float = 90) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "oasis.cli.main", "up", "--state-dir", str(self.state_dir),
                "--port", str(self.port)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not answers(self.url, 0.5):
            if self.proc.poll() is not None:
                raise OasisError(f"the embedded oasis exited with code {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise OasisError(f"the embedded oasis did not answer within {timeout:.0f}s; see {self.log_path}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def credentials(self) -> dict:
        """The admin cloud from the state dir's clouds.yaml, pointed at this service's port."""
        path = self.state_dir / "clouds.yaml"
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            cloud = dict(yaml.safe_load(path.read_text())["clouds"]["oasis"])
        except (OSError, KeyError, TypeError, yaml.YAMLError) as e:
            raise OasisError(f"cannot read the embedded service's {path}: {e}") from None
        cloud["auth"] = dict(cloud.get("auth") or {}, auth_url=f"{self.url}/v3")
        cloud["_path"] = str(path)
        return cloud

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self, timeout: float = 30) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
