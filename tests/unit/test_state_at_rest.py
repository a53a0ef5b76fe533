"""State at rest: the state dir is its user's alone, its files with secrets are 0600 from the start, and no secret
(private keys, join secrets, site credentials, bundles, data-source and binary credentials) is in the database
file in the clear."""
from __future__ import annotations

import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, select, text

from oasis.config import Settings
from oasis.db.encrypted import SecretError, load_key
from oasis.db.models import Cluster, ControlPlaneSecret, Export, Site
from oasis.db.session import Database, alembic_config
from oasis.server import _prepare
from oasis.storage.endpoints import set_policy


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _raw(db_file: Path) -> bytes:
    """The database as it is on disk: the file and whatever its write-ahead log holds."""
    return b"".join(p.read_bytes() for p in db_file.parent.glob(db_file.name + "*") if p.is_file())


def _secret(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


def _write_every_kind(db: Database, site_id: str) -> list[str]:
    found = {k: _secret(k) for k in ("cluster-key", "cluster-ca", "site-key", "bundle-join", "join-token")}
    with db.session() as s:
        s.add(Cluster(project_id="p", name="c-" + uuid.uuid4().hex[:6], plugin_name="dask", plugin_version="2024",
                      site_id=site_id, management_private_key=f"-----BEGIN KEY-----\n{found['cluster-key']}\n",
                      secrets={"ca_key": found["cluster-ca"]}))
        s.add(Site(name="s-" + uuid.uuid4().hex[:6], secrets={"ssh_private_key": found["site-key"]}))
        s.add(Export(bundle={"secrets": {"join_token": found["bundle-join"]}, "version": 1}))
        s.add(ControlPlaneSecret(name="join_token_test", value=found["join-token"]))
    return list(found.values())


def test_no_secret_is_in_the_database_file_in_the_clear(world, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("OASIS_SECRET_KEY", raising=False)
    secrets = _write_every_kind(world.db, world.site_id)
    password, secret_key = _secret("ds-password"), _secret("binary-secret")
    r = world.post("/v2/data-sources", {"name": "ds", "type": "swift", "url": "swift://c/o",
                                        "credentials": {"user": "u", "password": password}})
    assert r.status_code in (200, 202), r.text
    r = world.post("/v2/job-binaries", {"name": "b.py", "url": "s3://bucket/b.py",
                                        "extra": {"accesskey": "a", "secretkey": secret_key,
                                                  "endpoint": "http://192.0.2.10:9000"}})
    assert r.status_code in (200, 202), r.text
    raw = _raw(Path(world.settings.database_url.removeprefix("sqlite:///")))
    for value in (*secrets, password, secret_key):
        assert value.encode() not in raw, f"{value.split('-')[0]} is in the database file in the clear"
    with world.db.session() as s:  # and the code reads them as they were written
        cluster = s.scalars(select(Cluster)).first()
        assert secrets[0] in cluster.management_private_key and cluster.secrets == {"ca_key": secrets[1]}
        assert s.get(ControlPlaneSecret, "join_token_test").value == secrets[4]


def test_another_key_cannot_read_the_secrets(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("OASIS_SECRET_KEY", raising=False)
    url = f"sqlite:///{tmp_path / 'state' / 'oasis.db'}"
    db = Database(url)
    db.migrate()
    with db.session() as s:
        s.add(ControlPlaneSecret(name="t", value="the-token"))
    db.engine.dispose()
    other = Database(url, key=load_key(tmp_path / "elsewhere"))
    with pytest.raises(SecretError), other.session() as s:
        s.get(ControlPlaneSecret, "t")
    other.engine.dispose()


@pytest.fixture(autouse=True)
def _no_policy_left_behind() -> Iterator[None]:
    """`_prepare` sets the process's endpoint policy, as a server's start does: put it back for the tests after."""
    yield
    set_policy(None)


def test_the_state_dir_and_its_files_are_private_from_the_start(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("OASIS_SECRET_KEY", raising=False)
    state = tmp_path / "state"
    db, _store = _prepare(Settings(state_dir=state, local_ports="31000-31099"))
    with db.session() as s:
        s.add(ControlPlaneSecret(name="t", value="v"))  # the write-ahead log now exists, open
        wal = state / "oasis.db-wal"
        assert wal.exists() and _mode(wal) == 0o600 and _mode(state / "oasis.db-shm") == 0o600
    assert _mode(state) == 0o700
    for name in ("oasis.db", "clouds.yaml", "secret.key", "oasis.db.setup-lock"):
        assert _mode(state / name) == 0o600, name
    db.engine.dispose()


def test_a_loose_state_dir_is_tightened_at_start(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("OASIS_SECRET_KEY", raising=False)
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    for name in ("oasis.db", "clouds.yaml", "bundle-v1.json"):
        (state / name).touch()
        (state / name).chmod(0o644)
    db, _store = _prepare(Settings(state_dir=state, local_ports="31100-31199"))
    assert _mode(state) == 0o700
    for name in ("oasis.db", "clouds.yaml", "bundle-v1.json", "secret.key"):
        assert _mode(state / name) == 0o600, name
    db.engine.dispose()


def test_migration_0006_encrypts_the_rows_written_before(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("OASIS_SECRET_KEY", raising=False)
    path = tmp_path / "state" / "oasis.db"
    url = f"sqlite:///{path}"
    db = Database(url)
    command.upgrade(alembic_config(url), "0005")
    plain = {k: _secret(k) for k in ("key", "ca", "site", "bundle", "join")}
    with create_engine(url).begin() as c:  # rows as an oasis without encryption wrote them
        c.execute(text("INSERT INTO sites (id, name, status, cpu_allocation_ratio, ram_allocation_ratio, spec, "
                       "secrets, status_description, generation, op_target, created_at) VALUES ('s1', 'site', "
                       "'Active', 1, 1, '{}', :secrets, '', 0, '{}', '2026-01-01')"),
                  {"secrets": f'{{"ssh_private_key": "{plain["site"]}"}}'})
        c.execute(text("INSERT INTO clusters (id, project_id, name, is_public, is_protected, plugin_name, "
                       "plugin_version, site_id, status, status_description, is_transient, spec, info, "
                       "management_public_key, management_private_key, secrets, op_target, created_at) VALUES "
                       "('c1', 'p', 'c', 0, 0, 'dask', 'v', 's1', 'Active', '', 0, '{}', '{}', '', :key, :secrets, "
                       "'{}', '2026-01-01')"), {"key": plain["key"], "secrets": f'{{"ca": "{plain["ca"]}"}}'})
        c.execute(text("INSERT INTO exports (version, bundle, created_at) VALUES (1, :b, '2026-01-01')"),
                  {"b": f'{{"secrets": {{"join": "{plain["bundle"]}"}}}}'})
        c.execute(text("INSERT INTO control_plane_secrets (name, value) VALUES ('j', :v)"), {"v": plain["join"]})
    with db.session() as s:  # read before the migration: plain values pass through
        assert s.get(ControlPlaneSecret, "j").value == plain["join"]
    db.migrate()
    db.engine.dispose()
    with create_engine(url).connect() as c:
        c.execute(text("VACUUM"))  # the old pages go: what is left is what the rows now hold
    raw = _raw(path)
    for value in plain.values():
        assert value.encode() not in raw
    db = Database(url)
    with db.session() as s:
        assert s.get(Cluster, "c1").management_private_key == plain["key"]
        assert s.get(Cluster, "c1").secrets == {"ca": plain["ca"]}
        assert s.get(Site, "s1").secrets == {"ssh_private_key": plain["site"]}
        assert s.get(Export, 1).bundle == {"secrets": {"join": plain["bundle"]}}
        assert s.get(ControlPlaneSecret, "j").value == plain["join"]
    db.engine.dispose()
