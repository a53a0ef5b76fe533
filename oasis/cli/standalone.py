"""`oasis site deploy --standalone`: deploy a site at the site itself, from the bundle and the site manifest
alone (TripleO DCN's standalone stacks), then join the control plane. A command's orchestration: it drives the
engine's site operations, so it sits above the engine, in the CLI.

The enrollment is the engine's own: the site machine's `deploy` (connect with the pinned host keys, check the
runtime, write the bundle's files, measure capacity) run here on a scratch SQLite database that holds only this
site and the bundle, the way TripleO runs an ephemeral Heat at the site. Same steps, same events, no second copy;
the scratch database goes away with the command, so nothing of the control plane's state is needed or kept.

Keys: the site's own private key (the manifest's `controller.private_key`, made at the site, e.g. by `oasis lab
up`) is used here only and never sent anywhere. The control plane reaches the hosts afterwards with its own key:
its public half comes in the bundle (`ControlPlaneAccess.ssh_public_key`) and is authorized here on every host
(and on the site's gateway host, where the site is reached through one); the control plane keeps the private
half. The join (POST /v2/sites/join) carries the bundle version's join token in a header, the site entry (public
host keys, addresses, capacity) and the enrollment's results; it never carries a private key.

Transport: the join goes the way the bundle's `Transport` says. From a TLS control plane it is HTTPS verified
with the bundle's CA (or the system's CAs when the bundle carries none), never plain HTTP, and a control plane
whose certificate the CA did not sign gets neither the join token nor the site entry."""
from __future__ import annotations

import asyncio
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import select

from oasis.db.models import Export, Host, Site, SiteEvent
from oasis.db.session import Database
from oasis.db.states import SiteStatus
from oasis.engine.sites import HOST_FAILURES, site_machine
from oasis.remote.hosts import Remotes
from oasis.remote.ssh import SshRemote, SshTarget
from oasis.runtime import local_runtime
from oasis.sites import manifest as site_manifest
from oasis.sites.export import BUNDLE_KEYS, JOIN_TOKEN, TRANSPORT, BundleError, check_transport

JOIN_HEADER = "X-Oasis-Join-Token"
KEY_MARK = "oasis-control-plane"  # the comment of the control plane's key line: how it is found again


class StandaloneError(Exception):
    """The standalone deploy cannot go on; the message says why and what to do."""


@dataclass
class Enrollment:
    site: str
    status: str
    description: str
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)


def load_bundle(path: Path) -> dict[str, Any]:
    try:
        bundle = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise StandaloneError(f"{path}: cannot read the bundle: {e}") from None
    if not isinstance(bundle, dict):
        raise StandaloneError(f"{path}: not a bundle (a YAML mapping written by `oasis export`)")
    newer = ("ControlPlaneAccess", TRANSPORT)  # what bundles of older control planes lack
    missing = [k for k in ("version", *BUNDLE_KEYS) if k not in bundle]
    if [k for k in missing if k not in newer]:
        raise StandaloneError(f"{path}: not a complete bundle, missing {', '.join(missing)}")
    if not (bundle.get("secrets") or {}).get(JOIN_TOKEN):
        raise StandaloneError(f"{path}: the bundle has no join token")
    if missing:
        raise StandaloneError(f"{path}: bundle version {bundle.get('version')} has no {' or '.join(missing)} (it "
                              f"was exported by an older control plane): run `oasis export` again")
    try:
        check_transport(bundle)
    except BundleError as e:
        raise StandaloneError(f"{path}: {e}") from None
    return bundle


def control_plane_tls(bundle: dict[str, Any]) -> ssl.SSLContext | None:
    """How the site verifies the control plane: a context trusting the bundle's CA alone (or the system's CAs
    when the bundle names none), or None for a plain-HTTP control plane."""
    try:
        transport = check_transport(bundle)
    except BundleError as e:
        raise StandaloneError(f"bundle: {e}") from None
    if not transport["join_use_tls"]:
        return None
    if transport["ca_cert"]:
        return ssl.create_default_context(cadata=transport["ca_cert"])
    return ssl.create_default_context()


def site_entry(manifest: dict[str, Any], name: str | None) -> dict[str, Any]:
    """The one site of the manifest to deploy: named, or the only one."""
    sites = manifest.get("sites") if isinstance(manifest, dict) else None
    if not isinstance(sites, list) or not sites:
        raise StandaloneError("manifest: 'sites' must be a non-empty list")
    if name is None:
        if len(sites) != 1:
            raise StandaloneError(f"manifest has {len(sites)} sites: name one with --site")
        return sites[0]
    for entry in sites:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    raise StandaloneError(f"manifest: no site named {name!r} in it")


