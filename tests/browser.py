"""A real headless Chromium from Debian's packages, driven by Selenium through Debian's chromium-driver: for the
dashboard's browser tests, its benchmark and its screenshots. The driver's path is given, so selenium-manager never
looks for (or downloads) one; the profile is a temporary directory, removed with the browser."""
from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync")


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[webdriver.Chrome]:
    """One browser, always quit (and its profile removed), whatever happens in between."""
    profile = tempfile.mkdtemp(prefix="oasis-chromium-")
    driver = None
    try:
        options = Options()
        options.binary_location = CHROMIUM
        for arg in (*ARGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: webdriver.Chrome, what: Callable[[webdriver.Chrome], Any], timeout: float = 60,
             message: str = "") -> Any:
    """Poll `what` until it is true. An element of a page that a click has just navigated away from is stale, not
    an error: the wait goes on, on the next page."""
    return WebDriverWait(driver, timeout, poll_frequency=0.05,
                         ignored_exceptions=[StaleElementReferenceException]).until(what, message)


def wait_page(driver: webdriver.Chrome, path_pattern: str, timeout: float = 30, message: str = "") -> str:
    """Wait for the browser to be on a page whose path matches, loaded; its last path segment."""
    pattern = re.compile(path_pattern)
    wait_for(driver, lambda d: pattern.search(d.current_url) and d.execute_script(
        "return document.readyState") == "complete", timeout, message or f"a page matching {path_pattern}")
    return driver.current_url.rsplit("/", 1)[1]


def text_of(driver: webdriver.Chrome, css: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def sign_in(driver: webdriver.Chrome, base: str, user: str, password: str, project: str) -> None:
    driver.get(f"{base}/dashboard/login")
    driver.find_element(By.ID, "username").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "project").send_keys(project)
    driver.find_element(By.ID, "sign-in").click()
    wait_for(driver, lambda d: user in text_of(d, "header .who"), 30, f"{user} to be signed in")


def sign_out(driver: webdriver.Chrome) -> None:
    driver.find_element(By.CSS_SELECTOR, "header .who button").click()
    wait_for(driver, lambda d: d.find_elements(By.ID, "sign-in"), 30, "the login page")


def choose(driver: webdriver.Chrome, select_id: str, value: str) -> None:
    Select(driver.find_element(By.ID, select_id)).select_by_value(value)
