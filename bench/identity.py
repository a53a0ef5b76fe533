#!/usr/bin/env python3
"""oasis benchmark: what the identity backend costs a request: `GET /v2/clusters` with the built-in identity,
against the Keystone backend with its cache (token_cache_time 30 s) and without it (0: Keystone asked on every
request).

    .venv/bin/python bench/identity.py [--requests N]

One run starts a real Keystone 30 (tests/keystone_service.py: .venv-keystone, gunicorn, SQLite) and three
`oasis api` processes on one database, each on a free port: builtin, keystone cached, keystone uncached. Each
gets N sequential requests (after 10 to warm up) with one token; the medians and the ratios to the built-in one
go to bench/identity-results.md (printed too). Everything is stopped by PID at the end."""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.services import Oasis  # noqa: E402
from tests.keystone_service import running_keystone  # noqa: E402


def timings(url: str, token: str, n: int) -> list[float]:
    out = []
    with httpx.Client(headers={"X-Auth-Token": token}, timeout=30) as client:
        for i in range(n + 10):
            start = time.perf_counter()
            r = client.get(f"{url}/v2/clusters")
            elapsed = time.perf_counter() - start
            r.raise_for_status()
            if i >= 10:
                out.append(elapsed)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="oasis-bench-identity-"))
    services: list[Oasis] = []
    rows: list[tuple[str, float, float]] = []
    try:
        with running_keystone() as keystone:
            builtin = Oasis(base / "builtin")
            services.append(builtin)
            builtin.start_api("up")
            builtin_token = str(builtin.client.headers["X-Auth-Token"]) if builtin.client else ""
            runs = [("builtin", builtin.url, builtin_token)]
            for name, cache in (("keystone, cached (30 s)", 30), ("keystone, uncached (0 s)", 0)):
                conf = base / f"oasis-{cache}.conf"
                conf.write_text("[identity]\nbackend = keystone\n" + keystone.config_section(cache_time=cache))
                conf.chmod(0o600)
                service = Oasis(base / f"keystone-{cache}")
                service.serve_args = ["--config", str(conf)]
                services.append(service)
                service.wait_answering(service.spawn("up"))
                runs.append((name, service.url, keystone.token("alice")))
            for name, url, token in runs:
                t = timings(url, token, args.requests)
                rows.append((name, statistics.median(t) * 1000, statistics.quantiles(t, n=20)[18] * 1000))
    finally:
        for service in services:
            service.stop()
    first = rows[0][1]
    lines = ["# Identity backends: `GET /v2/clusters` latency (bench/identity.py)", "",
             f"{args.requests} sequential requests each, one token; {platform.machine()}, "
             f"Python {platform.python_version()}, Keystone 30 on gunicorn (1 worker, 4 threads), SQLite.", "",
             "| backend | median | p95 | median / builtin |", "|---|---|---|---|"]
    lines += [f"| {name} | {median:.2f} ms | {p95:.2f} ms | {median / first:.2f}× |" for name, median, p95 in rows]
    text = "\n".join(lines) + "\n"
    (ROOT / "bench" / "identity-results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
