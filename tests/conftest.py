"""The shared fixtures of every tier, and the tiers themselves.

Tiers (pytest markers, given here by where a test lives and what it uses, so that a new test file gets its tier
without anyone remembering; `./scripts/test -m unit` runs one):

- `unit`: tests/unit. In-process (the app behind a TestClient on SQLite, fakes of a remote host) and local
  processes; no server of anyone else's. Under a minute.
- `integration`: everything else that is not below: real `oasis up` / `api` / `engine` processes with real Dask,
  Spark, PostgreSQL and Swift, started and stopped by the tests.
- `compat`: tests/compat. Sahara's unmodified clients and a fuzzer against a real `oasis up`.
- `lab`: tests that use the `lab` fixture (and tests/lab, the lab's own tests): SSH hosts in network namespaces.
  Needs root (CI runs as root); skipped otherwise.

A run goes unit → integration → compat → lab (each module kept whole and in its order), so that fast failures
come first and the lab (built once, machine-wide, see below) is up for as short a time as possible.

What is expensive is started once per session and shared: one PostgreSQL (`postgres`; each test that wants one
gets a database of its own), one Swift (`swift`), one migrated and seeded template database that each `world`
copies, and one lab (`lab`). A test module gets one `oasis up` (`service`), configured by its
`pytest.mark.service(...)` marker.
"""
from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devtools.devswift import KEY, USER, SwiftServer, memcached_binary
from tests.integration.services import Oasis, Postgres, open_dir
from tests.keystone_service import KeystoneServer, running_keystone, swift_on_keystone
from tests.lab_fixture import built_lab, lab_service
from tests.project_users import removing_new_project_users
from tests.world import Template, World, make_world

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "compat", "lab")  # also the order of a run


@pytest.fixture(scope="session", autouse=True)
def project_users_cleaned_up() -> Iterator[None]:
    """The project users that instances of this session's tests ran as are gone at its end (tests/project_users.py)."""
    with removing_new_project_users():
        yield


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A directory for a test's file:// data that jobs can read: they run as their project's user, who cannot
    pass through pytest's own temporary directories (0700)."""
    with open_dir("oasis-data-") as d:
        yield d


# --- tiers ------------------------------------------------------------------------------------------------------


def tier_of(item: pytest.Item) -> str:
    top = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else ""
    marker = item.get_closest_marker("service")
    on_lab = "service" in getattr(item, "fixturenames", ()) and marker is not None and marker.kwargs.get("lab")
    if top == "lab" or "lab" in getattr(item, "fixturenames", ()) or on_lab:
        return "lab"
    if top in ("unit", "compat"):
        return top
    return "integration"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by these markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank: dict[Path, tuple[int, int]] = {}
    for item in items:
        tier = tier_of(item)
        item.add_marker(getattr(pytest.mark, tier))
        # A module runs in the phase of its latest tier (test_standalone.py: world tests and lab tests, all in the
        # lab phase), whole. In the lab phase, tests/lab first: it builds and removes a lab of its own, which must
        # not meet the shared one.
        key = (TIERS.index(tier), 0 if item.path.is_relative_to(TESTS / "lab") else 1)
        rank[item.path] = max(rank.get(item.path, key), key)
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (rank[item.path], order[id(item)]))


# --- the API world (in-process) ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    return Template.build(tmp_path_factory.mktemp("world-template"))


@pytest.fixture
def world(tmp_path: Path, world_template: Template) -> Iterator[World]:
    """The app on a migrated SQLite database seeded like a small deployment (tests/world.py), a TestClient on it."""
    yield from make_world(tmp_path, world_template)


