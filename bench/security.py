#!/usr/bin/env python3
"""What the frameworks' security costs: two `oasis up` side by side in one run, the same in every way but one,
started here and stopped by PID:

    .venv/bin/python bench/security.py [--reps R]

  - secured: the default (Dask TLS with mutual authentication, Spark authenticate + RPC encryption + HTTPS UIs);
  - insecure: the engine process started with OASIS_BENCH_INSECURE_FRAMEWORKS=1, a switch for this bench only
    (an environment variable of the engine's own process; nothing in the API reaches it).

Rows, for Dask and Spark (1 master + 2 workers, the `local` site): cluster create → Active, and the wordcount job
(oasis/demo) submit → SUCCEEDED. Runs alternate between the two services. Medians of R; results go to
bench/security-results.md (printed too)."""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from oasis.plugins.security import INSECURE_ENV  # noqa: E402
from tests.integration import workflow as wf  # noqa: E402
from tests.integration.services import Oasis  # noqa: E402

DEMO = ROOT / "oasis" / "demo"
SCRIPTS = {"dask": DEMO / "wordcount_dask.py", "spark": DEMO / "wordcount_spark.py"}


def one_run(service: Oasis, plugin: str, text: Path, n: int) -> tuple[float, float]:
    client = service.client
    t0 = time.monotonic()
    cid = wf.create_cluster(client, plugin, f"bench-{plugin}-{n}", workers=2)
    c = wf.wait_cluster(client, cid, timeout=300)
    create = time.monotonic() - t0
    secured = "none" not in str(c["info"])
    assert secured == (INSECURE_ENV not in service.env), c["info"]
    template = wf.job_template(client, f"wc-{plugin}-{n}", wf.JOB_TYPE[plugin],
                               wf.upload_binary(client, f"wc-{plugin}-{n}.py", SCRIPTS[plugin].read_bytes()))
    t0 = time.monotonic()
    jid = wf.run_job(client, template, cid, job_configs={"args": [f"file://{text}"]})
    j = wf.wait_job(client, jid, timeout=300)
    job = time.monotonic() - t0
    assert j["info"]["status"] == "SUCCEEDED", wf.logs(client, jid, "stderr")[-2000:]
    wf.ok(client.delete(f"/clusters/{cid}"), 204)
    wf.wait_gone(client, cid, timeout=180)
    return create, job


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "security-results.md")
    args = ap.parse_args()
    samples: dict[tuple[str, str], dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="oasis-bench-security-") as tmp, \
            tempfile.TemporaryDirectory(prefix="oasis-bench-data-") as data:
        # jobs run as their project's Unix user, who cannot pass through `tmp` (0700, it holds the services' state)
        Path(data).chmod(0o755)
        text = Path(data) / "input.txt"
        text.write_text("the river the city\nthe data river\n" * 20000)
        text.chmod(0o644)
        services = {"secured": Oasis(Path(tmp) / "secured"), "insecure": Oasis(Path(tmp) / "insecure")}
        services["insecure"].env[INSECURE_ENV] = "1"
        try:
            for s in services.values():
                s.start_api("up")
            for n in range(args.reps):
                for plugin in ("dask", "spark"):
                    for mode, s in services.items():
                        create, job = one_run(s, plugin, text, n)
                        got = samples.setdefault((plugin, mode), {"create": [], "job": []})
                        got["create"].append(create)
                        got["job"].append(job)
                        print(f"{plugin:5} {mode:8} create {create:6.2f} s  job {job:6.2f} s", flush=True)
        finally:
            for s in services.values():
                s.stop()
    med = {k: {m: statistics.median(v) for m, v in d.items()} for k, d in samples.items()}
    lines = [f"# Framework security: secured against insecure (median of {args.reps})", "",
             f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `bench/security.py` on "
             f"{platform.machine()}, two `oasis up` side by side, runs alternating; 1 master + 2 workers on the "
             "`local` site. A small shared machine is noisy: read ±20%.", "",
             "| plugin | measure | secured s | insecure s | secured / insecure |", "|---|---|---:|---:|---:|"]
    for plugin in ("dask", "spark"):
        for what, label in (("create", "create → Active"), ("job", "wordcount job → SUCCEEDED")):
            sec, ins = med[(plugin, "secured")][what], med[(plugin, "insecure")][what]
            lines.append(f"| {plugin} | {label} | {sec:.2f} | {ins:.2f} | {sec / ins:.2f}x |")
    lines += ["", "Samples (s):"]
    for (plugin, mode), d in sorted(samples.items()):
        lines.append(f"- {plugin} {mode}: create {', '.join(f'{x:.2f}' for x in d['create'])}; "
                     f"job {', '.join(f'{x:.2f}' for x in d['job'])}")
    text_out = "\n".join(lines) + "\n"
    args.out.write_text(text_out)
    print(text_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
