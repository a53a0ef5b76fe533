"""Two creates of one name that race past the API's check (two API replicas at the same moment) get the answer
the second of two sequential creates gets: 400 NAME_ALREADY_EXISTS, for every resource with unique names. The
race is reproduced by switching the check off, so that the database's unique constraint settles it; the race
itself, through two real API processes on PostgreSQL, is in tests/integration/test_replicas.py."""
from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from oasis.api import binaries, clusters, datasources, jobs, keypairs, templates
from tests.unit.conftest import World, cluster_body
from tests.unit.test_api_templates import ngt

PUBLIC_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl oasis-test")


@pytest.fixture
def unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (binaries, clusters, datasources, jobs, templates):
        monkeypatch.setattr(module, "ensure_unique_name", lambda *a, **kw: None)
    monkeypatch.setattr(keypairs, "find", lambda *a, **kw: None)


def _internal(world: World) -> object:
    return world.client.put("/v2/job-binary-internals/same", content=b"print(1)\n",
                            headers={**world.h(), "Content-Type": "application/octet-stream"})


def _binary(world: World) -> str:
    r = world.post("/v2/job-binaries", {"name": f"main-{uuid.uuid4().hex[:8]}", "url": "swift://c/run.sh",
                                        "extra": {"user": "u", "password": "p"}})
    return r.json()["job_binary"]["id"]


CREATES: dict[str, tuple[str, Callable[[World], object]]] = {
    "node group template": ("Node group template", lambda w: w.post("/v2/node-group-templates", ngt("same"))),
    "cluster template": ("Cluster template", lambda w: w.post("/v2/cluster-templates", {
        "name": "same", "plugin_name": "spark", "plugin_version": cluster_body()["plugin_version"],
        "node_groups": cluster_body()["node_groups"]})),
    "cluster": ("Cluster", lambda w: w.post("/v2/clusters", cluster_body("same"))),
    "job binary internal": ("Job binary internal", _internal),
    "job binary": ("Job binary", lambda w: w.post("/v2/job-binaries", {
        "name": "same", "url": "swift://c/o", "extra": {"user": "u", "password": "p"}})),
    "data source": ("Data source", lambda w: w.post("/v2/data-sources", {"name": "same", "type": "swift",
                                                                         "url": "swift://c/in"})),
    "job template": ("Job", lambda w: w.post("/v2/job-templates", {"name": "same", "type": "Shell",
                                                                   "mains": [_binary(w)]})),
    "keypair": ("Keypair", lambda w: w.post("/v2/keypairs", {"name": "same", "public_key": PUBLIC_KEY})),
}


@pytest.mark.parametrize("what", sorted(CREATES))
def test_a_name_taken_meanwhile_answers_name_already_exists(world: World, unchecked: None, what: str) -> None:
    kind, create = CREATES[what]
    first = create(world)
    assert first.status_code in (200, 202), first.text
    second = create(world)
    assert second.status_code == 400, second.text
    assert second.json()["error_name"] == "NAME_ALREADY_EXISTS"
    assert second.json()["error_message"].startswith(f"{kind} with name 'same' already exists")
