"""v1.1 and v1.0 next to v2, the image registry, plugin labels, verification, job executions, identity
administration and the OpenAPI document."""
from __future__ import annotations

from oasis.db.models import Cluster, Instance, NodeGroup
from tests.unit.conftest import World, cluster_body, version_of


def test_version_document_lists_v1(world: World) -> None:
    ids = [v["id"] for v in world.client.get("/").json()["versions"]]
    assert ids == ["v1.0", "v1.1", "v2"]
    assert world.client.get("/v1.0/").json()["version"]["id"] == "v1.0"


def test_v11_templates_use_v1_names(world: World) -> None:
    version = version_of("spark")
    body = {"name": "w", "plugin_name": "spark", "hadoop_version": version, "flavor_id": "2",
            "node_processes": ["worker"]}
    r = world.post(f"/v1.1/{world.projects['p1']}/node-group-templates", body)
    assert r.status_code == 202, r.text
    ngt = r.json()["node_group_template"]
    assert ngt["hadoop_version"] == version and ngt["tenant_id"] == world.projects["p1"]
    assert "plugin_version" not in ngt and "project_id" not in ngt
    # The same row through v2 and v1.0, and the v1 update verb (PUT) with its 202.
    assert world.get(f"/v2/node-group-templates/{ngt['id']}").json()["node_group_template"]["plugin_version"] == version
    assert world.get(f"/v1.0/node-group-templates/{ngt['id']}.json").status_code == 200
    r = world.put(f"/v1.1/node-group-templates/{ngt['id']}", {"description": "v1 update"})
    assert r.status_code == 202 and r.json()["node_group_template"]["description"] == "v1 update"
    assert world.put(f"/v2/node-group-templates/{ngt['id']}", {"description": "x"}).status_code == 405
    listed = world.get("/v1.1/node-group-templates", params={"sort_by": "hadoop_version"}).json()
    assert [t["id"] for t in listed["node_group_templates"]] == [ngt["id"]]


