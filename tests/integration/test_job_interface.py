"""Sahara's job interface and JVM Spark jobs through a real `oasis up`, on one Spark cluster for the module: a Shell
job whose template maps named values to positional arguments (one of them a data source, which reaches the job
as its URL), a param and a config, and prints what it got; and a job from a jar, compiled here with javac against
the pyspark wheel's jars, run by spark-submit with `--class` from `edp.java.main_class`, as a Spark job (the jar
its main) whose output shows that the interface's config and argument arrived, and as a Java job (the jar among
its libs)."""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyspark
import pytest

from tests.integration import workflow as wf
from tests.integration.cluster_checks import assert_nothing_left
from tests.integration.services import Oasis

pytestmark = pytest.mark.spark

JAVA_SOURCE = Path(__file__).parent / "java" / "oasis" / "test" / "Count.java"
SPARK_JARS = Path(pyspark.__file__).parent / "jars"

SHELL = b"""#!/bin/sh
echo "args=$*"
echo "mode=$MODE"
cat "${3#file://}"
"""
SHELL_INTERFACE = [
    {"name": "greeting", "mapping_type": "args", "location": "0", "required": True},
    {"name": "times", "mapping_type": "args", "location": "1", "value_type": "number", "default": "2"},
    {"name": "input", "mapping_type": "args", "location": "2", "value_type": "data_source", "required": True},
    {"name": "mode", "mapping_type": "params", "location": "MODE", "default": "slow"},
    {"name": "level", "mapping_type": "configs", "location": "oasis.level", "value_type": "number"},
]


@pytest.fixture(scope="module")
def spark_cluster(service: Oasis) -> Iterator[str]:
    """One Spark cluster for the module's jobs, deleted at its end."""
    client = service.client
    cid = wf.create_cluster(client, "spark", "interface", workers=1)
    try:
        wf.wait_cluster(client, cid)
        yield cid
    finally:
        wf.ok(client.delete(f"/clusters/{cid}"), 204)
        wf.wait_gone(client, cid)
    assert_nothing_left(service.state_dir, cid)


def test_a_shell_jobs_interface_values_arrive(service: Oasis, spark_cluster: str, data_dir: Path) -> None:
    client = service.client
    data = data_dir / "in.txt"
    data.write_text("data from the source\n")
    url = f"file://{data}"
    ds = wf.ok(client.post("/data-sources", json={"name": "iface-in", "type": "file", "url": url}), 202
               )["data_source"]["id"]
    main = wf.upload_binary(client, "iface.sh", SHELL)
    template = wf.ok(client.post("/job-templates", json={"name": "iface-shell", "type": "Shell", "mains": [main],
                                                         "interface": SHELL_INTERFACE}), 202)["job_template"]["id"]
    refused = client.post("/jobs", json={"job_template_id": template, "cluster_id": spark_cluster,
                                         "interface": {"greeting": "hi", "input": ds, "colour": "red"}})
    assert refused.status_code == 400 and refused.json()["error_name"] == "INVALID_DATA", refused.text
    assert "colour" in refused.json()["error_message"]

    values = {"greeting": "hello", "input": ds, "mode": "fast", "level": 3}
    jid = wf.run_job(client, template, spark_cluster, interface=values, job_configs={"args": ["tail"]})
    j = wf.wait_job(client, jid)
    assert j["info"]["status"] == "SUCCEEDED", wf.logs(client, jid, "stderr")[-3000:]
    assert wf.logs(client, jid).splitlines() == [f"args=hello 2 {url} tail", "mode=fast", "data from the source"]
    assert j["interface"] == values, "the job shows its values as given"
    assert j["job_configs"]["configs"]["oasis.level"] == 3  # a Shell job gets no configs: the row shows the mapping
    assert j["data_source_urls"] == {ds: url}


def test_a_jvm_spark_job_from_a_jar_runs_with_its_main_class(service: Oasis, spark_cluster: str,
                                                             tmp_path: Path) -> None:
    classes = tmp_path / "classes"
    subprocess.run(["javac", "-cp", f"{SPARK_JARS}/*", "-d", str(classes), str(JAVA_SOURCE)], check=True,
                   capture_output=True, timeout=300)
    jar = tmp_path / "count.jar"
    subprocess.run(["jar", "cf", str(jar), "-C", str(classes), "."], check=True, capture_output=True, timeout=120)

    client = service.client
    main = wf.upload_binary(client, "count.jar", jar.read_bytes())
    interface = [
        {"name": "greeting", "mapping_type": "configs", "location": "spark.oasis.greeting", "required": True},
        {"name": "rows", "mapping_type": "args", "location": "0", "value_type": "number", "required": True}]
    template = wf.ok(client.post("/job-templates", json={"name": "jvm-count", "type": "Spark", "mains": [main],
                                                         "interface": interface}), 202)["job_template"]["id"]
    jid = wf.run_job(client, template, spark_cluster, interface={"greeting": "hello", "rows": 100},
                     job_configs={"configs": {"edp.java.main_class": "oasis.test.Count"}})
    j = wf.wait_job(client, jid, timeout=300)
    assert j["info"]["status"] == "SUCCEEDED", wf.logs(client, jid, "stderr")[-3000:]
    assert "count=100 greeting=hello master=spark" in wf.logs(client, jid).splitlines()
    assert j["job_configs"]["configs"] == {"edp.java.main_class": "oasis.test.Count",
                                           "spark.oasis.greeting": "hello"}
    assert j["job_configs"]["args"] == [100]

    # Sahara's Java type: the jar among the template's libs, the main class and the arguments in the job's configs
    java = wf.ok(client.post("/job-templates", json={"name": "jvm-java", "type": "Java", "libs": [main]}), 202
                 )["job_template"]["id"]
    jid = wf.run_job(client, java, spark_cluster, job_configs={"configs": {"edp.java.main_class": "oasis.test.Count"},
                                                               "args": ["7"]})
    j = wf.wait_job(client, jid, timeout=300)
    assert j["info"]["status"] == "SUCCEEDED", wf.logs(client, jid, "stderr")[-3000:]
    assert "count=7 greeting=none master=spark" in wf.logs(client, jid).splitlines()
