"""The site reconciler: deploy, scale, update and delete one site, each a sequence of idempotent steps recorded
on the site (`op_step`), so that an engine taking over a dead engine's lease resumes where it stopped.

Each operation is a new `generation` of the site with its own events (SiteEvent). A host that fails fails its
own site's operation only: the site goes to Error with the reason naming the host; no other site is touched."""
from __future__ import annotations

import asyncio
import logging
import posixpath
from collections.abc import Callable
from typing import Any

import yaml
from sqlalchemy import delete, select

from oasis.db.models import Cluster, Host, HostPort, Image, Instance, Site, SiteEvent
from oasis.db.session import Database
from oasis.engine.clusters import OPERATION_ERRORS
from oasis.remote.hosts import Remotes
from oasis.sites.export import ExportError, all_nodes, get_export, hosts_file

log = logging.getLogger(__name__)

SITE_DIR = "oasis-site"
ENROLL_STEPS = ["connect", "runtime", "files", "capacity"]
STEPS = {
    "deploy": ENROLL_STEPS,
    "scale": ["remove"] + ENROLL_STEPS,
    "update": ["connect", "files"],
}
DONE_STATUS = {"deploy": "Active", "scale": "Active", "update": "Active"}


class HostFailed(Exception):
    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"host {host}: {reason}")
        self.host = host


def site_dir(host: Host) -> str:
    return posixpath.join(host.base_dir, SITE_DIR)


