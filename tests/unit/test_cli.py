"""The `oasis` CLI against a fake Sahara v2 + Keystone v3 service on an httpx.MockTransport: clouds.yaml discovery,
auth, tables, request bodies, and errors shown as one line instead of a traceback."""
from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from oasis.cli import common
from oasis.cli.client import (ApiError, ConfigError, OasisClient, authenticate, clouds_yaml_candidates, endpoint_for,
                              error_from, load_cloud)
from oasis.cli.demo import top_words
from oasis.cli.main import app

TOKEN = "tok-123"


class FakeService:
    """Just enough of oasis's API: Keystone's token call, and lists/creates of a few resources."""

    def __init__(self, catalog_url: str | None = "http://oasis.test:8386/v2") -> None:
        self.catalog_url = catalog_url
        self.requests: list[httpx.Request] = []
        self.objects: dict[str, list[dict]] = {"clusters": [], "job-binaries": [], "job-templates": [],
                                               "data-sources": [], "jobs": [], "cluster-templates": []}
        self.password = "secret"
        self.logs = {"stdout": "the\t3\nriver\t2\n", "stderr": "boom\n"}
        self.new_cluster = {"status": "Validating"}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, method = request.url.path, request.method
        if path == "/v3/auth/tokens" and method == "POST":
            body = json.loads(request.content)
            if body["auth"]["identity"]["password"]["user"]["password"] != self.password:
                return httpx.Response(401, json={"error": {"code": 401, "title": "Unauthorized",
                                                           "message": "The request you have made requires authentication."}})
            catalog = [{"type": "identity", "endpoints": [{"interface": "public", "url": "http://oasis.test:8386/v3"}]}]
            if self.catalog_url:
                catalog.append({"type": "data-processing", "name": "sahara",
                                "endpoints": [{"interface": "admin", "url": "http://wrong.test/v2"},
                                              {"interface": "public", "url": self.catalog_url,
                                               "region": "RegionOne"}]})
            return httpx.Response(201, headers={"X-Subject-Token": TOKEN},
                                  json={"token": {"catalog": catalog, "project": {"id": "p1"}, "user": {"name": "admin"}}})
        if request.headers.get("X-Auth-Token") != TOKEN:
            return httpx.Response(401, json={"error_code": 401, "error_name": "UNAUTHORIZED", "error_message": "no token"})
        m = re.fullmatch(r"/v2/([a-z-]+)(?:/([^/]+))?(?:/(logs))?", path)
        if not m:
            return httpx.Response(404, json={"error": 404, "error_message": f"The resource could not be found: {path}"})
        resource, oid, sub = m.groups()
        if resource == "plugins":
            plugins = [{"name": "dask", "title": "Dask distributed", "versions": ["2026.8"], "description": "d"},
                       {"name": "spark", "title": "Apache Spark", "versions": ["4.3"], "description": "s"}]
            if oid:
                return httpx.Response(200, json={"plugin": next(p for p in plugins if p["name"] == oid)})
            return httpx.Response(200, json={"plugins": plugins})
        if resource == "job-binary-internals" and method == "PUT":
            return httpx.Response(202, json={"job_binary_internal": {"id": "jbi-1", "name": oid,
                                                                     "datasize": len(request.content)}})
        if sub == "logs":
            return httpx.Response(200, text=self.logs[request.url.params.get("stream", "stdout")])
        singular = {"clusters": "cluster", "job-binaries": "job_binary", "job-templates": "job_template",
                    "data-sources": "data_source", "jobs": "job", "cluster-templates": "cluster_template"}
        plural = {"job-binaries": "binaries"}.get(resource, resource.replace("-", "_"))
        if resource not in self.objects:
            return httpx.Response(404, json={"error": 404, "error_message": "not found"})
        items = self.objects[resource]
        if method == "GET" and not oid:
            return httpx.Response(200, json={plural: items})
        if method == "POST" and not oid:
            obj = {"id": str(uuid.uuid4()), **json.loads(request.content)}
            if resource == "clusters":
                obj.update(self.new_cluster)
            if resource == "jobs":
                obj["info"] = {"status": "PENDING"}
            items.append(obj)
            return httpx.Response(202, json={singular[resource]: obj})
        found = [o for o in items if o["id"] == oid]
        if not found:
            return httpx.Response(404, json={"error_code": 404, "error_name": "NOT_FOUND",
                                             "error_message": f"Object with id '{oid}' not found\nError ID: "
                                                              "0b8a6d2e-1111-2222-3333-444455556666"})
        if method == "DELETE":
            items.remove(found[0])
            return httpx.Response(204)
        if method == "PATCH":
            return httpx.Response(202, json={singular[resource]: found[0]})
        return httpx.Response(200, json={singular[resource]: found[0]})

    def bodies(self, method: str, path: str) -> list[dict]:
        return [json.loads(r.content) for r in self.requests if r.method == method and r.url.path == path]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeService:
    service = FakeService()
    monkeypatch.setattr(common, "TRANSPORT", httpx.MockTransport(service))
    monkeypatch.setattr(common.console, "width", 200)
    monkeypatch.chdir(tmp_path)
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(yaml.safe_dump({"clouds": {"oasis": {"auth": {
        "auth_url": "http://oasis.test:8386/v3", "username": "admin", "password": "secret", "project_name": "admin",
        "user_domain_name": "Default", "project_domain_name": "Default"}, "region_name": "RegionOne"}}}))
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    monkeypatch.delenv("OS_CLOUD", raising=False)
    monkeypatch.delenv("OASIS_URL", raising=False)
    monkeypatch.delenv("OS_TOKEN", raising=False)
    return service


