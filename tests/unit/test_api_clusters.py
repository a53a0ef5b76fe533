"""Clusters: validation on create, the rows written for the engine, views, scaling and deletion."""
from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from oasis.db.models import Cluster, Instance, NodeGroup, ProvisionEvent, ProvisionStep

from tests.unit.conftest import World, cluster_body, version_of


def create(world: World, body: dict, who: str = "alice") -> dict:
    r = world.post("/v2/clusters", body, who=who)
    assert r.status_code == 202, r.text
    return r.json()["cluster"]


def error(world: World, body: dict) -> tuple[int, str, str]:
    r = world.post("/v2/clusters", body)
    return r.status_code, r.json().get("error_name", ""), r.json().get("error_message", "")


def set_status(world: World, cluster_id: str, status: str, with_instances: bool = False) -> None:
    """Play the engine: the cluster comes up with instances on the seeded host."""
    with world.db.session() as s:
        c = s.get(Cluster, cluster_id)
        c.status, c.op = status, None
        if status == "Active":  # the engine's configure step made the cluster's credentials
            c.secrets = c.secrets or {"auth_secret": "made-by-configure"}
        if with_instances:
            host_id = s.execute(select(Instance.host_id)).scalar() or _host(s)
            for ng in s.scalars(select(NodeGroup).where(NodeGroup.cluster_id == cluster_id)):
                for i in range(ng.count):
                    s.add(Instance(cluster_id=cluster_id, node_group_id=ng.id, host_id=host_id, index=i,
                                   name=f"{c.name}-{ng.name}-{i}", internal_ip="127.0.0.1",
                                   management_ip="127.0.0.1", workdir="/tmp/x", vcpus=1, ram_mb=512, disk_gb=1))


def _host(s: Any) -> str:
    from oasis.db.models import Host
    return s.scalars(select(Host.id)).first()


def test_create_writes_desired_state(world: World) -> None:
    c = create(world, cluster_body(workers=2, description="d", cluster_configs={"general": {"k": "v"}}))
    assert c["status"] == "Validating" and c["plugin_version"] == version_of("spark")
    assert c["default_image_id"] == world.image_id  # the site's image with the plugin's tags
    assert c["neutron_management_network"] == "local"
    assert c["management_public_key"].startswith("ssh-ed25519 ")
    assert c["description"] == "d" and c["cluster_configs"] == {"general": {"k": "v"}}
    assert {ng["name"]: ng["count"] for ng in c["node_groups"]} == {"master": 1, "worker": 2}
    assert all(ng["flavor_id"] == "2" and ng["instances"] == [] for ng in c["node_groups"])
    assert c["verification"] == {"status": None, "checks": []} and c["provision_progress"] == []
    for hidden in ("management_private_key", "op", "op_target", "lease_owner", "site_id"):
        assert hidden not in c
    assert world.notified, "the engine was not woken"
    with world.db.session() as s:
        row = s.get(Cluster, c["id"])
        assert (row.op, row.op_target, row.site_id) == ("create", {}, world.site_id)
        assert "PRIVATE KEY" in row.management_private_key
        assert row.spec["default_image_id"] == world.image_id
        groups = {ng.name: ng for ng in s.scalars(select(NodeGroup).where(NodeGroup.cluster_id == c["id"]))}
        assert groups["worker"].spec["node_processes"] == ["worker"] and groups["worker"].count == 2
    # Never in any response: show, list, and the create answer above.
    assert "PRIVATE KEY" not in world.get(f"/v2/clusters/{c['id']}").text
    assert "PRIVATE KEY" not in world.get("/v2/clusters").text


def test_sahara_slave_becomes_worker(world: World) -> None:
    body = cluster_body()
    body["node_groups"][1]["node_processes"] = ["slave"]
    c = create(world, body)
    assert [ng["node_processes"] for ng in c["node_groups"] if ng["name"] == "worker"] == [["worker"]]


def test_dask_cluster(world: World) -> None:
    c = create(world, cluster_body("dask1", plugin="dask", workers=1))
    assert c["plugin_name"] == "dask"


