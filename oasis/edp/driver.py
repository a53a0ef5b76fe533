"""Where a job's driver runs (Spark's spark-submit in client mode, a Dask job's client script, a Shell job): an
oasis extension of the job's `job_configs.configs`, like the retry policy (oasis/edp/retries.py), so that
unmodified Sahara clients can ask for it.

    edp.oasis.driver   master (the default): on the cluster's master instance, beside the Spark master or the
                       Dask scheduler; worker: on one of the cluster's worker instances (off the master, as
                       Spark's cluster deploy mode puts a driver), where the plugin allows it

A job placed on the workers starts on the one with the fewest of oasis's own jobs; a retry after its host was lost
goes to another worker whose host answers (`edp.oasis.retry_elsewhere`, in the retry policy). The choice is
`driver_order`, pure: the engine gives it what it knows of each instance and tries them in its order."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DRIVER = "edp.oasis.driver"
MASTER, WORKER = "master", "worker"
PLACEMENTS = (MASTER, WORKER)


class DriverError(ValueError):
    """A placement the user gave is not one oasis knows (the API answers 400 with it)."""


def placement_of(configs: dict[str, Any] | None) -> str:
    """The job's driver placement from its `job_configs.configs`; raises DriverError for a value it does not know."""
    value = (configs or {}).get(DRIVER)
    if value is None or value == "":
        return MASTER
    if not isinstance(value, str) or value.strip().lower() not in PLACEMENTS:
        raise DriverError(f"job_configs.configs['{DRIVER}'] must be one of {', '.join(PLACEMENTS)}, "
                          f"not {str(value)[:40]!r}")
    return value.strip().lower()


@dataclass(frozen=True)
class Candidate:
    """An instance a job's driver may run on, as the engine sees it when the attempt starts."""

    instance_id: str
    name: str
    host: str  # its host's name
    jobs: int = 0  # oasis's jobs that run (or are about to) on it now, this one aside
    host_away: bool = False  # its host's last health check found it unreachable, or it is out of service
    with_master: bool = False  # its host also holds the cluster's master instance


@dataclass(frozen=True)
class Previous:
    """What the attempt before this one ran on, and whether it ended because its host was lost."""

    instance_id: str | None
    host: str | None
    host_lost: bool


def driver_order(candidates: Sequence[Candidate], previous: Previous | None = None,
                 elsewhere: bool = True) -> list[Candidate]:
    """The order in which the instances are tried for this attempt's driver: the first whose host answers runs it.

    - A retry after a lost host that may not move (`elsewhere` false) waits for the same instance, as a job
      placed on the master always does (a cluster has one): that instance only, while the cluster has it.
    - Otherwise instances on the lost host come last (tried only if no other answers), then those on hosts the
      last health check found away; among the rest the fewest running jobs first, then an instance off the
      master's host (losing one host then takes the driver or the master, not both), then by name (stable)."""
    lost = previous.host if previous is not None and previous.host_lost and previous.host else None
    if lost is not None and not elsewhere:
        pinned = [c for c in candidates if c.instance_id == previous.instance_id]
        if pinned:
            return pinned
    return sorted(candidates, key=lambda c: (c.host == lost, c.host_away, c.jobs, c.with_master, c.name))
