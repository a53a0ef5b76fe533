"""Errors in Sahara's shape: `{"error_code", "error_name", "error_message"}` with an Error ID that is also logged,
so an operator can find the server-side record of what a user reports; and in Keystone's shape,
`{"error": {"code", "title", "message"}}`, for the identity routes (/v3), which Keystone clients read."""
from __future__ import annotations

import logging
import re
import uuid
from http import HTTPStatus

from sqlalchemy.exc import IntegrityError

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

log = logging.getLogger("oasis.api")


class ApiError(Exception):
    """Raised anywhere below an endpoint; rendered as a Sahara error body."""

    def __init__(self, status: int, name: str, message: str, extra: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.name, self.message, self.extra = status, name, message, extra or {}


def bad(name: str, message: str) -> ApiError:
    """Sahara maps every validation and service error to 400, whatever its name."""
    return ApiError(400, name, message)


def not_found(kind: str, object_id: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"{kind} with id '{object_id}' not found")


# Tables with unique names, and what the API calls their rows (the words of `ensure_unique_name`'s messages).
NAMED_KINDS = {"clusters": "Cluster", "cluster_templates": "Cluster template",
               "node_group_templates": "Node group template", "job_binaries": "Job binary",
               "job_binary_internals": "Job binary internal", "data_sources": "Data source", "job_templates": "Job",
               "keypairs": "Keypair", "sites": "Site", "projects": "Project", "users": "User"}


def duplicate_entry(error: IntegrityError, name: object) -> ApiError:
    """Two requests raced past the API's uniqueness check and the database settled it: the loser gets the same
    answer as if it had come second (`NAME_ALREADY_EXISTS` for a name), never a second kind of error."""
    text = str(error.orig)
    # SQLite: "UNIQUE constraint failed: clusters.project_id, clusters.name"; PostgreSQL names the table in
    # its diagnostics and the columns in "Key (project_id, name)=(...)".
    table = getattr(getattr(error.orig, "diag", None), "table_name", None)
    columns = re.search(r"Key \(([^)]*)\)", text)
    if table is None:
        failed = re.search(r"UNIQUE constraint failed: (\w+)\.", text)
        table = failed.group(1) if failed else None
        names = re.findall(r"\w+\.(\w+)", text.partition("UNIQUE constraint failed:")[2])
    else:
        names = [c.strip() for c in columns.group(1).split(",")] if columns else []
    if table in NAMED_KINDS and "name" in names and isinstance(name, str):
        return bad("NAME_ALREADY_EXISTS", f"{NAMED_KINDS[table]} with name '{name}' already exists")
    return bad("DB_DUPLICATE_ENTRY", "Database object already exists")


def error_response(status: int, name: str, message: str, extra: dict | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    error_id = uuid.uuid4()
    if status >= 500:
        log.error("Error ID %s: %s %s", error_id, name, message)
    body = {"error_code": status, "error_name": name, "error_message": f"{message}\nError ID: {error_id}", **(extra or {})}
    return JSONResponse(body, status_code=status, headers=headers)


def render(e: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return error_response(e.status, e.name, e.message, e.extra, headers)


# For a bug: the traceback goes to the log (by the caller), never to the client.
INTERNAL = ApiError(500, "INTERNAL_SERVER_ERROR", "Internal server error")


def internal_error(headers: dict[str, str] | None = None) -> JSONResponse:
    return render(INTERNAL, headers)


def render_keystone(e: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    """Keystone's envelope: the title is the status's reason phrase ("Not Found", "Conflict"), as Keystone's."""
    message = e.message
    if e.status >= 500:
        error_id = uuid.uuid4()
        log.error("Error ID %s: %s %s", error_id, e.name, e.message)
        message = f"{message}\nError ID: {error_id}"
    body = {"error": {"code": e.status, "title": HTTPStatus(e.status).phrase, "message": message}}
    return JSONResponse(body, status_code=e.status, headers=headers)


def keystone_conflict(error: IntegrityError, name: object) -> ApiError:
    """Two creates of one name raced past the check: Keystone's answer to the second."""
    return ApiError(409, "CONFLICT", "Conflict occurred attempting to store the entity - Duplicate entry.")


async def http_exception(request: Request, exc: Exception) -> Response:
    """Routing-level errors (unknown path, wrong method) keep Werkzeug's shape, as Sahara's do."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"The resource could not be found: {request.url.path}"
    elif exc.status_code == 405:
        message = f"The method {request.method} is not allowed for {request.url.path}"
    else:
        message = str(exc.detail)
    return JSONResponse({"error": exc.status_code, "error_message": message}, status_code=exc.status_code,
                        headers=exc.headers)


async def unhandled(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return internal_error()
