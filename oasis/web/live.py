"""The live parts: server-sent event streams that poll the in-process API while a client listens and push what
changed. A cluster's stream pushes each new provisioning step and event and each change of its status (its
framework links and instances with it) and ends when the cluster settles (Active, Error) or is gone; a job's
pushes new log text and status changes and ends when the job and its logs are final. Both end as soon as the
browser goes away."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from oasis.web.client import Api, ApiFailure, failure_of
from oasis.web.logs import read_log
from oasis.web.pages import FINAL_JOB, SETTLED_CLUSTER
from oasis.web.session import Session, load_session

CLUSTER_POLL_SECONDS = 0.3
LOG_POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15  # a comment line, so that no proxy between closes a quiet stream
STREAMS = ("stdout", "stderr")


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _stream(request: Request, body: AsyncIterator[str]) -> Response:
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _ended(status: int, response: Any) -> str | None:
    """The last event of a stream whose object cannot be read any more, or None."""
    if status == 404:
        return sse("gone", {"message": failure_of(response).message})
    if status == 401:
        return sse("expired", {"message": "Your session has ended: sign in again."})
    if status >= 400:
        return sse("failed", {"message": failure_of(response).message})
    return None


def nodes(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": ng["name"], "count": ng["count"],
             "instances": [{"name": i["instance_name"], "management_ip": i["management_ip"],
                            "internal_ip": i["internal_ip"]} for i in ng.get("instances") or []]}
            for ng in cluster.get("node_groups") or []]


async def _cluster_events(request: Request, session: Session, cluster_id: str) -> AsyncIterator[str]:
    steps: dict[str, tuple] = {}
    events: set[str] = set()
    last: Any = None
    quiet_since = time.monotonic()
    async with Api.of(request, session.token) as api:
        while not await request.is_disconnected():
            response = await api.call("GET", f"/v2/clusters/{cluster_id}", params={"show_progress": "true"})
            end = _ended(response.status_code, response)
            if end:
                yield end
                return
            cluster = response.json()["cluster"]
            out = []
            for step in cluster.get("provision_progress") or []:
                step_events = step.pop("events", None) or []
                key = (step["successful"], step["total"], step["duration"], step["updated_at"])
                if steps.get(step["id"]) != key:
                    steps[step["id"]] = key
                    out.append(sse("step", step))
                for ev in step_events:
                    if ev["id"] not in events:
                        events.add(ev["id"])
                        out.append(sse("event", ev))
            summary = {"status": cluster["status"], "status_description": cluster.get("status_description") or "",
                       "info": cluster.get("info") or {}, "nodes": nodes(cluster)}
            if summary != last:
                last = summary
                out.append(sse("status", summary))
            if cluster["status"] in SETTLED_CLUSTER:
                out.append(sse("end", {"status": cluster["status"]}))
            if out:
                quiet_since = time.monotonic()
                yield "".join(out)
            elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
            if cluster["status"] in SETTLED_CLUSTER:
                return
            await asyncio.sleep(CLUSTER_POLL_SECONDS)


async def _job_events(request: Request, session: Session, job_id: str, offsets: dict[str, int]
                      ) -> AsyncIterator[str]:
    last: Any = None
    quiet_since = time.monotonic()
    async with Api.of(request, session.token) as api:
        while not await request.is_disconnected():
            response = await api.call("GET", f"/v2/jobs/{job_id}")
            end = _ended(response.status_code, response)
            if end:
                yield end
                return
            job = response.json()["job"]
            status = job["info"]["status"]
            final = status in FINAL_JOB  # read before the logs: a final status means the logs read next are whole
            out = []
            summary = {"status": status, "return_code": job.get("return_code"), "start_time": job.get("start_time"),
                       "end_time": job.get("end_time")}
            if summary != last:
                last = summary
                out.append(sse("status", summary))
            complete = True
            for stream in STREAMS:
                try:
                    chunk = await read_log(api, job_id, stream, offsets[stream], final)
                except ApiFailure as e:
                    yield "".join(out) + sse("failed", {"message": e.message})
                    return
                if chunk.text:
                    out.append(sse("log", {"stream": stream, "text": chunk.text, "offset": offsets[stream],
                                             "next": chunk.next_offset}))
                offsets[stream] = chunk.next_offset
                complete = complete and chunk.complete
            if complete:
                out.append(sse("end", {"status": status}))
            if out:
                quiet_since = time.monotonic()
                yield "".join(out)
            elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
            if complete:
                return
            await asyncio.sleep(LOG_POLL_SECONDS)


async def cluster_events(request: Request) -> Response:
    session = await load_session(request)
    if session is None:
        return PlainTextResponse("Sign in to the dashboard first.", status_code=401)
    return _stream(request, _cluster_events(request, session, request.path_params["id"]))


def _offset(value: str | None) -> int:
    return int(value) if value and value.isdigit() and len(value) < 16 else 0


async def job_log_events(request: Request) -> Response:
    session = await load_session(request)
    if session is None:
        return PlainTextResponse("Sign in to the dashboard first.", status_code=401)
    offsets = {stream: _offset(request.query_params.get(stream)) for stream in STREAMS}
    return _stream(request, _job_events(request, session, request.path_params["id"], offsets))
