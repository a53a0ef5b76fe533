"""Wordcount on Spark: `spark-submit wordcount_spark.py INPUT_URL [OUTPUT_URL]`.

Prints the most frequent words as `word<TAB>count` lines on stdout (WORDCOUNT_TOP of them, default 10; ties by
word), and writes every word's count to OUTPUT_URL when one is given. Without arguments the input and output
come from OASIS_INPUT_URL / OASIS_OUTPUT_URL, which oasis sets from the job's data sources."""
import os
import re
import sys
from operator import add

from pyspark.sql import SparkSession

WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def words(line):
    return WORD.findall(line.lower())


def main(argv):
    source = argv[1] if len(argv) > 1 else os.environ.get("OASIS_INPUT_URL")
    target = argv[2] if len(argv) > 2 else os.environ.get("OASIS_OUTPUT_URL")
    top = int(os.environ.get("WORDCOUNT_TOP", "10"))
    if not source:
        print("usage: wordcount_spark.py INPUT_URL [OUTPUT_URL]", file=sys.stderr)
        return 2
    spark = SparkSession.builder.appName("oasis-wordcount").getOrCreate()
    try:
        sc = spark.sparkContext
        counts = sc.textFile(source, minPartitions=4).flatMap(words).map(lambda w: (w, 1)).reduceByKey(add)
        for word, n in counts.takeOrdered(top, key=lambda kv: (-kv[1], kv[0])):
            print(f"{word}\t{n}")
        sys.stdout.flush()
        if target:
            counts.map(lambda kv: f"{kv[0]}\t{kv[1]}").saveAsTextFile(target)
        print(f"# {sc.defaultParallelism} cores across the executors of {sc.master}", file=sys.stderr)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