def run(*args: str):
    return CliRunner().invoke(app, list(args))


# --- clouds.yaml and auth -----------------------------------------------------------------------------------------


def test_clouds_yaml_lookup_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    explicit, state = tmp_path / "explicit.yaml", tmp_path / "state"
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(explicit))
    paths = clouds_yaml_candidates(state)
    assert paths[0] == explicit and paths[1] == tmp_path / "clouds.yaml"
    assert paths[2] == tmp_path / "home/.config/openstack/clouds.yaml" and paths[-1] == state / "clouds.yaml"

    state.mkdir()
    (state / "clouds.yaml").write_text(yaml.safe_dump({"clouds": {"oasis": {"auth": {"auth_url": "http://s/v3"}}}}))
    assert load_cloud("oasis", state)["auth"]["auth_url"] == "http://s/v3"  # only the state dir has it
    (tmp_path / "clouds.yaml").write_text(yaml.safe_dump({"clouds": {"oasis": {"auth": {"auth_url": "http://cwd/v3"}},
                                                                     "other": {}}}))
    cloud = load_cloud("oasis", state)
    assert cloud["auth"]["auth_url"] == "http://cwd/v3" and cloud["_path"] == str(tmp_path / "clouds.yaml")
    with pytest.raises(ConfigError, match="no cloud named 'nope'"):
        load_cloud("nope", state)


def test_default_state_dir_follows_oasis_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OASIS_STATE_DIR", str(tmp_path / "st"))
    monkeypatch.delenv("OS_CLIENT_CONFIG_FILE", raising=False)
    assert clouds_yaml_candidates()[-1] == tmp_path / "st" / "clouds.yaml"


def test_password_auth_uses_the_catalog_endpoint(fake: FakeService) -> None:
    cloud = load_cloud("oasis")
    session = authenticate(cloud, httpx.MockTransport(fake))
    assert (session.endpoint, session.token, session.project_id) == ("http://oasis.test:8386/v2", TOKEN, "p1")
    body = fake.bodies("POST", "/v3/auth/tokens")[0]["auth"]
    assert body["identity"]["password"]["user"] == {"name": "admin", "password": "secret",
                                                    "domain": {"name": "Default"}}
    assert body["scope"]["project"] == {"name": "admin", "domain": {"name": "Default"}}


def test_auth_without_catalog_entry_falls_back_to_v2_on_the_auth_host(fake: FakeService) -> None:
    fake.catalog_url = None
    cloud = {"auth": {"auth_url": "http://oasis.test:8386", "username": "admin", "password": "secret",
                      "project_name": "admin"}}
    assert authenticate(cloud, httpx.MockTransport(fake)).endpoint == "http://oasis.test:8386/v2"


