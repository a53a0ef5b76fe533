"""Node group and cluster templates, plugins, images, and the shared list behaviour (filters, pagination)."""
from __future__ import annotations

from typing import Any

from tests.unit.conftest import World, version_of


def ngt(name: str = "workers", processes: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "plugin_name": "spark", "plugin_version": version_of("spark"), "flavor_id": "m1.small",
            "node_processes": processes or ["worker"], **extra}


def make(world: World, path: str, body: dict, key: str, who: str = "alice") -> dict:
    r = world.post(path, body, who=who)
    assert r.status_code == 202, r.text
    return r.json()[key]


def test_plugins(world: World) -> None:
    names = {p["name"] for p in world.get("/v2/plugins").json()["plugins"]}
    assert names == {"spark", "dask"}
    one = world.get("/v2/plugins/dask").json()["plugin"]
    assert one["versions"] == [version_of("dask")] and "plugin_labels" in one and "version_labels" in one
    detail = world.get(f"/v2/plugins/spark/{version_of('spark')}").json()["plugin"]
    assert detail["node_processes"] == {"Spark": ["master", "worker"]}
    assert detail["required_image_tags"] == ["spark", version_of("spark")]
    assert isinstance(detail["configs"], list)
    assert world.get("/v2/plugins/hadoop").status_code == 404
    assert world.get("/v2/plugins/spark/0.1").json()["error_name"] == "NOT_FOUND"


def test_images(world: World) -> None:
    images = world.get("/v2/images").json()["images"]
    assert {i["name"] for i in images} == {"runtime", "bare"}  # unregistered images are not listed
    tagged = world.get("/v2/images", params=[("tags", "spark"), ("tags", version_of("spark"))]).json()["images"]
    assert [i["name"] for i in tagged] == ["runtime"]
    assert world.get("/v2/images", params={"tags": "spark,python"}).json()["images"] == []
    assert [i["name"] for i in world.get("/v2/images", params={"name": "bare"}).json()["images"]] == ["bare"]
    one = world.get(f"/v2/images/{world.image_id}").json()["image"]
    assert one["username"] == "oasis" and "spark" in one["tags"] and one["metadata"]["_sahara_tag_spark"] is True
    assert world.get("/v2/images/nope").status_code == 404


def test_job_types(world: World) -> None:
    types = {t["name"]: t for t in world.get("/v2/job-types").json()["job_types"]}
    assert {"Spark", "Java", "Shell", "Dask"} <= set(types)
    assert {p["name"] for p in types["Shell"]["plugins"]} == {"spark", "dask"}
    only = world.get("/v2/job-types", params={"plugin_name": "dask"}).json()["job_types"]
    assert {t["name"] for t in only} == {"Dask", "Shell"}
    hinted = world.get("/v2/job-types", params={"type": "Java", "hints": "true"}).json()["job_types"]
    versions = hinted[0]["plugins"][0]["versions"]
    assert "job_config" in versions[version_of("spark")]
    assert world.get("/v2/job-types", params={"plugin": "dask", "version": "0"}).json()["job_types"] == []


def test_node_group_template_lifecycle(world: World) -> None:
    t = make(world, "/v2/node-group-templates", ngt(description="w", node_configs={"general": {"a": 1}}),
             "node_group_template")
    assert t["flavor_id"] == "2"  # a flavor named by name is stored by id
    assert t["project_id"] == world.projects["p1"] and t["volumes_per_node"] == 0 and t["description"] == "w"
    assert world.get(f"/v2/node-group-templates/{t['id']}").json()["node_group_template"]["name"] == "workers"
    r = world.patch(f"/v2/node-group-templates/{t['id']}", {"name": "workers2", "flavor_id": "3"})
    assert r.status_code == 202
    updated = r.json()["node_group_template"]
    assert (updated["name"], updated["flavor_id"], updated["node_configs"]) == ("workers2", "3", {"general": {"a": 1}})
    export = world.get(f"/v2/node-group-templates/{t['id']}/export")
    assert export.status_code == 200 and "attachment" in export.headers["Content-Disposition"]
    exported = export.json()["node_group_template"]
    assert exported["flavor_id"] == "{flavor_id}" and "id" not in exported and "project_id" not in exported
    assert world.delete(f"/v2/node-group-templates/{t['id']}").status_code == 204
    assert world.get(f"/v2/node-group-templates/{t['id']}").status_code == 404


