"""A real `oasis up` or `oasis api` serving HTTPS (`--tls auto`, or given files) on a loopback port, for the TLS
tests (tests/compat/test_tls.py, tests/sites/test_tls_join.py): started here, ready when it answers HTTPS that
verifies with the CA its clouds.yaml names, stopped by its PID."""
from __future__ import annotations

import ssl
from pathlib import Path

import yaml

from tests.integration.services import NotReady, Oasis


class TlsOasis(Oasis):
    def __init__(self, state_dir: Path, tls_args: list[str]) -> None:
        super().__init__(state_dir)
        self.serve_args = tls_args
        self.url = f"https://127.0.0.1:{self.port}"
        for name in ("OASIS_TLS", "OASIS_TLS_CERT", "OASIS_TLS_KEY", "OASIS_TLS_CA"):
            self.env.pop(name, None)  # only the arguments say how it serves

    @property
    def cloud(self) -> dict:
        return yaml.safe_load((self.state_dir / "clouds.yaml").read_text())["clouds"]["oasis"]

    @property
    def cacert(self) -> Path:
        return Path(self.cloud["cacert"])

    def verify(self) -> ssl.SSLContext:
        try:
            cafile = str(self.cacert)
        except (OSError, TypeError, KeyError, yaml.YAMLError):
            raise NotReady("clouds.yaml does not name the CA yet") from None
        return ssl.create_default_context(cafile=cafile)
