"""Wordcount on Spark over object storage: `spark-submit wordcount_spark_objects.py INPUT_URL [OUTPUT_URL]`.
INPUT_URL and OUTPUT_URL may be swift://container/path, s3://bucket/key or file:///path; without arguments they
come from OASIS_INPUT_URL / OASIS_OUTPUT_URL.

The pyspark wheel has no Hadoop filesystem for S3 or Swift, and the job holds no credential: the driver lists the
input from the access oasis gave this job (OASIS_DATA_ACCESS_FILE), the object URLs are parallelized, and each
executor fetches its own objects and writes its own part of the output through signed URLs (`oasis.jobkit`).
(The other way, through Hadoop's own filesystems such as file:// or hdfs://, is wordcount_spark.py.)

Prints the most frequent words as `word<TAB>count` (WORDCOUNT_TOP of them, default 10; ties by word)."""
import os
import re
import sys
from operator import add

from pyspark.sql import SparkSession

from oasis import jobkit

WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def words(line):
    return WORD.findall(line.lower())


def main(argv):
    source = argv[1] if len(argv) > 1 else os.environ.get("OASIS_INPUT_URL")
    target = argv[2] if len(argv) > 2 else os.environ.get("OASIS_OUTPUT_URL")
    top = int(os.environ.get("WORDCOUNT_TOP", "10"))
    if not source:
        print("usage: wordcount_spark_objects.py INPUT_URL [OUTPUT_URL]", file=sys.stderr)
        return 2
    spark = SparkSession.builder.appName("oasis-wordcount-objects").getOrCreate()
    try:
        counts = jobkit.spark_lines(spark, source).flatMap(words).map(lambda w: (w, 1)).reduceByKey(add)
        for word, n in counts.takeOrdered(top, key=lambda kv: (-kv[1], kv[0])):
            print(f"{word}\t{n}")
        sys.stdout.flush()
        if target:
            written = jobkit.spark_save_text(counts.map(lambda kv: f"{kv[0]}\t{kv[1]}"), target)
            print(f"# {written} lines written to {target}", file=sys.stderr)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
