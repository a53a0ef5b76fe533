"""The dashboard in a real headless Chromium (tests/browser.py) against real oasis processes: sign in, create a
Dask cluster from the page, watch its provisioning steps arrive live (no reload), see it Active, run the demo's
Dask wordcount from the page and read its output on the job's page, delete the cluster; then a second project's
user sees none of it.

`oasis api`, then `oasis engine` (both serve through `create_app`, as `oasis up` does): the engine starts only once
the cluster's page is open in the browser, so the steps that appear there are certainly ones pushed to the page
after it loaded, however fast or slow this machine is."""
from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

import oasis.demo
from tests.browser import chromium, choose, sign_in, sign_out, text_of, wait_for, wait_page
from tests.integration import workflow as wf
from tests.integration.cluster_checks import assert_nothing_left
from tests.integration.services import Oasis

DEMO = Path(oasis.demo.__file__).parent
FINAL_JOB = ("SUCCEEDED", "FAILED", "KILLED", "DONEWITHERROR")
WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
# Records, for every step added to the timeline, the cluster status the page showed at that moment.
WATCH_STEPS = """
window.__stepsSeen = [];
new MutationObserver(function (records) {
  records.forEach(function (r) { r.addedNodes.forEach(function (n) {
    if (n.classList && n.classList.contains('step')) {
      window.__stepsSeen.push(document.getElementById('cluster-status').textContent);
    }
  }); });
}).observe(document.getElementById('timeline'), {childList: true});
"""


@pytest.fixture(scope="module")
def api_then_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Oasis]:
    """`oasis api` alone; the test starts the engine (`service.start_engine()`) when it wants the work done."""
    oasis_ = Oasis(tmp_path_factory.mktemp("dashboard") / "state")
    try:
        oasis_.start_api("api")
        yield oasis_
    finally:
        oasis_.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as driver:
        yield driver


