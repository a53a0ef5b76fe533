"""A real Spark standalone cluster through the embedded default: few tests, since each costs seconds."""
from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.integration import workflow as wf
from tests.integration.cluster_checks import assert_clean_processes, assert_nothing_left
from tests.integration.services import Oasis

PYSPARK_WORDCOUNT = b"""
import sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("wordcount").getOrCreate()
lines = spark.sparkContext.textFile(sys.argv[1], 4)
counts = lines.flatMap(lambda l: l.split()).map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b)
for word, n in counts.takeOrdered(2, key=lambda kv: -kv[1]):
    print(word, n)
print("master", spark.sparkContext.master.split(":")[0])  # the cluster's, not a local one
spark.stop()
"""

SHELL = b"""#!/bin/sh
echo "greeting=$GREETING args=$*"
"""


def test_spark_cluster_pyspark_and_shell_jobs(embedded: Oasis, data_dir: Path) -> None:
    client = embedded.client
    text = data_dir / "input.txt"
    text.write_text("spark oasis spark\n" * 300)
    cid = wf.create_cluster(client, "spark", "spark", workers=1)
    c = wf.wait_cluster(client, cid)
    assert c["info"]["Spark"]["Master"].startswith("spark://127.0.0.1:")
    assert_clean_processes(embedded.state_dir, cid, expected=2)

    template = wf.job_template(client, "pywc", "Spark", wf.upload_binary(client, "wc.py", PYSPARK_WORDCOUNT))
    jid = wf.run_job(client, template, cid, job_configs={"args": [f"file://{text}"]})
    j = wf.wait_job(client, jid)
    assert j["info"]["status"] == "SUCCEEDED", wf.logs(client, jid, "stderr")[-3000:]
    assert wf.logs(client, jid).splitlines() == ["spark 600", "oasis 300", "master spark"]

    shell = wf.job_template(client, "hello", "Shell", wf.upload_binary(client, "hello.sh", SHELL))
    jid = wf.run_job(client, shell, cid, job_configs={"params": {"GREETING": "hi"}, "args": ["a", "b"]})
    assert wf.wait_job(client, jid)["info"]["status"] == "SUCCEEDED"
    assert wf.logs(client, jid).strip() == "greeting=hi args=a b"

    wf.ok(client.delete(f"/clusters/{cid}"), 204)
    wf.wait_gone(client, cid)
    assert_nothing_left(embedded.state_dir, cid)


def test_a_daemon_that_cannot_bind_fails_the_create_at_once_with_its_log_line(embedded: Oasis) -> None:
    # A port oasis does not hand out: the external shuffle service's fixed 7337, which a cluster config turns on.
    held = socket.socket()
    try:
        held.bind(("127.0.0.1", 7337))
        held.listen()
    except OSError:
        pass  # something else holds it already: just as good
    try:
        started = time.monotonic()
        cid = wf.create_cluster(embedded.client, "spark", "no-bind", workers=1, flavor="1",
                                cluster_configs={"general": {"spark.shuffle.service.enabled": "true"}})
        c = wf.wait_cluster(embedded.client, cid, status="Error")
    finally:
        held.close()
    assert time.monotonic() - started < 90, "failed at once, not after the 120 s readiness timeout"
    reason = c["status_description"]
    assert "worker failed to start: " in reason and "Address already in use" in reason.splitlines()[0], reason
    assert_nothing_left(embedded.state_dir, cid)