def test_node_group_template_refusals(world: World) -> None:
    def error(body: dict) -> tuple[int, str]:
        r = world.post("/v2/node-group-templates", body)
        return r.status_code, r.json().get("error_name")

    assert error(ngt(plugin_name="hadoop")) == (400, "INVALID_REFERENCE")
    assert error(ngt(plugin_version="0.0")) == (400, "INVALID_REFERENCE")
    assert error(ngt(processes=["namenode"])) == (400, "INVALID_REFERENCE")
    assert error(ngt(flavor_id="m9.huge")) == (400, "NOT_FOUND")
    assert error(ngt(image_id="no-such-image")) == (400, "INVALID_REFERENCE")
    assert error(ngt(availability_zone="mars")) == (400, "NOT_FOUND")
    assert error(ngt(name="bad_name!")) == (400, "VALIDATION_ERROR")
    assert error(ngt(name="-leading")) == (400, "VALIDATION_ERROR")
    assert error(ngt(name="x" * 51)) == (400, "VALIDATION_ERROR")
    make(world, "/v2/node-group-templates", ngt(), "node_group_template")
    assert error(ngt()) == (400, "NAME_ALREADY_EXISTS")
    assert world.get("/v2/node-group-templates/nope").status_code == 404
    assert world.patch("/v2/node-group-templates/nope", {"name": "x"}).status_code == 404
    assert world.delete("/v2/node-group-templates/nope").status_code == 404


def test_cluster_template_lifecycle_and_in_use(world: World) -> None:
    workers = make(world, "/v2/node-group-templates", ngt(), "node_group_template")
    body = {"name": "ct", "plugin_name": "spark", "plugin_version": version_of("spark"),
            "cluster_configs": {"general": {"x": "1"}}, "node_groups": [
                {"name": "master", "flavor_id": "m1.medium", "node_processes": ["master"], "count": 1},
                {"name": "workers", "node_group_template_id": workers["id"], "count": 3}]}
    ct = make(world, "/v2/cluster-templates", body, "cluster_template")
    assert ct["node_groups"][0]["flavor_id"] == "3"
    assert ct["node_groups"][1]["node_group_template_id"] == workers["id"]
    assert [t["id"] for t in world.get("/v2/cluster-templates").json()["cluster_templates"]] == [ct["id"]]
    shown = world.get(f"/v2/cluster-templates/{ct['id']}").json()["cluster_template"]
    assert shown["cluster_configs"] == {"general": {"x": "1"}} and shown["plugin_name"] == "spark"
    assert world.get(f"/v2/cluster-templates/{ct['id']}", who="bob").status_code == 404
    r = world.delete(f"/v2/node-group-templates/{workers['id']}")
    assert r.status_code == 400 and r.json()["error_name"] == "INVALID_REFERENCE" and "ct" in r.json()["error_message"]
    r = world.patch(f"/v2/cluster-templates/{ct['id']}", {"description": "d"})
    assert r.status_code == 202 and r.json()["cluster_template"]["description"] == "d"
    export = world.get(f"/v2/cluster-templates/{ct['id']}/export").json()["cluster_template"]
    assert export["node_groups"] == "{node_groups}" and export["default_image_id"] == "{default_image_id}"
    # A cluster made from it holds it.
    c = world.post("/v2/clusters", {"name": "from-ct", "plugin_name": "spark", "plugin_version": version_of("spark"),
                                    "cluster_template_id": ct["id"]})
    assert c.status_code == 202, c.text
    r = world.delete(f"/v2/cluster-templates/{ct['id']}")
    assert r.status_code == 400 and r.json()["error_name"] == "INVALID_REFERENCE"


def test_cluster_template_refusals(world: World) -> None:
    base = {"name": "ct", "plugin_name": "spark", "plugin_version": version_of("spark")}
    dup = {**base, "node_groups": [{"name": "a", "flavor_id": "1", "node_processes": ["master"], "count": 1},
                                   {"name": "a", "flavor_id": "1", "node_processes": ["worker"], "count": 1}]}
    assert world.post("/v2/cluster-templates", dup).json()["error_name"] == "INVALID_DATA"
    no_flavor = {**base, "node_groups": [{"name": "a", "node_processes": ["master"], "count": 1}]}
    assert world.post("/v2/cluster-templates", no_flavor).json()["error_name"] == "VALIDATION_ERROR"
    missing_ngt = {**base, "node_groups": [{"name": "a", "node_group_template_id": "nope", "count": 1}]}
    assert world.post("/v2/cluster-templates", missing_ngt).json()["error_name"] == "INVALID_REFERENCE"
    dask_ngt = make(world, "/v2/node-group-templates", {"name": "d", "plugin_name": "dask",
                                                       "plugin_version": version_of("dask"), "flavor_id": "1",
                                                       "node_processes": ["worker"]}, "node_group_template")
    wrong_plugin = {**base, "node_groups": [{"name": "a", "node_group_template_id": dask_ngt["id"], "count": 1}]}
    assert world.post("/v2/cluster-templates", wrong_plugin).json()["error_name"] == "INVALID_REFERENCE"


