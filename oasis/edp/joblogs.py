"""A job's stdout and stderr in the deployment's object store: written piece by piece while the job runs, read
from any offset at any moment, whole in one object once the job has ended, and removed after the retention.

Object stores cannot append, so a running job's stream is a set of part objects, each named by the byte range
it holds: `jobs/{id}/{stream}.parts/{start:016d}-{end:016d}-{level}`. A piece the engine copies is a level-0
part; when the last MERGE_FAN parts of the chain are of one level and small enough together, the engine writes
them again as one part of the next level and removes them (a base-MERGE_FAN counter), so the number of parts
grows with the logarithm of the pieces, not with them, and each byte is rewritten a bounded number of times.
Once the job has ended the whole stream becomes `jobs/{id}/{stream}` (the key readers always used) and the
parts go. A job that is run again (its retries) keeps each attempt's logs apart: attempt 1 under `jobs/{id}/`,
attempt N under `jobs/{id}/attempts/N/` (`log_id`), so every function here takes the log's id, not the job's.

Every write is one whole object and comes before the removals it makes unneeded, so a reader (or an engine
resuming the watch) is right at every moment: overlapping parts hold the same bytes (the job's file only
grows), the chain from byte 0 takes at each step the part that reaches furthest, a part that vanished under a
reader means a merge or the final object replaced it (read again), and the offset a stream reached is the end
of its chain. An engine that resumes a watch and finds a final object (its predecessor died after making it, or
an older oasis copied the whole log there) turns it back into a part and makes it again at the end."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Iterable

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from oasis.db.models import Cluster, Job, utcnow
from oasis.db.session import Database
from oasis.edp.statuses import TERMINAL
from oasis.storage.base import ObjectInfo, ObjectNotFound, ObjectStore

STREAMS = ("stdout", "stderr")
MERGE_FAN = 16  # this many parts of one level become one part of the next
MERGE_MAX_BYTES = 8 << 20  # parts this big together are left as they are: few enough already
FINAL_LEVEL = 99  # the level of a final object turned back into a part: too big to merge again
READ_ATTEMPTS = 5  # a part removed under a reader is read again from a fresh listing; a few races at most
EXPIRED = "logs_expired"  # on a job's runtime once retention removed its logs (its cluster still exists)
_PART = re.compile(r"(\d{16})-(\d{16})-(\d+)\Z")


def log_id(job_id: str, attempt: int = 1) -> str:
    """Whose logs the keys below name: the job's first attempt, or a later one's (under the job's prefix, so
    that removing a job's logs removes all of its attempts')."""
    return job_id if attempt <= 1 else f"{job_id}/attempts/{attempt}"


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


def final_key(job_id: str, stream: str) -> str:
    return f"jobs/{job_id}/{stream}"


def parts_prefix(job_id: str, stream: str) -> str:
    return f"jobs/{job_id}/{stream}.parts/"


@dataclass(frozen=True)
class Part:
    key: str
    start: int
    end: int
    level: int

    @property
    def size(self) -> int:
        return self.end - self.start


def part_key(job_id: str, stream: str, start: int, end: int, level: int) -> str:
    return f"{parts_prefix(job_id, stream)}{start:016d}-{end:016d}-{level}"


def parse_parts(infos: Iterable[ObjectInfo], prefix: str) -> list[Part]:
    out = []
    for info in infos:
        m = _PART.match(info.key[len(prefix):]) if info.key.startswith(prefix) else None
        if m is None:
            continue
        part = Part(info.key, int(m.group(1)), int(m.group(2)), int(m.group(3)))
        if part.end > part.start and info.size == part.size:  # anything else is not one of ours: ignored
            out.append(part)
    return out


def chain(parts: Iterable[Part]) -> list[Part]:
    """The parts that hold bytes 0..end without a gap, taking at each offset the part that reaches furthest."""
    furthest: dict[int, Part] = {}
    for p in parts:
        if p.start not in furthest or p.end > furthest[p.start].end:
            furthest[p.start] = p
    out, at = [], 0
    while at in furthest:
        out.append(furthest[at])
        at = furthest[at].end
    return out


@dataclass
class Snapshot:
    """What the store holds of one stream: the final object's size, or the chain of parts."""
    final: int | None
    parts: list[Part] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.final if self.final is not None else (self.parts[-1].end if self.parts else 0)

    @property
    def running(self) -> bool:
        """Parts and no final object: the stream is still being written (or was left so by a job that failed)."""
        return self.final is None and bool(self.parts)


