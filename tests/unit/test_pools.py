"""Warm pools: the API's validation and isolation, what a create claims (the matching rules), the claim's
atomicity under two sessions, the refill (to size, past a shrink, a failed member, the quota, the creator's
trust), the lifecycle exemption, and a pooled cluster's invisibility as a cluster."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import delete, select

from oasis.db import lifecycle, pools
from oasis.db.models import Cluster, ClusterPool, ProvisionStep, Trust
from oasis.engine.pools import Pools
from oasis.identity import open_identity

from tests.unit.conftest import World, cluster_body


def cluster_template(world: World, name: str = "ct", who: str = "alice", **extra) -> dict:
    body = cluster_body(name, plugin="dask", workers=1)
    r = world.post("/v2/cluster-templates", {"name": name, "plugin_name": body["plugin_name"],
                                             "plugin_version": body["plugin_version"],
                                             "node_groups": body["node_groups"], **extra}, who=who)
    assert r.status_code == 202, r.text
    return r.json()["cluster_template"]


def make_pool(world: World, template_id: str, size: int = 1, name: str = "warm", who: str = "alice",
              **extra) -> dict:
    r = world.post("/v2/pools", {"pool": {"name": name, "cluster_template_id": template_id, "size": size,
                                          **extra}}, who=who)
    assert r.status_code == 202, r.text
    return r.json()["pool"]


def refiller(world: World) -> Pools:
    return Pools(world.db, "engine-test", open_identity(world.settings, world.db), world.settings.quota_defaults,
                 lambda: None)


def ready(world: World, pool_id: str) -> list[str]:
    """Every pooled cluster Active, as the engine's create leaves it (its credentials made by configure)."""
    with world.db.session() as s:
        rows = list(s.scalars(select(Cluster).where(Cluster.pool_id == pool_id)))
        for c in rows:
            c.status, c.op, c.secrets = "Active", None, {"auth_secret": f"made-for-{c.id}"}
        return [c.id for c in rows]


def from_template(template: dict, name: str = "mine", **extra) -> dict:
    return {"name": name, "plugin_name": template["plugin_name"], "plugin_version": template["plugin_version"],
            "cluster_template_id": template["id"], **extra}


# --- the API ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pool, says", [
    ({"name": "p", "cluster_template_id": "x"}, "'size' is a required property"),
    ({"name": "p", "cluster_template_id": "x", "size": 101}, "101 is greater than the maximum of 100"),
    ({"name": "p", "cluster_template_id": "x", "size": 10 ** 30}, "is greater than the maximum of 100"),
    ({"name": "p", "cluster_template_id": "x", "size": -1}, "-1 is less than the minimum of 0"),
    ({"name": "p", "cluster_template_id": "x", "size": 1.5}, "1.5 is not of type 'integer'"),
    ({"name": "not a hostname", "cluster_template_id": "x", "size": 1}, "does not match"),
    ({"name": "p", "cluster_template_id": "x", "size": 1, "nodes": 3}, "'nodes' was unexpected"),
    ({"name": "p", "cluster_template_id": "x", "size": 1, "max_age": 10 ** 30}, "is greater than the maximum"),
])
def test_create_refuses_bad_input(world: World, pool: dict, says: str) -> None:
    r = world.post("/v2/pools", {"pool": pool})
    assert r.status_code == 400 and says in r.json()["error_message"], r.text


def test_create_checks_the_template_and_its_site(world: World) -> None:
    ct = cluster_template(world)
    r = world.post("/v2/pools", {"pool": {"name": "p", "cluster_template_id": "nope", "size": 1}})
    assert r.status_code == 400 and r.json()["error_name"] == "INVALID_REFERENCE"
    theirs = cluster_template(world, "theirs", who="bob")  # another project's private template
    r = world.post("/v2/pools", {"pool": {"name": "p", "cluster_template_id": theirs["id"], "size": 1}})
    assert r.status_code == 400 and r.json()["error_name"] == "INVALID_REFERENCE"
    r = world.post("/v2/pools", {"pool": {"name": "p", "cluster_template_id": ct["id"], "size": 1,
                                          "availability_zone": "nowhere"}})
    assert r.status_code in (400, 404) and "nowhere" in r.json()["error_message"], r.text
    r = world.post("/v2/pools", {"pool": {"name": "p", "cluster_template_id": ct["id"], "size": 1,
                                          "max_age": "soon"}})
    assert r.status_code == 400 and "pool.max_age" in r.json()["error_message"]
    make_pool(world, ct["id"], name="p")
    r = world.post("/v2/pools", {"pool": {"name": "p", "cluster_template_id": ct["id"], "size": 1}})
    assert r.status_code == 400 and r.json()["error_name"] == "NAME_ALREADY_EXISTS"


