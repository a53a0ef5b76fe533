"""A job's log, read on from a byte offset: the one function the job page and its live stream read logs with.

`GET /v2/jobs/{id}/logs?stream=S&offset=N` answers the bytes from N, with `X-Oasis-Log-Size` (the bytes known so
far) and `X-Oasis-Log-Complete: true` once the job ended and its log is final. An API without them (no header,
no `offset` parameter) answers the whole text: it is sliced here, and the log counts as complete once the job's
status is final."""
from __future__ import annotations

from dataclasses import dataclass

from oasis.web.client import Api, failure_of

SIZE_HEADER = "x-oasis-log-size"
COMPLETE_HEADER = "x-oasis-log-complete"


@dataclass(frozen=True)
class LogChunk:
    text: str
    next_offset: int  # where the next read starts: just after the last whole character of `text`
    complete: bool  # nothing will be added after next_offset


def whole_utf8(data: bytes) -> int:
    """The length of the longest prefix of `data` that does not end inside a UTF-8 character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:  # ASCII: the prefix ends on a character boundary
            return len(data)
        if byte >= 0xC0:  # a lead byte: is its character whole?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)  # continuation bytes only (not UTF-8): nothing to wait for


async def read_log(api: Api, job_id: str, stream: str, offset: int, job_final: bool) -> LogChunk:
    """The log text of `stream` from byte `offset`; `job_final`: the job's status (read before this call) is final."""
    path = f"/v2/jobs/{job_id}/logs"
    params = {"stream": stream}
    response = await api.call("GET", path, params={**params, "offset": str(offset)} if offset else params)
    sliced_here = False
    if response.status_code == 400 and offset and _unknown_offset(response):
        response = await api.call("GET", path, params=params)  # an API from before `offset`
        sliced_here = True
    if response.status_code >= 400:
        raise failure_of(response)
    data = response.content
    known = response.headers.get(SIZE_HEADER)
    if known is None or sliced_here:
        data = data[offset:]
    complete = response.headers[COMPLETE_HEADER].lower() == "true" if COMPLETE_HEADER in response.headers \
        else job_final and known is None
    usable = len(data) if complete else whole_utf8(data)
    return LogChunk(data[:usable].decode("utf-8", errors="replace"), offset + usable, complete)


def _unknown_offset(response) -> bool:  # noqa: ANN001 (an httpx.Response)
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("error_name") == "INVALID_PARAMS_ON_REQUEST"
