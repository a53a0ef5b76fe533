#!/usr/bin/env python3
"""Object storage through oasis against the clients used directly, on the same objects of one real Swift
(tempauth + s3api + memcached, started here and stopped by PID):

    .venv/bin/python bench/storage.py [--mb N] [--reps R]

Rows: write and read N MB (one object) with
  - swiftclient (native Swift, direct)      vs oasis SwiftStore (the deployment's or a data source's store)
  - boto3 (S3 through s3api, direct)        vs oasis S3Store
  - jobkit through a job's scoped URLs (Swift temp URL with a prefix; S3 presigned), as a job's worker does
Medians of R repetitions; MB/s. Results go to bench/storage-results.md (printed too)."""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.devswift import KEY, USER, SwiftServer  # noqa: E402
from oasis.edp import access  # noqa: E402
from oasis.storage import store_for  # noqa: E402


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "storage-results.md")
    args = ap.parse_args()
    data = os.urandom(args.mb * 1024 * 1024)
    rows: list[tuple[str, str, float, float]] = []
    with SwiftServer() as swift:
        import boto3
        import swiftclient
        from botocore.config import Config

        container = f"bench-{uuid.uuid4().hex[:8]}"
        swift_creds = {"auth_url": swift.auth_url, "user": USER, "password": KEY}
        s3_creds = {"endpoint": swift.endpoint, "accesskey": USER, "secretkey": KEY}
        ours_swift = store_for(f"swift://{container}/", swift_creds, create=True)
        ours_s3 = store_for(f"s3://{container}/", s3_creds)
        sc = swiftclient.Connection(authurl=swift.auth_url, user=USER, key=KEY)
        b3 = boto3.client("s3", endpoint_url=swift.endpoint, aws_access_key_id=USER, aws_secret_access_key=KEY,
                          region_name="us-east-1",
                          config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
        job = str(uuid.uuid4())
        grant = access.grant(job, [("in", f"swift://{container}/data", swift_creds, "rw"),
                                   ("s3", f"s3://{container}/data", s3_creds, "rw")], None, lifetime_s=3600)
        # as a job gets it: a private file that jobkit reads (again whenever the engine rewrites it)
        access_file = swift.base / access.FILE_NAME
        access_file.write_text(grant.env[access.ENV])
        access_file.chmod(0o600)
        os.environ[access.FILE_ENV] = str(access_file)
        from oasis import jobkit

        cases = [
            ("Swift", "swiftclient (direct)", lambda: sc.put_object(container, "data/a", data),
             lambda: sc.get_object(container, "data/a")[1]),
            ("Swift", "oasis SwiftStore", lambda: ours_swift.put("data/a", data), lambda: ours_swift.get("data/a")),
            ("Swift", "jobkit, temp URL (job)", lambda: jobkit.write_bytes(f"swift://{container}/data/a", data),
             lambda: jobkit.read_bytes(f"swift://{container}/data/a")),
            ("S3", "boto3 (direct)", lambda: b3.put_object(Bucket=container, Key="data/part-00000", Body=data),
             lambda: b3.get_object(Bucket=container, Key="data/part-00000")["Body"].read()),
            ("S3", "oasis S3Store", lambda: ours_s3.put("data/part-00000", data),
             lambda: ours_s3.get("data/part-00000")),
            ("S3", "jobkit, presigned (job)",
             lambda: jobkit.write_bytes(f"s3://{container}/data/part-00000", data),
             lambda: jobkit.read_bytes(f"s3://{container}/data/part-00000")),
        ]
        for api, who, put, get in cases:
            puts = [timed(put) for _ in range(args.reps)]
            gets = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                got = get()
                gets.append(time.perf_counter() - t0)
                assert len(got) == len(data)
            rows.append((api, who, statistics.median(puts), statistics.median(gets)))
            print(f"{api:5} {who:26} write {args.mb / rows[-1][2]:7.1f} MB/s  read {args.mb / rows[-1][3]:7.1f} MB/s",
                  flush=True)
        access.revoke(job, [(f"swift://{container}/data", swift_creds)], None)
        sc.close()
    lines = [f"# Object storage: oasis against the clients directly ({args.mb} MB object, median of {args.reps})", "",
             "One real Swift 2.38 on loopback (tempauth, s3api, memcached; one object server, one disk). "
             "`.venv/bin/python bench/storage.py`", "",
             "| API | client | write s | write MB/s | read s | read MB/s |", "|---|---|---|---|---|---|"]
    for api, who, put, get in rows:
        lines.append(f"| {api} | {who} | {put:.3f} | {args.mb / put:.1f} | {get:.3f} | {args.mb / get:.1f} |")
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