def test_endpoint_for() -> None:
    assert endpoint_for("http://h:8386") == "http://h:8386/v2"
    assert endpoint_for("http://h:8386/v2/") == "http://h:8386/v2"
    assert endpoint_for("http://h:8386/v2/abc123") == "http://h:8386/v2/abc123"


def test_error_bodies_of_every_shape() -> None:
    sahara = error_from(httpx.Response(400, json={"error_code": 400, "error_name": "VALIDATION_ERROR",
                                                  "error_message": "name: too long\nError ID: 1234-abcd"}))
    assert (sahara.code, sahara.name, sahara.message) == (400, "VALIDATION_ERROR", "name: too long")
    keystone = error_from(httpx.Response(401, json={"error": {"code": 401, "title": "Unauthorized", "message": "no"}}))
    assert (keystone.name, keystone.message) == ("UNAUTHORIZED", "no")
    werkzeug = error_from(httpx.Response(405, json={"error": 405, "error_message": "The method PUT is not allowed"}))
    assert (werkzeug.code, werkzeug.message) == (405, "The method PUT is not allowed")
    plain = error_from(httpx.Response(502, text="Bad gateway from proxy"))
    assert (plain.code, plain.name, plain.message) == (502, "BAD_GATEWAY", "Bad gateway from proxy")


def test_list_follows_markers() -> None:
    pages = {None: {"clusters": [{"id": "a"}, {"id": "b"}], "markers": {"next": "b", "prev": None}},
             "b": {"clusters": [{"id": "c"}], "markers": {"next": None, "prev": "a"}}}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=pages[request.url.params.get("marker")])

    client = OasisClient("http://h/v2", "t", httpx.MockTransport(handler))
    assert [c["id"] for c in client.list("clusters")] == ["a", "b", "c"]


# --- commands -----------------------------------------------------------------------------------------------------


def test_plugin_list_renders_a_table(fake: FakeService) -> None:
    result = run("plugin", "list")
    assert result.exit_code == 0, result.output
    assert re.search(r"│ dask\s+│ Dask distributed\s+│ 2026.8", result.stdout)
    assert re.search(r"│ spark\s+│ Apache Spark\s+│ 4.3", result.stdout)
    # every call after the token request carries the token, to the catalog's public endpoint
    assert all(r.headers["X-Auth-Token"] == TOKEN and r.url.host == "oasis.test"
               for r in fake.requests[1:])


def test_json_output(fake: FakeService) -> None:
    fake.objects["clusters"].append({"id": "c1", "name": "alpha", "status": "Active", "plugin_name": "dask",
                                     "node_groups": [{"count": 1}, {"count": 2}]})
    result = run("--json", "cluster", "list")
    assert result.exit_code == 0
    assert json.loads(result.stdout)[0]["name"] == "alpha"
    table = run("cluster", "list").stdout
    assert re.search(r"│ c1\s+│ alpha\s+│ dask\s+│\s+│ Active\s+│ 3\s+│", table)


def test_cluster_create_from_plugin_builds_default_node_groups(fake: FakeService) -> None:
    result = run("cluster", "create", "wc", "--plugin", "dask", "--workers", "3")
    assert result.exit_code == 0, result.output
    body = fake.bodies("POST", "/v2/clusters")[0]
    assert body["plugin_name"] == "dask" and body["plugin_version"] == "2026.8"
    assert body["node_groups"] == [
        {"name": "master", "node_processes": ["scheduler"], "count": 1, "flavor_id": "2"},
        {"name": "worker", "node_processes": ["worker"], "count": 3, "flavor_id": "2"}]
    assert "cluster wc" in result.stdout and "Validating" in result.stdout


def test_cluster_create_with_explicit_node_groups(fake: FakeService) -> None:
    result = run("cluster", "create", "sp", "--plugin", "spark", "-n", "m:master:1:3", "-n", "w:worker:4")
    assert result.exit_code == 0, result.output
    groups = fake.bodies("POST", "/v2/clusters")[0]["node_groups"]
    assert groups == [{"name": "m", "node_processes": ["master"], "count": 1, "flavor_id": "3"},
                      {"name": "w", "node_processes": ["worker"], "count": 4, "flavor_id": "2"}]
    bad = run("cluster", "create", "x", "--plugin", "spark", "-n", "oops")
    assert bad.exit_code == 1 and "is not NAME:PROCESS" in bad.stderr and "Traceback" not in bad.output


