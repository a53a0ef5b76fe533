"""Site operations: deploy, scale, update and delete one site, declared at the bottom as steps of the one
operation machine (oasis/engine/machine.py), so that an engine taking over a dead engine's lease resumes where
it stopped.

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
from oasis.db.states import SiteOp, SiteStatus
from oasis.engine.machine import Machine, Operation, OperationError, Step, Wait, Work
from oasis.remote.base import RemoteError
from oasis.remote.hosts import Remotes
from oasis.sites.export import ExportError, all_nodes, get_export, hosts_file

log = logging.getLogger(__name__)

SITE_DIR = "oasis-site"
HOST_FAILURES = (RemoteError, asyncio.TimeoutError, ValueError)  # ValueError: a host's answer that makes no sense


class HostFailed(Exception):
    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"host {host}: {reason}")
        self.host = host


def site_dir(host: Host) -> str:
    return posixpath.join(host.base_dir, SITE_DIR)


class SiteWork(Work):
    model = Site

    def __init__(self, db: Database, site_id: str, on_change, remotes: Remotes) -> None:  # noqa: ANN001
        super().__init__(db, site_id, on_change)
        self.remotes = remotes
        with db.session() as s:
            site = s.get(Site, site_id)
            self.op, self.generation = site.op, site.generation

    def _event(self, step: str, host: str | None, info: str = "", successful: bool = True) -> None:
        """An event of this generation; once: a step run again after a crash does not log it twice."""
        values = dict(site_id=self.id, generation=self.generation, step=step, host_name=host, info=info[:4000],
                      successful=successful)
        with self.db.session() as s:
            same = select(SiteEvent.id).filter_by(**values)
            if s.scalars(same).first() is None:
                s.add(SiteEvent(**values))

    def _hosts(self, s, site: Site, names: list[str] | None) -> list[Host]:  # noqa: ANN001
        q = select(Host).where(Host.site_id == site.id).order_by(Host.name)
        hosts = list(s.scalars(q))
        return hosts if names is None else [h for h in hosts if h.name in names]

    async def _each_host(self, step: str, work: Callable[[Site, Host, Any], Any],
                         names: list[str] | None = None) -> None:
        """Run `work` on every host of the operation; every host gets its chance and its event, then the first
        failure (naming its host) fails the operation."""
        with self.db.session() as s:
            site = self.row(s)
            if names is None:
                names = site.op_target.get("hosts")
            hosts = self._hosts(s, site, names)
            s.expunge_all()

        async def one(host: Host) -> None:
            try:
                remote = self.remotes.for_host(host, site)
                info = await work(site, host, remote)
            except HOST_FAILURES as e:
                self._event(step, host.name, str(e), successful=False)
                raise HostFailed(host.name, f"{step} failed: {e}") from e
            self._event(step, host.name, info or "ok")

        results = await asyncio.gather(*(one(h) for h in hosts), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    # --- ends -----------------------------------------------------------------------------------------------

    async def enrolled(self) -> None:
        with self.db.session() as s:
            site = self.row(s)
            version = site.op_target.get("bundle_version")
            if version is not None:
                site.bundle_version = version
            for h in self._hosts(s, site, None):
                if h.status == "enrolling":
                    h.status = "up"
        self._event(self.op, None, f"{self.op} done")
        self.done(status=SiteStatus.ACTIVE, status_description="")

    async def not_enrolled(self, error: Exception) -> None:
        if isinstance(error, HostFailed):  # its host's event says what happened
            self.done(status=SiteStatus.ERROR, status_description=str(error))
            return
        self._event(self.op, None, str(error), successful=False)
        self.done(status=SiteStatus.ERROR, status_description=f"{self.op} failed: {error}")

    # --- steps --------------------------------------------------------------------------------------------------

    async def connect(self) -> None:
        async def work(site: Site, host: Host, remote) -> str:
            r = await remote.run(["hostname"], timeout=30)
            return f"connected with the pinned host key; hostname {r.stdout.strip()}"

        await self._each_host("connect", work)

    def _runtime(self) -> dict[str, Any]:
        with self.db.session() as s:
            image = s.scalars(select(Image).where(Image.site_id == self.id, Image.name == "site-runtime")).first()
            return dict(image.runtime) if image is not None else {}

    async def runtime(self) -> None:
        runtime = self._runtime()
        python = runtime.get("python") or "python3"
        java = posixpath.join(runtime["java_home"], "bin", "java") if runtime.get("java_home") else "java"

        async def work(site: Site, host: Host, remote) -> str:
            probe = "import distributed, pyspark; print(distributed.__version__, pyspark.__version__)"
            r = await remote.run([python, "-c", probe], timeout=120)
            j = await remote.run([java, "-version"], timeout=60)
            jv = (j.stderr or j.stdout).strip().splitlines()[0] if (j.stderr or j.stdout).strip() else "java"
            dv, sv = r.stdout.split()[:2]
            return f"distributed {dv}, pyspark {sv}, {jv}"

        await self._each_host("runtime", work)

    async def files(self) -> None:
        with self.db.session() as s:
            site = self.row(s)
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

        await self._each_host("files", work)

    async def capacity(self) -> None:
        measured: dict[str, dict[str, int]] = {}

        async def work(site: Site, host: Host, remote) -> str:
            cpus = int((await remote.run(["nproc"], timeout=30)).stdout.strip())
            meminfo = (await remote.run(["cat", "/proc/meminfo"], timeout=30)).stdout
            kb = next(int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:"))
            measured[host.id] = {"vcpus": cpus, "ram_mb": kb // 1024}
            return f"measured {cpus} CPUs, {kb // 1024} MB of memory"

        try:
            await self._each_host("capacity", work)
        finally:
            with self.db.session() as s:
                for host_id, m in measured.items():
                    h = s.get(Host, host_id)
                    if h is not None:
                        h.spec = {**(h.spec or {}), "measured": m}

    async def remove(self) -> None:
        with self.db.session() as s:
            names = list(self.row(s).op_target.get("remove") or [])
        if not names:
            return

        async def work(site: Site, host: Host, remote) -> str:
            await remote.run(["rm", "-rf", site_dir(host)], timeout=60)
            return f"removed {site_dir(host)}"

        await self._each_host("remove", work, names)
        with self.db.session() as s:
            for h in self._hosts(s, self.row(s), names):
                if s.scalars(select(Instance.id).where(Instance.host_id == h.id)).first() is None:
                    s.execute(delete(HostPort).where(HostPort.host_id == h.id))
                    s.delete(h)

    # --- delete -------------------------------------------------------------------------------------------

    async def cleanup(self) -> None:
        """Best effort on the hosts (an unreachable host must not keep a site forever)."""
        with self.db.session() as s:
            site = self.row(s)
            if s.scalars(select(Cluster.id).where(Cluster.site_id == self.id)).first() is not None:
                # a cluster was created after the delete was asked for: the site stays
                raise OperationError("clusters live on this site")
            hosts = self._hosts(s, site, None)
            s.expunge_all()

        async def one(host: Host) -> None:
            try:
                await self.remotes.for_host(host, site).run(["rm", "-rf", site_dir(host)], timeout=60)
                self._event("cleanup", host.name, f"removed {site_dir(host)}")
            except HOST_FAILURES as e:
                self._event("cleanup", host.name, f"left behind: {e}", successful=False)

        await asyncio.gather(*(one(h) for h in hosts))

    async def deleted(self) -> None:
        with self.db.session() as s:
            host_ids = list(s.scalars(select(Host.id).where(Host.site_id == self.id)))
            if host_ids:
                s.execute(delete(HostPort).where(HostPort.host_id.in_(host_ids)))
            s.execute(delete(Host).where(Host.site_id == self.id))
            s.execute(delete(Image).where(Image.site_id == self.id))
            s.execute(delete(SiteEvent).where(SiteEvent.site_id == self.id))
            s.execute(delete(Site).where(Site.id == self.id))
        self.on_change()

    async def not_deleted(self, error: Exception) -> None:
        self._event("delete", None, f"refused: {error}", False)
        self.done(status=SiteStatus.ACTIVE, status_description=f"delete refused: {error}")


# Failures that are the site's, not the engine's. A host that fails fails this site's operation only.
SITE_FAILURES = (HostFailed, *HOST_FAILURES, ExportError)
ENROLL = (Step("connect", SiteWork.connect, wait=Wait.NO), Step("runtime", SiteWork.runtime, wait=Wait.NO),
          Step("files", SiteWork.files, wait=Wait.NO), Step("capacity", SiteWork.capacity, wait=Wait.NO))

OPERATIONS: dict[str, Operation[SiteWork]] = {
    SiteOp.DEPLOY: Operation(steps=ENROLL, finish=SiteWork.enrolled, rollback=SiteWork.not_enrolled),
    SiteOp.SCALE: Operation(steps=(Step("remove", SiteWork.remove, wait=Wait.NO), *ENROLL),
                            finish=SiteWork.enrolled, rollback=SiteWork.not_enrolled),
    SiteOp.UPDATE: Operation(steps=(ENROLL[0], ENROLL[2]), finish=SiteWork.enrolled, rollback=SiteWork.not_enrolled),
    SiteOp.DELETE: Operation(steps=(Step("cleanup", SiteWork.cleanup, wait=Wait.NO),),
                             finish=SiteWork.deleted, rollback=SiteWork.not_deleted),
}


def site_machine(db: Database, remotes: Remotes, on_change=lambda: None, probe=None) -> Machine[SiteWork]:  # noqa: ANN001
    return Machine(lambda sid: SiteWork(db, sid, on_change, remotes), OPERATIONS, SITE_FAILURES, 0.0, probe)
