#!/usr/bin/env python3
"""The dashboard in a real headless Chromium (Debian's, through chromium-driver) against one `oasis up`, started
here and stopped by PID:

    .venv/bin/python bench/dashboard.py [--clusters N] [--paints K]

  - live step latency: N Dask clusters (1 scheduler + 2 workers), each created from the dashboard's form; for every
    provisioning step and event that reaches the open cluster page by server-sent events, the time from the row's
    `created_at` (the moment the engine recorded it, as the API shows it, here read at full precision from the
    database) to the moment the browser put it on the page (a MutationObserver stamping
    `performance.timeOrigin + performance.now()`, installed before the page's own script);
  - first paint: `first-contentful-paint` of the cluster list and of a cluster page (with its timeline), K loads
    each, beside the time of the same data as the API's JSON (`GET /v2/clusters`, `GET /v2/clusters/{id}?
    show_progress=true`, one HTTP request each from Python).

Medians; results go to bench/dashboard-results.md (printed too)."""
from __future__ import annotations

import argparse
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from selenium.webdriver.common.by import By  # noqa: E402

from tests.browser import chromium, choose, sign_in, text_of, wait_for, wait_page  # noqa: E402
from tests.integration import workflow as wf  # noqa: E402
from tests.integration.services import Oasis  # noqa: E402

# Before any script of the page: stamp every step and event element added to the page once it has loaded (those
# of the server-rendered HTML are left out: they were not pushed live).
STAMP = """
window.__stamps = [];
window.__initial = null;
document.addEventListener('DOMContentLoaded', function () {
  window.__initial = Array.from(document.querySelectorAll('[data-step-id],[data-event-id]'))
    .map(function (e) { return e.id; });
});
new MutationObserver(function (records) {
  var t = performance.timeOrigin + performance.now();
  records.forEach(function (r) { r.addedNodes.forEach(function (n) {
    if (n.dataset && (n.dataset.stepId || n.dataset.eventId)) {
      window.__stamps.push({id: n.dataset.stepId || n.dataset.eventId, kind: n.dataset.stepId ? 'step' : 'event', t: t});
    }
  }); });
}).observe(document, {childList: true, subtree: true});
"""
FCP = "return (performance.getEntriesByType('paint').find(function (p) { return p.name === 'first-contentful-paint'; }) || {}).startTime;"


