"""Sahara's job interface: a template's arguments validated at create, a job's values checked and mapped into its
job_configs at create (oasis/edp/interface.py), and the same through the API."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from oasis.db.models import Job
from oasis.edp.interface import SECRET_KEY, SUBSTITUTE_BY_ID, InterfaceError, apply, check_template
from oasis.plugins.base import PluginError
from oasis.plugins.spark import SparkPlugin

from tests.unit.conftest import World
from tests.unit.test_api_edp import active_cluster, binary
from tests.unit.test_cli import FakeService, fake  # noqa: F401 (the CLI's fake service, a fixture)
from tests.unit.test_cli import run as cli
from tests.unit.test_history import WORKDIR, view

KNOWN = {"ds-1", "ds-2"}


def known(ds_id: str) -> str:
    if ds_id not in KNOWN:
        raise LookupError(f"Data source with id '{ds_id}' not found")
    return ds_id


def arg(name: str, mapping_type: str, location: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "mapping_type": mapping_type, "location": location, **extra}


SHELL = [arg("greeting", "args", "0", required=True),
         arg("times", "args", "1", value_type="number", default="2"),
         arg("input", "args", "2", value_type="data_source", required=True),
         arg("mode", "params", "MODE", default="slow"),
         arg("level", "configs", "oasis.level", value_type="number")]


def test_a_template_interface_is_stored_with_every_field() -> None:
    stored = check_template("Shell", SHELL, known)
    assert stored[0] == {"name": "greeting", "description": "", "mapping_type": "args", "location": "0",
                         "value_type": "string", "required": True, "default": None}
    assert [a["value_type"] for a in stored] == ["string", "number", "data_source", "string", "number"]
    assert [a["required"] for a in stored] == [True, False, True, False, False]
    assert check_template("Spark", None, known) == [] and check_template("Spark", [], known) == []


@pytest.mark.parametrize(("job_type", "interface", "message"), [
    ("Shell", [arg("a", "args", "0", required=True), arg("a", "params", "A")], "Name must be unique"),
    ("Spark", [arg("p", "params", "P")], "Only mapping types ['configs', 'args'] are allowed for job type Spark"),
    ("Dask", [arg("p", "params", "P")], "Only mapping types"),
    ("Shell", [arg("a", "args", "1", required=True)], "unbroken integer sequence"),
    ("Shell", [arg("a", "args", "0", required=True), arg("b", "args", "2", required=True)], "unbroken"),
    ("Shell", [arg("a", "args", "zero", required=True)], "unbroken"),
    ("Shell", [arg("a", "args", "-0", required=True)], "unbroken"),
    ("Shell", [arg("a", "args", "0", required=True), arg("b", "args", "0", required=True)], "unbroken"),
    ("Shell", [arg("a", "configs", "k"), arg("b", "configs", "k")], "mapping type and location must be unique"),
    ("Shell", [arg("a", "configs", "k", required=True, default="x")], "'a' is required, so it cannot have a"),
    ("Shell", [arg("a", "args", "0")], "Positional argument 'a' must be given a default"),
    ("Shell", [arg("a", "configs", "k", value_type="number", default="ten")], "default 'ten' of argument 'a' is "
                                                                              "not a valid number"),
    ("Shell", [arg("a", "configs", "k", value_type="number", default=True)], "not a valid number"),
    ("Shell", [arg("a", "configs", "k", default=5)], "default '5' of argument 'a' is not a valid string"),
    ("Shell", [arg("a", "configs", "k", value_type="data_source", default=7)], "not a valid data source id"),
    ("Spark", [arg("key", "configs", "fs.s3a.secret.key")], "a credential: a job shows its interface values"),
    ("Shell", [arg("pw", "params", "DB_PASSWORD")], "a credential"),
])
def test_a_template_interface_is_refused(job_type: str, interface: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(InterfaceError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        check_template(job_type, interface, known)


def test_a_data_source_default_must_be_one_the_caller_may_use() -> None:
    assert check_template("Shell", [arg("d", "configs", "k", value_type="data_source", default="ds-1")], known)
    with pytest.raises(LookupError, match="ds-9"):
        check_template("Shell", [arg("d", "configs", "k", value_type="data_source", default="ds-9")], known)


def test_values_land_at_their_locations_with_the_defaults_filled_in() -> None:
    interface = check_template("Shell", SHELL, known)
    given = {"args": ["extra"], "params": {"OTHER": "x"}}
    out = apply(interface, {"greeting": "hello", "input": "ds-1", "level": 3}, given, known)
    assert out["args"] == ["hello", "2", "ds-1", "extra"]  # the job's own args after the interface's
    assert out["params"] == {"OTHER": "x", "MODE": "slow"}
    assert out["configs"] == {"oasis.level": 3, SUBSTITUTE_BY_ID: True}
    assert given == {"args": ["extra"], "params": {"OTHER": "x"}}, "the job's own configs are not changed"


def test_no_interface_leaves_the_job_configs_alone() -> None:
    assert apply([], None, {"args": ["a"]}, known) == {"args": ["a"]}
    assert apply([], {}, {}, known) == {}
    # an optional config without a default is simply absent
    assert apply(check_template("Shell", [arg("k", "configs", "k")], known), None, {}, known) == {}


def test_an_explicit_entry_wins_over_a_default_and_may_repeat_a_given_value() -> None:
    interface = check_template("Shell", SHELL, known)
    base = {"greeting": "hi", "input": "ds-2"}
    assert apply(interface, base, {"params": {"MODE": "fast"}}, known)["params"] == {"MODE": "fast"}
    out = apply(interface, {**base, "level": "4"}, {"configs": {"oasis.level": "4"}}, known)
    assert out["configs"]["oasis.level"] == "4"
    assert apply(interface, {**base, "times": 5}, {}, known)["args"] == ["hi", 5, "ds-2"]


@pytest.mark.parametrize(("values", "job_configs", "message"), [
    ({"greeting": "hi", "input": "ds-1", "colour": "red"}, {}, r"Argument names \['colour'\] were not found"),
    ({"greeting": "hi"}, {}, r"Argument names \['input'\] are required for this job"),
    ({"greeting": "hi", "input": "ds-1", "level": "3"}, {"configs": {"oasis.level": "2"}},
     "'level' was passed both through the interface and in location 'configs'.'oasis.level'"),
    ({"greeting": "hi", "input": "ds-1", "mode": "a"}, {"params": {"MODE": "b"}}, "passed both"),
    ({"greeting": "hi", "input": "ds-1", "times": "many"}, {}, "value 'many' of argument 'times' is not a valid "
                                                               "number"),
    ({"greeting": "hi", "input": "ds-1", "times": float("nan")}, {}, "not a valid number"),
    ({"greeting": 5, "input": "ds-1"}, {}, "value '5' of argument 'greeting' is not a valid string"),
    ({"greeting": "hi", "input": ["ds-1"]}, {}, "not a valid data source id"),
    ({"greeting": "hi", "input": "ds-1"}, {"configs": {SUBSTITUTE_BY_ID: "false"}}, "must not be false"),
])
def test_a_job_interface_is_refused(values: dict[str, Any], job_configs: dict[str, Any], message: str) -> None:
    with pytest.raises(InterfaceError, match=message):
        apply(check_template("Shell", SHELL, known), values, job_configs, known)


def test_a_data_source_value_must_be_one_the_caller_may_use() -> None:
    with pytest.raises(LookupError, match="ds-9"):
        apply(check_template("Shell", SHELL, known), {"greeting": "hi", "input": "ds-9"}, {}, known)


@pytest.mark.parametrize("number", ["3", "-2", "+1.5", ".5", "1e3", "2.", 7, 2.5, -1])
def test_numbers_that_parse(number: Any) -> None:
    interface = check_template("Shell", [arg("n", "configs", "n", value_type="number")], known)
    assert apply(interface, {"n": number}, {}, known)["configs"]["n"] == number


# --- through the API -------------------------------------------------------------------------------------------


def test_the_api_validates_the_template_and_maps_the_job(world: World) -> None:
    main = binary(world, "run.sh", b"#!/bin/sh\necho hi\n")
    ds = world.post("/v2/data-sources", {"name": "in", "type": "file", "url": "file:///tmp/in"}).json()["data_source"]
    r = world.post("/v2/job-templates", {"name": "bad", "type": "Spark", "mains": [main["id"]],
                                         "interface": [arg("p", "params", "P")]})
    assert (r.status_code, r.json()["error_name"]) == (400, "INVALID_DATA") and "Only mapping types" in r.text
    r = world.post("/v2/job-templates", {"name": "bad", "type": "Shell", "mains": [main["id"]],
                                         "interface": [arg("d", "args", "0", value_type="data_source",
                                                           default="nope")]})
    assert (r.status_code, r.json()["error_name"]) == (400, "INVALID_REFERENCE")
    r = world.post("/v2/job-templates", {"name": "shell", "type": "Shell", "mains": [main["id"]],
                                         "interface": SHELL})
    assert r.status_code == 202, r.text
    jt = r.json()["job_template"]
    assert [a["value_type"] for a in jt["interface"]] == ["string", "number", "data_source", "string", "number"]
    cid = active_cluster(world)

    def run(body: dict[str, Any], who: str = "alice") -> Any:
        return world.post("/v2/jobs", {"job_template_id": jt["id"], "cluster_id": cid, **body}, who=who)

    values = {"greeting": "hello", "input": ds["id"], "mode": "fast"}
    r = run({"interface": values, "job_configs": {"args": ["tail"]}})
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    assert job["interface"] == values, "the job keeps its values as given"
    assert job["job_configs"]["args"] == ["hello", "2", ds["id"], "tail"]
    assert job["job_configs"]["params"] == {"MODE": "fast"}
    assert job["job_configs"]["configs"] == {SUBSTITUTE_BY_ID: True}
    with world.db.session() as s:
        assert s.get(Job, job["id"]).job_configs["args"] == ["hello", "2", ds["id"], "tail"]

    def refused(body: dict[str, Any], who: str = "alice") -> tuple[int, str, str]:
        r = run(body, who)
        return r.status_code, r.json().get("error_name", ""), r.json().get("error_message", "")

    assert refused({"interface": {"greeting": "hi"}})[:2] == (400, "INVALID_DATA")
    assert refused({"interface": {**values, "nope": "x"}})[:2] == (400, "INVALID_DATA")
    assert refused({"interface": {**values, "times": "x"}})[:2] == (400, "INVALID_DATA")
    assert refused({"interface": {**values, "input": "no-such-source"}})[:2] == (400, "INVALID_REFERENCE")
    code, name, message = refused({"interface": values, "job_configs": {"params": {"MODE": "slow"}}})
    assert (code, name) == (400, "INVALID_DATA") and "passed both" in message
    assert refused({})[:2] == (400, "INVALID_DATA"), "required arguments without an interface map"


def test_another_projects_data_source_is_not_a_value(world: World) -> None:
    main = binary(world, "run.sh", b"#!/bin/sh\necho hi\n")
    theirs = world.post("/v2/data-sources", {"name": "b", "type": "file", "url": "file:///tmp/b"},
                        who="bob").json()["data_source"]
    r = world.post("/v2/job-templates", {"name": "t", "type": "Shell", "mains": [main["id"]],
                                         "interface": [arg("d", "args", "0", value_type="data_source",
                                                           required=True)]})
    jt = r.json()["job_template"]
    cid = active_cluster(world)
    r = world.post("/v2/jobs", {"job_template_id": jt["id"], "cluster_id": cid, "interface": {"d": theirs["id"]}})
    assert (r.status_code, r.json()["error_name"]) == (400, "INVALID_REFERENCE")


def test_a_java_jobs_main_class_may_come_from_its_interface(world: World) -> None:
    lib = binary(world, "app.jar", b"PK")
    r = world.post("/v2/job-templates", {"name": "java", "type": "Java", "libs": [lib["id"]], "interface": [
        arg("main class", "configs", "edp.java.main_class", default="org.example.Main"),
        arg("rows", "args", "0", value_type="number", required=True)]})
    assert r.status_code == 202, r.text
    jt = r.json()["job_template"]
    cid = active_cluster(world)
    r = world.post("/v2/jobs", {"job_template_id": jt["id"], "cluster_id": cid, "interface": {"rows": 10}})
    assert r.status_code == 202, r.text
    assert r.json()["job"]["job_configs"] == {"configs": {"edp.java.main_class": "org.example.Main"}, "args": [10]}


# --- the CLI ---------------------------------------------------------------------------------------------------


def test_the_cli_sends_a_templates_interface_and_a_jobs_values(fake: FakeService, tmp_path: Path) -> None:
    spec = tmp_path / "interface.json"
    spec.write_text(json.dumps(SHELL))
    fake.objects["job-binaries"].append({"id": "b-1", "name": "run.sh"})
    fake.objects["data-sources"].append({"id": "ds-1", "name": "text"})
    fake.objects["clusters"].append({"id": "c-1", "name": "c", "status": "Active"})
    result = cli("job", "template", "create", "sh", "--type", "Shell", "--main", "run.sh", "--interface", str(spec))
    assert result.exit_code == 0, result.output
    assert fake.bodies("POST", "/v2/job-templates")[0]["interface"] == SHELL
    result = cli("job", "run", "--template", "sh", "--cluster", "c", "--value", "greeting=hi", "--value",
                 "input=text", "--value", "level=3")
    assert result.exit_code == 0, result.output
    # a data_source argument's value is the data source's id, looked up by name; the others go as typed
    assert fake.bodies("POST", "/v2/jobs")[0]["interface"] == {"greeting": "hi", "input": "ds-1", "level": "3"}
    spec.write_text("[not json")
    result = cli("job", "template", "create", "bad", "--type", "Shell", "--main", "run.sh", "--interface", str(spec))
    assert result.exit_code != 0 and "--interface" in result.output and "Traceback" not in result.output


# --- JVM jobs on Spark -----------------------------------------------------------------------------------------


def test_a_jar_runs_with_spark_submit_class() -> None:
    plugin = SparkPlugin()
    main_class = {"edp.java.main_class": "org.example.Count"}
    argv = plugin.launch(view("spark"), "Spark", f"{WORKDIR}/count.jar", [f"{WORKDIR}/dep.jar"], main_class, ["9"],
                         WORKDIR).argv
    assert argv[argv.index("--class") + 1] == "org.example.Count"
    assert argv[argv.index("--jars") + 1] == f"{WORKDIR}/dep.jar" and argv[-2:] == [f"{WORKDIR}/count.jar", "9"]
    # a Java template's jar is among its libs: the first is the application, the others its --jars
    argv = plugin.launch(view("spark"), "Java", None, [f"{WORKDIR}/app.jar", f"{WORKDIR}/dep.jar"], main_class,
                         ["9"], WORKDIR).argv
    assert argv[argv.index("--jars") + 1] == f"{WORKDIR}/dep.jar" and argv[-2:] == [f"{WORKDIR}/app.jar", "9"]
    argv = plugin.launch(view("spark"), "Java", None, [f"{WORKDIR}/app.jar"], main_class, [], WORKDIR).argv
    assert "--jars" not in argv and argv[-1] == f"{WORKDIR}/app.jar"
    with pytest.raises(PluginError, match="edp.java.main_class"):
        plugin.launch(view("spark"), "Spark", f"{WORKDIR}/count.jar", [], {}, [], WORKDIR)


def test_the_credential_keys_are_those_the_api_blanks() -> None:
    from oasis.api.views import _SECRET
    assert SECRET_KEY.pattern == _SECRET.pattern and SECRET_KEY.flags == _SECRET.flags
