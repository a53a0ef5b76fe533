#!/usr/bin/env python3
"""The dashboard's screenshots in docs/ (docs/img/dashboard-*.png), from a real run: an `oasis up` started here
(and stopped by PID), a project with a Dask cluster template and the demo's wordcount, a real headless Chromium
(tests/browser.py) that signs in, creates the cluster from the page, runs the job and photographs each page.

    .venv/bin/python devtools/screenshots.py [--out docs/img]"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from selenium.webdriver.common.by import By  # noqa: E402

from tests.browser import chromium, choose, sign_in, text_of, wait_for, wait_page  # noqa: E402
from tests.integration import workflow as wf  # noqa: E402
from tests.integration.services import Oasis  # noqa: E402

DEMO = ROOT / "oasis" / "demo"
WIDTH = 1280


def shoot(driver, path: Path, max_height: int = 1800) -> None:  # noqa: ANN001
    """The whole page (up to max_height), not only the first screen of it."""
    height, chrome = driver.execute_script("return [document.documentElement.scrollHeight, "
                                           "window.outerHeight - window.innerHeight]")
    driver.set_window_size(WIDTH, min(max(height, 600), max_height) + chrome)
    driver.save_screenshot(str(path))
    driver.set_window_size(WIDTH, 900)
    print(f"wrote {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="oasis-screenshots-") as tmp, \
            tempfile.TemporaryDirectory(prefix="oasis-screenshots-data-") as data:
        Path(data).chmod(0o755)  # jobs run as the project's Unix user
        text = Path(data) / "rivers-cities-and-data.txt"
        shutil.copyfile(DEMO / "data" / text.name, text)
        text.chmod(0o644)
        service = Oasis(Path(tmp) / "state")
        try:
            service.start_api("up")
            _, member = service.add_project("analytics", "dana", "dana-pass-1")
            version = wf.plugin_version(member, "dask")
            template = wf.ok(member.post("/cluster-templates", json={
                "name": "dask-small", "plugin_name": "dask", "plugin_version": version,
                "description": "1 scheduler + 2 workers on m1.small", "node_groups": [
                    {"name": "master", "flavor_id": "2", "node_processes": ["scheduler"], "count": 1},
                    {"name": "worker", "flavor_id": "2", "node_processes": ["worker"], "count": 2}]}))
            job_template = wf.job_template(member, "wordcount", "Dask", wf.upload_binary(
                member, "wordcount_dask.py", (DEMO / "wordcount_dask.py").read_bytes()))
            source = wf.ok(member.post("/data-sources", json={"name": "essay", "type": "file",
                                                              "url": text.as_uri()}))["data_source"]
            with chromium(WIDTH, 900) as browser:
                browser.get(f"{service.url}/dashboard/login")
                shoot(browser, args.out / "dashboard-login.png")
                sign_in(browser, service.url, "dana", "dana-pass-1", "analytics")
                browser.get(f"{service.url}/dashboard/clusters/new")
                browser.find_element(By.ID, "name").send_keys("river-analysis")
                choose(browser, "cluster_template_id", template["cluster_template"]["id"])
                browser.find_element(By.ID, "create").click()
                cid = wait_page(browser, r"/clusters/[0-9a-f-]{36}$", 30, "the cluster's page")
                wait_for(browser, lambda d: text_of(d, "#cluster-status") == "Active", 300, "Active")
                wait_for(browser, lambda d: d.find_element(By.ID, "timeline").get_attribute("data-settled"), 30,
                         "the timeline's end")
                shoot(browser, args.out / "dashboard-cluster.png", 2400)
                browser.get(f"{service.url}/dashboard/jobs/new?cluster={cid}")
                choose(browser, "job_template_id", job_template)
                choose(browser, "input_id", source["id"])
                browser.find_element(By.ID, "run").click()
                wait_page(browser, r"/jobs/[0-9a-f-]{36}$", 30, "the job's page")
                wait_for(browser, lambda d: d.find_element(By.ID, "logs").get_attribute("data-settled"), 300,
                         "the job and its logs to end")
                shoot(browser, args.out / "dashboard-job.png")
                browser.get(f"{service.url}/dashboard/clusters")
                shoot(browser, args.out / "dashboard-clusters.png")
            wf.ok(member.delete(f"/clusters/{cid}"), 204)
            wf.wait_gone(member, cid)
        finally:
            service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
