"""When a job that failed runs again, and how long after: an oasis extension of the job's `job_configs.configs`,
so that unmodified Sahara clients (which pass job_configs through as they are) can ask for it.

    edp.oasis.max_retries        how many times a failed run is run again (0, the default: never)
    edp.oasis.retry_backoff      seconds before the first retry (10); each later one waits twice the one before
    edp.oasis.retry_backoff_max  the most any retry waits (600)
    edp.oasis.retry_elsewhere    true (the default): a retry after the host was lost runs on another instance whose
                                 host answers, where the job's driver placement allows one (oasis/edp/driver.py);
                                 false: it waits for the same instance

A run that ended FAILED (it could not be launched, its host was lost) or DONEWITHERROR (a non-zero exit code)
is retried; a KILLED one (the user cancelled it) never is, nor one that cannot run at all (its cluster is gone)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oasis.edp import statuses as st

MAX_RETRIES = "edp.oasis.max_retries"
BACKOFF = "edp.oasis.retry_backoff"
BACKOFF_MAX = "edp.oasis.retry_backoff_max"
ELSEWHERE = "edp.oasis.retry_elsewhere"
KEYS = (MAX_RETRIES, BACKOFF, BACKOFF_MAX, ELSEWHERE)
RETRIES_LIMIT = 100  # more than this is a loop, not a retry policy
BACKOFF_LIMIT = 7 * 24 * 3600.0
RETRIABLE = frozenset({st.FAILED, st.DONEWITHERROR})


class RetryError(ValueError):
    """A retry setting the user gave is not one oasis can follow (the API answers 400 with it)."""


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 0
    backoff: float = 10.0
    backoff_max: float = 600.0
    elsewhere: bool = True

    def allows(self, attempt: int, status: str) -> bool:
        """Whether attempt number `attempt` (1 for the first run), which ended with `status`, is run again."""
        return status in RETRIABLE and attempt <= self.max_retries

    def delay(self, attempt: int) -> float:
        """Seconds between the end of attempt `attempt` and the start of the next: doubling, up to the cap."""
        return min(self.backoff_max, self.backoff * 2 ** max(0, attempt - 1))


def _number(configs: dict[str, Any], key: str, default: float, limit: float, whole: bool) -> float:
    value = configs.get(key)
    if value is None or value == "":
        return default
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if number != number or number < 0 or number > limit or (whole and number != int(number)):
        kind = "a whole number" if whole else "a number of seconds"
        raise RetryError(f"job_configs.configs['{key}'] must be {kind} from 0 to {limit:g}, not {str(value)[:40]!r}")
    return number


def _flag(configs: dict[str, Any], key: str, default: bool) -> bool:
    value = configs.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower() if isinstance(value, str) else None
    if word not in ("true", "false"):
        raise RetryError(f"job_configs.configs['{key}'] must be true or false, not {str(value)[:40]!r}")
    return word == "true"


def policy_of(configs: dict[str, Any] | None) -> RetryPolicy:
    """The retry policy of a job's `job_configs.configs`; raises RetryError for a value it cannot follow."""
    configs = configs or {}
    retries = int(_number(configs, MAX_RETRIES, 0, RETRIES_LIMIT, whole=True))
    backoff = _number(configs, BACKOFF, RetryPolicy.backoff, BACKOFF_LIMIT, whole=False)
    cap = _number(configs, BACKOFF_MAX, max(RetryPolicy.backoff_max, backoff), BACKOFF_LIMIT, whole=False)
    if cap < backoff:
        raise RetryError(f"job_configs.configs['{BACKOFF_MAX}'] ({cap:g}) must not be less than "
                         f"'{BACKOFF}' ({backoff:g})")
    return RetryPolicy(retries, backoff, cap, _flag(configs, ELSEWHERE, RetryPolicy.elsewhere))


# --- a job's attempts, as kept on its row ---------------------------------------------------------------------
# runtime["attempt"] is the number of the attempt the row shows now (1 without it); runtime["attempts"] the
# records of the earlier attempts, oldest first: {number, status, return_code, start_time, end_time,
# instance_id, instance, host, host_lost, engine_job_id, status_description} (`instance` its name; `host_lost`:
# it ended because its host stayed unreachable, so that the next one may go elsewhere). The row's own status, times and exit code are the
# current (or last) attempt's, never copied into a record.

def current_attempt(runtime: dict[str, Any] | None) -> int:
    return int((runtime or {}).get("attempt") or 1)


def ended_attempts(runtime: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [dict(a) for a in (runtime or {}).get("attempts") or []]


def previous_attempt(runtime: dict[str, Any] | None) -> dict[str, Any] | None:
    """The record of the attempt before the current one (None for a first attempt)."""
    number = current_attempt(runtime)
    return next((a for a in ended_attempts(runtime) if a["number"] == number - 1), None)


def attempt_record(number: int, status: str, return_code: int | None, start: str | None, end: str | None,
                   runtime: dict[str, Any] | None, engine_job_id: str | None,
                   description: str | None, host_lost: bool = False) -> dict[str, Any]:
    runtime = runtime or {}
    return {"number": number, "status": status, "return_code": return_code, "start_time": start, "end_time": end,
            "instance_id": runtime.get("instance_id"), "instance": runtime.get("instance"),
            "host": runtime.get("host"), "host_lost": host_lost, "engine_job_id": engine_job_id,
            "status_description": description or ""}


def attempts_view(status: str, return_code: int | None, start: str | None, end: str | None,
                  runtime: dict[str, Any] | None, engine_job_id: str | None,
                  description: str | None) -> list[dict[str, Any]]:
    """Every attempt of a job, the one in progress (or the last: the row's own) included."""
    number = current_attempt(runtime)
    return [*(a for a in ended_attempts(runtime) if a["number"] < number),
            attempt_record(number, status, return_code, start, end, runtime, engine_job_id, description)]