def test_count_creates_numbered_clusters(world: World) -> None:
    body = cluster_body("many", workers=1, count=3)
    for ng in body["node_groups"]:
        ng["flavor_id"] = "1"  # six small instances fit the seeded host's 100 GB disk
    r = world.post("/v2/clusters", body)
    assert r.status_code == 202, r.text
    names = [item["cluster"]["name"] for item in r.json()["clusters"]]
    assert names == ["many-1", "many-2", "many-3"]
    r = world.post("/v2/clusters", body)
    assert r.json()["error_name"] == "NAME_ALREADY_EXISTS"
    assert len(world.get("/v2/clusters").json()["clusters"]) == 3


def test_create_refusals(world: World) -> None:
    assert error(world, cluster_body(plugin_name="hadoop"))[:2] == (400, "INVALID_REFERENCE")
    assert error(world, cluster_body(plugin_version="0.1"))[:2] == (400, "INVALID_REFERENCE")
    assert error(world, cluster_body(name="under_score"))[:2] == (400, "VALIDATION_ERROR")
    assert error(world, cluster_body(name="a" * 51))[:2] == (400, "VALIDATION_ERROR")
    assert error(world, cluster_body(surprise=True))[:2] == (400, "VALIDATION_ERROR")
    assert error(world, {**cluster_body(), "node_groups": []})[:2] == (400, "INVALID_DATA")
    two_masters = cluster_body()
    two_masters["node_groups"][0]["count"] = 2
    status, name, message = error(world, two_masters)
    assert (status, name) == (400, "INVALID_DATA") and "exactly one" in message
    no_master = cluster_body()
    no_master["node_groups"][0]["count"] = 0
    assert error(world, no_master)[:2] == (400, "INVALID_DATA")
    no_worker = cluster_body(workers=0)
    assert "at least one" in error(world, no_worker)[2]
    unknown_process = cluster_body()
    unknown_process["node_groups"][1]["node_processes"] = ["datanode"]
    assert error(world, unknown_process)[:2] == (400, "INVALID_REFERENCE")
    bad_flavor = cluster_body()
    bad_flavor["node_groups"][1]["flavor_id"] = "42"
    assert error(world, bad_flavor)[:2] == (400, "NOT_FOUND")
    assert error(world, cluster_body(default_image_id="nope"))[:2] == (400, "INVALID_REFERENCE")
    with world.db.session() as s:
        from oasis.db.models import Image
        bare = s.scalars(select(Image.id).where(Image.name == "bare")).one()
    assert "required tags" in error(world, cluster_body(default_image_id=bare))[2]
    assert error(world, cluster_body(availability_zone="mars"))[:2] == (400, "NOT_FOUND")
    # The edge site has no image carrying the plugin's tags.
    assert error(world, cluster_body(availability_zone="edge"))[:2] == (400, "INVALID_REFERENCE")
    split = cluster_body()
    split["node_groups"][0]["availability_zone"] = "edge"
    split["node_groups"][1]["availability_zone"] = "local"
    assert error(world, split)[:2] == (400, "INVALID_DATA")
    assert error(world, cluster_body(neutron_management_network="elsewhere"))[:2] == (400, "NOT_FOUND")
    long_names = cluster_body(name="c" * 30)
    long_names["node_groups"][1]["name"] = "w" * 40
    assert "hostname" in error(world, long_names)[2]
    assert error(world, cluster_body(cluster_template_id="nope"))[:2] == (400, "INVALID_REFERENCE")
    create(world, cluster_body("taken"))
    assert error(world, cluster_body("taken"))[:2] == (400, "NAME_ALREADY_EXISTS")


def test_capacity_is_checked(world: World) -> None:
    huge = cluster_body(workers=1)
    huge["node_groups"][1]["flavor_id"] = "m1.xlarge"  # 160 GB disk; the host has 100
    status, name, message = error(world, huge)
    assert (status, name) == (400, "QUOTA_ERROR") and "not enough capacity" in message
    with world.db.session() as s:
        assert s.scalars(select(Cluster)).first() is None  # nothing written