def site_private_key(manifest: dict[str, Any], key_file: Path | None) -> str:
    path = key_file or Path(str((manifest.get("controller") or {}).get("private_key") or ""))
    if not str(path):
        raise StandaloneError("no SSH key to the hosts: give --private-key or controller.private_key in the manifest")
    try:
        return path.read_text()
    except OSError as e:
        raise StandaloneError(f"cannot read the site's SSH key {path}: {e}") from None


async def enroll(bundle: dict[str, Any], entry: dict[str, Any], private_key: str, runtime: dict[str, Any],
                 workdir: Path) -> Enrollment:
    """The engine's deploy of this one site, on a scratch database in `workdir`, then the control plane's key
    authorized on the hosts."""
    db = Database(f"sqlite:///{workdir / 'site.db'}")
    db.migrate()
    version = int(bundle["version"])
    names = [h["name"] for h in entry.get("hosts") or [] if isinstance(h, dict) and "name" in h]
    try:
        with db.session() as s:
            # the bundle without its join token: the scratch database needs only what goes onto the hosts
            s.add(Export(version=version, bundle={k: v for k, v in bundle.items() if k != "secrets"}))
            site, = site_manifest.register(s, {"sites": [entry]}, private_key, runtime)
            for h in s.scalars(select(Host).where(Host.site_id == site.id)):
                h.status = "enrolling"
            site.generation, site.op, site.op_step = 1, "deploy", None
            site.op_target = {"bundle_version": version, "hosts": names}
            site.status = SiteStatus.DEPLOYING
            site_id = site.id
    except site_manifest.ManifestError as e:
        raise StandaloneError(str(e)) from None
    except (KeyError, TypeError, ValueError) as e:
        raise StandaloneError(f"manifest: malformed site entry ({e!r})") from None

    remotes = Remotes()
    try:
        await site_machine(db, remotes)(site_id)
        with db.session() as s:
            failed = s.get(Site, site_id).status != SiteStatus.ACTIVE
        if not failed:
            await _authorize_control_plane(db, remotes, site_id, entry, bundle, runtime)
    finally:
        await remotes.close()
    return _results(db, site_id)