def test_v11_edp_names_and_executions(world: World) -> None:
    r = world.client.put("/v1.1/job-binary-internals/main.py", content=b"print(1)", headers=world.h())
    jbi = r.json()["job_binary_internal"]
    jb = world.post("/v1.1/job-binaries", {"name": "main", "url": f"internal-db://{jbi['id']}"}).json()["job_binary"]
    job = world.post("/v1.1/jobs", {"name": "j", "type": "Spark", "mains": [jb["id"]]})
    assert job.status_code == 202, job.text
    template = job.json()["job"]
    assert template["mains"][0]["tenant_id"] == world.projects["p1"]
    assert [j["id"] for j in world.get("/v1.1/jobs").json()["jobs"]] == [template["id"]]
    assert "job_config" in world.get("/v1.1/jobs/config-hints/Spark").json()

    with world.db.session() as s:
        cluster = Cluster(project_id=world.projects["p1"], name="c", plugin_name="spark",
                          plugin_version=version_of("spark"), site_id=world.site_id, status="Active", spec={})
        s.add(cluster)
        s.flush()
        cluster_id = cluster.id
    r = world.post(f"/v1.1/jobs/{template['id']}/execute", {"cluster_id": cluster_id,
                                                            "job_configs": {"configs": {"k": "v"}}})
    assert r.status_code == 202, r.text
    execution = r.json()["job_execution"]
    assert execution["job_id"] == template["id"] and "oozie_job_id" in execution and "job_template_id" not in execution
    assert execution["tenant_id"] == world.projects["p1"]
    assert world.get("/v1.1/job-executions").json()["job_executions"][0]["id"] == execution["id"]
    assert world.get(f"/v1.1/job-executions/{execution['id']}/refresh-status").json()["job_execution"]["id"] \
        == execution["id"]
    # A reader may look, not cancel (a GET that writes); the owner may.
    assert world.get(f"/v1.1/job-executions/{execution['id']}/cancel", who="carol").status_code == 403
    assert world.get(f"/v1.1/job-executions/{execution['id']}/cancel", who="bob").status_code == 404
    cancelled = world.get(f"/v1.1/job-executions/{execution['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["job_execution"]["info"]["status"] == "TOBEKILLED"
    # v2's client sends refresh_status=True, which upstream refused.
    assert world.get(f"/v2/jobs/{execution['id']}", params={"refresh_status": "True"}).status_code == 200
    suspend = world.patch(f"/v1.1/job-executions/{execution['id']}", {"info": {"status": "suspend"}})
    assert suspend.status_code == 400 and suspend.json()["error_name"] == "SUSPENDING_FAILED"
    assert world.delete(f"/v1.1/job-executions/{execution['id']}").status_code == 204


def test_v11_multiple_clusters_answer_ids(world: World) -> None:
    body = cluster_body("many", workers=1, count=2)
    body["hadoop_version"] = body.pop("plugin_version")
    assert world.post("/v1.1/clusters", body).json()["error_name"] == "VALIDATION_ERROR"  # count is v2's
    r = world.post("/v1.1/clusters/multiple", body)
    assert r.status_code == 202, r.text
    ids = r.json()["clusters"]
    assert len(ids) == 2 and all(isinstance(i, str) for i in ids)
    names = sorted(c["name"] for c in world.get("/v1.1/clusters").json()["clusters"])
    assert names == ["many-1", "many-2"]


def test_image_registry_is_admin_only(world: World) -> None:
    image = world.image_id
    assert world.post(f"/v2/images/{image}", {"username": "x"}).status_code == 403
    assert world.client.put(f"/v2/images/{image}/tags", json={"tags": ["a"]}, headers=world.h()).status_code == 403
    r = world.client.put(f"/v2/images/{image}/tags", json={"tags": ["a", "b"]}, headers=world.h("admin"))
    assert r.status_code == 200 and r.json()["tags"] == ["a", "b"]  # unwrapped, as saharaclient reads it
    assert world.get(f"/v2/images/{image}/tags").json() == {"tags": ["a", "b"]}
    assert world.post(f"/v1.1/images/{image}/tag", {"tags": ["c"]}, who="admin").json()["image"]["tags"] == \
        ["a", "b", "c"]
    assert world.post(f"/v1.1/images/{image}/untag", {"tags": ["a"]}, who="admin").json()["image"]["tags"] == \
        ["b", "c"]
    assert world.delete(f"/v2/images/{image}/tags", who="admin", body={"tags": ["b"]}).status_code == 204
    assert world.get(f"/v2/images/{image}").json()["image"]["tags"] == ["c"]
    assert world.delete(f"/v2/images/{image}", who="admin").status_code == 204
    assert world.get(f"/v2/images/{image}").status_code == 404
    assert image not in {i["id"] for i in world.get("/v2/images", who="admin").json()["images"]}
    r = world.post(f"/v2/images/{image}", {"username": "ubuntu", "description": "back"}, who="admin")
    assert r.status_code == 202 and r.json()["image"]["username"] == "ubuntu"
    assert world.get(f"/v2/images/{image}").json()["image"]["description"] == "back"


def test_plugin_labels(world: World) -> None:
    version = version_of("spark")
    change = {"version_labels": {version: {"enabled": {"status": False}}}}
    assert world.patch("/v2/plugins/spark", change).status_code == 403
    r = world.patch("/v2/plugins/spark", change, who="admin")
    assert r.status_code == 202 and r.json()["plugin"]["version_labels"][version]["enabled"]["status"] is False
    refused = world.post("/v2/clusters", cluster_body())
    assert refused.status_code == 400 and refused.json()["error_name"] == "INVALID_REFERENCE"
    immutable = world.patch("/v2/plugins/spark", {"plugin_labels": {"stable": {"status": False}}}, who="admin")
    assert immutable.status_code == 400
    assert world.patch("/v2/plugins/spark", {"version_labels": {"0.0": {"enabled": {"status": True}}}},
                       who="admin").status_code == 400
    world.patch("/v2/plugins/spark", {"version_labels": {version: {"enabled": {"status": True}}}}, who="admin")
    assert world.post("/v2/clusters", cluster_body()).status_code == 202


def test_verification(world: World) -> None:
    cid = world.post("/v2/clusters", cluster_body(workers=1)).json()["cluster"]["id"]
    start = {"verification": {"status": "START"}}
    assert world.patch(f"/v2/clusters/{cid}", start).json()["error_name"] == "INVALID_DATA"  # not Active yet
    with world.db.session() as s:
        c = s.get(Cluster, cid)
        c.status, c.op = "Active", None
        from sqlalchemy import select

        from oasis.db.models import Host
        host = s.scalars(select(Host)).first()
        for i, ng in enumerate(s.scalars(select(NodeGroup).where(NodeGroup.cluster_id == cid))):
            s.add(Instance(cluster_id=cid, node_group_id=ng.id, host_id=host.id, index=0, name=f"i{i}",
                           internal_ip="127.0.0.1", management_ip="127.0.0.1", workdir="/tmp", vcpus=1, ram_mb=1,
                           disk_gb=1))
    r = world.patch(f"/v2/clusters/{cid}", start)
    assert r.status_code == 202  # asked for: an engine runs it (tests/unit/test_verification.py)
    assert r.json()["cluster"]["verification"]["status"] == "CHECKING" and world.notified
    assert world.patch(f"/v2/clusters/{cid}", start).json()["error_name"] == "INVALID_DATA"  # already running
    both = world.patch(f"/v2/clusters/{cid}", {**start, "name": "other"})
    assert both.status_code == 400
    assert world.patch(f"/v2/clusters/{cid}", start, who="bob").status_code == 404


def test_identity_administration(world: World) -> None:
    assert world.post("/v3/projects", {"project": {"name": "p3"}}).status_code == 403
    r = world.post("/v3/projects", {"project": {"name": "p3"}}, who="admin")
    assert r.status_code == 201
    project = r.json()["project"]
    assert world.post("/v3/projects", {"project": {"name": "p3"}}, who="admin").status_code == 409
    r = world.post("/v3/users", {"user": {"name": "dave", "password": "dave-pass-1",
                                          "default_project_id": project["id"]}}, who="admin")
    assert r.status_code == 201 and "dave-pass-1" not in r.text and "password_hash" not in r.text
    user = r.json()["user"]
    assert world.client.put(f"/v3/projects/{project['id']}/users/{user['id']}/roles/reader",
                            headers=world.h("admin")).status_code == 204
    roles = world.get(f"/v3/projects/{project['id']}/users/{user['id']}/roles", who="admin").json()["roles"]
    assert sorted(r["name"] for r in roles) == ["member", "reader"]
    login = world.client.post("/v3/auth/tokens", json={"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": "dave", "password": "dave-pass-1", "domain": {"name": "Default"}}}},
        "scope": {"project": {"id": project["id"]}}}})
    assert login.status_code == 201
    token = login.headers["X-Subject-Token"]
    # A new project sees nothing of the others.
    assert world.client.get("/v2/clusters", headers={"X-Auth-Token": token}).json() == {"clusters": []}
    assert world.delete(f"/v3/projects/{project['id']}/users/{user['id']}/roles/member", who="admin").status_code \
        == 204
    assert world.delete(f"/v3/users/{user['id']}", who="admin").status_code == 204
    assert world.client.get("/v2/clusters", headers={"X-Auth-Token": token}).status_code == 401