def read(store: ObjectStore, job_id: str, stream: str, offset: int = 0) -> tuple[bytes, Snapshot]:
    """The bytes of a stream from `offset` to what is known so far, and the snapshot they come from."""
    for attempt in range(READ_ATTEMPTS):
        snap = _listing(store, job_id, stream)
        try:
            return _bytes(store, job_id, stream, snap, offset), snap
        except ObjectNotFound:  # merged or made final meanwhile: what replaced it is in the next listing
            if attempt == READ_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _listing(store: ObjectStore, job_id: str, stream: str) -> Snapshot:
    # The parts are listed before the final object is looked for: the writer makes the final object before it
    # removes the parts, so a reader that finds no final object afterwards listed every part there was.
    prefix = parts_prefix(job_id, stream)
    parts = chain(parse_parts(store.list(prefix), prefix))
    return Snapshot(final=0 if store.exists(final_key(job_id, stream)) else None, parts=parts)


def _bytes(store: ObjectStore, job_id: str, stream: str, snap: Snapshot, offset: int) -> bytes:
    if snap.final is not None:
        data = store.get(final_key(job_id, stream))
        snap.final = len(data)
        return data[offset:]
    pieces = []
    for p in snap.parts:
        if p.end > offset:
            data = store.get(p.key)
            pieces.append(data[max(0, offset - p.start):])
    return b"".join(pieces)


class StreamWriter:
    """Appends one stream's new bytes to the store while the job runs, and makes its final object at the end.
    Built from what the store holds, so an engine that takes over the watch goes on at the exact byte its
    predecessor's last whole write reached."""

    def __init__(self, store: ObjectStore, job_id: str, stream: str) -> None:
        self.store, self.job_id, self.stream = store, job_id, stream
        self.final = False
        prefix = parts_prefix(job_id, stream)
        listed = parse_parts(store.list(prefix), prefix)
        if store.exists(final_key(job_id, stream)):
            # A watch is going on, so a final object is a prefix of the job's file: made by an engine that died
            # before it recorded the job's end, or by an older oasis that copied the whole log between slices.
            # It becomes a part (of a level no merge reaches), and the final object is made again at the end.
            whole = store.get(final_key(job_id, stream))
            if whole and (chain(listed)[-1].end if chain(listed) else 0) < len(whole):
                store.put(part_key(job_id, stream, 0, len(whole), FINAL_LEVEL), whole)
                listed.append(Part(part_key(job_id, stream, 0, len(whole), FINAL_LEVEL), 0, len(whole), FINAL_LEVEL))
            store.delete(final_key(job_id, stream))
        self.parts = chain(listed)
        self.offset = self.parts[-1].end if self.parts else 0
        # Parts a merge had replaced when its engine died before removing them: covered, so never read.
        kept = {p.key for p in self.parts}
        for p in listed:
            if p.key not in kept and p.end <= self.offset:
                store.delete(p.key)

    def append(self, start: int, data: bytes) -> None:
        """Bytes `start`.. of the stream; what the store already holds of them is skipped, so a piece that was
        read again (an engine resumed from an older offset) is never doubled."""
        if self.final or start > self.offset:
            return  # a gap would mean a caller bug; the next call asks from self.offset again
        data = data[self.offset - start:]
        if not data:
            return
        end = self.offset + len(data)
        key = part_key(self.job_id, self.stream, self.offset, end, 0)
        self.store.put(key, data)
        self.parts.append(Part(key, self.offset, end, 0))
        self.offset = end
        self._merge()

    def _merge(self) -> None:
        while len(self.parts) >= MERGE_FAN:
            tail = self.parts[-MERGE_FAN:]
            level = tail[0].level
            if any(p.level != level for p in tail) or sum(p.size for p in tail) > MERGE_MAX_BYTES:
                return
            data = b"".join(self.store.get(p.key) for p in tail)
            merged = Part(part_key(self.job_id, self.stream, tail[0].start, tail[-1].end, level + 1),
                          tail[0].start, tail[-1].end, level + 1)
            self.store.put(merged.key, data)  # before the removals: the bytes are always somewhere
            self.parts[-MERGE_FAN:] = [merged]
            for p in tail:
                self.store.delete(p.key)

    def finish(self) -> None:
        """The whole stream as its final object, then the parts removed. Idempotent."""
        if not self.final and self.parts:
            data = b"".join(self.store.get(p.key) for p in self.parts)
            self.store.put(final_key(self.job_id, self.stream), data)
            self.final = True
        prefix = parts_prefix(self.job_id, self.stream)
        for info in self.store.list(prefix):
            self.store.delete(info.key)
        self.parts = []


