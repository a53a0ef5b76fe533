"""Cluster operations: create, scale, delete and update_keypair, declared at the bottom as steps of the one
operation machine (oasis/engine/machine.py). Each step is idempotent: it checks what exists before it makes
anything, so a step run again by the engine that took over does no harm."""
from __future__ import annotations

import asyncio
import logging
import posixpath

from sqlalchemy import delete, or_, select, update

from oasis.compute.placement import PlacementError, allocate_ports, place
from oasis.db import volumes
from oasis.db.models import Cluster, Host, HostPort, Instance, Job, Keypair, NodeGroup, Site, utcnow
from oasis.db.session import Database
from oasis.db.states import CONNECT_STARTED, ClusterOp
from oasis.db.states import ClusterStatus as S
from oasis.edp.statuses import KILLED, TERMINAL
from oasis.engine.events import EventLog
from oasis.engine.jobs import kill_on_instance
from oasis.engine.machine import Machine, Operation, OperationError, Step, Wait, Work
from oasis.engine.views import build_view, cluster_hosts, cluster_runtime, host_remotes
from oasis.engine.waiting import Backoff, probe
from oasis.identity import trusts
from oasis.identity.base import Identity, IdentityError
from oasis.plugins import get_plugin
from oasis.plugins.base import ClusterView, PluginError
from oasis.remote.base import RemoteError, Unreachable, unreachable_in
from oasis.remote.hosts import Remotes, management_address, project_user

log = logging.getLogger(__name__)

# Failures that are the cluster's, not the engine's: they end the operation with a reason for the user.
CLUSTER_FAILURES = (RemoteError, PluginError, PlacementError, asyncio.TimeoutError)
EVERYTHING = ("active", "new", "decommission")  # the instance states a teardown covers


def cluster_key_mark(cluster_id: str) -> str:
    """The comment that marks the cluster's own key line in a host's authorized_keys."""
    return f"oasis-cluster-{cluster_id}"


def user_key_mark(cluster_id: str) -> str:
    """The comment that marks the cluster's user keypair line in a host's authorized_keys."""
    return f"oasis-user-{cluster_id}"


