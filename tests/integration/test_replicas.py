"""Redundant controllers, tried as an operator would from outside: API and engine replicas started together on
one PostgreSQL, a burst of creates through both APIs while engines are SIGKILLed at random and restarted, an API
replica killed while the other serves, deletes under further kills, periodic work once per period."""
from __future__ import annotations

import random
import re
import signal
import subprocess
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from oasis.db.session import alembic_config
from tests.integration import workflow as wf
from tests.integration.cluster_checks import assert_clean_processes, assert_nothing_left
from tests.integration.services import Oasis, Postgres, free_port, wait_until

pytestmark = pytest.mark.postgres
ENGINES = 3
CLUSTERS = 8


def _fresh_database(postgres: Postgres) -> str:
    return postgres.create_database("oasis_" + uuid.uuid4().hex[:12])


class Replicas:
    """Two APIs and a fixed number of engines of one service; engines die by SIGKILL and are replaced."""

    def __init__(self, service: Oasis) -> None:
        self.service = service
        self.api_urls = [service.url, f"http://127.0.0.1:{free_port()}"]
        self.apis: list[subprocess.Popen] = []
        self.engines: list[subprocess.Popen] = []
        self.kills = 0
        self._lock = threading.Lock()

    def start_together(self) -> None:
        """Every process at once, on a database nobody migrated yet."""
        for url in self.api_urls:
            self.apis.append(self.service.spawn("api", int(url.rsplit(":", 1)[1])))
        self.engines = [self.service.spawn("engine") for _ in range(ENGINES)]
        for proc, url in zip(self.apis, self.api_urls):
            self.service.wait_answering(proc, url)
        wait_until(lambda: self.engines_alive() == ENGINES, 30, "every engine to beat")
        dead = [p.args[3] for p in self.apis + self.engines if p.poll() is not None]
        assert not dead, f"replicas died at start: {dead}; see {self.service.state_dir}"

    def _beating(self) -> list[str]:
        with create_engine(self.service.database_url).connect() as c:
            return list(c.execute(text("SELECT engine_id FROM engine_heartbeats WHERE seen_at > "
                                       "(now() at time zone 'utc') - interval '3 seconds'")).scalars())

    def engines_alive(self) -> int:
        return len(self._beating())

    def kill_an_engine(self, holding: str | None = None) -> bool:
        """SIGKILL an engine at work (beating; an engine's id holds its pid), at random or the one `holding` an
        operation of that kind ("create", "delete"), and start another in its place. False if there was none."""
        with self._lock:
            beating = self._beating()
            if holding is not None:
                with create_engine(self.service.database_url).connect() as c:
                    owners = set(c.execute(text("SELECT lease_owner FROM clusters WHERE op = :op AND "
                                                "lease_owner IS NOT NULL"), {"op": holding}).scalars())
                beating = [e for e in beating if e in owners]
            working = [p for p in self.engines if p.poll() is None and any(f"-{p.pid}-" in e for e in beating)]
            if not working:
                return False
            victim = random.choice(working)
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            self.engines.remove(victim)
            self.engines.append(self.service.spawn("engine"))
            self.kills += 1
            return True


class Killer(threading.Thread):
    """SIGKILLs a random working engine every 2 to 4 s until stopped, and starts another at once."""

    def __init__(self, replicas: Replicas) -> None:
        super().__init__(daemon=True)
        self.replicas = replicas
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(random.uniform(2.0, 4.0)):
            self.replicas.kill_an_engine()

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


def _same_moment(calls: list) -> list:
    """Run the calls from as many threads, released at the same moment."""
    barrier = threading.Barrier(len(calls))

    def go(call):
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(go, calls))


def _cluster_body(client: httpx.Client, name: str) -> dict:
    return {"name": name, "plugin_name": "dask", "plugin_version": wf.plugin_version(client, "dask"), "node_groups": [
        {"name": "master", "flavor_id": "1", "node_processes": ["scheduler"], "count": 1},
        {"name": "worker", "flavor_id": "1", "node_processes": ["worker"], "count": 1}]}


def _periodic_slots(state_dir: Path, task: str) -> list[int]:
    """The slots of `task` that the engines' logs say they ran, every engine that ever ran."""
    pattern = re.compile(rf"periodic {re.escape(task)} slot (\d+)")
    return [int(m.group(1)) for log in state_dir.glob("engine-*.log") for m in pattern.finditer(log.read_text())]