def test_a_pool_is_its_projects_only(world: World) -> None:
    pool = make_pool(world, cluster_template(world)["id"])
    assert [p["id"] for p in world.get("/v2/pools").json()["pools"]] == [pool["id"]]
    assert world.get("/v2/pools", who="bob").json()["pools"] == []
    for call in (lambda: world.get(f"/v2/pools/{pool['id']}", who="bob"),
                 lambda: world.patch(f"/v2/pools/{pool['id']}", {"pool": {"size": 3}}, who="bob"),
                 lambda: world.delete(f"/v2/pools/{pool['id']}", who="bob")):
        assert call().status_code == 404
    assert world.post("/v2/pools", {"pool": {"name": "x", "cluster_template_id": pool["cluster_template_id"],
                                             "size": 1}}, who="carol").status_code == 403  # a reader


def test_patch_and_delete(world: World) -> None:
    pool = make_pool(world, cluster_template(world)["id"])
    r = world.patch(f"/v2/pools/{pool['id']}", {"pool": {"size": 200}})
    assert r.status_code == 400 and "maximum of 100" in r.json()["error_message"]
    assert world.patch(f"/v2/pools/{pool['id']}", {"pool": {}}).status_code == 400
    r = world.patch(f"/v2/pools/{pool['id']}", {"pool": {"size": 2, "max_age": "1h"}})
    assert r.status_code == 202 and (r.json()["pool"]["size"], r.json()["pool"]["max_age"]) == (2, 3600)
    assert world.delete(f"/v2/pools/{pool['id']}").status_code == 204
    assert world.get(f"/v2/pools/{pool['id']}").status_code == 404


# --- the refill, the claim -----------------------------------------------------------------------------------


def test_pooled_clusters_are_hidden_counted_and_claimed(world: World) -> None:
    ct = cluster_template(world)
    pool = make_pool(world, ct["id"], size=1)
    assert refiller(world).refill(pool["id"]) == 1
    assert refiller(world).refill(pool["id"]) == 0  # at its size: nothing more
    shown = world.get(f"/v2/pools/{pool['id']}").json()["pool"]
    assert (shown["status"], shown["starting"], shown["ready"]) == ("Filling", 1, 0)
    pooled = shown["clusters"][0]
    assert pooled["name"] == "pool-warm-1"
    # hidden as a cluster: not listed, not reachable by id, its credentials not handed out
    assert world.get("/v2/clusters").json()["clusters"] == []
    assert world.get("/v2/clusters", who="admin").json()["clusters"] == []
    assert world.get(f"/v2/clusters/{pooled['id']}").status_code == 404
    assert world.delete(f"/v2/clusters/{pooled['id']}").status_code == 404
    # but it holds its hosts: counted in the project's usage
    assert world.get("/v2/quotas").json()["usage"]["clusters"] == 1
    with world.db.session() as s:
        c = s.get(Cluster, pooled["id"])
        assert c.trust_id is None and c.op == "create" and c.spec["lifecycle"] == {"idle_delete_after": 0}
        # waiting by design: no idle limit fires
        assert not [d for d in lifecycle.deadlines(c, lifecycle.Activity(), 60.0, 0.0)
                    if d.limit == "idle_delete_after"]

    ready(world, pool["id"])
    assert world.get(f"/v2/pools/{pool['id']}").json()["pool"]["status"] == "Ready"
    r = world.post("/v2/clusters", from_template(ct, description="mine now", lifecycle={"idle_delete_after": "1h"}))
    assert r.status_code == 202, r.text
    got = r.json()["cluster"]
    assert (got["id"], got["status"], got["name"]) == (pooled["id"], "Active", "mine")
    assert got["description"] == "mine now" and got["lifecycle"]["idle_delete_after"] == 3600
    assert [c["id"] for c in world.get("/v2/clusters").json()["clusters"]] == [got["id"]]
    with world.db.session() as s:
        c = s.get(Cluster, got["id"])
        assert c.pool_id is None and c.trust_id is not None and s.get(Trust, c.trust_id) is not None
        steps = [st.step_name for st in s.scalars(select(ProvisionStep).where(ProvisionStep.cluster_id == c.id))]
        assert "From pool warm" in steps and "Made for pool warm" in steps
    assert world.get("/v2/quotas").json()["usage"]["clusters"] == 1  # moved, not counted twice
    assert world.get(f"/v2/pools/{pool['id']}").json()["pool"]["clusters"] == []
    # the refill makes its replacement, a cluster of its own
    assert refiller(world).refill(pool["id"]) == 1
    again = world.get(f"/v2/pools/{pool['id']}").json()["pool"]["clusters"]
    assert len(again) == 1 and again[0]["id"] != got["id"] and again[0]["name"] == "pool-warm-2"
    # deleting the pool deletes its unclaimed cluster, never the claimed one
    assert world.delete(f"/v2/pools/{pool['id']}").status_code == 204
    with world.db.session() as s:
        assert s.get(Cluster, again[0]["id"]).op == "delete"
        assert s.get(Cluster, got["id"]).status == "Active" and s.get(Cluster, got["id"]).op is None


