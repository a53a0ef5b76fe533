"""The Spark Connect gateway with the stock pyspark Connect client (pyspark[connect], unmodified) against a real
Spark cluster of `oasis up`: DataFrames, Python UDFs, artifacts, who is refused, a long query interrupted, and a
gateway process restarted under a live session. One cluster for the module: each costs a minute or more."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import workflow as wf
from tests.integration.services import Oasis, free_port, stop_process, wait_until

pytestmark = pytest.mark.spark

HELPER = "def triple(x):\n    return x * 3\n"


OPENED: list = []  # every Connect session the module made


@pytest.fixture(scope="module")
def oasis(service: Oasis) -> Iterator[Oasis]:
    # pyspark's Connect client sets SPARK_CONNECT_MODE_ENABLED in this process's environment, which would make
    # every later test's spark-submit a Connect client too: the environment is put back as it was
    before = dict(os.environ)
    try:
        yield service  # the module's one `oasis up` (tests/conftest.py)
    finally:
        # A client left open calls its server again when the process exits (pyspark's atexit clean-up), and
        # retries for ever once the gateway is gone: the test process would never end. Closing sends nothing.
        for spark in OPENED:
            spark.client.close()
        OPENED.clear()
        os.environ.clear()
        os.environ.update(before)


@pytest.fixture(scope="module")
def cluster(oasis: Oasis) -> Iterator[str]:
    cid = wf.create_cluster(oasis.client, "spark", "sc", workers=1)  # Connect on by default: started on demand
    try:
        wf.wait_cluster(oasis.client, cid, timeout=600)
        yield cid
    finally:  # its daemons and its directories go with it
        oasis.client.delete(f"/clusters/{cid}")
        wf.wait_gone(oasis.client, cid, timeout=300)


def token_of(client) -> str:  # noqa: ANN001
    return client.headers["X-Auth-Token"]


def url_for(oasis: Oasis, cid: str, token: str | None = None) -> str:
    """The string the API hands out (client-config's spark_connect), with the caller's token added."""
    cfg = wf.ok(oasis.client.get(f"/clusters/{cid}/client-config"))["client_config"]
    url = cfg["spark_connect"]["url"]
    assert url == f"sc://localhost:{oasis.connect_port}/;x-oasis-cluster=sc", url
    assert "token" not in url and cfg["spark_connect"]["ca"] is None  # plaintext on loopback without --tls
    return url.replace(";x-oasis-cluster", f";token={token or token_of(oasis.client)};x-oasis-cluster")


def session(url: str):  # noqa: ANN201
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.remote(url).create()
    OPENED.append(spark)
    return spark


def connect_steps(oasis: Oasis, cid: str) -> list[dict]:
    cluster = wf.ok(oasis.client.get(f"/clusters/{cid}", params={"show_progress": "true"}))["cluster"]
    return [st for st in cluster["provision_progress"] if st["step_name"] == "Start the Spark Connect server"]


def test_the_first_session_starts_the_clusters_server(oasis: Oasis, cluster: str) -> None:
    assert connect_steps(oasis, cluster) == [], "no server until someone connects"
    spark = session(url_for(oasis, cluster))
    try:
        assert spark.range(5).count() == 5  # held at the gateway until the server runs, then answered
    finally:
        spark.stop()
    steps = connect_steps(oasis, cluster)
    assert len(steps) == 1 and steps[0]["successful"] is True, steps
    shown = wf.ok(oasis.client.get(f"/clusters/{cluster}"))["cluster"]
    assert shown["status"] == "Active" and "connect_started" not in shown
    assert "started by the first session" in shown["info"]["Spark"]["Spark Connect"]


def test_dataframes_a_udf_and_an_uploaded_module(oasis: Oasis, cluster: str, tmp_path: Path) -> None:
    from pyspark.sql.functions import col, udf

    spark = session(url_for(oasis, cluster))
    try:
        df = spark.createDataFrame([("a", 1), ("b", 2), ("a", 3)], ["k", "v"])
        assert sorted(tuple(r) for r in df.groupBy("k").sum("v").collect()) == [("a", 4), ("b", 2)]
        plus = udf(lambda x: x + 1, "long")
        assert [r.p for r in spark.range(4).select(plus(col("id")).alias("p")).collect()] == [1, 2, 3, 4]

        module = tmp_path / "oasis_connect_helper.py"
        module.write_text(HELPER)
        spark.addArtifacts(str(module), pyfile=True)

        @udf("long")
        def tripled(x: int) -> int:
            import oasis_connect_helper  # only on the cluster's Python path through the uploaded artifact

            return oasis_connect_helper.triple(x)

        assert [r[0] for r in spark.range(3).select(tripled("id")).collect()] == [0, 3, 6]
        # executed on the cluster: its master, not a local one
        assert spark.conf.get("spark.master").startswith("spark://127.0.0.1:")
    finally:
        spark.stop()


def test_other_projects_and_bad_tokens_are_refused(oasis: Oasis, cluster: str) -> None:
    _, bob = oasis.add_project("connect-p2", "connect-bob", "bob-password")
    url = url_for(oasis, cluster)
    theirs = url.replace(f"token={token_of(oasis.client)}", f"token={token_of(bob)}")
    for ref in ("sc", cluster):  # by name or id: as if it did not exist
        spark = session(theirs.replace("x-oasis-cluster=sc", f"x-oasis-cluster={ref}"))
        with pytest.raises(Exception) as e:
            spark.range(1).count()
        assert f"no Spark cluster '{ref}' in your project" in str(e.value), e.value
    spark = session(theirs.replace("x-oasis-cluster=sc", "x-oasis-cluster=no-such-cluster"))
    with pytest.raises(Exception) as missing:
        spark.range(1).count()
    assert "no Spark cluster 'no-such-cluster' in your project" in str(missing.value)
    spark = session(url.replace(f"token={token_of(oasis.client)}", "token=not-a-token"))
    with pytest.raises(Exception) as e:
        spark.range(1).count()
    assert "the token is not valid" in str(e.value) and "UNAUTHENTICATED" in str(e.value), e.value


def test_a_long_query_is_interrupted_and_the_session_goes_on(oasis: Oasis, cluster: str) -> None:
    spark = session(url_for(oasis, cluster))
    ended: list[BaseException | None] = []

    def endless() -> None:  # about 14 hours of 50 ms sleeps on the cluster's executor: only an interrupt ends it
        spark.addTag("endless")  # tags are the thread's
        try:
            spark.range(0, 10**6, 1, 1).selectExpr("reflect('java.lang.Thread', 'sleep', cast(50 as long))").collect()
            ended.append(None)
        except Exception as e:  # noqa: BLE001 - what the client raised is the point
            ended.append(e)

    runner = threading.Thread(target=endless, daemon=True)
    try:
        runner.start()
        # the tag's operation is interrupted as soon as the server has it (an empty list until then)
        interrupted = wait_until(lambda: spark.interruptTag("endless"), 60, "the query to be running", 0.2)
        assert len(interrupted) == 1
        runner.join(60)
        assert not runner.is_alive(), "the interrupted query did not end"
        assert ended and ended[0] is not None and "OPERATION_CANCELED" in str(ended[0]), ended
        assert spark.range(3).count() == 3  # the same session, through the gateway, goes on
        assert spark.interruptAll() == []  # nothing left running
    finally:
        spark.stop()


def start_gateway(oasis: Oasis, port: int) -> subprocess.Popen:
    argv = [sys.executable, "-m", "oasis.cli.main", "gateway", "--state-dir", str(oasis.state_dir),
            "--connect-port", str(port)]
    log = oasis.state_dir / f"gateway-{port}-{len(list(oasis.state_dir.glob(f'gateway-{port}-*.log')))}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=oasis.env, stdout=out, stderr=subprocess.STDOUT)

    def serving() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"oasis gateway exited with {proc.returncode}; see {log}")
        return "spark connect gateway on" in log.read_text(errors="replace")

    wait_until(serving, 60, "oasis gateway to serve")
    return proc


def test_a_session_survives_a_restart_of_the_gateway(oasis: Oasis, cluster: str) -> None:
    port = free_port()
    url = url_for(oasis, cluster).replace(f"localhost:{oasis.connect_port}", f"localhost:{port}")
    proc = start_gateway(oasis, port)
    spark = session(url)
    try:
        assert spark.range(5).selectExpr("sum(id)").collect()[0][0] == 10
        session_id = spark.session_id
        stop_process(proc)  # by its PID; it keeps nothing
        assert proc.returncode is not None
        proc = start_gateway(oasis, port)
        assert spark.range(6).selectExpr("sum(id)").collect()[0][0] == 15
        assert spark.session_id == session_id
    finally:
        spark.stop()
        stop_process(proc)
