"""First start and every start: the `local` site with this machine as its host, the image of the running
environment, Nova's default flavors, and an admin user whose credentials go to `<state dir>/clouds.yaml`."""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import tempfile
import uuid
from pathlib import Path

import yaml
from sqlalchemy import select

from oasis.config import Settings
from oasis.db.models import Flavor, Host, Image, Site
from oasis.db.session import Database
from oasis.identity import builtin
from oasis.plugins import image_tags, registry
from oasis.runtime import local_runtime, total_ram_mb

log = logging.getLogger(__name__)

LOCAL_SITE = "local"
# Nova's defaults, so that existing templates naming flavors "1".."5" or m1.* keep working.
FLAVORS = [("1", "m1.tiny", 1, 512, 1), ("2", "m1.small", 1, 2048, 20), ("3", "m1.medium", 2, 4096, 40),
           ("4", "m1.large", 4, 8192, 80), ("5", "m1.xlarge", 8, 16384, 160)]
IMAGE_NAMESPACE = uuid.UUID("6f1c2a53-3b0e-4c55-9a57-0a5e5d0c1a11")
# The `local` host's instances when oasis runs as root: beside the agent's records of the machine's users.
LOCAL_INSTANCES = Path("/var/lib/oasis-agent/local")


def private_state_dir(state_dir: Path) -> None:
    """The state dir is this user's alone: made 0700, or tightened to it when an older oasis or a loose umask left
    it open, and every file directly in it (the database, clouds.yaml, secret.key, bundles, logs) made 0600."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if state_dir.stat().st_mode & 0o077:
        log.warning("the state dir %s was readable by others: tightened to 0700", state_dir)
        state_dir.chmod(0o700)
    for path in state_dir.iterdir():
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o077:
            path.chmod(0o600)


def bootstrap(settings: Settings, db: Database, admin: bool = True) -> None:
    """Idempotent; run under `Database.setup_lock()`, so that replicas starting together do it one at a time.
    `admin`: also the admin user and its clouds.yaml, which name the API's address (an engine has none)."""
    with db.session() as s:
        _flavors(s)
        site = _local_site(s)
        _local_host(s, site, settings)
        _local_image(s, site)
        builtin.ensure_service_user(s)  # the trustee of the trusts oasis makes for work that outlives a token
    if admin:
        _admin(settings, db)


def _flavors(s) -> None:
    for fid, name, vcpus, ram, disk in FLAVORS:
        if s.get(Flavor, fid) is None:
            s.add(Flavor(id=fid, name=name, vcpus=vcpus, ram_mb=ram, disk_gb=disk))


def _local_site(s) -> Site:
    site = s.scalars(select(Site).where(Site.name == LOCAL_SITE)).first()
    if site is None:
        site = Site(name=LOCAL_SITE, spec={"default_network": "local", "networks": {"local": "127.0.0.0/8"}})
        s.add(site)
        s.flush()
    return site


def local_single_user() -> bool:
    """Whether the `local` site runs every instance as oasis's own user: only root can switch users."""
    return os.geteuid() != 0


def local_base_dir(settings: Settings) -> Path:
    """Where the `local` host keeps its instances. Unprivileged: under the state directory, as before. As root,
    instances run as their projects' users, who must be able to pass through to their own directories, which
    they cannot under the state directory (0700) or a home or a temporary directory made 0700: the base is then
    a directory of the machine's agent, one per state directory, and `<state>/hosts/localhost` links to it."""
    link = settings.hosts_dir / "localhost"
    if local_single_user():
        link.mkdir(parents=True, exist_ok=True)
        return link
    digest = hashlib.sha256(str(settings.state_dir).encode()).hexdigest()[:16]
    base = LOCAL_INSTANCES / digest
    base.mkdir(parents=True, exist_ok=True)
    for d in (LOCAL_INSTANCES.parent, LOCAL_INSTANCES, base):
        d.chmod(0o711)  # traversable, not listable: a project user reaches only the directory it is given
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        if link.is_dir():
            link.rmdir()  # an empty base from an unprivileged start (a full one is a real base: kept as is)
        link.symlink_to(base)
    return base