def test_no_ready_cluster_means_an_ordinary_create(world: World) -> None:
    ct = cluster_template(world)
    pool = make_pool(world, ct["id"], size=1)
    refiller(world).refill(pool["id"])  # starting, not ready
    r = world.post("/v2/clusters", from_template(ct))
    assert r.status_code == 202 and r.json()["cluster"]["status"] == "Validating", r.text
    with world.db.session() as s:
        assert s.get(Cluster, r.json()["cluster"]["id"]).pool_id is None


@pytest.mark.parametrize("extra", [
    {"node_groups": cluster_body("x", plugin="dask", workers=2)["node_groups"]},
    {"cluster_configs": {"general": {"x": "1"}}},
    {"count": 1},
    {"anti_affinity": ["worker"]},
])
def test_what_changes_the_topology_does_not_claim(world: World, extra: dict) -> None:
    ct = cluster_template(world)
    pool = make_pool(world, ct["id"], size=1)
    refiller(world).refill(pool["id"])
    [pooled] = ready(world, pool["id"])
    r = world.post("/v2/clusters", from_template(ct, **extra))
    assert r.status_code == 202, r.text  # made, as an ordinary create
    with world.db.session() as s:
        assert s.get(Cluster, pooled).pool_id == pool["id"]  # still the pool's


def test_a_keypair_does_not_claim_and_another_project_never_does(world: World) -> None:
    ct = cluster_template(world, is_public=True)
    pool = make_pool(world, ct["id"], size=1)
    refiller(world).refill(pool["id"])
    [pooled] = ready(world, pool["id"])
    assert world.post("/v2/keypairs", {"name": "k"}).status_code in (200, 202)
    r = world.post("/v2/clusters", from_template(ct, name="keyed", user_keypair_id="k"))
    assert r.status_code == 202 and r.json()["cluster"]["id"] != pooled
    r = world.post("/v2/clusters", from_template(ct, name="bobs"), who="bob")  # the template is public
    assert r.status_code == 202 and r.json()["cluster"]["id"] != pooled
    with world.db.session() as s:
        assert s.get(Cluster, pooled).pool_id == pool["id"]


def test_two_concurrent_claims_never_get_the_same_cluster(world: World) -> None:
    ct = cluster_template(world)
    pool = make_pool(world, ct["id"], size=2)
    refiller(world).refill(pool["id"])
    ids = ready(world, pool["id"])
    assert len(ids) == 2
    gate = threading.Barrier(3)

    def take(name: str) -> str | None:
        gate.wait()
        with world.db.session() as s:
            row = s.get(ClusterPool, pool["id"])
            got = pools.claim(s, row, name, {**row.spec["data"], "name": name}, None)
            return got.id if got else None

    with ThreadPoolExecutor(3) as ex:
        got = list(ex.map(take, ["a", "b", "c"]))
    won = [g for g in got if g]
    assert sorted(won) == sorted(ids) and got.count(None) == 1  # each cluster once; the third finds none