def recorded_ms(db: Path, kind: str, row_id: str) -> float:
    table = "provision_steps" if kind == "step" else "provision_events"
    with sqlite3.connect(db) as conn:
        (created,) = conn.execute(f"SELECT created_at FROM {table} WHERE id = ?", (row_id,)).fetchone()
    conn.close()
    return datetime.fromisoformat(created).replace(tzinfo=timezone.utc).timestamp() * 1000


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clusters", type=int, default=5)
    ap.add_argument("--paints", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "dashboard-results.md")
    args = ap.parse_args()
    latency: dict[str, list[float]] = {"step": [], "event": []}
    paints: dict[str, list[float]] = {"list": [], "page": []}
    api: dict[str, list[float]] = {"list": [], "page": []}
    with tempfile.TemporaryDirectory(prefix="oasis-bench-dashboard-") as tmp:
        service = Oasis(Path(tmp) / "state")
        try:
            service.start_api("up")
            _, member = service.add_project("bench", "bench", "bench-pass-1")
            version = wf.plugin_version(member, "dask")
            template = wf.ok(member.post("/cluster-templates", json={
                "name": "bench-dask", "plugin_name": "dask", "plugin_version": version, "node_groups": [
                    {"name": "master", "flavor_id": "2", "node_processes": ["scheduler"], "count": 1},
                    {"name": "worker", "flavor_id": "2", "node_processes": ["worker"], "count": 2}]}))
            tid = template["cluster_template"]["id"]
            ids = []
            with chromium() as browser:
                browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": STAMP})
                sign_in(browser, service.url, "bench", "bench-pass-1", "bench")
                for n in range(args.clusters):
                    browser.get(f"{service.url}/dashboard/clusters/new")
                    browser.find_element(By.ID, "name").send_keys(f"bench-{n}")
                    choose(browser, "cluster_template_id", tid)
                    browser.find_element(By.ID, "create").click()
                    ids.append(wait_page(browser, r"/clusters/[0-9a-f-]{36}$", 30, "the cluster's page"))
                    wait_for(browser, lambda d: text_of(d, "#cluster-status") == "Active", 300, "Active")
                    wait_for(browser, lambda d: d.find_element(By.ID, "timeline").get_attribute("data-settled"), 30,
                             "the stream's end")
                    initial = set(browser.execute_script("return window.__initial") or [])
                    stamps = [s for s in browser.execute_script("return window.__stamps") if s["id"] not in initial]
                    for s in stamps:
                        latency[s["kind"]].append(s["t"] - recorded_ms(service.state_dir / "oasis.db", s["kind"], s["id"]))
                    print(f"cluster {n}: {len(stamps)} live items, {len(initial)} in the first HTML", flush=True)
                    if n:  # the first one stays for the page loads below; the others free the host for the next
                        wf.ok(member.delete(f"/clusters/{ids[-1]}"), 204)
                        wf.wait_gone(member, ids[-1])
                urls = {"list": "/dashboard/clusters", "page": f"/dashboard/clusters/{ids[0]}"}
                api_urls = {"list": ("/clusters", {}), "page": (f"/clusters/{ids[0]}", {"show_progress": "true"})}
                for _ in range(args.paints):
                    for what, url in urls.items():
                        browser.get(service.url + url)
                        # the paint entry is queued once the frame is presented, a moment after `load`
                        paints[what].append(float(wait_for(browser, lambda d: d.execute_script(FCP), 30, "a paint")))
                        path, params = api_urls[what]
                        with httpx.Client(base_url=service.url + "/v2", headers=dict(member.headers)) as fresh:
                            t0 = time.perf_counter()
                            wf.ok(fresh.get(path, params=params))
                            api[what].append((time.perf_counter() - t0) * 1000)
            wf.ok(member.delete(f"/clusters/{ids[0]}"), 204)
            wf.wait_gone(member, ids[0])
        finally:
            service.stop()
    lines = ["# Dashboard: first paint and live step latency (medians)", "",
             f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `bench/dashboard.py` on {platform.machine()}: "
             f"one `oasis up`, headless Chromium {browser.capabilities.get('browserVersion', '?')} on the same "
             f"machine, {args.clusters} Dask clusters (1 scheduler + 2 workers) made from the dashboard's form, "
             f"{args.paints} page loads each. A small shared machine is noisy: read ±20%.", "",
             "| measure | dashboard ms | API JSON ms | samples |", "|---|---:|---:|---:|",
             f"| cluster list: first contentful paint / `GET /v2/clusters` | {median(paints['list']):.0f} | "
             f"{median(api['list']):.1f} | {len(paints['list'])} |",
             f"| cluster page: first contentful paint / `GET /v2/clusters/{{id}}?show_progress=true` | "
             f"{median(paints['page']):.0f} | {median(api['page']):.1f} | {len(paints['page'])} |",
             f"| live step: recorded → shown | {median(latency['step']):.0f} | | {len(latency['step'])} |",
             f"| live event: recorded → shown | {median(latency['event']):.0f} | | {len(latency['event'])} |",
             "", "Samples (ms):"]
    for kind in ("step", "event"):
        xs = sorted(latency[kind])
        if xs:
            lines.append(f"- live {kind}: min {xs[0]:.0f}, median {median(xs):.0f}, max {xs[-1]:.0f}")
    for what in ("list", "page"):
        lines.append(f"- first paint ({what}): {', '.join(f'{x:.0f}' for x in paints[what])}")
    text_out = "\n".join(lines) + "\n"
    args.out.write_text(text_out)
    print(text_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