def test_binary_upload_then_job_run_resolves_names(fake: FakeService, tmp_path: Path) -> None:
    script = tmp_path / "wc.py"
    script.write_text("print('hi')\n")
    result = run("binary", "upload", str(script))
    assert result.exit_code == 0, result.output
    put = [r for r in fake.requests if r.method == "PUT"][0]
    assert put.url.path == "/v2/job-binary-internals/wc.py" and put.content == b"print('hi')\n"
    assert put.headers["Content-Type"] == "application/octet-stream"
    assert fake.bodies("POST", "/v2/job-binaries")[0] == {"name": "wc.py", "url": "internal-db://jbi-1"}

    assert run("job", "template", "create", "wc", "--type", "Dask", "--main", "wc.py").exit_code == 0
    assert run("datasource", "create", "text", "--url", "in.txt").exit_code == 0
    assert fake.bodies("POST", "/v2/data-sources")[0]["url"] == (tmp_path / "in.txt").resolve().as_uri()
    fake.objects["clusters"].append({"id": str(uuid.uuid4()), "name": "c", "status": "Active"})
    result = run("job", "run", "--template", "wc", "--cluster", "c", "--input", "text",
                 "--arg", "datasource://text", "--config", "edp.x=1")
    assert result.exit_code == 0, result.output
    body = fake.bodies("POST", "/v2/jobs")[0]
    assert body["job_template_id"] == fake.objects["job-templates"][0]["id"]
    assert body["cluster_id"] == fake.objects["clusters"][0]["id"]
    assert body["input_id"] == fake.objects["data-sources"][0]["id"]
    assert body["job_configs"] == {"configs": {"edp.substitute_data_source_for_name": True, "edp.x": "1"},
                                   "args": ["datasource://text"], "params": {}}


def test_job_logs_and_cancel(fake: FakeService) -> None:
    fake.objects["jobs"].append({"id": "j1", "info": {"status": "RUNNING"}})
    assert run("job", "logs", "j1").stdout == "the\t3\nriver\t2\n"
    assert run("job", "logs", "j1", "--stderr").stdout == "boom\n"
    assert run("job", "cancel", "j1").exit_code == 0
    assert fake.bodies("PATCH", "/v2/jobs/j1") == [{"info": {"status": "cancel"}}]


def test_cluster_delete_force_sends_the_body(fake: FakeService) -> None:
    fake.objects["clusters"].append({"id": "c9", "name": "gone", "status": "Active"})
    result = run("cluster", "delete", "gone", "--force")
    assert result.exit_code == 0, result.output
    assert fake.bodies("DELETE", "/v2/clusters/c9") == [{"force": True}]


# --- errors without tracebacks ------------------------------------------------------------------------------------


def test_api_error_is_one_line(fake: FakeService) -> None:
    result = run("cluster", "show", "no-such-cluster")
    assert result.exit_code == 1
    assert "error: 404 NOT_FOUND: no cluster named or with id 'no-such-cluster'" in result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_not_found_by_id_strips_the_error_id(fake: FakeService) -> None:
    result = run("job", "show", "j404")
    assert result.exit_code == 1
    assert "error: 404 NOT_FOUND: Object with id 'j404' not found" in result.stderr
    assert "Error ID" not in result.stderr


def test_auth_failure_is_explained(fake: FakeService) -> None:
    fake.password = "changed"
    result = run("cluster", "list")
    assert result.exit_code == 1
    assert "error: 401 UNAUTHORIZED: authentication failed at http://oasis.test:8386/v3" in result.stderr
    assert "Traceback" not in result.output


