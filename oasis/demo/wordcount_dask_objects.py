"""Wordcount on Dask over object storage: `python wordcount_dask_objects.py INPUT_URL [OUTPUT_URL]` with
DASK_SCHEDULER_ADDRESS set. INPUT_URL and OUTPUT_URL may be swift://container/path, s3://bucket/key or
file:///path; without arguments they come from OASIS_INPUT_URL / OASIS_OUTPUT_URL.

The job holds no credential: `oasis.jobkit` reads and writes through the signed URLs oasis gave this job
(its access file, OASIS_DATA_ACCESS_FILE). The client lists the input; each worker fetches its own objects and writes its own part of
the output. (The other way, for file:// and shared filesystems only, is wordcount_dask.py.)

Prints the most frequent words as `word<TAB>count` (WORDCOUNT_TOP of them, default 10; ties by word)."""
import os
import re
import sys

from distributed import Client

from oasis import jobkit

WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def words(line):
    return WORD.findall(line.lower())


def main(argv):
    source = argv[1] if len(argv) > 1 else os.environ.get("OASIS_INPUT_URL")
    target = argv[2] if len(argv) > 2 else os.environ.get("OASIS_OUTPUT_URL")
    top = int(os.environ.get("WORDCOUNT_TOP", "10"))
    if not source:
        print("usage: wordcount_dask_objects.py INPUT_URL [OUTPUT_URL]", file=sys.stderr)
        return 2
    with Client() as client:
        lines = jobkit.dask_bag_from(source)
        counts = lines.map(words).flatten().frequencies()
        result = counts.compute()
        for word, n in sorted(result, key=lambda kv: (-kv[1], kv[0]))[:top]:
            print(f"{word}\t{n}")
        sys.stdout.flush()
        if target:
            written = jobkit.dask_write_text(counts.map(lambda kv: f"{kv[0]}\t{kv[1]}"), target)
            print(f"# {written} lines written to {target}", file=sys.stderr)
        print(f"# {lines.npartitions} objects on {len(client.scheduler_info()['workers'])} workers",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
