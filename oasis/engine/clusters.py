"""The cluster reconciler: create, scale and delete, each a sequence of idempotent steps recorded on the
cluster (`op_step`), so that an engine taking over a dead engine's lease resumes where it stopped."""
from __future__ import annotations

import asyncio
import logging
import posixpath
from collections.abc import Awaitable, Callable

from sqlalchemy import delete, or_, select, update

from oasis.compute.placement import (
    PlacementError,
    allocate_ports,
    choose_host,
    free_capacity,
)
from oasis.db.models import (
    Cluster,
    Flavor,
    Host,
    HostPort,
    Instance,
    Job,
    Keypair,
    NodeGroup,
    Site,
    utcnow,
)
from oasis.db.session import Database
from oasis.edp.statuses import TERMINAL
from oasis.engine.events import EventLog
from oasis.engine.views import build_view, cluster_hosts, cluster_runtime, host_remotes
from oasis.engine.waiting import Backoff, probe, since_of, waiting_message
from oasis.plugins import get_plugin
from oasis.plugins.base import ClusterView, PluginError
from oasis.remote.base import RemoteError, Unreachable, unreachable_in
from oasis.remote.hosts import Remotes, management_address

log = logging.getLogger(__name__)

# Failures that are the cluster's, not the engine's: they end the operation with a reason for the user.
OPERATION_ERRORS = (RemoteError, PluginError, PlacementError, LookupError, OSError, asyncio.TimeoutError)

CREATE_STEPS = [("spawn", "Spawning"), ("wait", "Waiting"), ("prepare", "Preparing"),
                ("configure", "Configuring"), ("start", "Starting")]
SCALE_STEPS = [("decommission", "Decommissioning"), ("spawn", "Scaling: Spawning"), ("wait", "Scaling: Waiting"),
               ("prepare", "Scaling: Preparing"), ("configure", "Configuring"), ("start", "Configuring")]