class ClusterWork(Work):
    model = Cluster

    def __init__(self, db: Database, cluster_id: str, on_change, remotes: Remotes,  # noqa: ANN001
                 identity: Identity | None = None) -> None:
        super().__init__(db, cluster_id, on_change)
        self.remotes, self.identity = remotes, identity
        with db.session() as s:
            c = s.get(Cluster, cluster_id)
            self.events = EventLog(db, c.id, c.project_id)
            self.plugin = get_plugin(c.plugin_name)
            self.op = c.op

    # --- how a wait shows on a cluster ----------------------------------------------------------------------

    def site_name(self) -> str:
        with self.db.session() as s:
            site = s.get(Site, self.row(s).site_id)
            return site.name if site else "?"

    def show_waiting(self, message: str, first: bool) -> None:
        self.set(status_description=message[:2000])
        if first:
            self.events.note(message)

    def show_resumed(self, message: str) -> None:
        self.set(status_description="")
        self.events.note(message)

    def gave_up(self, message: str) -> None:
        self.events.note(message, successful=False, end=True)

    async def unreachable_host(self) -> Unreachable | None:
        """Probe the cluster's hosts, to tell a failure caused by a host that is gone from a real one."""
        with self.db.session() as s:
            c = self.row(s)
            hosts = [h for h in cluster_hosts(s, c, EVERYTHING) if h.access != "local"]
            if not hosts:
                return None
            reach = host_remotes(s, self.remotes, c, hosts, self._groups(s), as_cluster=False)
        return await probe(reach)

    # --- shared pieces -----------------------------------------------------------------------------------

    def _groups(self, s) -> dict[str, NodeGroup]:  # noqa: ANN001
        return {ng.id: ng for ng in s.scalars(select(NodeGroup).where(NodeGroup.cluster_id == self.id))}

    def view(self, states: tuple[str, ...] = ("active", "new")) -> ClusterView:
        with self.db.session() as s:
            c = self.row(s)
            view = build_view(s, self.remotes, c, states)
            view.secrets = dict(c.secrets or {})  # made by `configure`; empty before it
            return view

    def _states_of_new(self) -> tuple[str, ...]:
        return ("new",) if self.op == ClusterOp.SCALE else ("active",)

    def _new_instances(self, view: ClusterView) -> list:
        with self.db.session() as s:
            new = set(s.scalars(select(Instance.id).where(Instance.cluster_id == self.id, Instance.state == "new")))
        return [i for i in view.instances if i.id in new]

    async def cluster_key(self, states: tuple[str, ...], install: bool) -> None:
        """Install (or remove) the cluster's own public key on the SSH hosts of its instances in `states`, with
        the site's key: instance work then runs with the cluster's key, which goes away with the cluster."""
        with self.db.session() as s:
            public = self.row(s).management_public_key
        await self.host_key(states, cluster_key_mark(self.id), public if install else None)

    async def user_key(self, states: tuple[str, ...], install: bool, replace: bool = False) -> None:
        """Install (or remove) the user's keypair (`user_keypair_id`) on the SSH hosts of the cluster's instances,
        marked as this cluster's, so that removing it touches no other line. `replace` swaps an installed line
        for the keypair's current public key (update_keypair)."""
        mark = user_key_mark(self.id)
        if not install:
            await self.host_key(states, mark, None)
            return
        with self.db.session() as s:
            c = self.row(s)
            ref = c.spec.get("user_keypair_id")
            if not ref:
                return
            kp = s.scalars(select(Keypair).where(Keypair.project_id == c.project_id,
                                                 or_(Keypair.name == ref, Keypair.id == ref))).first()
            if kp is None:
                raise OperationError(f"keypair '{ref}' of the cluster no longer exists")
            public = kp.public_key
        if replace:
            await self.host_key(states, mark, None)
        await self.host_key(states, mark, public)

    async def host_key(self, states: tuple[str, ...], mark: str, public: str | None,
                       leaving_only: bool = False) -> None:
        """Add the key line `public` (its type and data, then `mark`) to authorized_keys on the SSH hosts of the
        cluster's instances in `states`, or with `public` None remove the lines carrying `mark`. Hosts reached
        directly ("local") have no SSH and are skipped. `leaving_only`: only the hosts where no instance of the
        cluster stays (active or new)."""
        with self.db.session() as s:
            c = self.row(s)
            hosts = [h for h in cluster_hosts(s, c, states) if h.access != "local"]
            if leaving_only:
                staying = {h.id for h in cluster_hosts(s, c, ("active", "new"))}
                hosts = [h for h in hosts if h.id not in staying]
            if not hosts:
                return
            reach = host_remotes(s, self.remotes, c, hosts, self._groups(s), as_cluster=False)
            python = cluster_runtime(s, c)["python"]
        keyline = " ".join(public.split()[:2] + [mark]) if public else None

        async def one(host: Host) -> None:
            agent = self.remotes.agent(reach[host.id], host, python)
            await agent.install()
            if keyline:
                await agent.authorize(host.spec["authorized_keys"], keyline)
            else:
                await agent.unauthorize(host.spec["authorized_keys"], mark)

        # Every host is given its chance before an error is raised: a rollback must not race a late install.
        errors = [e for e in await asyncio.gather(*(one(h) for h in hosts), return_exceptions=True)
                  if isinstance(e, BaseException)]
        if errors:
            raise errors[0]

    def other_ports(self, inst, busy: list[int]) -> None:  # noqa: ANN001
        """Ports oasis believed free are held by something else on the host: they are recorded as taken and the
        instance gets others."""
        with self.db.session() as s:
            row = s.get(Instance, inst.id)
            host = s.get(Host, row.host_id)
            names = [name for name, port in row.ports.items() if port in busy]
            s.execute(update(HostPort).where(HostPort.host_id == host.id, HostPort.port.in_(busy))
                      .values(instance_id="held-outside-oasis"))
            row.ports = {**row.ports, **allocate_ports(s, host, row.id, names)}
            inst.ports = dict(row.ports)

    def project_user(self) -> str:
        """The Unix user of the cluster's project that its instances run as (where the host can switch users)."""
        with self.db.session() as s:
            return project_user(self.row(s).project_id)

    def volume_backends(self, instances: list) -> dict[str, tuple[dict, int]]:
        """(the host's volume backend, the size in GB of each volume) of those instances that have volumes."""
        with self.db.session() as s:
            out = {}
            for inst in instances:
                if inst.volumes:
                    row = s.get(Instance, inst.id)
                    host, ng = s.get(Host, row.host_id), s.get(NodeGroup, row.node_group_id)
                    out[inst.id] = (volumes.backend_of(host.spec), volumes.of_node_group(ng.spec).size_gb)
            return out

    async def volumes_down(self, instances: list) -> None:
        """Unmount and remove the instances' volumes (their processes are stopped first): by name, so that a
        removal that died half-way finds what is left, however many that is."""
        backends = self.volume_backends(instances)
        await asyncio.gather(*(i.agent.volumes_down(backends[i.id][0], i.id) for i in instances if i.id in backends))

    async def remove_instances(self, instances: list) -> None:
        await asyncio.gather(*(i.agent.stop_all(i.procdir, 5) for i in instances))
        await self.volumes_down(instances)
        user = self.project_user()
        await asyncio.gather(*(i.agent.release(i.workdir, user, i.id) for i in instances))

    def forget_instances(self, ids: list[str]) -> None:
        if ids:
            with self.db.session() as s:
                s.execute(delete(HostPort).where(HostPort.instance_id.in_(ids)))
                s.execute(delete(Instance).where(Instance.id.in_(ids)))

    async def tear_down(self, grace: float) -> None:
        """Stop every process of the cluster and remove its directories, host by host. Instances on hosts that
        answered are forgotten; those on hosts that did not stay recorded, and the error names them."""
        try:  # a host that was unreachable when the key went out may be back now
            await self.cluster_key(EVERYTHING, install=True)
        except CLUSTER_FAILURES:
            pass  # those hosts fail below, each with its reason
        view = self.view(EVERYTHING)
        try:
            if grace == 0:
                raise RemoteError("force")
            await self.plugin.stop(view, view.instances)
        except CLUSTER_FAILURES:  # some host did not answer: stop what can be stopped, one instance at a time
            await asyncio.gather(*(i.agent.stop_all(i.procdir, grace) for i in view.instances), return_exceptions=True)
        by_dir: dict[tuple[int, str], list] = {}
        for i in view.instances:
            by_dir.setdefault((id(i.remote), posixpath.dirname(i.workdir)), []).append(i)
        user = self.project_user()

        async def clear(d: str, instances: list) -> None:
            # the volumes go first (they are mounted inside the instances' directories); each instance gives back
            # its reference to the project's user (the last one deletes it), then the cluster's directory goes
            await self.volumes_down(instances)
            await asyncio.gather(*(i.agent.release(i.workdir, user, i.id) for i in instances))
            await instances[0].remote.run(["rm", "-rf", d])

        outcome = dict(zip(by_dir, await asyncio.gather(*(clear(d, insts) for (_, d), insts in by_dir.items()),
                                                       return_exceptions=True)))
        failed = {key: e for key, e in outcome.items() if isinstance(e, Exception)}
        try:
            await self.user_key(EVERYTHING, install=False)
            await self.cluster_key(EVERYTHING, install=False)
        except CLUSTER_FAILURES as e:  # the hosts that answered no longer accept the cluster's key
            failed.setdefault(("key", ""), e)
        self.forget_instances([i.id for i in view.instances
                               if (id(i.remote), posixpath.dirname(i.workdir)) not in failed])
        if failed:
            raise RemoteError("; ".join(str(e) for e in failed.values()))

    # --- the steps of create and scale -------------------------------------------------------------------

    def act_on_trust(self, what: str) -> None:
        """Work done later for the cluster's creator runs on its trust: a trust that is gone stops it."""
        with self.db.session() as s:
            trust_id = self.row(s).trust_id
        try:
            trusts.act_on(self.identity, trust_id, what)
        except trusts.TrustGone as e:
            raise OperationError(str(e)) from None

    async def decommission(self) -> None:
        # The first step of a scale: the scale runs on the creator's trust, which may be gone by now.
        self.act_on_trust("scale the cluster")
        with self.db.session() as s:
            victims = self._choose_victims(s, self.row(s))
        if not victims:
            return
        async with self.events.step("Decommission nodes", "Plugin: decommission cluster", len(victims)) as st:
            view = self.view(EVERYTHING)
            gone = [i for i in view.instances if i.id in victims]
            await self.plugin.decommission(view, gone)
            await self.remove_instances(gone)
            # A host the cluster leaves keeps neither the user's key nor the cluster's.
            for mark in (user_key_mark(self.id), cluster_key_mark(self.id)):
                await self.host_key(("decommission",), mark, None, leaving_only=True)
            for inst in gone:
                st.event(inst.id, inst.name, None)
        self.forget_instances(victims)

    @staticmethod
    def _choose_victims(s, c: Cluster) -> list[str]:  # noqa: ANN001
        """Mark the instances a scale-down removes: the ones asked for, then the highest indexes. The choice is
        written before anything is stopped, so a resumed scale removes the same ones."""
        chosen = set(c.op_target.get("remove") or [])
        for ng in s.scalars(select(NodeGroup).where(NodeGroup.cluster_id == c.id)):
            target = (c.op_target.get("resize") or {}).get(ng.name)
            rows = list(s.scalars(select(Instance).where(Instance.node_group_id == ng.id).order_by(Instance.index)))
            if target is None:
                continue
            keep = [r for r in rows if r.id not in chosen]
            for r in sorted(keep, key=lambda r: r.index, reverse=True)[:max(0, len(keep) - target)]:
                chosen.add(r.id)
            for r in rows:
                if r.id in chosen:
                    r.state = "decommission"
            ng.count = min(ng.count, target)
        return sorted(chosen)

    async def spawn(self) -> None:
        state = self._states_of_new()[0]
        with self.db.session() as s:
            c = self.row(s)
            if self.op == ClusterOp.SCALE:
                targets = {**(c.op_target.get("resize") or {}), **(c.op_target.get("add") or {})}
                for ng in s.scalars(select(NodeGroup).where(NodeGroup.cluster_id == c.id)):
                    if ng.name in targets:
                        ng.count = targets[ng.name]
            site = s.get(Site, c.site_id)
            place(s, c, self.plugin.ports, state, lambda host: management_address(host, site))
        # Everything below is repeated in full on resume: the rows may have been written by an engine that
        # died before it made the directories.
        view = self.view((state,))
        if not view.instances:
            return
        async with self.events.step("Spawning instances", "Engine: create cluster", len(view.instances)) as st:
            await self.cluster_key((state,), install=True)
            await self.user_key((state,), install=True)
            await asyncio.gather(*(agent.install() for agent in _one_per_host(view.instances)))

            user = self.project_user()
            backends = self.volume_backends(view.instances)

            async def make(inst) -> None:  # noqa: ANN001
                # One agent call: its directory and procdir, owned by the project's user (made on the project's
                # first instance of the machine), the check that its ports are really free (a port held outside
                # oasis is recorded as taken and the instance gets others, until all are free), and its volumes,
                # mounted inside its directory and owned by its user. The owner is recorded for every later step
                # (None: a single-user host).
                volumes = None
                if inst.id in backends:
                    backend, size_gb = backends[inst.id]
                    volumes = (backend, size_gb, inst.volumes)
                for _ in range(10):
                    out = await inst.agent.provision(inst.workdir, user, inst.id, inst.address,
                                                     list(inst.ports.values()), volumes)
                    if out["owner"] != inst.owner:
                        with self.db.session() as s:
                            s.get(Instance, inst.id).owner = out["owner"]
                        inst.owner = out["owner"]
                    if not out["busy"]:
                        break
                    self.other_ports(inst, out["busy"])
                else:
                    raise PlacementError(f"{inst.name}: could not find free ports on its host")
                st.event(inst.id, inst.name, None)

            await asyncio.gather(*(make(i) for i in view.instances))

    async def wait(self) -> None:
        view = self.view(self._states_of_new())
        async with self.events.step("Wait for instance accessibility", "Engine: create cluster",
                                    len(view.instances)) as st:
            async def reach(inst) -> None:  # noqa: ANN001
                await inst.agent.is_dir(inst.procdir)  # on the host's agent session: no channel of its own
                st.event(inst.id, inst.name, None)

            await asyncio.gather(*(reach(i) for i in view.instances))

    async def prepare(self) -> None:
        view = self.view()
        # Every instance gets the whole list: after a scale, the old ones learn the new names too.
        hosts = "".join(f"{i.address} {i.name}\n" for i in view.instances)
        async with self.events.step("Configure instances", "Engine: create cluster", len(view.instances)) as st:
            async def prepare(inst) -> None:  # noqa: ANN001
                await inst.write(f"{inst.workdir}/hosts", hosts.encode(), 0o644)
                st.event(inst.id, inst.name, None)

            await asyncio.gather(*(prepare(i) for i in view.instances))

    async def configure(self) -> None:
        view = self.view()
        view.secrets = self._secrets(view)
        async with self.events.step("Configure cluster", "Plugin: configure cluster", len(view.instances)):
            await self.plugin.configure(view, view.instances)

    def _secrets(self, view: ClusterView) -> dict:
        """The cluster's own credentials: made by the plugin the first time, kept on the row (never in `info`,
        `spec`, an event or a log) and found there by a resumed configure and by every scale."""
        with self.db.session() as s:
            c = self.row(s)
            if not c.secrets:
                c.secrets = self.plugin.make_secrets(view)
            return dict(c.secrets)

    async def start(self) -> None:
        view = self.view()
        scaling = self.op == ClusterOp.SCALE
        targets = self._new_instances(view) if scaling else view.instances
        procs = sorted({p for i in targets for p in i.processes})
        async with self.events.step(f"Start the following process(es): {', '.join(procs)}",
                                    "Plugin: scale cluster" if scaling else "Plugin: start cluster",
                                    len(targets)) as st:
            await self.plugin.start(view, targets)
            for inst in targets:
                st.event(inst.id, inst.name, None)
        self.set(info=self.plugin.info(view))

    # --- ends of create and scale ------------------------------------------------------------------------

    async def created(self) -> None:
        self.done(status=S.ACTIVE, status_description="")

    async def scaled(self) -> None:
        with self.db.session() as s:
            for inst in s.scalars(select(Instance).where(Instance.cluster_id == self.id, Instance.state == "new")):
                inst.state = "active"
        await self.created()

    async def undo_create(self, error: Exception) -> None:
        """Stop and remove everything the create made; the cluster row stays, in Error, with the reason."""
        reason = f"Creating cluster failed for the following reason(s): {error}"
        try:
            await self.tear_down(grace=5)
        except CLUSTER_FAILURES as e:
            reason += f"\nRollback failed too: {e}"
        self.done(status=S.ERROR, status_description=reason)

    async def undo_scale(self, error: Exception) -> None:
        """Remove the instances the scale added; the cluster returns to Active with the reason."""
        reason = f"Scaling cluster failed for the following reason(s): {error}"
        view = self.view(("new",))
        try:
            await self.plugin.stop(view, view.instances)
            await self.remove_instances(view.instances)
        except CLUSTER_FAILURES as e:
            reason += f"\nRollback failed too: {e}"
        self.forget_instances([i.id for i in view.instances])
        with self.db.session() as s:
            for ng in s.scalars(select(NodeGroup).where(NodeGroup.cluster_id == self.id)):
                ng.count = s.query(Instance).filter(Instance.node_group_id == ng.id).count()
        self.done(status=S.ACTIVE, status_description=reason)

    # --- update_keypair -----------------------------------------------------------------------------------

    async def replace_user_key(self) -> None:
        """Replace the user key line on every node with the keypair's current public key (Sahara's
        update_keypair). The cluster stays Active."""
        with self.db.session() as s:
            total = len(cluster_hosts(s, self.row(s), ("active",)))
        async with self.events.step("Update the user keypair", "Engine: update keypair", total):
            failure = None
            try:
                await self.user_key(("active",), install=True, replace=True)
            except (*CLUSTER_FAILURES, OperationError) as e:
                failure = e
            if failure is not None:
                # Raised outside the handler, so not tied to an Unreachable: the step ends failed with the
                # reason (an unreachable host is not waited for here), and the update can be asked again.
                raise RemoteError(str(failure))

    async def keypair_updated(self) -> None:
        self.done(status_description="")

    async def keypair_not_updated(self, error: Exception) -> None:
        self.done(status_description=f"Updating the keypair failed: {error}"[:2000])

    # --- the on-demand Spark Connect server ----------------------------------------------------------------

    async def start_connect(self) -> None:
        """Start the server the gateway asked for (a first session is waiting for it); the cluster stays Active.
        Done, the row's spec says so, which is what the waiting gateway reads."""
        view = self.view()
        async with self.events.step("Start the Spark Connect server", "Plugin: start Spark Connect", 1) as st:
            m = await self.plugin.start_connect(view)
            st.event(m.id, m.name, None)
        with self.db.session() as s:
            row = self.row(s)
            row.spec = {**row.spec, CONNECT_STARTED: True}

    async def connect_started(self) -> None:
        self.done(status_description="")  # an earlier start's failure, if any, is over

    async def connect_not_started(self, error: Exception) -> None:
        self.done(status_description=f"Starting the Spark Connect server failed: {error}"[:2000])

    # --- delete -------------------------------------------------------------------------------------------

    async def stop_jobs(self) -> None:
        """Jobs still running on a cluster being deleted are killed. Every job keeps its row, its `cluster_id`
        and its logs after the cluster is gone (retention removes them, oasis/edp/joblogs.py)."""
        self._note_trust_for_delete()
        with self.db.session() as s:
            jobs = list(s.scalars(select(Job).where(Job.cluster_id == self.id)))
            running = [dict(j.runtime) for j in jobs if j.status not in TERMINAL]
        await asyncio.gather(*(kill_on_instance(self.db, self.remotes, rt) for rt in running if rt.get("dir")),
                             return_exceptions=True)
        with self.db.session() as s:
            for j in s.scalars(select(Job).where(Job.cluster_id == self.id)):
                if j.status not in TERMINAL:
                    j.status, j.end_time, j.op = KILLED, utcnow(), None

    async def remove_everything(self) -> None:
        """Tear the cluster down. A host that cannot be reached is waited for (the machine does, without a
        grace), and so is one that answers with an error, rather than leave processes running that no row knows
        about; a force delete gives up instead."""
        with self.db.session() as s:
            force = bool(self.row(s).op_target.get("force"))
        backoff = Backoff(first=1.0)
        while True:
            try:
                await self.tear_down(grace=0 if force else 10)
                return
            except CLUSTER_FAILURES as e:
                if force:
                    log.warning("cluster %s: force delete left something behind: %s", self.id, e)
                    return
                if unreachable_in(e) or await self.unreachable_host():
                    raise
                self.set(status_description=f"Waiting for hosts to answer: {e}"[:2000])
                await backoff.pause()

    def _note_trust_for_delete(self) -> None:
        """A deletion goes on without the creator's trust (nothing may be left running that no row knows about),
        and says so."""
        try:
            self.act_on_trust("delete the cluster")
        except (OperationError, IdentityError) as e:
            message = f"Deleting the cluster without its creator's trust: {e}"
            log.warning("cluster %s: %s", self.id, message)
            self.events.note(message[:2000], successful=False)
            self.set(status_description=message[:2000])

    async def deleted(self) -> None:
        with self.db.session() as s:
            row = self.row(s)
            trust_id = row.trust_id if row is not None else None
        # The cluster's work is done. Before the row goes: the identity's writes are fenced by this lease, which
        # goes with the row (a resumed delete releases a trust already gone, which is no error).
        trusts.release(self.identity, trust_id)
        with self.db.session() as s:
            s.execute(delete(Cluster).where(Cluster.id == self.id))
        self.on_change()

    async def not_deleted(self, error: Exception) -> None:
        self.set(status_description=f"Deleting failed: {error}"[:2000])