def test_other_projects_templates(world: World) -> None:
    private = make(world, "/v2/node-group-templates", ngt("private"), "node_group_template")
    public = make(world, "/v2/node-group-templates", ngt("public", is_public=True), "node_group_template")
    seen = {t["name"] for t in world.get("/v2/node-group-templates", who="bob").json()["node_group_templates"]}
    assert seen == {"public"}
    assert world.get(f"/v2/node-group-templates/{private['id']}", who="bob").status_code == 404
    r = world.patch(f"/v2/node-group-templates/{public['id']}", {"description": "mine"}, who="bob")
    assert r.status_code == 400 and r.json()["error_name"] == "UPDATE_FAILED"
    r = world.delete(f"/v2/node-group-templates/{public['id']}", who="bob")
    assert r.status_code == 400 and r.json()["error_name"] == "DELETION_FAILED"
    admin_seen = {t["name"] for t in world.get("/v2/node-group-templates", who="admin").json()["node_group_templates"]}
    assert admin_seen == {"private", "public"}


def test_protected_templates(world: World) -> None:
    t = make(world, "/v2/node-group-templates", ngt(is_protected=True), "node_group_template")
    r = world.patch(f"/v2/node-group-templates/{t['id']}", {"description": "x"})
    assert r.status_code == 400 and r.json()["error_name"] == "UPDATE_FAILED"
    assert world.delete(f"/v2/node-group-templates/{t['id']}").json()["error_name"] == "DELETION_FAILED"
    assert world.patch(f"/v2/node-group-templates/{t['id']}", {"is_public": True}).status_code == 202
    assert world.patch(f"/v2/node-group-templates/{t['id']}", {"is_protected": False, "description": "x"}).status_code == 202
    assert world.delete(f"/v2/node-group-templates/{t['id']}").status_code == 204


def test_pagination_filters_and_sorting(world: World) -> None:
    ids = [make(world, "/v2/node-group-templates", ngt(f"t{i}"), "node_group_template")["id"] for i in range(5)]
    make(world, "/v2/node-group-templates", {"name": "dask-w", "plugin_name": "dask", "plugin_version": version_of("dask"),
                                            "flavor_id": "1", "node_processes": ["worker"]}, "node_group_template")
    by_name = world.get("/v2/node-group-templates", params={"sort_by": "name", "plugin_name": "spark"}).json()
    assert [t["name"] for t in by_name["node_group_templates"]] == ["t0", "t1", "t2", "t3", "t4"]
    assert "markers" not in by_name
    desc = world.get("/v2/node-group-templates", params={"sort_by": "-name", "plugin_name": "spark"}).json()
    assert [t["name"] for t in desc["node_group_templates"]] == ["t4", "t3", "t2", "t1", "t0"]
    first = world.get("/v2/node-group-templates", params={"sort_by": "name", "plugin_name": "spark", "limit": 2}).json()
    assert [t["id"] for t in first["node_group_templates"]] == ids[:2]
    assert first["markers"] == {"prev": None, "next": ids[1]}
    second = world.get("/v2/node-group-templates", params={"sort_by": "name", "plugin_name": "spark", "limit": 2,
                                                          "marker": ids[1]}).json()
    assert [t["id"] for t in second["node_group_templates"]] == ids[2:4]
    assert second["markers"] == {"prev": None, "next": ids[3]}
    third = world.get("/v2/node-group-templates", params={"sort_by": "name", "plugin_name": "spark", "limit": 2,
                                                         "marker": ids[3]}).json()
    assert [t["id"] for t in third["node_group_templates"]] == ids[4:]
    assert third["markers"] == {"prev": ids[1], "next": None}
    named = world.get("/v2/node-group-templates", params={"name": "t3"}).json()["node_group_templates"]
    assert [t["id"] for t in named] == [ids[3]]

    def error(params: dict) -> tuple[int, str]:
        r = world.get("/v2/node-group-templates", params=params)
        return r.status_code, r.json().get("error_name")

    assert error({"limit": "0"}) == (400, "INVALID_DATA")
    assert error({"limit": "-3"}) == (400, "INVALID_DATA")
    assert error({"limit": "many"}) == (400, "INVALID_DATA")
    assert error({"marker": "nope"}) == (404, "NOT_FOUND")
    assert error({"sort_by": "flavor_id"}) == (400, "INVALID_DATA")
    assert error({"type": "x"}) == (400, "INVALID_PARAMS_ON_REQUEST")
