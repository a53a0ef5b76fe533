"""What a job leaves behind besides its stdout and stderr, kept in the deployment's store so that it outlives the
cluster: a Spark application's event logs (which a Spark History Server replays as the application's UI) and a
Dask job's performance report.

On the master instance both are written into one directory of the job's own, `HISTORY_DIR` under its working
directory (the plugins point Spark's `spark.eventLog.dir` and the Dask wrapper's report there). When the job has
ended the engine copies what is there to `jobs/{id}/history/{name}` in the store (`collect`); the API lists and
serves them (`listing`, `read`) to the job's own project.

Only names of the two known shapes are collected or served: nothing the job (or whoever writes in its
directory) names otherwise is ever copied, and a name from a URL can never leave `jobs/{id}/history/`."""
from __future__ import annotations

import asyncio
import logging
import posixpath
import re
from typing import Any, Protocol

from oasis.storage.base import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

HISTORY_DIR = "history"  # under the job's working directory on the master instance
DASK_REPORT = "dask-report.html"
SPARK_EVENT_LOG, DASK_KIND = "spark-event-log", "dask-report"
# Spark names an application's event log after its id (`app-20261201120000-0000` on a standalone master,
# `local-…` in local mode), with the compression codec's suffix (Spark 4 compresses them: `.zstd`) and
# `.inprogress` while the application runs, or when it never ended (a killed driver).
_SPARK_LOG = re.compile(r"(?P<app>(?:app|local)-[0-9A-Za-z]+(?:-[0-9A-Za-z]+)*)"
                        r"(?:\.(?:zstd|lz4|lzf|snappy))?(?:\.inprogress)?")
# A file larger than this is not copied (logged instead): the copy goes through the controller's memory.
MAX_FILE_BYTES = 512 * 1024 * 1024


class HistoryError(ValueError):
    """A name that is not one of a job's history files; shown to the user as is."""


class _Remote(Protocol):
    """What `collect` needs of a host (oasis.remote's Remote; not imported: the API imports this module)."""

    async def run(self, argv: list[str], *, timeout: float | None = 300, check: bool = True,
                  stdin: bytes | None = None) -> Any: ...

    async def get(self, path: str) -> bytes: ...


def kind_of(name: str) -> str | None:
    """The kind of a history file by its name, or None for a name that is not one."""
    if name == DASK_REPORT:
        return DASK_KIND
    if _SPARK_LOG.fullmatch(name):
        return SPARK_EVENT_LOG
    return None


def check_name(name: str) -> str:
    if kind_of(name) is None:
        raise HistoryError(f"'{name[:100]}' is not the name of a job's history file: a Spark event log "
                           f"(app-…) or {DASK_REPORT}")
    return name


def app_id(name: str) -> str:
    """The Spark application id an event log is named after."""
    match = _SPARK_LOG.fullmatch(name)
    if match is None:
        raise HistoryError(f"'{name[:100]}' is not a Spark event log")
    return match.group("app")


def history_dir(workdir: str) -> str:
    """Where a job in `workdir` writes its history files on the master instance."""
    return posixpath.join(workdir, HISTORY_DIR)


def prefix(job_id: str) -> str:
    return f"jobs/{job_id}/history/"


def key(job_id: str, name: str) -> str:
    return prefix(job_id) + check_name(name)


def listing(store: ObjectStore, job_id: str) -> list[dict[str, Any]]:
    """What the job left, as the API lists it: name, kind and size of each file, by name."""
    out = []
    for info in store.list(prefix(job_id)):
        name = info.key.removeprefix(prefix(job_id))
        kind = kind_of(name)
        if kind is not None:
            out.append({"name": name, "kind": kind, "size": info.size})
    return sorted(out, key=lambda item: item["name"])


def read(store: ObjectStore, job_id: str, name: str) -> bytes:
    """One history file's content; ObjectNotFound if the job left none of that name, HistoryError for a name
    that cannot be one."""
    return store.get(key(job_id, name))


def parse_found(output: str) -> list[tuple[str, int]]:
    """(name, size) of each history file in `find -printf '%s %f\\n'` output, other names left out."""
    found = []
    for line in output.splitlines():
        size, _, name = line.partition(" ")
        if size.isdigit() and kind_of(name) is not None:
            found.append((name, int(size)))
    return found


async def collect(remote: _Remote, workdir: str, store: ObjectStore, job_id: str) -> list[str]:
    """Copy an ended job's history files from its master instance to the store; the names copied. Best effort:
    a host that is gone or a store that refuses is logged, never the job's failure (its end is recorded all the
    same), so any error of either ends the collection with a warning."""
    where = history_dir(workdir)
    copied: list[str] = []
    try:
        # regular files only (-type f): a link planted in the job's directory is not followed
        result = await remote.run(["find", where, "-maxdepth", "1", "-type", "f", "-printf", "%s %f\\n"],
                                  check=False, timeout=60)
        if getattr(result, "rc", 0) != 0:
            return copied  # no such directory: a Shell job, or event logging switched off
        for name, size in parse_found(result.stdout):
            if size > MAX_FILE_BYTES:
                log.warning("job %s: %s is %d bytes, more than %d: not kept", job_id, name, size, MAX_FILE_BYTES)
                continue
            data = await remote.get(posixpath.join(where, name))
            await asyncio.to_thread(store.put, key(job_id, name), data)
            copied.append(name)
    except Exception as e:  # noqa: BLE001 (best effort, see above; the message only: no secret is in one)
        log.warning("job %s: could not keep its history files (%s): %s", job_id, type(e).__name__, e)
    return copied