class SiteReconciler:
    def __init__(self, db: Database, remotes: Remotes, on_change: Callable[[], None] = lambda: None) -> None:
        self.db, self.remotes, self.on_change = db, remotes, on_change

    async def __call__(self, site_id: str) -> None:
        with self.db.session() as s:
            site = s.get(Site, site_id)
            op = site.op if site else None
        if op in STEPS:
            await self._run(site_id, op)
        elif op == "delete":
            await self._delete(site_id)

    # --- machinery ----------------------------------------------------------------------------------------------

    def _event(self, site_id: str, generation: int, step: str, host: str | None, info: str = "",
               successful: bool = True) -> None:
        with self.db.session() as s:
            s.add(SiteEvent(site_id=site_id, generation=generation, step=step, host_name=host, info=info[:4000],
                            successful=successful))

    def _hosts(self, s, site: Site, names: list[str] | None) -> list[Host]:
        q = select(Host).where(Host.site_id == site.id).order_by(Host.name)
        hosts = list(s.scalars(q))
        return hosts if names is None else [h for h in hosts if h.name in names]

    async def _run(self, site_id: str, op: str) -> None:
        steps = STEPS[op]
        with self.db.session() as s:
            site = s.get(Site, site_id)
            start = steps.index(site.op_step) if site.op_step in steps else 0
            generation = site.generation
        try:
            for step in steps[start:]:
                with self.db.session() as s:
                    s.get(Site, site_id).op_step = step
                self.on_change()
                await getattr(self, f"_step_{step}")(site_id, generation)
        except HostFailed as e:
            log.warning("site %s: %s failed: %s", site_id, op, e)
            self._finish(site_id, "Error", str(e))
            return
        except (*OPERATION_ERRORS, ExportError) as e:
            self._event(site_id, generation, op, None, str(e), successful=False)
            self._finish(site_id, "Error", f"{op} failed: {e}")
            return
        with self.db.session() as s:
            site = s.get(Site, site_id)
            version = site.op_target.get("bundle_version")
            if version is not None:
                site.bundle_version = version
            for h in self._hosts(s, site, None):
                if h.status == "enrolling":
                    h.status = "up"
        self._event(site_id, generation, op, None, f"{op} done")
        self._finish(site_id, DONE_STATUS[op], "")

    def _finish(self, site_id: str, status: str, description: str) -> None:
        with self.db.session() as s:
            site = s.get(Site, site_id)
            site.status, site.status_description = status, description
            site.op, site.op_step, site.op_target = None, None, {}
        self.on_change()

    async def _each_host(self, site_id: str, generation: int, step: str,
                         work: Callable[[Site, Host, Any], Any], names: list[str] | None = None) -> None:
        """Run `work` on every host of the operation; every host gets its chance and its event, then the first
        failure (naming its host) fails the operation."""
        with self.db.session() as s:
            site = s.get(Site, site_id)
            if names is None:
                names = site.op_target.get("hosts")
            hosts = self._hosts(s, site, names)
            s.expunge_all()

        async def one(host: Host) -> None:
            try:
                remote = self.remotes.for_host(host, site)
                info = await work(site, host, remote)
            except (*OPERATION_ERRORS, ValueError) as e:  # ValueError: a host's answer that makes no sense
                self._event(site_id, generation, step, host.name, str(e), successful=False)
                raise HostFailed(host.name, f"{step} failed: {e}") from e
            self._event(site_id, generation, step, host.name, info or "ok")

        results = await asyncio.gather(*(one(h) for h in hosts), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    # --- steps --------------------------------------------------------------------------------------------------

    async def _step_connect(self, site_id: str, generation: int) -> None:
        async def work(site: Site, host: Host, remote) -> str:
            r = await remote.run(["hostname"], timeout=30)
            return f"connected with the pinned host key; hostname {r.stdout.strip()}"

        await self._each_host(site_id, generation, "connect", work)

    def _runtime(self, site_id: str) -> dict[str, Any]:
        with self.db.session() as s:
            image = s.scalars(select(Image).where(Image.site_id == site_id, Image.name == "site-runtime")).first()
            return dict(image.runtime) if image is not None else {}

    async def _step_runtime(self, site_id: str, generation: int) -> None:
        runtime = self._runtime(site_id)
        python = runtime.get("python") or "python3"
        java = posixpath.join(runtime["java_home"], "bin", "java") if runtime.get("java_home") else "java"

        async def work(site: Site, host: Host, remote) -> str:
            probe = "import distributed, pyspark; print(distributed.__version__, pyspark.__version__)"
            r = await remote.run([python, "-c", probe], timeout=120)
            j = await remote.run([java, "-version"], timeout=60)
            jv = (j.stderr or j.stdout).strip().splitlines()[0] if (j.stderr or j.stdout).strip() else "java"
            dv, sv = r.stdout.split()[:2]
            return f"distributed {dv}, pyspark {sv}, {jv}"

        await self._each_host(site_id, generation, "runtime", work)

    async def _step_files(self, site_id: str, generation: int) -> None:
        with self.db.session() as s:
            site = s.get(Site, site_id)
            version = site.op_target.get("bundle_version")
            export = get_export(s, version)
            bundle, version = dict(export.bundle), export.version
            # The site's own hosts as they are now: a bundle exported before the site existed still lets its
            # hosts resolve each other; other sites come from the bundle (an update brings newer ones).
            own = all_nodes(s)["sites"].get(site.name)
        if own is not None:
            bundle["AllNodesConfig"] = {**bundle["AllNodesConfig"],
                                        "sites": {**bundle["AllNodesConfig"]["sites"], site.name: own}}
        hosts_text = hosts_file(bundle).encode()

        async def work(site: Site, host: Host, remote) -> str:
            config = {"bundle_version": version, "site": site.name, "host": host.name,
                      "availability_zone": site.name, **bundle["GlobalConfig"]}
            d = site_dir(host)
            await remote.put(posixpath.join(d, "hosts"), hosts_text, 0o644)
            await remote.put(posixpath.join(d, "global.yaml"), yaml.safe_dump(config, sort_keys=False).encode(),
                             0o644)
            return f"wrote {d}/hosts and {d}/global.yaml (bundle version {version})"

        await self._each_host(site_id, generation, "files", work)

    async def _step_capacity(self, site_id: str, generation: int) -> None:
        measured: dict[str, dict[str, int]] = {}

        async def work(site: Site, host: Host, remote) -> str:
            cpus = int((await remote.run(["nproc"], timeout=30)).stdout.strip())
            meminfo = (await remote.run(["cat", "/proc/meminfo"], timeout=30)).stdout
            kb = next(int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:"))
            measured[host.id] = {"vcpus": cpus, "ram_mb": kb // 1024}
            return f"measured {cpus} CPUs, {kb // 1024} MB of memory"

        try:
            await self._each_host(site_id, generation, "capacity", work)
        finally:
            with self.db.session() as s:
                for host_id, m in measured.items():
                    h = s.get(Host, host_id)
                    if h is not None:
                        h.spec = {**(h.spec or {}), "measured": m}

    async def _step_remove(self, site_id: str, generation: int) -> None:
        with self.db.session() as s:
            site = s.get(Site, site_id)
            names = list(site.op_target.get("remove") or [])
        if not names:
            return

        async def work(site: Site, host: Host, remote) -> str:
            await remote.run(["rm", "-rf", site_dir(host)], timeout=60)
            return f"removed {site_dir(host)}"

        await self._each_host(site_id, generation, "remove", work, names)
        with self.db.session() as s:
            for h in self._hosts(s, s.get(Site, site_id), names):
                if s.scalars(select(Instance.id).where(Instance.host_id == h.id)).first() is None:
                    s.execute(delete(HostPort).where(HostPort.host_id == h.id))
                    s.delete(h)

    # --- delete -------------------------------------------------------------------------------------------------

    async def _delete(self, site_id: str) -> None:
        """Best effort on the hosts (an unreachable host must not keep a site forever), then the rows."""
        with self.db.session() as s:
            site = s.get(Site, site_id)
            generation = site.generation
            if s.scalars(select(Cluster.id).where(Cluster.site_id == site_id)).first() is not None:
                busy = True
            else:
                busy = False
                site.op_step = "cleanup"
                s.flush()
            hosts = self._hosts(s, site, None)
            s.expunge_all()
        if busy:  # a cluster was created after the delete was asked for: the site stays
            self._event(site_id, generation, "delete", None, "refused: clusters live on this site", False)
            self._finish(site_id, "Active", "delete refused: clusters live on this site")
            return

        async def one(host: Host) -> None:
            try:
                await self.remotes.for_host(host, site).run(["rm", "-rf", site_dir(host)], timeout=60)
                self._event(site_id, generation, "cleanup", host.name, f"removed {site_dir(host)}")
            except OPERATION_ERRORS as e:
                self._event(site_id, generation, "cleanup", host.name, f"left behind: {e}", successful=False)

        await asyncio.gather(*(one(h) for h in hosts))
        with self.db.session() as s:
            host_ids = list(s.scalars(select(Host.id).where(Host.site_id == site_id)))
            if host_ids:
                s.execute(delete(HostPort).where(HostPort.host_id.in_(host_ids)))
            s.execute(delete(Host).where(Host.site_id == site_id))
            s.execute(delete(Image).where(Image.site_id == site_id))
            s.execute(delete(SiteEvent).where(SiteEvent.site_id == site_id))
            s.execute(delete(Site).where(Site.id == site_id))
        self.on_change()
