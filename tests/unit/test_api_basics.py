"""The API's frame: versions, microversions, authentication, routing variants, error shapes."""
from __future__ import annotations

from oasis.api import plugins as plugins_module

from tests.unit.conftest import World


def test_version_document_needs_no_token(world: World) -> None:
    r = world.client.get("/")
    assert r.status_code == 300
    versions = {v["id"]: v for v in r.json()["versions"]}
    assert versions["v2"]["status"] == "CURRENT"
    assert versions["v2"]["links"][0]["href"] == "http://testserver/v2/"
    assert versions["v1.1"]["links"][0]["href"].endswith("/v1.1/")
    assert world.client.get("/v2").json()["version"]["id"] == "v2"


def test_microversion_header(world: World) -> None:
    r = world.get("/v2/plugins")
    assert r.headers["OpenStack-API-Version"] == "data-processing 2.0"
    assert r.headers["Vary"] == "OpenStack-API-Version"
    ok = world.client.get("/v2/plugins", headers={**world.h(), "OpenStack-API-Version": "data-processing latest"})
    assert ok.status_code == 200
    bad = world.client.get("/v2/plugins", headers={**world.h(), "OpenStack-API-Version": "data-processing two"})
    assert bad.status_code == 400 and bad.json()["error_name"] == "BAD_REQUEST"
    assert bad.headers["OpenStack-API-Version"] == "data-processing 2.0"
    unsupported = world.client.get("/v2/plugins", headers={**world.h(), "OpenStack-API-Version": "data-processing 2.7"})
    assert unsupported.status_code == 406
    assert unsupported.json()["max_version"] == "2.0"
    other_service = world.client.get("/v2/plugins", headers={**world.h(), "OpenStack-API-Version": "compute 2.90"})
    assert other_service.status_code == 200


def test_token_required(world: World) -> None:
    r = world.client.get("/v2/clusters")
    assert r.status_code == 401
    assert r.json()["error_code"] == 401 and r.json()["error_name"] == "UNAUTHORIZED"
    r = world.client.get("/v2/clusters", headers={"X-Auth-Token": "not-a-token"})
    assert r.status_code == 401


def test_project_in_path(world: World) -> None:
    p1, p2 = world.projects["p1"], world.projects["p2"]
    assert world.get(f"/v2/{p1}/plugins").status_code == 200
    assert world.get(f"/v2/{p2}/plugins").status_code == 401
    assert world.get(f"/v2/{p2}/plugins", who="admin").status_code == 200  # admins may name any project


def test_json_suffix_and_project_variants(world: World) -> None:
    p1 = world.projects["p1"]
    for path in ("/v2/plugins.json", f"/v2/{p1}/plugins.json", "/v2/plugins/spark.json"):
        assert world.get(path).status_code == 200, path
    assert world.get("/v2/plugins/spark.json").json()["plugin"]["name"] == "spark"


def test_reader_cannot_write(world: World) -> None:
    assert world.get("/v2/clusters", who="carol").status_code == 200
    r = world.post("/v2/data-sources", {"name": "d", "type": "file", "url": "file:///tmp/x"}, who="carol")
    assert r.status_code == 403 and r.json()["error_name"] == "FORBIDDEN"


def test_unknown_route_and_method(world: World) -> None:
    r = world.get("/v2/nothing-here/at/all")
    assert r.status_code == 404 and r.json()["error"] == 404 and "error_message" in r.json()
    r = world.client.post("/", json={})
    assert r.status_code == 405 and r.json()["error"] == 405


def test_malformed_and_non_object_bodies(world: World) -> None:
    h = {**world.h(), "Content-Type": "application/json"}
    r = world.client.post("/v2/clusters", content=b"{not json", headers=h)
    assert r.status_code == 400 and r.json()["error_name"] == "MALFORMED_REQUEST_BODY"
    r = world.client.post("/v2/clusters", content=b"[1, 2]", headers=h)
    assert r.status_code == 400 and r.json()["error_name"] == "MALFORMED_REQUEST_BODY"
    r = world.client.post("/v2/clusters", content=b"\xff\xfe", headers=h)
    assert r.status_code == 400
    r = world.client.post("/v2/clusters", content=b"", headers=h)
    assert r.status_code == 400 and r.json()["error_name"] == "VALIDATION_ERROR"


def test_schema_errors_name_the_path(world: World) -> None:
    r = world.post("/v2/node-group-templates", {"name": "n", "plugin_name": "spark", "plugin_version": "x",
                                               "flavor_id": "2", "node_processes": [], "bogus": 1})
    assert r.status_code == 400
    body = r.json()
    assert body["error_name"] == "VALIDATION_ERROR"
    assert "node_processes: [] should be non-empty" in body["error_message"]
    assert "'bogus' was unexpected" in body["error_message"]
    assert "Error ID:" in body["error_message"]


def test_unexpected_error_is_a_sahara_500_without_traceback(world: World, monkeypatch, caplog) -> None:
    def boom() -> list[str]:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(plugins_module, "all_job_types", boom)
    r = world.get("/v2/job-types")
    assert r.status_code == 500
    body = r.json()
    assert body["error_name"] == "INTERNAL_SERVER_ERROR"
    assert "secret internals" not in r.text and "Traceback" not in r.text
    assert "secret internals" in caplog.text  # the operator still gets it


def test_bad_query_params(world: World) -> None:
    r = world.get("/v2/clusters", params={"bogus": "1"})
    assert r.status_code == 400 and r.json()["error_name"] == "INVALID_PARAMS_ON_REQUEST"
    assert world.get("/v2/plugins", params={"x": "1"}).status_code == 400
