"""Bad input is a 400, never a 500 or a hang: bodies nested deeper than any request needs, counts beyond what a
deployment can hold, integers that are not integers, names ending in a newline, and a stored name that would
break the export's Content-Disposition header. `HOSTILE` is sent here to the app and by
tests/compat/test_openapi_fuzz.py to a live `oasis up`."""
from __future__ import annotations

import json
from typing import Any

import pytest

from oasis.db.models import ClusterTemplate, NodeGroupTemplate
from tests.unit.conftest import World, cluster_body, version_of

DEEP = 1000


def deep(n: int = DEEP) -> bytes:
    return b'{"name": "x", "a": ' + b"[" * n + b"]" * n + b"}"


def _ngt(name: str) -> dict[str, Any]:
    return {"name": name, "plugin_name": "spark", "plugin_version": version_of("spark"), "flavor_id": "2",
            "node_processes": ["worker"]}


def _ct(name: str) -> dict[str, Any]:
    return {"name": name, "plugin_name": "spark", "plugin_version": version_of("spark")}


def _cluster_with(count: Any, name: str = "big") -> dict[str, Any]:
    body = cluster_body(name=name, workers=1)
    body["node_groups"][1]["count"] = count
    return body


# (method, path, body as bytes, what the error must say); each must be a 400.
HOSTILE: list[tuple[str, str, bytes, str]] = [
    ("POST", "/v2/clusters", deep(), "nested"),
    ("POST", "/v2/cluster-templates", deep(), "nested"),
    ("POST", "/v1.1/data-sources", deep(), "nested"),
    ("POST", "/v2/clusters", deep(100_000), "nested"),
    *[("POST", "/v2/clusters", json.dumps(_cluster_with(c)).encode(), "count") for c in (10**9, 2**63, 20000)],
    ("POST", "/v2/clusters", json.dumps({**cluster_body(name="many", workers=1), "count": 10**9}).encode(), "count"),
    ("POST", "/v2/clusters", json.dumps({**cluster_body(name="many", workers=1), "count": 2**63}).encode(), "count"),
    ("POST", "/v2/clusters", json.dumps(_cluster_with(1.0, "floaty")).encode(), "integer"),
    ("POST", "/v2/clusters", json.dumps(_cluster_with(True, "truthy")).encode(), "integer"),
    ("POST", "/v2/clusters", json.dumps({**cluster_body(name="many", workers=1), "count": 2.0}).encode(), "integer"),
    ("POST", "/v2/node-group-templates", json.dumps({**_ngt("v"), "volumes_per_node": 10**12}).encode(), "maximum"),
    ("POST", "/v2/node-group-templates", json.dumps({**_ngt("v"), "volumes_size": 1.5}).encode(), "integer"),
    ("POST", "/v2/node-group-templates", json.dumps(_ngt("ngt\n")).encode(), "does not match"),
    ("POST", "/v2/cluster-templates", json.dumps(_ct("ct\n")).encode(), "does not match"),
    ("POST", "/v2/clusters", json.dumps(cluster_body(name="c\n", workers=1)).encode(), "does not match"),
    ("POST", "/v2/data-sources", json.dumps({"name": "ds\n", "type": "swift", "url": "swift://c/o"}).encode(),
     "does not match"),
    ("POST", "/v2/job-binaries", json.dumps({"name": "b.py\n", "url": "internal-db://x"}).encode(), "does not match"),
    ("POST", "/v2/job-templates", json.dumps({"name": "jt\n", "type": "Dask"}).encode(), "does not match"),
    ("PUT", "/v1.1/job-binary-internals/wc.py%0A", b"print(1)", "does not match"),
    ("POST", "/v2/keypairs", json.dumps({"name": "kp\n"}).encode(), "does not match"),
]


def _send(world: World, method: str, path: str, body: bytes, who: str = "alice"):  # noqa: ANN202
    ctype = "application/octet-stream" if "job-binary-internals" in path else "application/json"
    return world.client.request(method, path, content=body, headers={**world.h(who), "Content-Type": ctype})


@pytest.mark.parametrize("case", HOSTILE, ids=lambda c: f"{c[0]} {c[1]} {c[2][:40]!r}")
def test_hostile_input_is_a_400(world: World, case: tuple[str, str, bytes, str]) -> None:
    method, path, body, says = case
    r = _send(world, method, path, body)
    assert r.status_code == 400, (r.status_code, r.text[:500])
    assert says in r.text and "Traceback" not in r.text, r.text[:500]


def test_deep_json_before_authentication_and_on_the_join(world: World) -> None:
    r = world.client.post("/v3/auth/tokens", content=deep(), headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "nested" in r.text, r.text[:300]
    r = world.client.post("/v2/sites/join", content=deep(), headers={"Content-Type": "application/json",
                                                                     "X-Oasis-Join-Token": "t"})
    assert r.status_code == 400 and "nested" in r.text, r.text[:300]
    # a body as deep as real ones is fine: a cluster template's node configs
    r = world.post("/v2/cluster-templates", {**_ct("fine"), "cluster_configs": {"general": {"k": "v"}}})
    assert r.status_code == 202, r.text


def test_counts_of_many_groups_and_clusters_are_bounded_together(world: World) -> None:
    body = cluster_body(name="wide", workers=600)
    body["node_groups"].append({"name": "more", "flavor_id": "1", "node_processes": ["worker"], "count": 600})
    r = world.post("/v2/clusters", body)
    assert r.status_code == 400 and "1201 instances" in r.text, r.text
    r = world.post("/v2/clusters", {**cluster_body(name="fleet", workers=100), "count": 100})
    assert r.status_code == 400 and "10100 instances" in r.text, r.text


def test_a_scale_count_is_bounded(world: World) -> None:
    r = world.post("/v2/clusters", cluster_body(name="small", workers=1))
    assert r.status_code == 202, r.text
    cid = r.json()["cluster"]["id"]
    for count, says in ((10**9, "maximum"), (1.0, "integer"), (True, "integer")):
        r = world.put(f"/v2/clusters/{cid}", {"resize_node_groups": [{"name": "worker", "count": count}]})
        assert r.status_code == 400 and says in r.text, r.text


def test_an_exported_name_never_breaks_the_header(world: World) -> None:
    """Names stored before they were checked strictly may hold a newline or a quote: the export still answers,
    with a header that holds neither."""
    with world.db.session() as s:
        ngt = NodeGroupTemplate(project_id=world.projects["p1"], name='bad\nname"; x=1', plugin_name="spark",
                                plugin_version=version_of("spark"), spec={"flavor_id": "2",
                                                                          "node_processes": ["worker"]})
        ct = ClusterTemplate(project_id=world.projects["p1"], name="ct\r\nSet-Cookie: a=b", plugin_name="spark",
                             plugin_version=version_of("spark"), spec={})
        s.add_all([ngt, ct])
        s.flush()
        ids = ngt.id, ct.id
    for path in (f"/v2/node-group-templates/{ids[0]}/export", f"/v2/cluster-templates/{ids[1]}/export"):
        r = world.get(path)
        assert r.status_code == 200, r.text
        header = r.headers["content-disposition"]
        assert "\n" not in header and "\r" not in header and header.count('"') == 2, header
        assert "set-cookie" not in {k.lower() for k in r.headers}