OPERATIONS: dict[str, Operation[ClusterWork]] = {
    ClusterOp.CREATE: Operation(
        steps=(Step("spawn", ClusterWork.spawn, S.SPAWNING), Step("wait", ClusterWork.wait, S.WAITING),
               Step("prepare", ClusterWork.prepare, S.PREPARING),
               Step("configure", ClusterWork.configure, S.CONFIGURING),
               Step("start", ClusterWork.start, S.STARTING)),
        finish=ClusterWork.created, rollback=ClusterWork.undo_create),
    ClusterOp.SCALE: Operation(
        steps=(Step("decommission", ClusterWork.decommission, S.DECOMMISSIONING),
               Step("spawn", ClusterWork.spawn, S.SCALING_SPAWNING),
               Step("wait", ClusterWork.wait, S.SCALING_WAITING),
               Step("prepare", ClusterWork.prepare, S.SCALING_PREPARING),
               Step("configure", ClusterWork.configure, S.CONFIGURING),
               Step("start", ClusterWork.start, S.CONFIGURING)),
        finish=ClusterWork.scaled, rollback=ClusterWork.undo_scale),
    ClusterOp.DELETE: Operation(
        steps=(Step("stop_jobs", ClusterWork.stop_jobs, S.DELETING, Wait.NO),
               Step("tear_down", ClusterWork.remove_everything, S.DELETING, Wait.FOREVER)),
        finish=ClusterWork.deleted, rollback=ClusterWork.not_deleted),
    ClusterOp.UPDATE_KEYPAIR: Operation(
        steps=(Step("update_keypair", ClusterWork.replace_user_key, None, Wait.NO),),
        finish=ClusterWork.keypair_updated, rollback=ClusterWork.keypair_not_updated),
    ClusterOp.START_CONNECT: Operation(
        steps=(Step("start_connect", ClusterWork.start_connect, None, Wait.NO),),
        finish=ClusterWork.connect_started, rollback=ClusterWork.connect_not_started),
}


def _one_per_host(instances: list) -> list:
    """One agent per distinct host (its remote and agent path), to install the agent once."""
    return list({(id(i.remote), i.agent.path): i.agent for i in instances}.values())


def cluster_machine(db: Database, remotes: Remotes, on_change=lambda: None, *,  # noqa: ANN001
                    unreachable_grace: float = 1800.0, probe=None,  # noqa: ANN001
                    identity: Identity | None = None) -> Machine[ClusterWork]:
    return Machine(lambda cid: ClusterWork(db, cid, on_change, remotes, identity), OPERATIONS, CLUSTER_FAILURES,
                   unreachable_grace, probe)
