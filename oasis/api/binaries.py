"""Job binaries (v2) and job binary internals (v1.1, and on v2 as an oasis extension: the way to upload bytes).
The bytes of an internal binary live in the object store, not in the database."""
from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response

from oasis.api import schemas, views
from oasis.api.errors import bad
from oasis.api.query import (check_delete_allowed, check_update_allowed, ensure_unique_name, get_visible, listing,
                             page)
from oasis.api.routing import Ctx, Reply, Routes, validate
from oasis.db.models import JobBinary, JobBinaryInternal, JobTemplate
from oasis.edp.binaries import internal_key
from oasis.storage.base import ObjectNotFound
from oasis.storage.endpoints import EndpointRefused, deployment_policy
from oasis.storage.secrets import secrets_for

JB, JBI = "Job binary", "Job binary internal"
MAX_INTERNAL_BYTES = 5120 * 1024  # Sahara's job_binary_max_KB
_INTERNAL = "internal-db://"
# What each remote scheme needs in `extra` (Sahara's BAD_JOB_BINARY otherwise).
_EXTRA_NEEDED = {"swift": ("user", "password"), "s3": ("accesskey", "secretkey", "endpoint")}


def _check_url(s: Session, ctx: Ctx, url: str, extra: dict[str, Any]) -> None:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise bad("BAD_JOB_BINARY", f"URL for binary in unknown format: {url}")
    if scheme == "internal-db":
        get_visible(s, JobBinaryInternal, rest, ctx.principal, JBI, status=400)
        return
    if scheme not in _EXTRA_NEEDED:
        raise bad("BAD_JOB_BINARY", f"URL scheme '{scheme}' is not supported; use internal-db://, swift:// or s3://")
    missing = [k for k in _EXTRA_NEEDED[scheme] if not extra.get(k)]
    # With Keystone, a swift:// binary in the caller's own project is read on its trust, with no credentials.
    on_trust = scheme == "swift" and ctx.deps.identity.name == "keystone" and not (extra.get("user") or
                                                                                  extra.get("password"))
    if missing and not on_trust:
        raise bad("BAD_JOB_BINARY", f"{scheme}:// binaries need {', '.join(missing)} in 'extra'")
    try:
        deployment_policy(ctx.deps.settings, ctx.store).check_credentials(extra, "extra")
    except EndpointRefused as e:
        raise bad("BAD_JOB_BINARY", str(e)) from None


# --- job binaries ---------------------------------------------------------------------------------------------


