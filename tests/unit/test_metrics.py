"""Prometheus metrics: the API's request counter and latency by route template (never a raw path with ids), the
`/metrics` document, the engine's step, outcome, takeover and lag metrics, hosts reachable per site, and the sample
Grafana dashboard naming only metrics that exist."""
from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from oasis import metrics
from oasis.db.models import Cluster, Host, Site
from oasis.engine import leases
from oasis.engine.health import reachable_by_site
from oasis.engine.machine import Machine, Operation, OperationError, Step, Work
from tests.unit.conftest import World, cluster_body

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "oasis.json"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(world: World) -> dict[str, list]:
    r = world.client.get("/metrics")  # no token
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def test_requests_are_counted_by_route_template_and_code(world: World) -> None:
    before = sample("oasis_http_requests_total", method="POST", route="/v2/clusters", code="202")
    timed = sample("oasis_http_request_duration_seconds_count", method="GET", route="/v2/clusters/{id}")
    r = world.post("/v2/clusters", cluster_body())
    assert r.status_code == 202, r.text
    cid = r.json()["cluster"]["id"]
    assert world.get(f"/v2/clusters/{cid}").status_code == 200
    assert world.client.get("/v2/no-such-thing").status_code == 404
    assert sample("oasis_http_requests_total", method="POST", route="/v2/clusters", code="202") == before + 1
    assert sample("oasis_http_request_duration_seconds_count", method="GET", route="/v2/clusters/{id}") == timed + 1
    assert sample("oasis_http_requests_total", method="GET", route="none", code="404") >= 1

    families = scrape(world)
    requests = families["oasis_http_requests"]
    assert any(s.labels == {"method": "POST", "route": "/v2/clusters", "code": "202"} for s in requests)
    # no label anywhere holds the cluster's id or a raw path: templates only
    for samples in families.values():
        for s in samples:
            assert not any(cid in v for v in s.labels.values()), s
            assert not any("no-such-thing" in v for v in s.labels.values()), s


def test_metrics_holds_no_project_data(world: World) -> None:
    r = world.post("/v2/clusters", cluster_body(name="secret-project-name"))
    assert r.status_code == 202, r.text
    text = world.client.get("/metrics").text
    assert "secret-project-name" not in text and world.projects["p1"] not in text


def _site_work(world: World):  # noqa: ANN202
    class SiteWork(Work):
        model = Site

    return lambda row_id: SiteWork(world.db, row_id, lambda: None)


def _run_op(world: World, steps: tuple[Step, ...]) -> None:
    async def finish(w: Work) -> None:
        w.done()

    async def rollback(w: Work, _e: Exception) -> None:
        w.done()

    with world.db.session() as s:
        s.get(Site, world.site_id).op = "deploy"
    machine = Machine(_site_work(world), {"deploy": Operation(steps, finish, rollback)}, (), grace=1)
    asyncio.run(machine(world.site_id))


def test_steps_and_outcomes_are_measured(world: World) -> None:
    async def quick(_w: Work) -> None:
        await asyncio.sleep(0)

    async def fails(_w: Work) -> None:
        raise OperationError("no")

    steps = sample("oasis_step_duration_seconds_count", model="site", operation="deploy", step="probe")
    done = sample("oasis_operations_total", model="site", operation="deploy", outcome="done")
    failed = sample("oasis_operations_total", model="site", operation="deploy", outcome="failed")
    _run_op(world, (Step("probe", quick),))
    _run_op(world, (Step("probe", quick), Step("breaks", fails)))
    assert sample("oasis_step_duration_seconds_count", model="site", operation="deploy", step="probe") == steps + 2
    assert sample("oasis_operations_total", model="site", operation="deploy", outcome="done") == done + 1
    assert sample("oasis_operations_total", model="site", operation="deploy", outcome="failed") == failed + 1


def test_a_takeover_is_counted_a_first_claim_is_not(world: World) -> None:
    taken = sample("oasis_lease_takeovers_total", model="site")
    with world.db.session() as s:
        s.get(Site, world.site_id).op = "deploy"
    assert leases.claim(world.db, Site, world.site_id, "deploy", "engine-a", 15)
    assert sample("oasis_lease_takeovers_total", model="site") == taken
    with world.db.session() as s:  # engine-a never beat: its lease is free for another engine
        s.get(Site, world.site_id).lease_owner = "engine-a"
    assert leases.claim(world.db, Site, world.site_id, "deploy", "engine-b", 15)
    assert sample("oasis_lease_takeovers_total", model="site") == taken + 1


def test_job_end_lag_is_observed() -> None:
    count, total = sample("oasis_job_end_seen_lag_seconds_count"), sample("oasis_job_end_seen_lag_seconds_sum")
    metrics.observe_job_end(time.time() - 2)
    metrics.observe_job_end(None)  # an end the agent did not time: nothing to measure
    assert sample("oasis_job_end_seen_lag_seconds_count") == count + 1
    assert sample("oasis_job_end_seen_lag_seconds_sum") - total >= 2


def test_hosts_reachable_per_site_from_the_health_records(world: World) -> None:
    metrics.watch_hosts(lambda: reachable_by_site(world.db))
    try:
        assert sample("oasis_hosts_reachable", site="local") == 0  # not checked yet
        assert sample("oasis_hosts", site="local") == 1
        with world.db.session() as s:
            host = s.query(Host).filter_by(site_id=world.site_id).one()
            host.spec = {**host.spec, "health": {"reachable": True}}
        assert sample("oasis_hosts_reachable", site="local") == 1
        assert "oasis_hosts_reachable" in scrape(world)
    finally:
        metrics.watch_hosts(None)


def test_the_request_that_asked_for_an_operation_is_kept_on_the_row(world: World) -> None:
    r = world.post("/v2/clusters", cluster_body())
    assert r.status_code == 202, r.text
    rid = r.headers["x-openstack-request-id"]
    with world.db.session() as s:
        assert s.get(Cluster, r.json()["cluster"]["id"]).request_id == rid
    deleted = world.client.delete(f"/v2/clusters/{r.json()['cluster']['id']}", headers=world.h())
    assert deleted.status_code == 204, deleted.text
    with world.db.session() as s:
        assert s.get(Cluster, r.json()["cluster"]["id"]).request_id == deleted.headers["x-openstack-request-id"]


def _metric_names() -> set[str]:
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names = set()
    for family in REGISTRY.collect():  # a labelled metric with no child yet has no sample: names by its type
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    metrics.watch_hosts(lambda: {"local": (1, 1)})  # the collector's families, as a process has them
    try:
        names.update(f.name for f in REGISTRY.collect())
    finally:
        metrics.watch_hosts(None)
    return names


def test_the_grafana_dashboard_names_only_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs and dashboard["title"]
    known = _metric_names()
    used = {m for e in exprs for m in re.findall(r"\boasis_[a-z_]+", e)}
    assert used and used <= known, sorted(used - known)
    ours = {n for n in known if n.startswith("oasis_") and not n.endswith("_created")}
    # every metric family of oasis is on some panel
    families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in ours}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
    assert families <= shown, sorted(families - shown)


@pytest.mark.parametrize("doc", ["metrics.md"])
def test_the_metrics_page_lists_every_metric(doc: str) -> None:
    page = (DASHBOARD.parents[1] / doc).read_text()
    for family in REGISTRY.collect():
        if family.name.startswith("oasis_"):
            exposed = family.name + ("_total" if family.type == "counter" else "")
            assert f"`{exposed}`" in page, exposed
    assert "`oasis_hosts_reachable`" in page and "`oasis_hosts`" in page
