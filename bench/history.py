#!/usr/bin/env python3
"""What a Spark job's event logging costs: the same PySpark job through one `oasis up`, on one Spark cluster,
with `spark.eventLog.enabled` true (the default: the event log written on the master instance and kept in the
store when the job ends) and false, alternated, started here and stopped by PID:

    .venv/bin/python bench/history.py [--reps R]

Each run is `POST /v2/jobs` → SUCCEEDED as the API shows it (so the copy of the event log to the store, which
the engine makes before it records the end, is inside the "on" time). The job is the demo's wordcount
(oasis/demo/wordcount_spark.py) over a generated text. Medians of R; results go to bench/history-results.md
(printed too)."""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration import workflow as wf  # noqa: E402
from tests.integration.services import Oasis  # noqa: E402

SCRIPT = ROOT / "oasis" / "demo" / "wordcount_spark.py"
MODES = {"on": "true", "off": "false"}


def one_job(service: Oasis, template: str, cluster: str, text: Path, mode: str) -> tuple[float, int]:
    client = service.client
    t0 = time.monotonic()
    jid = wf.run_job(client, template, cluster, job_configs={
        "configs": {"spark.eventLog.enabled": MODES[mode]}, "args": [f"file://{text}"]})
    j = wf.wait_job(client, jid, timeout=600)
    took = time.monotonic() - t0
    assert j["info"]["status"] == "SUCCEEDED", wf.logs(client, jid, "stderr")[-2000:]
    kept = wf.ok(client.get(f"/jobs/{jid}/history"))["history"]
    assert bool(kept) == (mode == "on"), kept
    return took, sum(item["size"] for item in kept)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "history-results.md")
    args = ap.parse_args()
    samples: dict[str, list[float]] = {m: [] for m in MODES}
    sizes: list[int] = []
    loads = [os.getloadavg()[0]]  # the machine's 1-minute load average, at the start and after each run
    with tempfile.TemporaryDirectory(prefix="oasis-bench-history-") as tmp, \
            tempfile.TemporaryDirectory(prefix="oasis-bench-data-") as data:
        # jobs run as their project's Unix user, who cannot pass through `tmp` (0700, it holds the service's state)
        Path(data).chmod(0o755)
        text = Path(data) / "input.txt"
        text.write_text("the river the city\nthe data river\n" * 20000)
        text.chmod(0o644)
        service = Oasis(Path(tmp) / "state")
        try:
            service.start_api("up")
            client = service.client
            cid = wf.create_cluster(client, "spark", "bench-history", workers=args.workers)
            wf.wait_cluster(client, cid, timeout=300)
            template = wf.job_template(client, "wc-history", "Spark",
                                       wf.upload_binary(client, "wc-history.py", SCRIPT.read_bytes()))
            one_job(service, template, cid, text, "on")  # a warm-up, not counted: the first JVMs pay the page cache
            for n in range(args.reps):
                for mode in (("on", "off") if n % 2 == 0 else ("off", "on")):
                    took, size = one_job(service, template, cid, text, mode)
                    samples[mode].append(took)
                    loads.append(os.getloadavg()[0])
                    if mode == "on":
                        sizes.append(size)
                    print(f"{n}: event log {mode:3}  {took:6.2f} s", flush=True)
            wf.ok(client.delete(f"/clusters/{cid}"), 204)
            wf.wait_gone(client, cid, timeout=180)
        finally:
            service.stop()
    on, off = (statistics.median(samples[m]) for m in ("on", "off"))
    lines = [f"# Spark event logging: on against off (median of {args.reps})", "",
             f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `bench/history.py` on {platform.machine()} "
             f"(1-minute load average {min(loads):.1f} to {max(loads):.1f} during the run), one `oasis up`, one "
             f"Spark cluster (1 master + {args.workers} workers, the `local` site), the demo's wordcount over "
             "680 KiB, runs alternating (on, off; then off, on), after one warm-up run. A job: `POST /v2/jobs` → "
             "SUCCEEDED in the API, the event log's copy to the store included.", "",
             "| spark.eventLog.enabled | job → SUCCEEDED s | on / off |", "|---|---:|---:|",
             f"| true (the default) | {on:.2f} | {on / off:.2f}x |", f"| false | {off:.2f} | |", "",
             f"Paired (each repetition's on and off run back to back, which a drifting load hits alike): median "
             f"on / off {statistics.median(a / b for a, b in zip(samples['on'], samples['off'])):.2f}x.", "",
             f"Event log kept per job: {statistics.median(sizes) / 1024:.1f} KiB (zstd).", "", "Samples (s):"]
    for mode in MODES:
        lines.append(f"- {mode}: {', '.join(f'{x:.2f}' for x in samples[mode])}")
    text_out = "\n".join(lines) + "\n"
    args.out.write_text(text_out)
    print(text_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