class LogWriter:
    """Both streams of one job."""

    def __init__(self, store: ObjectStore, job_id: str) -> None:
        self.streams = {s: StreamWriter(store, job_id, s) for s in STREAMS}

    @property
    def offsets(self) -> dict[str, int]:
        return {s: w.offset for s, w in self.streams.items()}

    def append(self, pieces: dict[str, dict] | None) -> None:
        """What the agent's `wait` answered: {stream: {"from": offset, "data": bytes, "size": n}}."""
        for stream, piece in (pieces or {}).items():
            if stream in self.streams and piece.get("data"):
                self.streams[stream].append(int(piece["from"]), piece["data"])

    def caught_up(self, pieces: dict[str, dict] | None) -> bool:
        """Whether the store holds every byte the agent saw in the job's files."""
        return all(self.streams[s].offset >= int(p.get("size", 0)) for s, p in (pieces or {}).items()
                   if s in self.streams)

    def finish(self) -> None:
        for w in self.streams.values():
            w.finish()


def delete_all(store: ObjectStore, job_id: str) -> None:
    """Every object of a job's logs (its parts, final objects and whatever else lives under its prefix)."""
    for info in store.list(job_prefix(job_id)):
        store.delete(info.key)


# --- retention ---------------------------------------------------------------------------------------------


def expired_jobs(s: Session, now: datetime, days: float, limit: int = 500) -> list[Job]:
    """Jobs that ended more than `days` ago whose logs are still to be removed, or whose cluster is gone (their
    rows go too). A job an operation still holds (a delete in progress) is left to it."""
    cluster_gone = ~exists().where(Cluster.id == Job.cluster_id)
    not_expired = Job.runtime[EXPIRED].as_boolean().is_not(True)
    return list(s.scalars(
        select(Job).where(Job.status.in_(TERMINAL), Job.end_time.is_not(None),
                          Job.end_time < now - timedelta(days=days), Job.op.is_(None),
                          or_(not_expired, cluster_gone))
        .order_by(Job.end_time).limit(limit)))


def _cluster_exists(s: Session, cluster_id: str | None) -> bool:
    return bool(cluster_id) and s.get(Cluster, cluster_id) is not None


def purge_expired(db: Database, store: ObjectStore, days: float, now: datetime | None = None) -> int:
    """Remove the stored objects (`jobs/{id}/...`) of the jobs that ended more than `days` ago, and the rows of
    those whose cluster is gone; a job whose cluster still exists keeps its row, marked. Returns how many
    jobs it handled. `days` 0 (or less) keeps everything."""
    if days <= 0:
        return 0
    with db.session() as s:
        found = [j.id for j in expired_jobs(s, now or utcnow(), days)]
    for job_id in found:
        delete_all(store, job_id)  # the objects first: a row is never gone while objects no row knows stay
        with db.session() as s:
            job = s.get(Job, job_id)
            if job is None or job.op is not None:  # deleted, or an operation took it meanwhile
                continue
            if _cluster_exists(s, job.cluster_id):
                job.runtime = {**(job.runtime or {}), EXPIRED: True}
            else:
                s.delete(job)
    return len(found)
