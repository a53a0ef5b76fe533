"""Policy by role: every route has a Sahara-style rule with a default, readers only read, members write their own
project's rows, admin-only stays admin-only, a policy file overrides any rule and a bad one fails at start."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from devtools import policy_sample
from oasis.api.app import create_app
from oasis.api.routing import RouteSpec
from oasis.identity import rules
from oasis.identity.policy import Forbidden, Policy, PolicyError, load
from oasis.identity.principal import Principal

from tests.unit.conftest import World, cluster_body

pytestmark = pytest.mark.unit

READER = Principal("u", "carol", "p", "p1", ["reader"])
MEMBER = Principal("u", "alice", "p", "p1", ["member"])
ADMIN = Principal("u", "admin", "p", "admin", ["admin"], is_admin=True)
# Changes of state by method, and the v1.1 cancel that is a GET; a token's holder may revoke it whatever its role.
WRITES = {"POST", "PUT", "PATCH", "DELETE", "HEAD"}
# Actions on the caller's own credentials and delegations, which any role takes (the handlers check whose)
SELF_SERVICE = {"identity:token-revoke", "identity:trust-create", "identity:trust-list", "identity:trust-get",
                "identity:trust-delete"}


def token_routes(world: World) -> Iterator[tuple[RouteSpec, str]]:
    for spec in world.client.app.state.api_routes.specs:
        if spec.auth == "token":
            for version in spec.versions:
                yield spec, version


def is_write(spec: RouteSpec) -> bool:
    return spec.method in WRITES or spec.path.endswith("/cancel") or spec.action.endswith(":execute")


def allowed(policy: Policy, who: Principal, spec: RouteSpec, version: str) -> bool:
    try:
        policy.authorize(who, spec.action, version, spec.path)
        return True
    except Forbidden:
        return False


def test_every_route_has_a_sahara_style_rule_with_a_default(world: World) -> None:
    registered = load(None).enforcer.registered_rules
    checked = set()
    for spec, version in token_routes(world):
        name = rules.rule_name(spec.action, version, spec.path)
        assert name is not None and name.startswith("data-processing:"), (spec.method, version, spec.path)
        assert name in registered and registered[name].check_str, name
        checked.add(name)
    # every rule is checked by some route (no stale name), or is a base rule or the one a v2 name refers to, or
    # one another service checks (the Spark Connect gateway)
    referred = {r.name for r in rules.RULES if r.v2}
    assert set(registered) - checked - referred - rules.NOT_ROUTES == set(rules.BASE_RULES)
    # Sahara's own names, where Sahara had the route
    names = {(spec.method, version, spec.path): rules.rule_name(spec.action, version, spec.path)
             for spec, version in token_routes(world)}
    assert names["POST", "v2", "/clusters"] == "data-processing:cluster:create"
    assert names["POST", "v1.1", "/clusters"] == "data-processing:clusters:create"
    assert names["GET", "v1.1", "/clusters"] == "data-processing:clusters:get_all"
    assert names["PATCH", "v1.1", "/clusters/{id}"] == "data-processing:clusters:modify"
    assert names["PUT", "v2", "/clusters/{id}"] == "data-processing:cluster:scale"
    assert names["GET", "v1.1", "/job-executions/{id}/cancel"] == "data-processing:job-executions:cancel"
    assert names["POST", "v1.1", "/data-sources"] == "data-processing:data-sources:register"
    assert names["GET", "v1.1", "/jobs"] == "data-processing:jobs:get_all"  # v1.1's jobs are job templates
    assert names["GET", "v2", "/sites"] == "data-processing:sites:get_all"


def test_defaults_by_role(world: World) -> None:
    policy = load(None)
    for spec, version in token_routes(world):
        where = (spec.method, version, spec.path)
        assert allowed(policy, ADMIN, spec, version), where
        if spec.action in SELF_SERVICE:
            assert allowed(policy, READER, spec, version)
            continue
        # a reader lists and shows (not a cluster's credentials), never changes
        reads = not is_write(spec) and spec.action != "cluster:client-config:execute"
        default = rules.BY_ACTION[rules.BY_ROUTE.get((version, spec.path), spec.action)].default
        assert allowed(policy, READER, spec, version) == (reads and default != rules.ADMIN), where
        assert allowed(policy, MEMBER, spec, version) == (default != rules.ADMIN), where
    # today's admin-only actions stay admin-only
    for action in ("plugin:update", "image:register", "image:set-tags", "site:register", "export:create",
                   "identity:admin"):
        assert rules.BY_ACTION[action].default == rules.ADMIN


def _fill(path: str) -> str:
    return re.sub(r"\{[a-z_]+\}", "nope", path)


def test_a_reader_is_refused_every_write_and_reads(world: World) -> None:
    for spec, version in token_routes(world):
        if spec.action in SELF_SERVICE:  # revoking its own token would end the test's
            continue
        path = f"/{version}{_fill(spec.path)}"
        r = world.client.request(spec.method, path, headers=world.h("carol"),
                                 json={} if spec.method in ("POST", "PUT", "PATCH") else None)
        if is_write(spec) or spec.action in ("cluster:client-config:execute",) or \
                rules.BY_ACTION[rules.BY_ROUTE.get((version, spec.path), spec.action)].default == rules.ADMIN:
            assert r.status_code == 403, (spec.method, path, r.status_code)
            if version != "v3" and spec.method != "HEAD":
                name = rules.rule_name(spec.action, version, spec.path)
                assert r.json()["error_name"] == "FORBIDDEN"
                assert r.json()["error_message"].startswith(f"Policy doesn't allow {name} to be performed.")
        else:
            assert r.status_code != 403, (spec.method, path, r.text)
            if "{" not in spec.path and spec.path != "/auth/tokens":  # a list: 200, its rows the project's
                assert r.status_code == 200, (spec.method, path, r.text)


def test_the_refusal_names_the_rule_and_what_it_needs(world: World) -> None:
    r = world.post("/v2/clusters", cluster_body(), who="carol")
    assert r.status_code == 403
    body = r.json()
    assert (body["error_code"], body["error_name"]) == (403, "FORBIDDEN")  # Sahara's envelope, with its Error ID
    assert body["error_message"].splitlines()[0] == ("Policy doesn't allow data-processing:cluster:create to be "
                                                     "performed. It needs the member or admin role on the project.")
    r = world.post("/v1.1/clusters", {**cluster_body(), "hadoop_version": "x"}, who="carol")
    assert "data-processing:clusters:create" in r.json()["error_message"]
    r = world.get("/v3/projects", who="alice")  # Keystone's envelope on /v3
    assert r.status_code == 403 and "data-processing:identity:admin" in r.json()["error"]["message"]
    assert "admin role" in r.json()["error"]["message"]


def test_a_member_writes_its_own_project_only(world: World) -> None:
    body = {"name": "d1", "type": "hdfs", "url": "hdfs://nn/x"}
    r = world.post("/v2/data-sources", body, who="alice")
    assert r.status_code == 202, r.text
    ds = r.json()["data_source"]["id"]
    assert world.get(f"/v2/data-sources/{ds}", who="carol").status_code == 200  # a reader of p1 sees it
    assert world.get(f"/v2/data-sources/{ds}", who="bob").status_code == 404  # a member of p2 does not
    assert world.delete(f"/v2/data-sources/{ds}", who="bob").status_code == 404
    assert world.delete(f"/v2/data-sources/{ds}", who="carol").status_code == 403
    assert world.patch("/v2/plugins/spark", {"plugin_labels": {}}, who="alice").status_code == 403
    assert world.delete(f"/v2/data-sources/{ds}", who="alice").status_code == 204


def _app_with(world: World, tmp_path: Path, text: str) -> TestClient:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(text)
    settings = replace(world.settings, policy_file=policy_file)
    return TestClient(create_app(settings, world.db, world.store), raise_server_exceptions=False)


def test_a_policy_file_lets_readers_create_clusters(world: World, tmp_path: Path) -> None:
    with _app_with(world, tmp_path, '"data-processing:clusters:create": "rule:project_reader"\n') as client:
        r = client.post("/v2/clusters", json=cluster_body("by-reader"), headers=world.h("carol"))
        assert r.status_code == 202, r.text  # the v2 name refers to the plural one
        assert client.delete(f"/v2/clusters/{r.json()['cluster']['id']}",
                             headers=world.h("carol")).status_code == 403  # nothing else changed
    # the defaults' app still refuses
    assert world.post("/v2/clusters", cluster_body("again"), who="carol").status_code == 403


def test_a_policy_file_forbids_members_to_delete(world: World, tmp_path: Path) -> None:
    r = world.post("/v2/clusters", cluster_body("kept"), who="alice")
    assert r.status_code == 202, r.text
    cluster = r.json()["cluster"]["id"]
    text = '"data-processing:clusters:delete": "rule:context_is_admin"\n'
    with _app_with(world, tmp_path, text) as client:
        for version in ("v2", "v1.1"):
            r = client.delete(f"/{version}/clusters/{cluster}", headers=world.h("alice"))
            assert r.status_code == 403, r.text
            assert r.json()["error_message"].splitlines()[0].endswith("It needs the admin role.")
        assert client.get(f"/v2/clusters/{cluster}", headers=world.h("alice")).status_code == 200
        assert client.delete(f"/v2/clusters/{cluster}", headers=world.h("admin")).status_code == 204


@pytest.mark.parametrize("text, says", [
    ("a: [\n", "line 2"),  # YAML syntax
    ('"data-processing:clusters:destroy": ""\n', "unknown rule data-processing:clusters:destroy"),
    ('"data-processing:clusters:create": "(role:a"\n', "Failed to understand rule"),
    ('"data-processing:clusters:create": "rule:nobody"\n', "reference a rule that is not defined"),
])
def test_a_bad_policy_file_is_one_line_at_start(world: World, tmp_path: Path, text: str, says: str) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text(text)
    with pytest.raises(PolicyError) as e:
        Policy(bad)
    assert says in str(e.value) and "\n" not in str(e.value) and str(bad) in str(e.value)
    with pytest.raises(PolicyError):
        create_app(replace(world.settings, policy_file=bad), world.db, world.store)
    with pytest.raises(PolicyError, match="no such file"):
        Policy(tmp_path / "missing.yaml")


def test_oasis_up_with_a_bad_policy_file_exits_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text('"data-processing:nope": ""\n')
    env = {**os.environ, "OASIS_POLICY_FILE": str(bad)}
    r = subprocess.run([sys.executable, "-m", "oasis.cli.main", "up", "--state-dir", str(tmp_path / "state"),
                        "--port", "1"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown rule data-processing:nope" in lines[0], r.stderr
    assert not (tmp_path / "state").exists()  # refused before anything started


def test_the_sample_policy_file_is_current() -> None:
    assert policy_sample.SAMPLE.read_text() == policy_sample.render(), \
        "docs/policy.yaml is out of date: run python -m devtools.policy_sample"
    # and it is a valid policy file: uncommented, every rule loads and keeps its default
    text = "".join(line[1:] + "\n" for line in policy_sample.SAMPLE.read_text().splitlines()
                   if line.startswith('#"'))
    assert text.count("\n") == len(rules.defaults())