def list_binaries(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        rows, markers = page(ctx, s, JobBinary, JB, filters={"name": JobBinary.name},
                             sorts={"id": JobBinary.id, "name": JobBinary.name, "created_at": JobBinary.created_at,
                                    "updated_at": JobBinary.updated_at})
        return Reply(200, listing("binaries", [views.job_binary(r) for r in rows], markers))


def create_binary(ctx: Ctx) -> Reply:
    data = ctx.body
    with ctx.db.session() as s:
        _check_url(s, ctx, data["url"], data.get("extra") or {})
        ensure_unique_name(s, JobBinary, ctx.principal.project_id, data["name"], JB)
        row = JobBinary(project_id=ctx.principal.project_id, name=data["name"], url=data["url"],
                        description=data.get("description") or "",
                        extra=secrets_for(ctx.deps.settings.state_dir).encrypt_dict(data.get("extra")),
                        is_public=data.get("is_public", False), is_protected=data.get("is_protected", False))
        s.add(row)
        s.flush()
        return Reply(202, {"job_binary": views.job_binary(row)})


def show_binary(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        return Reply(200, {"job_binary": views.job_binary(get_visible(s, JobBinary, ctx.path["id"], ctx.principal, JB))})


def update_binary(ctx: Ctx) -> Reply:
    data = ctx.body
    with ctx.db.session() as s:
        row = get_visible(s, JobBinary, ctx.path["id"], ctx.principal, JB)
        check_update_allowed(row, data, ctx.principal, JB, {"name": row.name, "url": row.url,
                                                            "description": row.description})
        secrets = secrets_for(ctx.deps.settings.state_dir)
        if "url" in data or "extra" in data:
            _check_url(s, ctx, data.get("url", row.url), data.get("extra", secrets.decrypt_dict(row.extra)) or {})
        if "extra" in data:
            data = {**data, "extra": secrets.encrypt_dict(data["extra"])}
        if "name" in data:
            ensure_unique_name(s, JobBinary, row.project_id, data["name"], JB, exclude_id=row.id)
        for key, value in data.items():
            setattr(row, key, value if value is not None else ("" if key == "description" else {}))
        s.flush()
        return Reply(202, {"job_binary": views.job_binary(row)})


def delete_binary(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        row = get_visible(s, JobBinary, ctx.path["id"], ctx.principal, JB)
        check_delete_allowed(row, ctx.principal, JB)
        users = [t.name for t in s.scalars(select(JobTemplate)) if row.id in (t.mains or []) or row.id in (t.libs or [])]
        if users:
            raise bad("DELETION_FAILED", f"Job binary {row.id} is used by job templates: {', '.join(sorted(users))}")
        s.delete(row)
    return Reply(204)


def binary_data(ctx: Ctx) -> Response:
    with ctx.db.session() as s:
        row = get_visible(s, JobBinary, ctx.path["id"], ctx.principal, JB)
        scheme, _, rest = row.url.partition("://")
        if scheme != "internal-db":
            raise bad("INVALID_DATA", f"Downloading {scheme}:// binaries through the API is not supported")
        internal = get_visible(s, JobBinaryInternal, rest, ctx.principal, JBI, status=400)
        key = internal.object_key
    return _bytes(ctx, key, row.name)


def _bytes(ctx: Ctx, key: str, name: str) -> Response:
    try:
        data = ctx.store.get(key)
    except ObjectNotFound:
        raise bad("NOT_FOUND", f"The data of binary '{name}' is missing from the object store") from None
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{_safe_filename(name)}"'})


def _safe_filename(name: str) -> str:
    return re.sub(r'[^A-Za-z0-9._-]', "_", name) or "binary"


# --- job binary internals -------------------------------------------------------------------------------------


def upload_internal(ctx: Ctx) -> Reply:
    name = ctx.path["name"]
    validate({"type": "object", "properties": {"name": schemas.edp_name}}, {"name": name})
    data: bytes = ctx.body
    if not data:
        raise bad("BAD_JOB_BINARY_INTERNAL", "Job binary internal data must be a string of length greater than zero")
    with ctx.db.session() as s:
        ensure_unique_name(s, JobBinaryInternal, ctx.principal.project_id, name, JBI)
        row = JobBinaryInternal(project_id=ctx.principal.project_id, name=name, datasize=len(data), object_key="")
        s.add(row)
        s.flush()
        row.object_key = internal_key(row.id)
        # Written before the row commits: a failed write leaves no row, and a failed commit only an orphan object.
        ctx.store.put(row.object_key, data)
        return Reply(202, {"job_binary_internal": views.for_version(views.job_binary_internal(row), ctx.version)})


def list_internals(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        rows, markers = page(ctx, s, JobBinaryInternal, JBI, filters={"name": JobBinaryInternal.name},
                             sorts={"id": JobBinaryInternal.id, "name": JobBinaryInternal.name,
                                    "created_at": JobBinaryInternal.created_at,
                                    "updated_at": JobBinaryInternal.updated_at})
        items = [views.for_version(views.job_binary_internal(r), ctx.version) for r in rows]
        return Reply(200, listing("binaries", items, markers))


def show_internal(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        row = get_visible(s, JobBinaryInternal, ctx.path["id"], ctx.principal, JBI)
        return Reply(200, {"job_binary_internal": views.for_version(views.job_binary_internal(row), ctx.version)})


def update_internal(ctx: Ctx) -> Reply:
    data = ctx.body
    with ctx.db.session() as s:
        row = get_visible(s, JobBinaryInternal, ctx.path["id"], ctx.principal, JBI)
        check_update_allowed(row, data, ctx.principal, JBI, {"name": row.name})
        if "name" in data:
            ensure_unique_name(s, JobBinaryInternal, row.project_id, data["name"], JBI, exclude_id=row.id)
        for key, value in data.items():
            setattr(row, key, value)
        s.flush()
        return Reply(202, {"job_binary_internal": views.for_version(views.job_binary_internal(row), ctx.version)})


def delete_internal(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        row = get_visible(s, JobBinaryInternal, ctx.path["id"], ctx.principal, JBI)
        check_delete_allowed(row, ctx.principal, JBI)
        users = sorted(s.scalars(select(JobBinary.name).where(JobBinary.url == f"{_INTERNAL}{row.id}")))
        if users:
            raise bad("DELETION_FAILED", f"Job binary internal {row.id} is used by job binaries: {', '.join(users)}")
        key = row.object_key
        s.delete(row)
    ctx.store.delete(key)
    return Reply(204)


def internal_data(ctx: Ctx) -> Response:
    with ctx.db.session() as s:
        row = get_visible(s, JobBinaryInternal, ctx.path["id"], ctx.principal, JBI)
        key, name = row.object_key, row.name
    return _bytes(ctx, key, name)


def register(routes: Routes) -> None:
    both = ("v1.1", "v2")
    routes.add("GET", "/job-binaries", list_binaries, "job-binary:list", versions=both, returns="binaries[]")
    routes.add("POST", "/job-binaries", create_binary, "job-binary:create", schema=schemas.JOB_BINARY_CREATE,
               versions=both, returns="job_binary")
    routes.add("GET", "/job-binaries/{id}", show_binary, "job-binary:get", versions=both, returns="job_binary")
    routes.add("PATCH", "/job-binaries/{id}", update_binary, "job-binary:update", schema=schemas.JOB_BINARY_UPDATE,
               returns="job_binary")
    routes.add("PUT", "/job-binaries/{id}", update_binary, "job-binary:update", schema=schemas.JOB_BINARY_UPDATE,
               versions=("v1.1",), returns="job_binary")
    routes.add("DELETE", "/job-binaries/{id}", delete_binary, "job-binary:delete", versions=both)
    routes.add("GET", "/job-binaries/{id}/data", binary_data, "job-binary:get-data", versions=both,
               media="application/octet-stream")

    # A binary may well be called "x.json": the upload route has no `.json` variant.
    routes.add("PUT", "/job-binary-internals/{name}", upload_internal, "job-binary-internal:create", versions=both,
               body="raw", json_suffix=False, max_body=MAX_INTERNAL_BYTES, returns="job_binary_internal")
    routes.add("GET", "/job-binary-internals", list_internals, "job-binary-internal:list", versions=both,
               returns="binaries[]:job_binary_internal")
    routes.add("GET", "/job-binary-internals/{id}", show_internal, "job-binary-internal:get", versions=both,
               returns="job_binary_internal")
    routes.add("PATCH", "/job-binary-internals/{id}", update_internal, "job-binary-internal:update", versions=both,
               schema=schemas.JOB_BINARY_INTERNAL_UPDATE, returns="job_binary_internal")
    routes.add("DELETE", "/job-binary-internals/{id}", delete_internal, "job-binary-internal:delete", versions=both)
    routes.add("GET", "/job-binary-internals/{id}/data", internal_data, "job-binary-internal:get-data",
               versions=both, media="application/octet-stream")
