"""The world of the API tests: a migrated SQLite database seeded like a small deployment (the `local` site, one
host, Nova's flavors, a tagged image), users in two projects with a token each, and a TestClient on the app.

The `world` fixture (tests/conftest.py) migrates and seeds one template database per session and gives each test a
copy of it, with the host's base dir in the test's tmp_path and tokens of its own."""
from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import update

with warnings.catch_warnings():  # starlette's notice about httpx versions is not about this code
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from oasis.api.app import create_app
from oasis.config import Settings
from oasis.db.models import Flavor, Host, Image, Site
from oasis.db.session import Database
from oasis.identity import builtin
from oasis.plugins import registry
from oasis.storage.filesystem import FilesystemStore

FLAVORS = [("1", "m1.tiny", 1, 512, 1), ("2", "m1.small", 1, 2048, 20), ("3", "m1.medium", 2, 4096, 40),
           ("4", "m1.large", 4, 8192, 80), ("5", "m1.xlarge", 8, 16384, 160)]
PASSWORD = "s3cret-pass"


def plugin_tags() -> list[str]:
    return sorted({t for p in registry().values() for v in p.versions() for t in p.required_image_tags(v)})


@dataclass
class World:
    settings: Settings
    db: Database
    store: FilesystemStore
    client: TestClient
    tokens: dict[str, str]
    projects: dict[str, str]
    site_id: str
    image_id: str
    notified: list[int] = field(default_factory=list)

    def h(self, who: str = "alice") -> dict[str, str]:
        return {"X-Auth-Token": self.tokens[who]}

    def get(self, path: str, who: str = "alice", **kw: Any):  # noqa: ANN201
        return self.client.get(path, headers=self.h(who), **kw)

    def post(self, path: str, body: Any = None, who: str = "alice", **kw: Any):  # noqa: ANN201
        return self.client.post(path, json=body, headers=self.h(who), **kw)

    def patch(self, path: str, body: Any = None, who: str = "alice"):  # noqa: ANN201
        return self.client.patch(path, json=body, headers=self.h(who))

    def put(self, path: str, body: Any = None, who: str = "alice", **kw: Any):  # noqa: ANN201
        return self.client.put(path, json=body, headers=self.h(who), **kw)

    def delete(self, path: str, who: str = "alice", body: Any = None):  # noqa: ANN201
        return self.client.request("DELETE", path, json=body, headers=self.h(who))


USERS = (("admin", "admin", "admin"), ("alice", "p1", "member"), ("bob", "p2", "member"), ("carol", "p1", "reader"))


def seed_rows(db: Database, base_dir: Path) -> tuple[str, str, dict[str, str]]:
    """(site id, image id, project ids by name): everything of the world but its tokens."""
    with db.session() as s:
        for fid, name, vcpus, ram, disk in FLAVORS:
            s.add(Flavor(id=fid, name=name, vcpus=vcpus, ram_mb=ram, disk_gb=disk))
        site = Site(name="local", spec={"default_network": "local", "networks": {"local": "127.0.0.0/8"}})
        edge = Site(name="edge", spec={"default_network": "edge-net"})
        s.add_all([site, edge])
        s.flush()
        s.add(Host(site_id=site.id, name="h1", address="127.0.0.1", vcpus=8, ram_mb=16384, disk_gb=100,
                   base_dir=str(base_dir)))
        image = Image(site_id=site.id, name="runtime", username="oasis", tags=plugin_tags(), registered=True)
        s.add_all([image, Image(site_id=site.id, name="bare", tags=["python"], registered=True),
                   Image(site_id=site.id, name="hidden", tags=plugin_tags(), registered=False)])
        s.flush()
        projects = {n: builtin.ensure_project(s, n) for n in ("admin", "p1", "p2")}
        for user, project, role in USERS:
            builtin.assign_role(s, builtin.ensure_user(s, user, PASSWORD), projects[project], role)
        return site.id, image.id, {n: p.id for n, p in projects.items()}


def issue_tokens(db: Database) -> dict[str, str]:
    """A fresh token (one hour) for each user of the world, scoped to its project."""
    with db.session() as s:
        tokens = {}
        for user, project, _role in USERS:
            u = builtin.ensure_user(s, user, None)  # there already: looked up, its password left alone
            tokens[user] = builtin.issue_token(s, u, builtin.ensure_project(s, project), 1)
        return tokens


def seed(db: Database, base_dir: Path) -> tuple[str, str, dict[str, str], dict[str, str]]:
    site_id, image_id, projects = seed_rows(db, base_dir)
    return site_id, image_id, issue_tokens(db), projects


@dataclass(frozen=True)
class Template:
    """A migrated and seeded database file that each test's world starts from (a copy: migrating and hashing the
    users' passwords once per session instead of once per test)."""

    path: Path
    site_id: str
    image_id: str
    projects: dict[str, str]

    @classmethod
    def build(cls, directory: Path) -> "Template":
        path = directory / "template.db"
        db = Database(f"sqlite:///{path}")
        db.migrate()
        site_id, image_id, projects = seed_rows(db, directory / "hosts")
        db.engine.dispose()
        return cls(path, site_id, image_id, projects)

    def copy_to(self, url: str) -> None:
        target = Path(url.removeprefix("sqlite:///"))
        target.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(self.path) as src, sqlite3.connect(target) as dst:
            src.backup(dst)  # a consistent copy, WAL or not
        src.close()
        dst.close()


def make_world(tmp_path: Path, template: Template) -> Iterator[World]:
    """The world for one test: its own copy of the template, its host's base dir under tmp_path, its own tokens."""
    settings = Settings(state_dir=tmp_path / "state")
    template.copy_to(settings.database_url)
    db = Database(settings.database_url)
    with db.session() as s:
        s.execute(update(Host).values(base_dir=str(tmp_path / "hosts")))
    tokens = issue_tokens(db)
    store = FilesystemStore(settings.objects_dir)
    notified: list[int] = []
    app = create_app(settings, db, store, notify=lambda: notified.append(1))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield World(settings, db, store, client, tokens, dict(template.projects), template.site_id,
                    template.image_id, notified)


def version_of(plugin: str) -> str:
    return registry()[plugin].versions()[0]


def cluster_body(name: str = "c1", plugin: str = "spark", workers: int = 2, **extra: Any) -> dict[str, Any]:
    master = registry()[plugin].master_process
    return {"name": name, "plugin_name": plugin, "plugin_version": version_of(plugin), "node_groups": [
        {"name": "master", "flavor_id": "2", "node_processes": [master], "count": 1},
        {"name": "worker", "flavor_id": "m1.small", "node_processes": ["worker"], "count": workers}], **extra}