def test_template_merge(world: World) -> None:
    ngt = world.post("/v2/node-group-templates", {
        "name": "w", "plugin_name": "spark", "plugin_version": version_of("spark"), "flavor_id": "1",
        "node_processes": ["worker"], "node_configs": {"spark": {"a": "1", "b": "1"}}, "floating_ip_pool": "pool"}
    ).json()["node_group_template"]
    ct = world.post("/v2/cluster-templates", {
        "name": "ct", "plugin_name": "spark", "plugin_version": version_of("spark"), "description": "from template",
        "cluster_configs": {"general": {"x": "1", "y": "1"}}, "anti_affinity": ["worker"],
        "node_groups": [{"name": "master", "flavor_id": "1", "node_processes": ["master"], "count": 1},
                        {"name": "workers", "node_group_template_id": ngt["id"], "count": 2,
                         "node_configs": {"spark": {"b": "2"}}}]}).json()["cluster_template"]
    c = create(world, {"name": "merged", "plugin_name": "spark", "plugin_version": version_of("spark"),
                       "cluster_template_id": ct["id"], "cluster_configs": {"general": {"y": "2"}}})
    assert c["description"] == "from template" and c["anti_affinity"] == ["worker"]
    assert c["cluster_configs"] == {"general": {"x": "1", "y": "2"}}
    assert c["cluster_template_id"] == ct["id"]
    workers = next(ng for ng in c["node_groups"] if ng["name"] == "workers")
    assert workers["node_configs"] == {"spark": {"a": "1", "b": "2"}}
    assert (workers["flavor_id"], workers["floating_ip_pool"], workers["count"]) == ("1", "pool", 2)
    assert workers["node_group_template_id"] == ngt["id"]
    # The request's node groups replace the template's.
    own = create(world, {**cluster_body("own", workers=1), "cluster_template_id": ct["id"]})
    assert {ng["name"] for ng in own["node_groups"]} == {"master", "worker"}


def test_show_progress_and_instances(world: World) -> None:
    c = create(world, cluster_body(workers=1))
    set_status(world, c["id"], "Active", with_instances=True)
    with world.db.session() as s:
        step = ProvisionStep(cluster_id=c["id"], project_id=world.projects["p1"], step_name="Spawning instances",
                             step_type="Engine: create cluster", total=2, successful=True, duration=1.5)
        s.add(step)
        s.flush()
        s.add(ProvisionEvent(step_id=step.id, instance_name="c1-master-0", successful=True))
    plain = world.get(f"/v2/clusters/{c['id']}").json()["cluster"]
    assert plain["provision_progress"][0]["step_name"] == "Spawning instances"
    assert "events" not in plain["provision_progress"][0]
    detailed = world.get(f"/v2/clusters/{c['id']}", params={"show_progress": "true"}).json()["cluster"]
    assert detailed["provision_progress"][0]["events"][0]["instance_name"] == "c1-master-0"
    assert detailed["provision_progress"][0]["duration"] == 1.5
    inst = next(ng for ng in detailed["node_groups"] if ng["name"] == "master")["instances"][0]
    assert inst["instance_id"] == inst["id"] and inst["instance_name"] == "c1-master-0"
    assert inst["management_ip"] == "127.0.0.1" and inst["storage_devices_number"] == 0
    assert world.get(f"/v2/clusters/{c['id']}", params={"bogus": "1"}).status_code == 400
    assert world.get("/v2/clusters/nope").status_code == 404


def test_list_filters(world: World) -> None:
    create(world, cluster_body("s1", workers=1))
    create(world, cluster_body("d1", plugin="dask", workers=1))
    names = [c["name"] for c in world.get("/v2/clusters", params={"plugin_name": "dask"}).json()["clusters"]]
    assert names == ["d1"]
    ordered = world.get("/v2/clusters", params={"sort_by": "name"}).json()["clusters"]
    assert [c["name"] for c in ordered] == ["d1", "s1"]
    assert world.get("/v2/clusters", params={"sort_by": "flavor"}).status_code == 400