def test_unreachable_service(monkeypatch: pytest.MonkeyPatch, fake: FakeService) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    monkeypatch.setattr(common, "TRANSPORT", httpx.MockTransport(refuse))
    result = run("cluster", "list")
    assert result.exit_code == 1
    assert "error: cannot reach the identity service at http://oasis.test:8386/v3: Connection refused" in result.stderr
    result = run("--url", "http://127.0.0.1:9", "--token", "t", "plugin", "list")
    assert result.exit_code == 1 and "cannot reach oasis at http://127.0.0.1:9/v2" in result.stderr
    assert "Traceback" not in result.output


def test_missing_cloud(fake: FakeService) -> None:
    result = run("--os-cloud", "elsewhere", "plugin", "list")
    assert result.exit_code == 1
    assert "no cloud named 'elsewhere' in clouds.yaml" in result.stderr


def test_url_and_token_skip_auth(fake: FakeService) -> None:
    result = run("--url", "http://oasis.test:8386", "--token", TOKEN, "plugin", "list")
    assert result.exit_code == 0, result.output
    assert [r.url.path for r in fake.requests] == ["/v2/plugins"]


def test_cluster_error_while_waiting_shows_the_reason(fake: FakeService) -> None:
    fake.new_cluster = {"status": "Error", "status_description": "Creating cluster failed for the following "
                        "reason(s): scheduler did not start", "provision_progress": [
                            {"step_name": "Start the following process(es): scheduler", "successful": False,
                             "events": [{"event_info": "port 20000 is busy", "successful": False}]}]}
    result = run("cluster", "create", "doomed", "--plugin", "dask", "--wait")
    assert result.exit_code == 1
    assert "cluster doomed went to Error: Creating cluster failed for the following reason(s): scheduler did " \
           "not start" in result.stderr
    assert "failed step: Start the following process(es): scheduler" in result.stderr
    assert "port 20000 is busy" in result.stderr and "Traceback" not in result.output


def test_cluster_wait_reports_the_time_to_active(fake: FakeService) -> None:
    fake.new_cluster = {"status": "Active", "info": {"Dask": {"Scheduler": "tcp://127.0.0.1:20000"}}}
    result = run("cluster", "create", "ok", "--plugin", "dask", "--wait")
    assert result.exit_code == 0, result.output
    assert re.search(r"cluster ok is Active after \d+\.\ds", result.stdout)
    assert "Dask Scheduler: tcp://127.0.0.1:20000" in result.stdout


def test_top_words_parses_word_tab_count_lines() -> None:
    assert top_words("the\t559\na\t269\n# a comment\nnot a count\n") == [("the", 559), ("a", 269)]


def test_api_error_is_typed() -> None:
    e = ApiError(400, "BAD", "nope")
    assert (e.code, e.name, e.message, str(e)) == (400, "BAD", "nope", "400 BAD: nope")


def test_cluster_verify_asks_sahara_s_verification_and_prints_each_check(fake: FakeService) -> None:
    checks = [{"name": "Scheduler alive", "status": "GREEN", "description": "The scheduler answers"},
              {"name": "Workers registered", "status": "YELLOW", "description": "1 of 2 workers are registered"}]
    fake.objects["clusters"].append({"id": "c7", "name": "dk", "status": "Active", "verification": {
        "id": "v1", "status": "YELLOW", "checks": checks, "updated_at": "2026-12-02T05:00:00"}})
    result = run("cluster", "verify", "dk", "--wait")
    assert fake.bodies("PATCH", "/v2/clusters/c7") == [{"verification": {"status": "START"}}]
    assert result.exit_code == 1, result.output  # not GREEN
    assert "Verification: YELLOW" in result.stdout
    assert "Workers registered" in result.stdout and "1 of 2 workers are registered" in result.stdout
    shown = run("cluster", "show", "dk")
    assert shown.exit_code == 0, shown.output
    assert "Verification: YELLOW" in shown.stdout and "The scheduler answers" in shown.stdout
    fake.objects["clusters"][0]["verification"] = {"id": "v2", "status": "GREEN", "checks": checks[:1]}
    assert run("cluster", "verify", "dk", "--wait").exit_code == 0
    as_json = json.loads(run("--json", "cluster", "verify", "dk").stdout)
    assert as_json["status"] == "GREEN" and as_json["checks"][0]["name"] == "Scheduler alive"
