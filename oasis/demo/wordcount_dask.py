"""Wordcount on Dask: `python wordcount_dask.py INPUT_URL [OUTPUT_URL]`, with DASK_SCHEDULER_ADDRESS set (oasis
sets it for Dask jobs), so that the work runs on the cluster's workers.

Prints the most frequent words as `word<TAB>count` lines on stdout (WORDCOUNT_TOP of them, default 10; ties by
word), and writes every word's count to OUTPUT_URL (a directory) when one is given. Without arguments the input
and output come from OASIS_INPUT_URL / OASIS_OUTPUT_URL, which oasis sets from the job's data sources."""
import os
import re
import sys

import dask.bag as db
from distributed import Client

WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def words(line):
    return WORD.findall(line.lower())


def local_path(url):
    return url[len("file://"):] if url.startswith("file://") else url


def main(argv):
    source = argv[1] if len(argv) > 1 else os.environ.get("OASIS_INPUT_URL")
    target = argv[2] if len(argv) > 2 else os.environ.get("OASIS_OUTPUT_URL")
    top = int(os.environ.get("WORDCOUNT_TOP", "10"))
    if not source:
        print("usage: wordcount_dask.py INPUT_URL [OUTPUT_URL]", file=sys.stderr)
        return 2
    if not os.environ.get("DASK_SCHEDULER_ADDRESS"):
        print("DASK_SCHEDULER_ADDRESS is not set: this script runs on a Dask cluster", file=sys.stderr)
        return 2
    with Client() as client:  # connects to DASK_SCHEDULER_ADDRESS: the tasks run on the cluster's workers
        workers = len(client.scheduler_info()["workers"])
        lines = db.read_text(local_path(source), blocksize=16 * 1024)
        counts = lines.map(words).flatten().frequencies()
        result = counts.compute()
        for word, n in sorted(result, key=lambda kv: (-kv[1], kv[0]))[:top]:
            print(f"{word}\t{n}")
        sys.stdout.flush()
        if target:
            path = local_path(target)
            os.makedirs(path, exist_ok=True)
            counts.map(lambda kv: f"{kv[0]}\t{kv[1]}").to_textfiles(os.path.join(path, "part-*.txt"))
        print(f"# {lines.npartitions} partitions on {workers} workers of {client.scheduler.address}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
