"""Job logs in the store: parts while the job runs, one final object at its end, reads from any offset at any
moment, an engine that dies between two writes resumed with no byte lost or doubled, the agent's `wait` that
follows a running job's files, the API's offset reads, `oasis job logs -f`, and retention."""
from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from oasis.cli.jobs import follow_log
from oasis.db.models import Cluster, Job, utcnow
from oasis.edp import joblogs
from oasis.edp.joblogs import LogWriter, Part, StreamWriter, chain, final_key, parts_prefix, read
from oasis.engine.jobs import JobWork
from oasis.remote.agent_client import Agent
from oasis.remote.hosts import Remotes
from oasis.remote.local import LocalRemote
from oasis.storage.base import ObjectInfo, ObjectNotFound, StoreError
from tests.world import World, cluster_body

AGENT = Path(__file__).parents[2] / "oasis" / "remote" / "agent.py"


class MemoryStore:
    """An object store in a dict that can be told to die at its n-th write (a put or a delete): the engine
    dying between two store writes."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.writes = 0
        self.die_at: int | None = None

    def _write(self) -> None:
        self.writes += 1
        if self.die_at is not None and self.writes >= self.die_at:
            raise Crash()

    def put(self, key: str, data: bytes) -> None:
        self._write()
        self.objects[key] = bytes(data)

    def get(self, key: str) -> bytes:
        if key not in self.objects:
            raise ObjectNotFound(key)
        return self.objects[key]

    def delete(self, key: str) -> None:
        self._write()
        self.objects.pop(key, None)

    def exists(self, key: str) -> bool:
        return key in self.objects

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        return [ObjectInfo(k, len(v)) for k, v in sorted(self.objects.items()) if k.startswith(prefix)]


class Crash(Exception):
    pass


def pieces(n: int) -> list[bytes]:
    return [f"line {i:04d} {'x' * (i % 7)}\n".encode() for i in range(n)]


# --- the layout ------------------------------------------------------------------------------------------


def test_the_chain_takes_the_part_that_reaches_furthest_and_stops_at_a_gap() -> None:
    parts = [Part("a", 0, 5, 0), Part("b", 5, 9, 0), Part("m", 0, 9, 1), Part("c", 9, 12, 0), Part("z", 20, 30, 0)]
    assert [p.key for p in chain(parts)] == ["m", "c"]
    assert chain([Part("late", 3, 9, 0)]) == []  # nothing from byte 0: nothing readable yet


def test_parts_merge_logarithmically_and_the_end_makes_one_final_object() -> None:
    store, job = MemoryStore(), "j1"
    writer = StreamWriter(store, job, "stdout")
    data = pieces(300)
    whole = b""
    for piece in data:
        writer.append(len(whole), piece)
        whole += piece
        got, snap = read(store, job, "stdout", 0)
        assert got == whole and snap.size == len(whole) and snap.running
    parts = [k for k in store.objects if k.startswith(parts_prefix(job, "stdout"))]
    # 300 = 1*256 + 2*16 + 12 in base 16: one level-2 part, two of level 1, twelve of level 0
    assert len(parts) == 15, parts
    for offset in (0, 1, 100, len(whole) - 1, len(whole), len(whole) + 10):
        assert read(store, job, "stdout", offset)[0] == whole[offset:]
    writer.finish()
    assert store.objects == {final_key(job, "stdout"): whole}  # the key readers always used, parts gone
    got, snap = read(store, job, "stdout", 7)
    assert got == whole[7:] and snap.size == len(whole) and not snap.running
    writer.finish()  # again: nothing changes
    assert store.objects == {final_key(job, "stdout"): whole}


def test_a_piece_read_again_is_not_doubled() -> None:
    store = MemoryStore()
    writer = StreamWriter(store, "j", "stdout")
    writer.append(0, b"hello ")
    writer.append(0, b"hello world\n")  # an engine asked again from an older offset: only the new bytes count
    writer.append(20, b"gap")  # a piece past the end is a caller's mistake and is not stored
    assert read(store, "j", "stdout")[0] == b"hello world\n" and writer.offset == 12


def test_a_whole_copy_left_by_an_older_engine_is_gone_on_from() -> None:
    """An older oasis copied the whole log between slices to the final key; a new engine resuming the watch
    goes on after those bytes, and the end makes the final object again with all of them."""
    store = MemoryStore()
    store.put(final_key("j", "stdout"), b"copied before the upgrade\n")
    writer = StreamWriter(store, "j", "stdout")
    assert writer.offset == 26
    writer.append(26, b"and after it\n")
    assert read(store, "j", "stdout")[0] == b"copied before the upgrade\nand after it\n"
    writer.finish()
    assert store.objects == {final_key("j", "stdout"): b"copied before the upgrade\nand after it\n"}


@pytest.mark.parametrize("die_at", range(1, 100))  # an undisturbed run makes 94 writes
def test_an_engine_that_dies_at_any_store_write_is_resumed_with_no_byte_lost_or_doubled(die_at: int) -> None:
    """The job's file only grows; an engine appends what `wait` gave it from its offset, merges, and makes the
    final objects. It dies at its `die_at`-th store write; a fresh engine builds its writer from the store alone
    and asks the file from the offset that gives. At every moment a reader sees a prefix of the file."""
    store, job = MemoryStore(), "j"
    files = {"stdout": b"".join(pieces(40)), "stderr": b"".join(p.upper() for p in pieces(21))}
    step = {"stdout": 17, "stderr": 29}  # pieces of uneven sizes, as `wait` answers them

    def engine() -> None:
        logs = LogWriter(store, job)  # what the store holds decides where this engine goes on
        while True:
            answer = {s: {"from": o, "data": files[s][o:o + step[s]], "size": len(files[s])}
                      for s, o in logs.offsets.items()}
            logs.append(answer)
            for s in files:
                got, _ = read(store, job, s)
                assert files[s].startswith(got)
            if logs.caught_up(answer):
                break
        logs.finish()

    store.die_at = die_at
    try:
        engine()
    except Crash:
        pass
    store.die_at = None
    engine()
    for s, content in files.items():
        assert store.objects[final_key(job, s)] == content
    assert set(store.objects) == {final_key(job, s) for s in files}


def test_a_reader_whose_part_vanished_reads_again() -> None:
    """A merge (or the final object) replaced the parts a reader had listed: it lists again and is right."""
    store = MemoryStore()
    writer = StreamWriter(store, "j", "stdout")
    whole = b""
    for piece in pieces(15):
        writer.append(len(whole), piece)
        whole += piece
    listed = store.list
    calls = []

    def list_then_merge(prefix: str = "") -> list[ObjectInfo]:
        out = listed(prefix)
        if not calls:  # between this reader's listing and its reads, the 16th piece makes a merge
            calls.append(1)
            writer.append(len(whole), b"last\n")
        return out

    store.list = list_then_merge  # type: ignore[method-assign]
    got, snap = read(store, "j", "stdout")
    assert got == whole + b"last\n" and snap.size == len(got)


# --- the agent's wait -----------------------------------------------------------------------------------


def agent(*args: str) -> str:
    return subprocess.run([sys.executable, str(AGENT), *args], check=True, capture_output=True, text=True).stdout


def test_wait_answers_soon_after_the_job_wrote_with_the_new_bytes_only(tmp_path: Path) -> None:
    d, gate = str(tmp_path / "job"), tmp_path / "gate"
    agent("run", d, "--", "sh", "-c", f"echo first; while [ ! -e {gate} ]; do sleep 0.05; done; echo second >&2;"
                                      f" printf 'abcdefghij'")
    # a 30 s slice answers as soon as the first line is there, with it: the job still blocks on the gate
    first = json.loads(agent("wait", d, "30", "--from", "0", "0"))
    assert first["done"] is False and first["logs"]["stdout"] == {"from": 0, "data": "Zmlyc3QK", "size": 6}
    # nothing new past the offsets: the slice runs out, the job still runs
    quiet = json.loads(agent("wait", d, "0.5", "--from", "6", "0"))
    assert quiet["done"] is False and quiet["logs"]["stdout"]["data"] == "" and quiet["logs"]["stderr"]["size"] == 0
    gate.touch()
    end = json.loads(agent("wait", d, "30", "--from", "6", "0", "--max", "4"))
    while not end["done"]:
        end = json.loads(agent("wait", d, "30", "--from", "6", "0", "--max", "4"))
    # bounded: 4 bytes of the 10 new ones, the size says the rest is for the next call
    assert end["logs"]["stdout"] == {"from": 6, "data": "YWJjZA==", "size": 16}
    assert end["logs"]["stderr"]["size"] == 7 and end["rc"] == 0
    assert "logs" not in json.loads(agent("wait", d, "1"))  # without --from, the status alone, as before


def _job_row(world: World, d: str, cluster_id: str | None = None, **values: Any) -> str:
    with world.db.session() as s:
        job = Job(project_id=world.projects["p1"], job_template_id="t", cluster_id=cluster_id, status="RUNNING",
                  runtime={"dir": d, "instance_id": "i"}, op="run", op_step="watch", **values)
        s.add(job)
        s.flush()
        return job.id


class LocalJobWork(JobWork):
    """The real watch, with the job's agent on this machine (the job's instance is a local directory)."""

    def _agent(self, runtime: dict[str, Any]) -> Agent:
        return Agent(LocalRemote(), sys.executable, str(AGENT))


def test_the_watch_streams_a_running_job_and_a_resumed_watch_goes_on_at_the_byte(world: World,
                                                                                 tmp_path: Path) -> None:
    d, gate, gate2 = tmp_path / "job", tmp_path / "gate", tmp_path / "gate2"
    job_id = _job_row(world, str(d))
    script = (f"echo one; while [ ! -e {gate} ]; do sleep 0.05; done; echo two; echo oops >&2;"
              f" while [ ! -e {gate2} ]; do sleep 0.05; done; echo three")
    agent("run", str(d), "--", "sh", "-c", script)

    def work() -> JobWork:
        return LocalJobWork(world.db, job_id, lambda: None, Remotes(), world.store, None, 900.0)

    async def until(predicate, what: str) -> None:  # noqa: ANN001
        deadline = time.monotonic() + 30
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)

    def text(stream: str = "stdout") -> bytes:
        return read(world.store, job_id, stream)[0]

    async def main() -> None:
        watch = asyncio.create_task(work().watch())
        await until(lambda: text() == b"one\n", "the first line in the store while the job blocks")
        gate.touch()
        await until(lambda: text() == b"one\ntwo\n" and text("stderr") == b"oops\n", "the second line")
        watch.cancel()  # the engine dies; another resumes the watch from the row and the store
        await asyncio.gather(watch, return_exceptions=True)
        gate2.touch()
        await asyncio.wait_for(work().watch(), 30)

    asyncio.run(main())
    assert world.store.get(final_key(job_id, "stdout")) == b"one\ntwo\nthree\n"
    assert world.store.get(final_key(job_id, "stderr")) == b"oops\n"
    assert world.store.list(parts_prefix(job_id, "stdout")) == []
    with world.db.session() as s:
        result = s.get(Job, job_id).op_target["result"]
    assert result["done"] and result["rc"] == 0 and "logs" not in result  # no log bytes in the database


class RefusesOnce:
    """The deployment's store, refusing the first write (a store that is briefly down)."""

    def __init__(self, store: Any) -> None:
        self.store, self.refused = store, 0

    def put(self, key: str, data: bytes) -> None:
        if not self.refused:
            self.refused += 1
            raise StoreError("PUT refused", 503)
        self.store.put(key, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_store_that_refuses_a_piece_does_not_fail_the_job_nor_lose_the_piece(world: World, tmp_path: Path) -> None:
    d = tmp_path / "job"
    job_id = _job_row(world, str(d))
    agent("run", str(d), "--", "sh", "-c", "echo a; echo b >&2")
    store = RefusesOnce(world.store)
    asyncio.run(asyncio.wait_for(LocalJobWork(world.db, job_id, lambda: None, Remotes(), store, None, 900.0).watch(),
                                 60))
    assert store.refused == 1
    assert world.store.get(final_key(job_id, "stdout")) == b"a\n" and world.store.get(final_key(job_id, "stderr")) == b"b\n"


# --- the API --------------------------------------------------------------------------------------------


def test_logs_from_an_offset_with_their_size_and_completeness(world: World) -> None:
    job_id = _job_row(world, "/nowhere")
    url = f"/v2/jobs/{job_id}/logs"
    writer = StreamWriter(world.store, job_id, "stdout")
    writer.append(0, "héllo\n".encode())
    writer.append(7, b"world\n")
    r = world.get(url, params={"offset": "3"})
    assert r.status_code == 200 and r.content == "héllo\nworld\n".encode()[3:]
    assert r.headers["X-Oasis-Log-Size"] == "13" and r.headers["X-Oasis-Log-Complete"] == "false"
    assert r.headers["content-type"].startswith("text/plain")
    assert world.get(url).content == "héllo\nworld\n".encode()  # no offset: the whole log, as before
    past = world.get(url, params={"offset": "99"})
    assert past.content == b"" and past.headers["X-Oasis-Log-Size"] == "13"
    empty = world.get(url, params={"stream": "stderr", "offset": "0"})
    assert empty.content == b"" and empty.headers["X-Oasis-Log-Size"] == "0"
    for bad, says in (("-1", "must not be negative"), ("x", "whole number"), ("1.5", "whole number"),
                      ("", "whole number")):
        r = world.get(url, params={"offset": bad})
        assert r.status_code == 400 and says in r.text, (bad, r.text)
    writer.finish()
    with world.db.session() as s:
        job = s.get(Job, job_id)
        job.status, job.op, job.end_time = "SUCCEEDED", None, utcnow()
    r = world.get(url, params={"offset": "7"})
    assert r.content == b"world\n" and r.headers["X-Oasis-Log-Complete"] == "true"
    assert r.headers["X-Oasis-Log-Size"] == "13"
    assert world.get(url, who="bob").status_code == 404  # another project's job
    assert world.get(url, who="bob", params={"offset": "0"}).status_code == 404


# --- the CLI's follow -----------------------------------------------------------------------------------


class ScriptedLogs:
    """What the API answers a follower: a log that grows by these pieces, complete after the last."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces, self.shown, self.asked = pieces, 0, []

    def log_piece(self, job_id: str, stream: str = "stdout", offset: int = 0) -> tuple[bytes, int, bool]:
        self.asked.append(offset)
        self.shown = min(self.shown + 1, len(self.pieces))
        log = b"".join(self.pieces[:self.shown])
        return log[offset:], len(log), self.shown == len(self.pieces)


def test_follow_prints_each_byte_once_and_a_character_split_between_reads_whole() -> None:
    snow = "☃".encode()
    logs = ScriptedLogs([b"start\n", snow[:1], snow[1:] + b"\n", b"", b"end\n"])
    out = io.StringIO()
    follow_log(logs, "j", "stdout", interval=0, out=out)  # type: ignore[arg-type]
    assert out.getvalue() == "start\n☃\nend\n"
    assert logs.asked == [0, 6, 7, 10, 10]  # always from what was printed


# --- retention ------------------------------------------------------------------------------------------


def test_retention_removes_old_logs_and_the_rows_whose_cluster_is_gone(world: World) -> None:
    r = world.post("/v2/clusters", cluster_body("keeps", plugin="dask"))
    assert r.status_code == 202, r.text
    live = r.json()["cluster"]["id"]
    now = datetime(2030, 1, 31)
    old, recent = now - timedelta(days=31), now - timedelta(days=29)
    jobs = {
        "old, cluster gone": _job_row(world, "/x", "gone-cluster", end_time=old),
        "old, cluster alive": _job_row(world, "/x", live, end_time=old),
        "recent": _job_row(world, "/x", "gone-cluster", end_time=recent),
        "old but being deleted": _job_row(world, "/x", "gone-cluster", end_time=old),
        "running": _job_row(world, "/x", "gone-cluster"),
    }
    with world.db.session() as s:
        for name, job_id in jobs.items():
            job = s.get(Job, job_id)
            job.status, job.op = ("RUNNING", "run") if name == "running" else ("SUCCEEDED", None)
            if name == "old but being deleted":
                job.op = "delete"
    for job_id in jobs.values():
        world.store.put(final_key(job_id, "stdout"), b"log\n")
        world.store.put(f"jobs/{job_id}/history/report.html", b"<html/>")

    assert joblogs.purge_expired(world.db, world.store, 0, now) == 0  # 0 keeps everything
    assert joblogs.purge_expired(world.db, world.store, 30, now) == 2
    with world.db.session() as s:
        rows = {name: s.get(Job, job_id) for name, job_id in jobs.items()}
        assert rows["old, cluster gone"] is None
        assert rows["old, cluster alive"].runtime[joblogs.EXPIRED] is True
        assert all(rows[n] is not None and joblogs.EXPIRED not in rows[n].runtime
                   for n in ("recent", "old but being deleted", "running"))
    for name, job_id in jobs.items():
        assert bool(world.store.list(joblogs.job_prefix(job_id))) == (name not in ("old, cluster gone",
                                                                                   "old, cluster alive"))
    # the next period finds nothing left to do; once the kept row's cluster is gone, its row goes too
    assert joblogs.purge_expired(world.db, world.store, 30, now) == 0
    with world.db.session() as s:
        s.delete(s.get(Cluster, live))
    assert joblogs.purge_expired(world.db, world.store, 30, now) == 1
    with world.db.session() as s:
        assert s.get(Job, jobs["old, cluster alive"]) is None