def test_update(world: World) -> None:
    c = create(world, cluster_body())
    r = world.patch(f"/v2/clusters/{c['id']}", {"name": "renamed", "description": "new", "is_public": True,
                                                "shares": [{"id": "s", "path": "/mnt", "access_level": "ro"}]})
    assert r.status_code == 202
    out = r.json()["cluster"]
    assert (out["name"], out["description"], out["is_public"]) == ("renamed", "new", True)
    assert out["shares"][0]["access_level"] == "ro"
    assert world.patch(f"/v2/clusters/{c['id']}", {"status": "Active"}).json()["error_name"] == "VALIDATION_ERROR"
    create(world, cluster_body("other"))
    assert world.patch(f"/v2/clusters/{c['id']}", {"name": "other"}).json()["error_name"] == "NAME_ALREADY_EXISTS"


def test_scale_requires_active(world: World) -> None:
    c = create(world, cluster_body())
    r = world.put(f"/v2/clusters/{c['id']}", {"resize_node_groups": [{"name": "worker", "count": 3}]})
    assert r.status_code == 400 and "Cluster cannot be scaled not in 'Active' status" in r.json()["error_message"]


def test_scale_writes_target(world: World) -> None:
    c = create(world, cluster_body(workers=3))
    set_status(world, c["id"], "Active", with_instances=True)
    with world.db.session() as s:
        victim = s.scalars(select(Instance).where(Instance.name == "c1-worker-1")).one()
    world.notified.clear()
    r = world.put(f"/v2/clusters/{c['id']}", {
        "resize_node_groups": [{"name": "worker", "count": 2, "instances": ["c1-worker-1"]}],
        "add_node_groups": [{"name": "extra", "flavor_id": "1", "node_processes": ["slave"], "count": 2}]})
    assert r.status_code == 202, r.text
    assert r.json()["cluster"]["status"] == "Validating"
    assert world.notified
    with world.db.session() as s:
        row = s.get(Cluster, c["id"])
        assert row.op == "scale"
        assert row.op_target == {"resize": {"worker": 2}, "add": {"extra": 2}, "remove": [victim.id]}
        extra = s.scalars(select(NodeGroup).where(NodeGroup.cluster_id == c["id"], NodeGroup.name == "extra")).one()
        assert extra.count == 0 and extra.spec["node_processes"] == ["worker"]


def test_scale_refusals(world: World) -> None:
    c = create(world, cluster_body(workers=2))
    set_status(world, c["id"], "Active", with_instances=True)

    def scale(body: dict) -> tuple[int, str]:
        r = world.put(f"/v2/clusters/{c['id']}", body)
        return r.status_code, r.json().get("error_name", "")

    assert scale({}) == (400, "VALIDATION_ERROR")
    assert scale({"resize_node_groups": [{"name": "nope", "count": 1}]}) == (400, "INVALID_REFERENCE")
    assert scale({"resize_node_groups": [{"name": "worker", "count": 0}]}) == (400, "INVALID_DATA")  # no worker left
    assert scale({"resize_node_groups": [{"name": "master", "count": 2}]}) == (400, "INVALID_DATA")
    assert scale({"resize_node_groups": [{"name": "worker", "count": 1, "instances": []}]}) == (400, "INVALID_DATA")
    assert scale({"resize_node_groups": [{"name": "worker", "count": 1,
                                          "instances": ["c1-master-0"]}]}) == (400, "INVALID_REFERENCE")
    assert scale({"add_node_groups": [{"name": "worker", "flavor_id": "1", "node_processes": ["worker"],
                                       "count": 1}]}) == (400, "INVALID_DATA")
    assert scale({"add_node_groups": [{"name": "big", "flavor_id": "5", "node_processes": ["worker"],
                                       "count": 1}]}) == (400, "QUOTA_ERROR")
    assert scale({"add_node_groups": [{"name": "far", "flavor_id": "1", "node_processes": ["worker"], "count": 1,
                                       "availability_zone": "edge"}]}) == (400, "INVALID_DATA")
    with world.db.session() as s:
        assert s.get(Cluster, c["id"]).op is None  # nothing was written by the refusals