def test_the_claim_is_one_conditional_update(world: World) -> None:
    """Two sessions open at once: what the first claimed is not there for the second, which takes the next."""
    ct = cluster_template(world)
    pool = make_pool(world, ct["id"], size=1)
    refiller(world).refill(pool["id"])
    [only] = ready(world, pool["id"])
    with world.db.session() as first:
        row = first.get(ClusterPool, pool["id"])
        assert pools.claim(first, row, "a", {**row.spec["data"], "name": "a"}, None).id == only
    with world.db.session() as second:
        row = second.get(ClusterPool, pool["id"])
        assert pools.claim(second, row, "b", {**row.spec["data"], "name": "b"}, None) is None


def test_refill_shrinks_replaces_failures_and_waits_for_quota(world: World) -> None:
    ct = cluster_template(world)
    pool = make_pool(world, ct["id"], size=3)
    assert refiller(world).refill(pool["id"]) == 3
    world.patch(f"/v2/pools/{pool['id']}", {"pool": {"size": 1}})
    assert refiller(world).refill(pool["id"]) == 2
    assert len(world.get(f"/v2/pools/{pool['id']}").json()["pool"]["clusters"]) == 1
    with world.db.session() as s:  # the one left fails
        c = s.scalars(select(Cluster).where(Cluster.pool_id == pool["id"], Cluster.op == "create")).one()
        c.status, c.op, c.status_description = "Error", None, "no room"
    assert refiller(world).refill(pool["id"]) == 1  # released; remade next period, not in the same one
    shown = world.get(f"/v2/pools/{pool['id']}").json()["pool"]
    assert shown["clusters"] == [] and "no room" in shown["status_description"]
    # the project may hold one cluster, which another cluster of its holds already
    assert world.put(f"/v2/quotas/{world.projects['p1']}", {"quota": {"clusters": 1}}, who="admin").status_code == 200
    assert world.post("/v2/clusters", cluster_body("other", workers=1)).status_code == 202
    assert refiller(world).refill(pool["id"]) == 0
    shown = world.get(f"/v2/pools/{pool['id']}").json()["pool"]
    assert shown["status"] == "Waiting" and "clusters: requested 1, used 1, limit 1" in shown["status_description"]


def test_refill_stops_when_the_creators_trust_is_gone(world: World) -> None:
    pool = make_pool(world, cluster_template(world)["id"], size=1)
    with world.db.session() as s:
        s.execute(delete(Trust).where(Trust.id == s.get(ClusterPool, pool["id"]).trust_id))
    assert refiller(world).refill(pool["id"]) == 0
    shown = world.get(f"/v2/pools/{pool['id']}").json()["pool"]
    assert shown["status"] == "Error" and "trust" in shown["status_description"]


def test_max_age_is_the_pooled_clusters_lifecycle_limit(world: World) -> None:
    pool = make_pool(world, cluster_template(world)["id"], size=1, max_age="2h")
    refiller(world).refill(pool["id"])
    with world.db.session() as s:
        c = s.scalars(select(Cluster).where(Cluster.pool_id == pool["id"])).one()
        assert c.spec["lifecycle"] == {"idle_delete_after": 0, "max_age": 7200}


def test_the_dashboard_shows_pooled_clusters_under_their_pool(world: World) -> None:
    from tests.unit.test_web import browser, sign_in  # noqa: PLC0415 - the dashboard's own test helpers

    pool = make_pool(world, cluster_template(world)["id"])
    refiller(world).refill(pool["id"])
    with browser(world) as client:
        assert sign_in(client, "alice", "p1").status_code == 303
        page = client.get("/dashboard/clusters")
    assert page.status_code == 200
    clusters, pools = page.text.split('id="pools"')
    assert "pool-warm-1" not in clusters and "No clusters yet." in clusters
    assert "warm" in pools and "pool-warm-1" in pools


def test_a_spark_template_may_be_pooled(world: World) -> None:
    body = cluster_body("ct-spark", workers=1)
    r = world.post("/v2/cluster-templates", {"name": "ct-spark", "plugin_name": "spark",
                                             "plugin_version": body["plugin_version"],
                                             "node_groups": body["node_groups"]})
    assert r.status_code == 202, r.text
    r = world.post("/v2/pools", {"pool": {"name": "warm", "size": 1,
                                          "cluster_template_id": r.json()["cluster_template"]["id"]}})
    assert r.status_code == 202 and r.json()["pool"]["plugin_name"] == "spark", r.text