def test_replicas_under_engine_kills(tmp_path: Path, postgres: Postgres) -> None:
    service = Oasis(tmp_path / "state", _fresh_database(postgres))
    replicas = Replicas(service)
    killer = Killer(replicas)
    clients: list[httpx.Client] = []
    try:
        replicas.start_together()
        clients = [service.login(url) for url in replicas.api_urls]

        # One name created eight times at once through both APIs: one 202, seven NAME_ALREADY_EXISTS.
        body = _cluster_body(clients[0], "dup")
        answers = _same_moment([lambda c=clients[i % 2]: c.post("/clusters", json=body) for i in range(8)])
        codes = Counter((r.status_code, r.json().get("error_name")) for r in answers)
        assert codes == {(202, None): 1, (400, "NAME_ALREADY_EXISTS"): 7}, codes
        ids = [r.json()["cluster"]["id"] for r in answers if r.status_code == 202]

        # A burst through both APIs at once while engines die: three engines that hold creates are killed (each
        # kill holds its clusters back for a takeover, leaving creates for the next), then more at random.
        burst = _same_moment([lambda i=i: clients[i % 2].post("/clusters", json=_cluster_body(clients[i % 2],
                                                                                            f"burst-{i}"))
                              for i in range(CLUSTERS - 1)])
        ids += [wf.ok(r, 202)["cluster"]["id"] for r in burst]
        for _ in range(3):
            wait_until(lambda: replicas.kill_an_engine(holding="create"), 60, "an engine holding a create")
        killer.start()

        # One API replica dies; the other goes on serving, and the work goes on.
        api = replicas.apis[0]
        api.send_signal(signal.SIGKILL)
        api.wait(10)
        client = clients[1]
        for cid in ids:
            wf.wait_cluster(client, cid, timeout=300)
        for cid in ids:
            assert_clean_processes(service.state_dir, cid, expected=2)  # one framework process per instance

        # Deletes under further kills.
        for cid in ids:
            wf.ok(client.delete(f"/clusters/{cid}"), 204)
        for cid in ids:
            wf.wait_gone(client, cid, timeout=180)
        killer.stop()
        for cid in ids:
            assert_nothing_left(service.state_dir, cid)

        # Periodic work: each 10 s period's run done by one engine, whichever engines die meanwhile. A period
        # may pass unrun while every engine's loop is starved (eight clusters starting on two cores lag a loop by
        # several seconds), never two in a row. A fast run may be over within two periods: the engines, still
        # running, are given the periods that make three.
        def claimed() -> list[int]:
            with create_engine(service.database_url).connect() as c:
                return sorted(c.execute(text("SELECT slot FROM periodic_runs WHERE task = 'transient-clusters'"))
                              .scalars())

        wait_until(lambda: len(claimed()) >= 3, 45, "three periods of periodic work")
        ran = _periodic_slots(service.state_dir, "transient-clusters")
        slots = claimed()  # read after the logs: every slot a log names is there
        twice = [slot for slot, n in Counter(ran).items() if n > 1]
        assert not twice, f"periods run by more than one engine: {twice}"
        assert all(b - a <= 2 for a, b in zip(slots, slots[1:])), slots
        assert set(ran) <= set(slots)
    finally:
        killer.stop()
        for c in clients:
            c.close()
        service.stop()


def test_replicas_start_together_on_an_old_database(tmp_path: Path, postgres: Postgres) -> None:
    """A database from before this release: one replica upgrades it, the others wait and go on."""
    url = _fresh_database(postgres)
    command.upgrade(alembic_config(url), "0003")
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    service = Oasis(tmp_path / "state", url)
    try:
        api = service.spawn("api")
        engines = [service.spawn("engine") for _ in range(3)]
        service.wait_answering(api)
        with create_engine(url).connect() as c:
            wait_until(lambda: c.execute(text("SELECT count(*) FROM engine_heartbeats")).scalar() == 3, 30,
                       "every engine to beat")
            assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
        assert all(p.poll() is None for p in [api, *engines])
        client = service.login()
        assert wf.ok(client.get("/clusters"))["clusters"] == []
        client.close()
    finally:
        service.stop()