async def _authorize_control_plane(db: Database, remotes: Remotes, site_id: str, entry: dict[str, Any],
                                   bundle: dict[str, Any], runtime: dict[str, Any]) -> None:
    """The control plane's public key, once, in every host's authorized_keys (and the gateway's): the agent's
    `authorize` is idempotent, so a second run adds nothing."""
    keyline = " ".join(bundle["ControlPlaneAccess"]["ssh_public_key"].split()[:2] + [KEY_MARK])
    python = runtime.get("python") or "python3"
    with db.session() as s:
        site = s.get(Site, site_id)
        hosts = list(s.scalars(select(Host).where(Host.site_id == site_id).order_by(Host.name)))
        s.expunge_all()

    async def on_host(host: Host) -> None:
        remote = remotes.for_host(host, site)
        agent = remotes.agent(remote, host, python)
        await agent.install()
        await agent.authorize(host.spec["authorized_keys"], keyline)
        _event(db, site_id, "authorize", host.name, "authorized the control plane's key")

    gateway_jobs = []
    gw = entry.get("gateway") or {}
    if site.spec.get("access") == "gateway" and gw.get("authorized_keys") and gw.get("base_dir"):
        async def on_gateway() -> None:
            remote = SshRemote(SshTarget(address=gw["address"], host_key=gw["host_key"], client_key=site.secrets[
                "ssh_private_key"], username=gw.get("ssh_user", "root"), port=int(gw.get("ssh_port", 22)),
                label=f"{site.name} gateway"))
            try:
                agent = remotes.agent(remote, Host(name=gw["name"], base_dir=gw["base_dir"]), python)
                await agent.install()
                await agent.authorize(gw["authorized_keys"], keyline)
            finally:
                await remote.close()
            _event(db, site_id, "authorize", gw["name"], "authorized the control plane's key on the gateway")
        gateway_jobs.append(on_gateway())

    results = await asyncio.gather(*(on_host(h) for h in hosts), *gateway_jobs, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        if not isinstance(errors[0], (*HOST_FAILURES, KeyError)):
            raise errors[0]
        with db.session() as s:
            site = s.get(Site, site_id)
            site.status, site.status_description = SiteStatus.ERROR, f"authorizing the control plane's key failed: {errors[0]}"
        _event(db, site_id, "authorize", None, str(errors[0]), successful=False)


def _event(db: Database, site_id: str, step: str, host: str | None, info: str, successful: bool = True) -> None:
    with db.session() as s:
        s.add(SiteEvent(site_id=site_id, generation=1, step=step, host_name=host, info=info[:4000],
                        successful=successful))


def _results(db: Database, site_id: str) -> Enrollment:
    with db.session() as s:
        site = s.get(Site, site_id)
        out = Enrollment(site.name, site.status, site.status_description or "")
        for h in s.scalars(select(Host).where(Host.site_id == site_id).order_by(Host.name)):
            out.hosts[h.name] = {"host_key": h.spec["host_key"], "measured": (h.spec or {}).get("measured")}
        for e in s.scalars(select(SiteEvent).where(SiteEvent.site_id == site_id)
                           .order_by(SiteEvent.created_at, SiteEvent.id)):
            out.events.append({"step": e.step, "host": e.host_name, "info": e.info, "successful": e.successful})
            if e.host_name in out.hosts and e.step == "runtime" and e.successful:
                out.hosts[e.host_name]["runtime"] = e.info
    return out


def join(bundle: dict[str, Any], entry: dict[str, Any], runtime: dict[str, Any], enrollment: Enrollment,
         timeout: float = 60) -> dict[str, Any]:
    """Tell the control plane the site is deployed; its answer is the site as the control plane now shows it."""
    url = bundle["EndpointMap"]["data_processing"].rstrip("/") + "/sites/join"
    verify = control_plane_tls(bundle)
    if verify is not None and not url.startswith("https://"):  # check_transport refuses it too: never send
        raise StandaloneError(f"the bundle says the control plane uses TLS, but its join URL {url} is plain HTTP")
    body = {"bundle_version": int(bundle["version"]), "site": entry, "runtime": runtime,
            "hosts": enrollment.hosts, "events": enrollment.events}
    try:
        r = httpx.post(url, json=body, headers={JOIN_HEADER: bundle["secrets"][JOIN_TOKEN]}, timeout=timeout,
                       verify=verify if verify is not None else True)
    except httpx.HTTPError as e:
        if "CERTIFICATE_VERIFY_FAILED" in str(e):
            raise StandaloneError(f"the control plane at {url} is not the bundle's: its TLS certificate is not "
                                  f"signed by the CA in the bundle's {TRANSPORT} ({_reason(e)}); nothing was sent "
                                  f"to it. Check the address, or export the bundle again from the control "
                                  f"plane") from None
        raise StandaloneError(f"cannot reach the control plane at {url}: {e}; the site is enrolled, run the "
                              f"same command again once it is reachable") from None
    if r.status_code != 200:
        try:
            message = r.json().get("error_message") or r.text
        except ValueError:
            message = r.text
        raise StandaloneError(f"the control plane refused the join ({r.status_code}): {message}")
    return r.json()["site"]


def _reason(e: Exception) -> str:
    text = str(e)
    return text.split("certificate verify failed:")[-1].split("(_ssl")[0].strip() or "verify failed"


def deploy(bundle_path: Path, manifest_path: Path, site: str | None = None,
           key_file: Path | None = None) -> tuple[Enrollment, dict[str, Any]]:
    """The whole standalone deploy: enroll at the site, then join. Safe to run again (every step is)."""
    bundle = load_bundle(bundle_path)
    try:
        manifest = yaml.safe_load(manifest_path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise StandaloneError(f"{manifest_path}: cannot read the manifest: {e}") from None
    entry = site_entry(manifest, site)
    key = site_private_key(manifest, key_file)
    runtime = dict(entry.get("runtime") or local_runtime())
    # the entry as the control plane gets it: the site's own runtime goes separately, nothing else is added
    entry = {k: v for k, v in entry.items() if k != "runtime"}
    with tempfile.TemporaryDirectory(prefix="oasis-standalone-") as work:
        enrollment = asyncio.run(enroll(bundle, entry, key, runtime, Path(work)))
    if enrollment.status != SiteStatus.ACTIVE:
        raise StandaloneError(f"site {enrollment.site}: {enrollment.status}: {enrollment.description}")
    return enrollment, join(bundle, entry, runtime, enrollment)