def top_words(text: str, n: int = 10) -> list[str]:
    counts = Counter(w for line in text.splitlines() for w in WORD.findall(line.lower()))
    return [f"{w}\t{c}" for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def content(driver, css: str) -> str:  # noqa: ANN001
    """The text of an element as it is in the page (a <pre>'s tabs and newlines kept)."""
    return driver.execute_script("var e = document.querySelector(arguments[0]); return e ? e.textContent : '';", css)


def test_a_cluster_and_a_job_from_the_dashboard_and_another_project_sees_none_of_it(
        api_then_engine: Oasis, browser, data_dir: Path) -> None:  # noqa: ANN001
    service = api_then_engine
    base = service.url
    _, member = service.add_project("webp1", "wendy", "wendy-pass-1")
    text = data_dir / "essay.txt"
    shutil.copyfile(DEMO / "data" / "rivers-cities-and-data.txt", text)
    text.chmod(0o644)
    version = wf.plugin_version(member, "dask")
    template = wf.ok(member.post("/cluster-templates", json={
        "name": "dask-web", "plugin_name": "dask", "plugin_version": version, "node_groups": [
            {"name": "master", "flavor_id": "2", "node_processes": ["scheduler"], "count": 1},
            {"name": "worker", "flavor_id": "2", "node_processes": ["worker"], "count": 2}]}))["cluster_template"]
    job_template = wf.job_template(member, "wordcount", "Dask",
                                   wf.upload_binary(member, "wordcount_dask.py",
                                                    (DEMO / "wordcount_dask.py").read_bytes()))
    source = wf.ok(member.post("/data-sources", json={"name": "essay", "type": "file", "url": text.as_uri()}))

    # Sign in, and create a cluster from its template on the page.
    sign_in(browser, base, "wendy", "wendy-pass-1", "webp1")
    browser.get(f"{base}/dashboard/clusters/new")
    browser.find_element(By.ID, "name").send_keys("web-dask")
    choose(browser, "cluster_template_id", template["id"])
    browser.find_element(By.ID, "create").click()
    cid = wait_page(browser, r"/dashboard/clusters/[0-9a-f-]{36}$", 30, "the cluster's page")
    assert text_of(browser, "#cluster-status") == "Validating"
    assert browser.find_elements(By.CSS_SELECTOR, "#timeline .step") == []

    # The page stays loaded (a marker on window survives) while the steps and the status arrive by events.
    browser.execute_script("window.__loadedOnce = 'still here';" + WATCH_STEPS)
    service.start_engine()
    wait_for(browser, lambda d: text_of(d, "#cluster-status") == "Active", 180, "the cluster to be Active")
    seen = browser.execute_script("return window.__stepsSeen")
    assert seen and seen[0] != "Active", f"no step appeared before the cluster was Active: {seen}"
    assert browser.execute_script("return window.__loadedOnce") == "still here", "the page was reloaded"
    steps = browser.find_elements(By.CSS_SELECTOR, "#timeline .step")
    assert len(steps) == len(seen) >= 3
    assert browser.find_elements(By.CSS_SELECTOR, "#timeline .event")  # each instance's events too
    assert all(s.find_element(By.CSS_SELECTOR, ".step-result").text == "done" for s in steps)
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#cluster-info a")]
    assert any(link.startswith("https://") and link.endswith("/status") for link in links), links
    assert "web-dask-worker" in text_of(browser, "#node-groups")
    assert "oasis cluster connect web-dask" in browser.page_source
    assert wf.cluster(member, cid)["status"] == "Active"

    # Run the demo's wordcount on it from the page, and read its output on the job's page.
    browser.get(f"{base}/dashboard/jobs/new?cluster={cid}")
    choose(browser, "job_template_id", job_template)
    choose(browser, "input_id", source["data_source"]["id"])
    browser.find_element(By.ID, "run").click()
    jid = wait_page(browser, r"/dashboard/jobs/[0-9a-f-]{36}$", 30, "the job's page")
    wait_for(browser, lambda d: text_of(d, "#job-status") in FINAL_JOB, 180, "the job to end")
    assert text_of(browser, "#job-status") == "SUCCEEDED", content(browser, "#log-stderr")
    expected = top_words(text.read_text())
    wait_for(browser, lambda d: content(d, "#log-stdout").splitlines()[:10] == expected, 30,
             f"the wordcount's output {expected[:3]}... on the page")
    assert "partitions on 2 workers" in content(browser, "#log-stderr")
    assert browser.find_element(By.ID, "job-return-code").text == "0"

    # Delete the cluster from its page: the page says when it is gone.
    browser.get(f"{base}/dashboard/clusters/{cid}")
    browser.find_element(By.ID, "confirm").click()
    browser.find_element(By.ID, "delete").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "cluster-gone").is_displayed(), 120, "the cluster to be gone")
    assert wf.cluster(member, cid) is None
    assert_nothing_left(service.state_dir, cid)
    browser.get(f"{base}/dashboard/clusters")
    assert cid not in browser.page_source
    browser.get(f"{base}/dashboard/jobs")
    assert jid in browser.page_source  # the job outlives its cluster
    sign_out(browser)

    # Another project's member: none of it in any list, and its URLs are 404 pages.
    service.add_project("webp2", "walt", "walt-pass-2")
    sign_in(browser, base, "walt", "walt-pass-2", "webp2")
    for page, table in (("clusters", "clusters"), ("jobs", "jobs"), ("job-templates", "job-templates"),
                        ("job-binaries", "job-binaries"), ("data-sources", "data-sources"),
                        ("templates", "cluster-templates")):
        browser.get(f"{base}/dashboard/{page}")
        rows = browser.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")
        assert [r.get_attribute("class") for r in rows] == ["empty"], f"{page}: {[r.text for r in rows]}"
    for url in (f"/dashboard/jobs/{jid}", f"/dashboard/clusters/{cid}"):
        browser.get(base + url)
        assert text_of(browser, "main h1") == "404 Not Found", url
        assert expected[0] not in content(browser, "main") and "web-dask" not in browser.page_source
    sign_out(browser)
