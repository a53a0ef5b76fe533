"""What the Spark and Dask plugins share: versions from installed packages, and starting daemons in order."""
from __future__ import annotations

import asyncio
from functools import cache
from importlib import metadata

from oasis.plugins.base import InstanceView

READY_TIMEOUT = 120.0


@cache
def installed_version(package: str) -> str | None:
    """major.minor of an installed distribution ("4.3" for pyspark 4.3.0, "2026.8" for distributed)."""
    try:
        return ".".join(metadata.version(package).split(".")[:2])
    except metadata.PackageNotFoundError:
        return None


async def start_daemon(inst: InstanceView, name: str, argv: list[str], env: dict[str, str],
                       ready_pattern: str, fail_patterns: tuple[str, ...] = ()) -> None:
    """Start one daemon unless it runs already, and return when its log says it is ready. It fails at once,
    with the log line, if the daemon exits or logs one of `fail_patterns` (a daemon that could not bind a
    port may well stay alive without ever getting ready)."""
    await inst.agent.start(inst.procdir, name, argv, env, ready=ready_pattern, timeout=READY_TIMEOUT,
                           fail=fail_patterns)


async def stop_daemons(instances: list[InstanceView], grace: float = 10) -> None:
    await asyncio.gather(*(i.agent.stop_all(i.procdir, grace) for i in instances))


def worker_memory_mb(inst: InstanceView) -> int:
    return memory_offered_mb(inst.ram_mb)


def memory_offered_mb(flavor_ram_mb: int) -> int:
    """What a worker may hand to tasks: the flavor's RAM less room for the daemon itself."""
    return max(512, flavor_ram_mb - 512)