def test_openapi_document(world: World) -> None:
    doc = world.client.get("/openapi.json").json()  # no token
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    routes = world.client.app.state.api_routes
    for spec in routes.specs:
        for version in spec.versions:
            assert (spec.method, f"/{version}{spec.path}") in ops
    delete = doc["paths"]["/v2/clusters/{id}"]["delete"]["responses"]
    assert {"200", "204"} <= set(delete)
    jbi = doc["paths"]["/v1.1/job-binary-internals"]["get"]["responses"]["200"]["content"]["application/json"]
    assert "datasize" in jbi["schema"]["properties"]["binaries"]["items"]["required"]


def test_malformed_token_requests_are_refused_not_crashed(world: World) -> None:
    for body in ({"auth": {"identity": {"methods": ["password"], "password": True}}},
                 {"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": ["a"],
                                                                                         "password": "x"}}}}},
                 {"auth": {"identity": {"methods": ["token"], "token": "abc"}}},
                 {"auth": {"identity": {"methods": "password"}}},
                 {"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin",
                  "password": "wrong"}}}, "scope": {"project": ["x"]}}},
                 {"auth": 1}, [1, 2]):
        r = world.client.post("/v3/auth/tokens", json=body)
        assert r.status_code in (400, 401), (body, r.status_code, r.text)