# --- PostgreSQL -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One real PostgreSQL server for the session (a database per test: `create_database`)."""
    # Not under pytest's tmp dir: that one is private to root, and the server runs as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="oasis-pg-"))
    pg = Postgres(base)
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Engine tests run on both databases: the same code on SQLite and on PostgreSQL (a fresh database)."""
    if request.param == "sqlite":
        return None
    pg: Postgres = request.getfixturevalue("postgres")
    return pg.create_database("oasis_" + uuid.uuid4().hex[:12])


# --- oasis processes --------------------------------------------------------------------------------------------


@pytest.fixture
def split(tmp_path: Path, database_url: str | None) -> Iterator[Oasis]:
    """`oasis api` and `oasis engine` as separate processes on one database."""
    service = Oasis(tmp_path / "state", database_url)
    try:
        service.start_api("api")
        service.start_engine()
        yield service
    finally:
        service.stop()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Oasis]:
    """`oasis up` (the embedded default) for one test."""
    service = Oasis(tmp_path / "state")
    try:
        service.start_api("up")
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Oasis]:
    """One `oasis up` for the test module, stopped at its end. The module's `pytest.mark.service(...)` says how:

    - `lab=True`: on the lab, with its sites registered from its manifest (`register=False`: not); on the way out
      any process left on the lab's hosts is killed;
    - `env={...}`: extra environment of the service;
    - `needs=("fixture", ...)`: module fixtures set up before the service (and so torn down after it);
    - `clean_log=True` (the default in tests/compat): once stopped, no traceback and no credential in its log.
    """
    marker = request.node.get_closest_marker("service")
    opts = dict(marker.kwargs) if marker else {}
    unknown = set(opts) - {"lab", "register", "env", "needs", "clean_log"}
    assert not unknown, f"pytest.mark.service: unknown options {sorted(unknown)}"
    for name in opts.get("needs", ()):
        request.getfixturevalue(name)
    state_dir = tmp_path_factory.mktemp("service") / "state"
    if opts.get("lab"):
        lab_view = request.getfixturevalue("lab")
        with lab_service(lab_view, state_dir, register=opts.get("register", True), env=opts.get("env")) as oasis:
            yield oasis
    else:
        oasis = Oasis(state_dir)
        oasis.env.update(opts.get("env") or {})
        try:
            oasis.start_api("up")
            yield oasis
        finally:
            oasis.stop()
    if opts.get("clean_log", request.path.is_relative_to(TESTS / "compat")):
        assert_clean_log(state_dir)


def assert_no_secret_in_database(state_dir: Path, secrets: list[str]) -> None:
    """The database files on disk (SQLite and its write-ahead log) hold none of these secrets, and no private key,
    in the clear: what a copy of the file, or a job that could read it, would get."""
    files = [p for p in state_dir.glob("oasis.db*") if p.is_file()]
    for path in files:
        raw = path.read_bytes()
        assert b"PRIVATE KEY-----" not in raw, f"{path} holds a private key in the clear"
        for secret in secrets:
            assert secret.encode() not in raw, f"{path} holds a secret in the clear"


def assert_clean_log(state_dir: Path) -> None:
    """No unhandled error, and no credential of clouds.yaml, ever reached the server's log (nor the database)."""
    password = yaml.safe_load((state_dir / "clouds.yaml").read_text())["clouds"]["oasis"]["auth"]["password"]
    assert_no_secret_in_database(state_dir, [password])
    for log in state_dir.glob("*.log"):
        text = log.read_text(errors="replace")
        assert "Traceback" not in text and "INTERNAL_SERVER_ERROR" not in text, f"{log}:\n{text[-3000:]}"
        assert password not in text, f"{log} contains the admin password"
        assert not re.search(r"X-Subject-Token: \S{20,}", text), f"{log} contains a token"


# --- Swift ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def swift() -> Iterator[SwiftServer]:
    """One real Swift (tempauth + s3api + memcached, devtools/devswift.py) for the session, stopped by PID."""
    if memcached_binary() is None:
        pytest.fail("memcached is not installed: scripts/setup must apt-get install memcached")
    with SwiftServer() as server:
        yield server


@pytest.fixture
def swift_creds(swift: SwiftServer) -> dict:
    return {"auth_url": swift.auth_url, "user": USER, "password": KEY}


@pytest.fixture
def s3_creds(swift: SwiftServer) -> dict:
    return {"endpoint": swift.endpoint, "accesskey": USER, "secretkey": KEY}


# --- Keystone ---------------------------------------------------------------------------------------------------

# The token lifetime of `keystone_short_tokens`: short enough that a test can outlive a user's token.
SHORT_TOKEN_SECONDS = 20


@pytest.fixture(scope="session")
def keystone() -> Iterator[KeystoneServer]:
    """One real Keystone 30 for the session (tests/keystone_service.py: projects alpha and beta, users alice,
    rita and bob, oasis's service user), stopped by PID at its end."""
    with running_keystone() as server:
        yield server


@pytest.fixture(scope="session")
def keystone_short_tokens() -> Iterator[KeystoneServer]:
    """Another Keystone, whose tokens live SHORT_TOKEN_SECONDS (`[token] expiration`): for work that must go on
    after its creator's token has expired."""
    with running_keystone(token_expiration=SHORT_TOKEN_SECONDS) as server:
        yield server


@pytest.fixture(scope="session")
def keystone_swift(keystone: KeystoneServer) -> Iterator[SwiftServer]:
    """One Swift for the session that authenticates at the session's Keystone, the projects' object-store in its
    catalog (tests/keystone_service.py `swift_on_keystone`)."""
    with swift_on_keystone(keystone) as swift:
        yield swift


# --- the lab ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def lab_session() -> Iterator[dict]:
    """The default lab, built once for the session (root only: skipped otherwise) and always taken down; the lab's
    lock is held meanwhile, so that another test run on this machine waits for it rather than meeting it."""
    with built_lab("oasis-lab-") as built:
        yield built


@pytest.fixture(scope="module")
def lab(lab_session: dict) -> dict:
    """{"spec", "state_dir", "labmod", "manifest"} of the session's lab, brought up again for each module:
    `up` is idempotent, creates nothing on a healthy lab and puts back whatever an earlier module took away (a
    killed sshd, the controller's key dropped from a host), so that every module starts on a whole lab."""
    lab_session["labmod"].up(lab_session["spec"], lab_session["state_dir"])
    return lab_session