def unreachable_runtime(runtime: dict) -> list[str]:
    """The runtime paths (Python, Spark, Java) that a project user cannot reach: a directory on the way that
    others cannot pass through (say a 0700 /root holding a pyenv Python)."""
    blocked = []
    for key in ("python", "spark_home", "java_home"):
        if key not in runtime:
            continue
        path = Path(runtime[key])
        for d in [*reversed(path.parents), path]:
            try:
                mode = d.stat().st_mode
            except OSError:
                break
            if not mode & 0o001:
                blocked.append(f"{key} {path}: {d} is mode {mode & 0o777:o} (chmod o+x {d})")
                break
    return blocked


def _local_host(s, site: Site, settings: Settings) -> None:
    host = s.scalars(select(Host).where(Host.site_id == site.id, Host.name == "localhost")).first()
    base = local_base_dir(settings)
    low, _, high = settings.local_ports.partition("-")
    capacity = dict(vcpus=os.cpu_count() or 1, ram_mb=total_ram_mb(), disk_gb=shutil.disk_usage(base).total >> 30,
                    port_min=int(low), port_max=int(high))
    if host is None:
        host = Host(site_id=site.id, name="localhost", access="local", address="127.0.0.1", base_dir=str(base),
                    **capacity)
        s.add(host)
    else:  # the machine may have been resized since the last start
        for k, v in capacity.items():
            setattr(host, k, v)
        host.base_dir = str(base)
    # shown by `oasis site show` and GET /v2/sites: whether its instances run as their projects' users
    host.spec = {**(host.spec or {}), "single_user": local_single_user()}


def _local_image(s, site: Site) -> None:
    image_id = str(uuid.uuid5(IMAGE_NAMESPACE, f"{site.name}/local-runtime"))
    image = s.get(Image, image_id)
    if image is None:
        image = Image(id=image_id, site_id=site.id, name="local-runtime", username=os.environ.get("USER", "root"),
                      description="The Python, Java, Spark and Dask of the environment oasis runs in")
        s.add(image)
    image.tags = image_tags()
    image.runtime = local_runtime()
    if not local_single_user():
        for blocked in unreachable_runtime(image.runtime):
            log.warning("the local site's project users cannot reach the runtime: %s", blocked)
    if "spark_home" not in image.runtime or "java_home" not in image.runtime:
        image.tags = [t for t in image.tags if t not in ("spark", *registry()["spark"].versions())]


def _admin(settings: Settings, db: Database) -> None:
    path = settings.state_dir / "clouds.yaml"
    with db.session() as s:
        project = builtin.ensure_project(s, "admin")
        user = builtin.ensure_user(s, "admin", None)
        builtin.assign_role(s, user, project, "admin")
        password = _known_password(path)
        if password is None:
            # No credentials file: (re)set the password and write one, readable by this user only.
            password = secrets.token_urlsafe(18)
            user.password_hash = builtin.hash_password(password)
            log.info("admin credentials written to %s", path)
    if settings.identity_backend == "keystone" and settings.keystone is not None:
        # Users sign in at Keystone with credentials of their own, which oasis never sees: the file names
        # where, and they add who (auth.username, password and project_name).
        write_clouds_yaml(path, settings.keystone.www_authenticate_uri, None, None, None, cacert=settings.tls_ca)
        return
    # Rewritten on every start: the service may listen on another address than last time.
    write_clouds_yaml(path, f"{settings.public_url}/v3", "admin", password, "admin", cacert=settings.tls_ca)


def _known_password(path: Path) -> str | None:
    try:
        return yaml.safe_load(path.read_text())["clouds"]["oasis"]["auth"]["password"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None


def write_clouds_yaml(path: Path, auth_url: str, username: str | None, password: str | None,
                      project: str | None, cacert: Path | None = None) -> None:
    """`cacert`: the CA the API's certificate is verified with (openstacksdk's and keystoneauth's key), so that
    every client of this file verifies the TLS endpoint rather than trusting it blindly. Without a user (the
    Keystone backend), the cloud names only where to authenticate."""
    who = {"username": username, "password": password, "project_name": project} if username else {}
    cloud = {"clouds": {"oasis": {
        "auth": {"auth_url": auth_url, **who, "user_domain_name": "Default", "project_domain_name": "Default"},
        "region_name": "RegionOne", "interface": "public", "identity_api_version": 3,
        "data_processing_api_version": "2"}}}
    if cacert is not None:
        cloud["clouds"]["oasis"]["cacert"] = str(cacert)
    text = yaml.safe_dump(cloud, sort_keys=False)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        if path.read_text() == text:
            return  # a replica starting beside the others changes nothing
    except OSError:
        pass
    # A reader (another process logging in) sees the old file or the new one, never a half-written one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600 from the start
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
