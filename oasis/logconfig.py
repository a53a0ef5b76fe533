"""Log set-up for the processes: plain text (the default) or one JSON object per line, with the context of what
the line belongs to, so that one cluster's story can be followed across API and engine processes by grepping
one id.

The context lives in a context variable: the API's request middleware (`RequestContext`) binds a request id
(`req-<uuid4>`, OpenStack's form) for each request; the engine binds the request id that asked for the
operation it drives and the operation (`cluster:<id>:create`). A thread or task started from there inherits it
(asyncio tasks and `asyncio.to_thread` copy the context).

Whatever the format, a line never carries a credential: the code logs none, and the formatters mask what looks
like one besides (a URL's user:password, a token or password field, SQL parameters) in case an exception's text
holds it."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

FORMATS = ("text", "json")
REQUEST_ID_HEADER = "x-openstack-request-id"
REQUEST_ID_RE = re.compile(r"req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# The context fields a line may carry, in the order they are written.
FIELDS = ("request_id", "global_request_id", "operation", "cluster_id", "job_id", "site_id")
ACCESS_LOGGER = "oasis.access"  # one line per API request: INFO in JSON mode, quiet in text mode

_context: ContextVar[dict[str, str] | None] = ContextVar("oasis_log_context", default=None)


def new_request_id() -> str:
    return f"req-{uuid.uuid4()}"


def current() -> dict[str, str]:
    """The context fields of the code running now (a copy)."""
    return dict(_context.get() or {})


def request_id() -> str | None:
    return (_context.get() or {}).get("request_id")


@contextlib.contextmanager
def bound(**fields: str | None) -> Iterator[dict[str, str]]:
    """Add these fields to the context for the block (None values are left out); the dict is the block's own, so
    that code further down may add to it (`add`) and the block's last line still sees it."""
    merged = {**(_context.get() or {}), **{k: v for k, v in fields.items() if v}}
    token = _context.set(merged)
    try:
        yield merged
    finally:
        _context.reset(token)


def add(**fields: str | None) -> None:
    """Add fields to the context bound by the nearest `bound` block (no-op outside one)."""
    ctx = _context.get()
    if ctx is not None:
        ctx.update({k: v for k, v in fields.items() if v})


# --- masking: what must never reach a line, whatever put it in a message ------------------------------------

_MASKS = (
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@", re.I), r"\1***:***@"),  # scheme://user:pass@
    # token, password, secret, key=value or "key": "value" (a header or a JSON body in an exception's text)
    (re.compile(r"""((?:x-auth-token|x-subject-token|x-oasis-join-token|password|passwd|secret|token|api_key|"""
                r"""access_key|secret_key)["']?\s*[:=]\s*["']?)[^\s"',;}&]+""", re.I), r"\1***"),
    (re.compile(r"\[parameters: .*?\](?=\n|$)", re.S), "[parameters: hidden]"),  # SQLAlchemy's error text
)


def mask(text: str) -> str:
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


# --- formatters ------------------------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, process, the context fields, and
    an exception as `traceback`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask(record.getMessage()),
            "process": record.process,
        }
        entry.update(current())
        extra = getattr(record, "fields", None)  # `log.info(..., extra={"fields": {...}})`: structured extras
        if isinstance(extra, dict):
            entry.update({k: v for k, v in extra.items() if k not in entry})
        if record.exc_info:
            entry["traceback"] = mask("".join(traceback.format_exception(*record.exc_info)).rstrip())
        elif record.stack_info:
            entry["traceback"] = mask(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The usual `time LEVEL logger: message`, with the request id and operation in brackets when known."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = mask(super().format(record))
        ctx = current()
        tags = " ".join(ctx[k] for k in ("request_id", "operation") if k in ctx)
        return f"{line} [{tags}]" if tags else line


def setup(fmt: str = "text", level: int = logging.INFO, stream: Any = None) -> None:
    """Configure the root logger for a process: every logger (uvicorn's and the libraries' too, which
    propagate to it) writes through one handler in `fmt`; warnings go through logging as well, so that in JSON
    mode every line of the process is one object."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO if fmt == "json" else logging.WARNING)
    logging.captureWarnings(True)
    # httpx logs every request's full URL at INFO: a signed URL's query (a temporary URL's signature) is a
    # credential of its own.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # no handler of their own: through the root's
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


def format_from_env() -> str:
    return os.environ.get("OASIS_LOG_FORMAT", "text").strip().lower() or "text"


# --- the API's request middleware ------------------------------------------------------------------------------

Observe = Callable[[str, str, int, float], None]  # method, route template, status, seconds
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

_access = logging.getLogger(ACCESS_LOGGER)


def route_template(scope: Scope) -> str:
    """The route's path template (`/v2/clusters/{id}`), never the raw path with its ids; `none` when no route
    matched (a 404)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "none"


class RequestContext:
    """ASGI middleware: a request id for every HTTP request (in the context and in the `x-openstack-request-id`
    response header; a valid incoming `X-OpenStack-Request-ID` kept as `global_request_id`), one access line
    (method, route template, status, duration: never a header or a body), and `observe` called with the same
    for the metrics."""

    def __init__(self, app: ASGIApp, observe: Observe | None = None) -> None:
        self.app, self.observe = app, observe

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = new_request_id()
        incoming = ""
        for name, value in scope.get("headers") or ():
            if name.lower() == REQUEST_ID_HEADER.encode():
                incoming = value.decode("latin-1").strip()
        status = 500  # what the server answers if the app raises before it starts a response

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER.encode()]
                message = {**message, "headers": [*headers, (REQUEST_ID_HEADER.encode(), rid.encode())]}
            await send(message)

        started = time.perf_counter()
        with bound(request_id=rid, global_request_id=incoming if REQUEST_ID_RE.fullmatch(incoming) else None):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                seconds = time.perf_counter() - started
                method, route = scope.get("method", ""), route_template(scope)
                _access.info("%s %s %d %.3fs", method, route, status, seconds, extra={"fields": {
                    "method": method, "route": route, "status": status, "duration": round(seconds, 6)}})
                if self.observe is not None:
                    self.observe(method, route, status, seconds)
