"""When a scheduled job starts: Sahara's `job_configs.job_execution_info`, read as pure policy (no clock of its
own: every decision takes `now`).

    {"job_execution_type": "scheduled", "start": "2030-01-01 06:00:00"}      once, at that time (UTC)
    {"job_execution_type": "scheduled", "start": …, "frequency": 60}         from then on, every 60 minutes
    {"job_execution_type": "scheduled", "cron": "0 6 * * 1-5", "end": …}     on a cron expression (oasis)

`start` and `end` are UTC, as Sahara wrote them (`YYYY-MM-DD HH:MM:SS`) or ISO 8601 (an offset is converted to
UTC). `frequency` (minutes) is what Sahara's Oozie coordinators took; `cron` (five fields, minute resolution) is
an oasis extension. A recurring schedule makes a new job for each of its times; `end` stops it. A start in the
past starts the job at once. Without `job_execution_type` (or with Sahara's default, "workflow"), the job runs
now."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from croniter import croniter

from oasis.db.states import ClusterStatus

SAHARA_TIME = "%Y-%m-%d %H:%M:%S"
FREQUENCY_LIMIT = 366 * 24 * 60  # minutes
KEYS = frozenset({"job_execution_type", "start", "end", "frequency", "cron"})


class ScheduleError(ValueError):
    """A job_execution_info oasis cannot follow (the API answers 400 with it)."""


def parse_time(value: Any, key: str) -> datetime:
    """A time as naive UTC, the way the database keeps them."""
    if not isinstance(value, str) or not value.strip():
        raise ScheduleError(f"job_execution_info.{key} must be a time such as '2030-01-01 06:00:00' (UTC)")
    text = value.strip()
    try:
        return datetime.strptime(text, SAHARA_TIME)
    except ValueError:
        pass
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        raise ScheduleError(f"job_execution_info.{key} is not a time: {text[:40]!r} (use 'YYYY-MM-DD HH:MM:SS', "
                            f"UTC, or ISO 8601)") from None
    if found.tzinfo is not None:
        found = found.astimezone(timezone.utc).replace(tzinfo=None)
    return found


def show(t: datetime) -> str:
    return t.strftime(SAHARA_TIME) + " UTC"


@dataclass(frozen=True)
class Schedule:
    start: datetime | None = None
    end: datetime | None = None
    frequency: int | None = None  # minutes
    cron: str | None = None

    @property
    def recurring(self) -> bool:
        return self.frequency is not None or self.cron is not None

    def first(self, now: datetime) -> datetime | None:
        """The first time the job starts, as seen at `now`; None: never (its end has passed)."""
        if self.cron is not None:
            return self._within(self._cron_after(max(now, self.start or now) - timedelta(seconds=1)))
        assert self.start is not None
        if self.frequency is None or self.start >= now:
            return self._within(self.start)
        step = timedelta(minutes=self.frequency)
        missed = math.ceil((now - self.start) / step)
        return self._within(self.start + missed * step)

    def after(self, fired: datetime) -> datetime | None:
        """The time after `fired` (a time this schedule started a job at); None once it is over or not recurring."""
        if self.cron is not None:
            return self._within(self._cron_after(fired))
        if self.frequency is not None:
            return self._within(fired + timedelta(minutes=self.frequency))
        return None

    def _cron_after(self, t: datetime) -> datetime:
        return croniter(self.cron, t).get_next(datetime)

    def _within(self, t: datetime) -> datetime | None:
        return t if self.end is None or t <= self.end else None

    def record(self) -> dict[str, Any]:
        """As kept on the job's row (JSON)."""
        return {"start": self.start.isoformat() if self.start else None,
                "end": self.end.isoformat() if self.end else None, "frequency": self.frequency, "cron": self.cron}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Schedule:
        def when(key: str) -> datetime | None:
            return datetime.fromisoformat(record[key]) if record.get(key) else None
        return cls(when("start"), when("end"), record.get("frequency"), record.get("cron"))

    def describe(self) -> str:
        if self.cron is not None:
            return f"on the cron expression '{self.cron}'"
        if self.frequency is not None:
            return f"every {self.frequency} minute{'s' if self.frequency != 1 else ''}"
        return "once"


def parse(info: dict[str, Any] | None, now: datetime) -> Schedule | None:
    """The schedule of a job's job_execution_info, None for a job that runs now; raises ScheduleError."""
    info = info or {}
    kind = info.get("job_execution_type")
    if kind in (None, "", "workflow"):
        extra = sorted(k for k in ("start", "end", "frequency", "cron") if k in info)
        if extra:
            raise ScheduleError(f"job_execution_info.{extra[0]} needs \"job_execution_type\": \"scheduled\"")
        return None
    if kind != "scheduled":
        raise ScheduleError(f"job_execution_info.job_execution_type must be 'scheduled' or 'workflow', not "
                            f"{str(kind)[:40]!r}")
    unknown = sorted(set(info) - KEYS)
    if unknown:
        raise ScheduleError(f"job_execution_info has no setting '{unknown[0][:40]}'; it takes "
                            f"{', '.join(sorted(KEYS))}")
    start = parse_time(info["start"], "start") if info.get("start") not in (None, "") else None
    end = parse_time(info["end"], "end") if info.get("end") not in (None, "") else None
    frequency, cron = info.get("frequency"), info.get("cron")
    if frequency is not None:
        if isinstance(frequency, bool) or not isinstance(frequency, (int, str)) or \
                not str(frequency).isdigit() or not 1 <= int(frequency) <= FREQUENCY_LIMIT:
            raise ScheduleError(f"job_execution_info.frequency must be a whole number of minutes from 1 to "
                                f"{FREQUENCY_LIMIT}, not {str(frequency)[:40]!r}")
        frequency = int(frequency)
    if cron is not None:
        if not isinstance(cron, str) or len(cron.split()) != 5 or not croniter.is_valid(cron):
            raise ScheduleError(f"job_execution_info.cron must be a cron expression of five fields (minute hour "
                                f"day-of-month month day-of-week), not {str(cron)[:60]!r}")
        if frequency is not None:
            raise ScheduleError("job_execution_info takes 'frequency' or 'cron', not both")
    if start is None and cron is None:
        raise ScheduleError("a scheduled job needs job_execution_info.start (or a cron expression)")
    if end is not None and start is not None and end < start:
        raise ScheduleError("job_execution_info.end is before its start")
    found = Schedule(start, end, frequency, cron)
    if found.first(now) is None:
        raise ScheduleError(f"job_execution_info.end ({show(end)}) has passed: the job would never start")
    return found


# A cluster on its way to Active: a job sent to it is accepted and waits (Sahara kept it PENDING); in any other
# status but Active (Error, Deleting) the job is refused, or fails if it was waiting.
CLUSTER_COMING_UP = frozenset({
    ClusterStatus.VALIDATING, ClusterStatus.SPAWNING, ClusterStatus.WAITING, ClusterStatus.PREPARING,
    ClusterStatus.CONFIGURING, ClusterStatus.STARTING, ClusterStatus.DECOMMISSIONING, ClusterStatus.SCALING_SPAWNING,
    ClusterStatus.SCALING_WAITING, ClusterStatus.SCALING_PREPARING})