class ClusterReconciler:
    def __init__(self, db: Database, remotes: Remotes, on_change: Callable[[], None] = lambda: None, *,
                 unreachable_grace: float = 1800.0) -> None:
        self.db, self.remotes, self.on_change = db, remotes, on_change
        self.unreachable_grace = unreachable_grace  # seconds a step waits for unreachable hosts, then fails

    async def __call__(self, cluster_id: str) -> None:
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
            op = c.op if c else None
        if op == "create":
            await self._run_steps(cluster_id, CREATE_STEPS, self._finish_create, self._rollback_create)
        elif op == "scale":
            await self._run_steps(cluster_id, SCALE_STEPS, self._finish_scale, self._rollback_scale)
        elif op == "delete":
            await self.delete(cluster_id)
        elif op == "update_keypair":
            await self.update_keypair(cluster_id)

    # --- shared machinery -------------------------------------------------------------------------------------

    def _set(self, cluster_id: str, **values: object) -> None:
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
            for k, v in values.items():
                setattr(c, k, v)

    def _view(self, cluster_id: str, states: tuple[str, ...] = ("active", "new")) -> tuple[Cluster, ClusterView]:
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
            return c, build_view(s, self.remotes, c, states)

    async def _run_steps(self, cluster_id: str, steps: list[tuple[str, str]],
                         finish: Callable[[str], None], rollback: Callable[[str, Exception], Awaitable[None]]) -> None:
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
            names = [n for n, _ in steps]
            start = names.index(c.op_step) if c.op_step in names else 0
            events = EventLog(self.db, c.id, c.project_id)
            plugin = get_plugin(c.plugin_name)
        try:
            for name, status in steps[start:]:
                self._set(cluster_id, status=status, op_step=name)
                self.on_change()
                await self._step_until_reachable(cluster_id, name, events, plugin)
        except OPERATION_ERRORS as e:
            log.warning("cluster %s: %s failed: %s", cluster_id, steps[0][0], e)
            await rollback(cluster_id, e)
            return
        finish(cluster_id)

    async def _step_until_reachable(self, cluster_id: str, name: str, events: EventLog, plugin) -> None:
        """Run one step. While it fails because hosts of the cluster cannot be reached (their site is cut off),
        the operation keeps its step and waits, saying for what, and runs the step again (steps are idempotent)
        with a capped backoff; past the grace it fails, and the caller rolls back."""
        backoff = Backoff()
        with self.db.session() as s:
            op = s.get(Cluster, cluster_id).op
        while True:
            try:
                await getattr(self, f"_step_{name}")(cluster_id, events, plugin)
            except OPERATION_ERRORS as e:
                gone = unreachable_in(e) or await self._unreachable_host(cluster_id)
                if gone is None:
                    raise
                waited = self._note_unreachable(cluster_id, op, gone, events)
                if waited > self.unreachable_grace:
                    events.note(f"gave up after {waited:.0f}s: {gone}", successful=False, end=True)
                    raise RemoteError(f"{gone} for more than {self.unreachable_grace:g}s (the grace for "
                                      f"unreachable hosts)") from e
                await backoff.pause()
                continue
            self._note_reachable(cluster_id, op, events)
            return

    async def _unreachable_host(self, cluster_id: str) -> Unreachable | None:
        """A command may fail because another host of the cluster is gone (a worker that cannot reach its
        dead master): probe the cluster's hosts to tell such a failure from a real one."""
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
            hosts = [h for h in cluster_hosts(s, c, ("active", "new", "decommission")) if h.access != "local"]
            if not hosts:
                return None
            groups = {ng.id: ng for ng in s.scalars(select(NodeGroup).where(NodeGroup.cluster_id == c.id))}
            reach = host_remotes(s, self.remotes, c, hosts, groups, as_cluster=False)
        return await probe(reach)

    def _note_unreachable(self, cluster_id: str, op: str, gone: Unreachable, events: EventLog) -> float:
        """Record the wait on the cluster (status_description, and an event when it begins); the seconds since
        it began. The start is kept on the operation, so an engine that takes over keeps counting. Nothing is
        written once another operation replaced `op` (this one is about to be cancelled)."""
        now = utcnow()
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
            if c is None or c.op != op:
                return 0.0
            site = s.get(Site, c.site_id)
            record = (c.op_target or {}).get("unreachable")
            since = since_of(record, now)
            message = waiting_message(site.name if site else "?", gone.host, since, gone.reason)
            first = record is None
            c.op_target = {**(c.op_target or {}), "unreachable": {"since": since.isoformat(), "host": gone.host,
                                                                 "reason": gone.reason}}
            c.status_description = message[:2000]
        if first:
            log.warning("cluster %s: %s", cluster_id, message)
            events.note(message)
        self.on_change()
        return (now - since).total_seconds()

    def _note_reachable(self, cluster_id: str, op: str, events: EventLog) -> None:
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
            record = (c.op_target or {}).get("unreachable") if c is not None and c.op == op else None
            if record is None:
                return
            c.op_target = {k: v for k, v in c.op_target.items() if k != "unreachable"}
            c.status_description = ""
            waited = (utcnow() - since_of(record, utcnow())).total_seconds()
        message = f"host {record.get('host')} answers again after {waited:.0f}s; resuming"
        log.info("cluster %s: %s", cluster_id, message)
        events.note(message)
        self.on_change()

    # --- steps ------------------------------------------------------------------------------------------------

    async def _step_decommission(self, cluster_id: str, events: EventLog, plugin) -> None:
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
            victims = self._choose_victims(s, c)
        if not victims:
            return
        async with events.step("Decommission nodes", "Plugin: decommission cluster", len(victims)) as st:
            c, view = self._view(cluster_id, ("active", "new", "decommission"))
            gone = [i for i in view.instances if i.id in victims]
            await plugin.decommission(view, gone)
            await self._remove_instances(gone)
            # A host the cluster leaves keeps neither the user's key nor the cluster's.
            for mark in (user_key_mark(cluster_id), cluster_key_mark(cluster_id)):
                await self._host_key(cluster_id, ("decommission",), mark, None, leaving_only=True)
            for inst in gone:
                st.event(inst.id, inst.name, None)
        with self.db.session() as s:
            self._forget_instances(s, victims)

    def _choose_victims(self, s, c: Cluster) -> list[str]:
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

    async def _step_spawn(self, cluster_id: str, events: EventLog, plugin) -> None:
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
            state = "new" if c.op == "scale" else "active"
            if c.op == "scale":
                targets = {**(c.op_target.get("resize") or {}), **(c.op_target.get("add") or {})}
                for ng in s.scalars(select(NodeGroup).where(NodeGroup.cluster_id == c.id)):
                    if ng.name in targets:
                        ng.count = targets[ng.name]
            self._place(s, c, plugin, state)
        # Everything below is repeated in full on resume: the rows may have been written by an engine that
        # died before it made the directories.
        c, view = self._view(cluster_id, (state,))
        if not view.instances:
            return
        async with events.step("Spawning instances", "Engine: create cluster", len(view.instances)) as st:
            await self._cluster_key(cluster_id, (state,), install=True)
            await self._user_key(cluster_id, (state,), install=True)
            await asyncio.gather(*(agent.install() for agent in _one_per_host(view.instances)))

            async def make(inst) -> None:
                await inst.remote.run(["mkdir", "-p", inst.procdir])
                await self._ensure_free_ports(inst)
                st.event(inst.id, inst.name, None)

            await asyncio.gather(*(make(i) for i in view.instances))

    async def _cluster_key(self, cluster_id: str, states: tuple[str, ...], install: bool) -> None:
        """Install (or remove) the cluster's own public key on the SSH hosts of its instances in `states`, with
        the site's key: instance work then runs with the cluster's key, which goes away with the cluster."""
        with self.db.session() as s:
            public = s.get(Cluster, cluster_id).management_public_key
        await self._host_key(cluster_id, states, cluster_key_mark(cluster_id), public if install else None)

    async def _user_key(self, cluster_id: str, states: tuple[str, ...], install: bool, replace: bool = False) -> None:
        """Install (or remove) the user's keypair (`user_keypair_id`) on the SSH hosts of the cluster's instances,
        marked as this cluster's, so that removing it touches no other line. `replace` swaps an installed line
        for the keypair's current public key (update_keypair)."""
        mark = user_key_mark(cluster_id)
        if not install:
            await self._host_key(cluster_id, states, mark, None)
            return
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
            ref = c.spec.get("user_keypair_id")
            if not ref:
                return
            kp = s.scalars(select(Keypair).where(Keypair.project_id == c.project_id,
                                                 or_(Keypair.name == ref, Keypair.id == ref))).first()
            if kp is None:
                raise LookupError(f"keypair '{ref}' of the cluster no longer exists")
            public = kp.public_key
        if replace:
            await self._host_key(cluster_id, states, mark, None)
        await self._host_key(cluster_id, states, mark, public)

    async def _host_key(self, cluster_id: str, states: tuple[str, ...], mark: str, public: str | None,
                        leaving_only: bool = False) -> None:
        """Add the key line `public` (its type and data, then `mark`) to authorized_keys on the SSH hosts of the
        cluster's instances in `states`, or with `public` None remove the lines carrying `mark`. Hosts reached
        directly ("local") have no SSH and are skipped. `leaving_only`: only the hosts where no instance of the
        cluster stays (active or new)."""
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
            hosts = [h for h in cluster_hosts(s, c, states) if h.access != "local"]
            if leaving_only:
                staying = {h.id for h in cluster_hosts(s, c, ("active", "new"))}
                hosts = [h for h in hosts if h.id not in staying]
            if not hosts:
                return
            groups = {ng.id: ng for ng in s.scalars(select(NodeGroup).where(NodeGroup.cluster_id == c.id))}
            reach = host_remotes(s, self.remotes, c, hosts, groups, as_cluster=False)
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

    async def _ensure_free_ports(self, inst) -> None:
        """A port oasis believes free may be held by something else on the host: such ports are recorded as
        taken and the instance gets others, until all of its ports are really free."""
        for _ in range(10):
            busy = await inst.agent.busy_ports(inst.address, list(inst.ports.values()))
            if not busy:
                return
            with self.db.session() as s:
                row = s.get(Instance, inst.id)
                host = s.get(Host, row.host_id)
                names = [name for name, port in row.ports.items() if port in busy]
                s.execute(update(HostPort).where(HostPort.host_id == host.id, HostPort.port.in_(busy))
                          .values(instance_id="held-outside-oasis"))
                row.ports = {**row.ports, **allocate_ports(s, host, row.id, names)}
                inst.ports = dict(row.ports)
        raise PlacementError(f"{inst.name}: could not find free ports on its host")

    def _place(self, s, c: Cluster, plugin, state: str) -> None:
        """Create the instance rows that the node groups' counts call for and do not have yet."""
        free = free_capacity(s, c.site_id)
        site = s.get(Site, c.site_id)
        anti = set(c.spec.get("anti_affinity") or [])
        for ng in s.scalars(select(NodeGroup).where(NodeGroup.cluster_id == c.id).order_by(NodeGroup.created_at)):
            have = {i.index: i for i in s.scalars(select(Instance).where(Instance.node_group_id == ng.id))}
            flavor = s.get(Flavor, str(ng.spec.get("flavor_id")))
            if flavor is None:
                raise LookupError(f"node group {ng.name}: flavor {ng.spec.get('flavor_id')} does not exist")
            avoid = set()
            if anti & set(ng.spec["node_processes"]):
                avoid = {i.host_id for i in have.values()}
            # New instances take indexes after the highest one: a removed instance's name is not reused.
            first = max(have, default=0) + 1
            for index in range(first, first + max(0, ng.count - len(have))):
                f = choose_host(free, flavor.vcpus, flavor.ram_mb, flavor.disk_gb, avoid)
                avoid.add(f.host.id)
                name = f"{c.name}-{ng.name}-{index:03d}".lower()
                inst = Instance(cluster_id=c.id, node_group_id=ng.id, host_id=f.host.id, index=index, name=name,
                                internal_ip=f.host.address, management_ip=management_address(f.host, site),
                                workdir=f"{f.host.base_dir}/{c.id}/{name}", vcpus=flavor.vcpus,
                                ram_mb=flavor.ram_mb, disk_gb=flavor.disk_gb, state=state)
                s.add(inst)
                s.flush()
                names = [f"{p}:{port}" for p in ng.spec["node_processes"] for port in plugin.ports(p)]
                inst.ports = {k.split(":", 1)[1]: v for k, v in allocate_ports(s, f.host, inst.id, names).items()}

    async def _step_wait(self, cluster_id: str, events: EventLog, plugin) -> None:
        c, view = self._view(cluster_id, ("new",) if self._is_scale(cluster_id) else ("active",))
        async with events.step("Wait for instance accessibility", "Engine: create cluster", len(view.instances)) as st:
            async def reach(inst) -> None:
                await inst.remote.run(["test", "-d", inst.procdir], timeout=60)
                st.event(inst.id, inst.name, None)

            await asyncio.gather(*(reach(i) for i in view.instances))

    async def _step_prepare(self, cluster_id: str, events: EventLog, plugin) -> None:
        c, view = self._view(cluster_id)
        # Every instance gets the whole list: after a scale, the old ones learn the new names too.
        hosts = "".join(f"{i.address} {i.name}\n" for i in view.instances)
        async with events.step("Configure instances", "Engine: create cluster", len(view.instances)) as st:
            async def prepare(inst) -> None:
                await inst.remote.put(f"{inst.workdir}/hosts", hosts.encode())
                st.event(inst.id, inst.name, None)

            await asyncio.gather(*(prepare(i) for i in view.instances))

    async def _step_configure(self, cluster_id: str, events: EventLog, plugin) -> None:
        c, view = self._view(cluster_id)
        async with events.step("Configure cluster", "Plugin: configure cluster", len(view.instances)):
            await plugin.configure(view, view.instances)

    async def _step_start(self, cluster_id: str, events: EventLog, plugin) -> None:
        c, view = self._view(cluster_id)
        scaling = c.op == "scale"
        targets = self._new(view, cluster_id) if scaling else view.instances
        procs = sorted({p for i in targets for p in i.processes})
        async with events.step(f"Start the following process(es): {', '.join(procs)}",
                               "Plugin: scale cluster" if scaling else "Plugin: start cluster", len(targets)) as st:
            await plugin.start(view, targets)
            for inst in targets:
                st.event(inst.id, inst.name, None)
        self._set(cluster_id, info=plugin.info(view))

    def _is_scale(self, cluster_id: str) -> bool:
        with self.db.session() as s:
            return s.get(Cluster, cluster_id).op == "scale"

    def _new(self, view: ClusterView, cluster_id: str) -> list:
        with self.db.session() as s:
            new = set(s.scalars(select(Instance.id).where(Instance.cluster_id == cluster_id, Instance.state == "new")))
        return [i for i in view.instances if i.id in new]

    # --- ends ---------------------------------------------------------------------------------------------------

    def _finish_create(self, cluster_id: str) -> None:
        self._set(cluster_id, status="Active", status_description="", op=None, op_step=None, op_target={})
        self.on_change()

    def _finish_scale(self, cluster_id: str) -> None:
        with self.db.session() as s:
            for inst in s.scalars(select(Instance).where(Instance.cluster_id == cluster_id, Instance.state == "new")):
                inst.state = "active"
        self._finish_create(cluster_id)

    async def _rollback_create(self, cluster_id: str, error: Exception) -> None:
        """Stop and remove everything the create made; the cluster row stays, in Error, with the reason."""
        reason = f"Creating cluster failed for the following reason(s): {error}"
        try:
            await self._tear_down(cluster_id, grace=5)
        except OPERATION_ERRORS as e:
            reason += f"\nRollback failed too: {e}"
        self._set(cluster_id, status="Error", status_description=reason, op=None, op_step=None, op_target={})
        self.on_change()

    async def _rollback_scale(self, cluster_id: str, error: Exception) -> None:
        """Remove the instances the scale added; the cluster returns to Active with the reason."""
        reason = f"Scaling cluster failed for the following reason(s): {error}"
        c, view = self._view(cluster_id, ("new",))
        try:
            plugin = get_plugin(c.plugin_name)
            await plugin.stop(view, view.instances)
            await self._remove_instances(view.instances)
        except OPERATION_ERRORS as e:
            reason += f"\nRollback failed too: {e}"
        with self.db.session() as s:
            self._forget_instances(s, [i.id for i in view.instances])
            for ng in s.scalars(select(NodeGroup).where(NodeGroup.cluster_id == cluster_id)):
                ng.count = s.query(Instance).filter(Instance.node_group_id == ng.id).count()
        self._set(cluster_id, status="Active", status_description=reason, op=None, op_step=None, op_target={})
        self.on_change()

    async def update_keypair(self, cluster_id: str) -> None:
        """Replace the user key line on every node with the keypair's current public key (Sahara's
        update_keypair). The cluster stays Active; a failure is kept in status_description and the events."""
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
            events = EventLog(self.db, c.id, c.project_id)
            total = len(cluster_hosts(s, c, ("active",)))
        description = ""
        try:
            async with events.step("Update the user keypair", "Engine: update keypair", total):
                failure = None
                try:
                    await self._user_key(cluster_id, ("active",), install=True, replace=True)
                except OPERATION_ERRORS as e:
                    failure = e
                if failure is not None:
                    # Raised outside the handler, so not tied to an Unreachable: this operation does not wait for
                    # a host to come back; the step ends failed with the reason, and the update can be asked again.
                    raise RemoteError(str(failure))
        except OPERATION_ERRORS as e:
            log.warning("cluster %s: update_keypair failed: %s", cluster_id, e)
            description = f"Updating the keypair failed: {e}"[:2000]
        self._set(cluster_id, status_description=description, op=None, op_step=None, op_target={})
        self.on_change()

    async def delete(self, cluster_id: str) -> None:
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
            force = bool(c.op_target.get("force"))
            c.status = "Deleting"
            events = EventLog(self.db, c.id, c.project_id)
        await self._stop_jobs(cluster_id)
        backoff = Backoff(first=1.0)
        while True:
            try:
                await self._tear_down(cluster_id, grace=0 if force else 10)
                break
            except OPERATION_ERRORS as e:
                if force:
                    log.warning("cluster %s: force delete left something behind: %s", cluster_id, e)
                    break
                # A host that cannot be reached now may come back: wait for it, saying so, rather than leave
                # processes running that no row knows about. A force delete gives up instead. No grace here:
                # giving up would leave those processes behind.
                gone = unreachable_in(e) or await self._unreachable_host(cluster_id)
                if gone is not None:
                    self._note_unreachable(cluster_id, "delete", gone, events)
                else:
                    self._set(cluster_id, status_description=f"Waiting for hosts to answer: {e}"[:2000])
                await backoff.pause()
        with self.db.session() as s:
            s.execute(delete(Cluster).where(Cluster.id == cluster_id))
        self.on_change()

    async def _stop_jobs(self, cluster_id: str) -> None:
        """Jobs still running on a cluster being deleted are killed, then detached from it (as Sahara does)."""
        from oasis.engine.jobs import kill_on_instance

        with self.db.session() as s:
            jobs = list(s.scalars(select(Job).where(Job.cluster_id == cluster_id)))
            running = [(j.id, dict(j.runtime)) for j in jobs if j.status not in TERMINAL]
        await asyncio.gather(*(kill_on_instance(self.db, self.remotes, rt) for _, rt in running if rt.get("dir")),
                             return_exceptions=True)
        with self.db.session() as s:
            for j in s.scalars(select(Job).where(Job.cluster_id == cluster_id)):
                if j.status not in TERMINAL:
                    j.status, j.end_time, j.op = "KILLED", utcnow(), None
                j.cluster_id = None

    async def _tear_down(self, cluster_id: str, grace: float) -> None:
        """Stop every process of the cluster and remove its directories, host by host. Instances on hosts that
        answered are forgotten; those on hosts that did not stay recorded, and the error names them."""
        everything = ("active", "new", "decommission")
        try:  # a host that was unreachable when the key went out may be back now
            await self._cluster_key(cluster_id, everything, install=True)
        except OPERATION_ERRORS:
            pass  # those hosts fail below, each with its reason
        c, view = self._view(cluster_id, everything)
        plugin = get_plugin(c.plugin_name)
        try:
            if grace == 0:
                raise RemoteError("force")
            await plugin.stop(view, view.instances)
        except OPERATION_ERRORS:  # some host did not answer: stop what can be stopped, one instance at a time
            await asyncio.gather(*(i.agent.stop_all(i.procdir, grace) for i in view.instances), return_exceptions=True)
        by_dir = {(id(i.remote), posixpath.dirname(i.workdir)): i.remote for i in view.instances}
        outcome = dict(zip(by_dir, await asyncio.gather(*(r.run(["rm", "-rf", d]) for (_, d), r in by_dir.items()),
                                                       return_exceptions=True)))
        failed = {key: e for key, e in outcome.items() if isinstance(e, Exception)}
        try:
            await self._user_key(cluster_id, everything, install=False)
            await self._cluster_key(cluster_id, everything, install=False)
        except OPERATION_ERRORS as e:  # the hosts that answered no longer accept the cluster's key
            failed.setdefault(("key", ""), e)
        gone = [i.id for i in view.instances if (id(i.remote), posixpath.dirname(i.workdir)) not in failed]
        with self.db.session() as s:
            self._forget_instances(s, gone)
        if failed:
            raise RemoteError("; ".join(str(e) for e in failed.values()))

    async def _remove_instances(self, instances: list) -> None:
        await asyncio.gather(*(i.agent.stop_all(i.procdir, 5) for i in instances))
        await asyncio.gather(*(i.remote.run(["rm", "-rf", i.workdir]) for i in instances))

    @staticmethod
    def _forget_instances(s, ids: list[str]) -> None:
        if ids:
            s.execute(delete(HostPort).where(HostPort.instance_id.in_(ids)))
            s.execute(delete(Instance).where(Instance.id.in_(ids)))


def cluster_key_mark(cluster_id: str) -> str:
    """The comment that marks the cluster's own key line in a host's authorized_keys."""
    return f"oasis-cluster-{cluster_id}"


def user_key_mark(cluster_id: str) -> str:
    """The comment that marks the cluster's user keypair line in a host's authorized_keys."""
    return f"oasis-user-{cluster_id}"


def _one_per_host(instances: list) -> list:
    """One agent per distinct host (its remote and agent path), to install the agent once."""
    return list({(id(i.remote), i.agent.path): i.agent for i in instances}.values())