def test_delete(world: World) -> None:
    c = create(world, cluster_body())
    with world.db.session() as s:
        row = s.get(Cluster, c["id"])
        row.lease_owner = "engine-1"  # a create in flight on some engine
    world.notified.clear()
    assert world.delete(f"/v2/clusters/{c['id']}").status_code == 204
    assert world.notified
    with world.db.session() as s:
        row = s.get(Cluster, c["id"])
        # The lease stays with its engine, which stops the create and lets go before the delete is taken.
        assert (row.status, row.op, row.op_target, row.op_step, row.lease_owner) == ("Deleting", "delete",
                                                                                      {"force": False}, None,
                                                                                      "engine-1")
    # Deleting is terminal.
    assert world.patch(f"/v2/clusters/{c['id']}", {"description": "x"}).status_code == 400
    r = world.put(f"/v2/clusters/{c['id']}", {"resize_node_groups": [{"name": "worker", "count": 3}]})
    assert r.status_code == 400


def test_force_delete_and_protection(world: World) -> None:
    c = create(world, cluster_body(is_protected=True))
    r = world.delete(f"/v2/clusters/{c['id']}")
    assert r.status_code == 400 and r.json()["error_name"] == "DELETION_FAILED"
    assert world.patch(f"/v2/clusters/{c['id']}", {"description": "x"}).json()["error_name"] == "UPDATE_FAILED"
    assert world.patch(f"/v2/clusters/{c['id']}", {"is_protected": False}).status_code == 202
    r = world.delete(f"/v2/clusters/{c['id']}", body={"force": True})
    assert r.status_code == 200 and r.json()["stack_name"].startswith("c1")
    with world.db.session() as s:
        assert s.get(Cluster, c["id"]).op_target == {"force": True}
    assert world.delete(f"/v2/clusters/{c['id']}", body={"force": "yes"}).status_code == 400


def test_other_project_cannot_see_or_touch(world: World) -> None:
    c = create(world, cluster_body())
    assert world.get(f"/v2/clusters/{c['id']}", who="bob").status_code == 404
    assert world.get("/v2/clusters", who="bob").json()["clusters"] == []
    assert world.delete(f"/v2/clusters/{c['id']}", who="bob").status_code == 404
    assert world.patch(f"/v2/clusters/{c['id']}", {"is_public": True}).status_code == 202
    assert world.get(f"/v2/clusters/{c['id']}", who="bob").status_code == 200
    r = world.delete(f"/v2/clusters/{c['id']}", who="bob")
    assert r.status_code == 400 and r.json()["error_name"] == "DELETION_FAILED"
    r = world.patch(f"/v2/clusters/{c['id']}", {"description": "x"}, who="bob")
    assert r.status_code == 400 and r.json()["error_name"] == "UPDATE_FAILED"
    # Names are unique per project only.
    create(world, cluster_body(), who="bob")
    assert len(world.get("/v2/clusters", who="admin").json()["clusters"]) == 2


def test_a_site_shows_each_project_its_own_clusters_only(world: World) -> None:
    c = create(world, cluster_body())
    site = "local"  # where the world places a cluster that names no zone
    names = lambda who: [x["name"] for x in world.get(f"/v2/sites/{site}", who=who).json()["site"]["clusters"]]  # noqa: E731
    assert names("alice") == ["c1"] and names("admin") == ["c1"]
    assert names("bob") == []  # another project learns nothing of alice's clusters, not even their names


@pytest.mark.parametrize("name", ["a", "a-b", "A1.b2", "x" * 50])
def test_hostname_names_accepted(world: World, name: str) -> None:
    assert create(world, cluster_body(name, workers=1))["name"] == name


def test_a_cluster_from_before_credentials_is_not_scaled(world: World) -> None:
    c = create(world, cluster_body(workers=1))
    set_status(world, c["id"], "Active", with_instances=True)
    with world.db.session() as s:
        s.get(Cluster, c["id"]).secrets = None  # as an older oasis left it
    r = world.put(f"/v2/clusters/{c['id']}", {"resize_node_groups": [{"name": "worker", "count": 2}]})
    assert r.status_code == 400 and "re-create" in r.json()["error_message"], r.text
