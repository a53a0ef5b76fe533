"""Data sources: where a job reads and writes. Credentials are kept for the engine and never shown."""
from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select

from oasis.api import schemas, views
from oasis.api.errors import bad
from oasis.api.query import (check_delete_allowed, check_update_allowed, ensure_unique_name, get_visible, listing,
                             page)
from oasis.api.routing import Ctx, Reply, Routes
from oasis.db.models import DataSource, Job
from oasis.edp.statuses import TERMINAL
from oasis.storage.endpoints import EndpointRefused, deployment_policy
from oasis.storage.secrets import secrets_for

KIND = "Data source"
# URL schemes each type accepts; hdfs also takes a path on the cluster's own HDFS.
_SCHEMES = {"file": ("file",), "swift": ("swift",), "s3": ("s3", "s3a"), "hdfs": ("hdfs", "")}


def _check_url(ds_type: str, url: str) -> None:
    scheme, sep, rest = url.partition("://")
    scheme = scheme if sep else ""
    if scheme not in _SCHEMES[ds_type] or (sep and not rest):
        expected = " or ".join(f"{s}://" if s else "a path" for s in _SCHEMES[ds_type])
        raise bad("INVALID_DATA", f"URL of a {ds_type} data source must be {expected}: {url}")


def _check_endpoints(ctx: Ctx, credentials: dict[str, Any] | None) -> None:
    try:
        deployment_policy(ctx.deps.settings, ctx.store).check_credentials(credentials, "credentials")
    except EndpointRefused as e:
        raise bad("INVALID_DATA", str(e)) from None


def list_data_sources(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        rows, markers = page(ctx, s, DataSource, KIND, filters={"type": DataSource.type},
                             sorts={"id": DataSource.id, "name": DataSource.name, "type": DataSource.type,
                                    "created_at": DataSource.created_at, "updated_at": DataSource.updated_at})
        return Reply(200, listing("data_sources", [views.data_source(r) for r in rows], markers))


def create_data_source(ctx: Ctx) -> Reply:
    data = ctx.body
    _check_url(data["type"], data["url"])
    _check_endpoints(ctx, data.get("credentials"))
    with ctx.db.session() as s:
        ensure_unique_name(s, DataSource, ctx.principal.project_id, data["name"], KIND)
        row = DataSource(project_id=ctx.principal.project_id, name=data["name"], type=data["type"], url=data["url"],
                         description=data.get("description") or "", credentials=secrets_for(ctx.deps.settings.state_dir).encrypt_dict(data.get("credentials")),
                         is_public=data.get("is_public", False), is_protected=data.get("is_protected", False))
        s.add(row)
        s.flush()
        return Reply(202, {"data_source": views.data_source(row)})


def show_data_source(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        return Reply(200, {"data_source": views.data_source(get_visible(s, DataSource, ctx.path["id"],
                                                                        ctx.principal, KIND))})


def update_data_source(ctx: Ctx) -> Reply:
    data: dict[str, Any] = ctx.body
    with ctx.db.session() as s:
        row = get_visible(s, DataSource, ctx.path["id"], ctx.principal, KIND)
        check_update_allowed(row, data, ctx.principal, KIND, {"name": row.name, "type": row.type, "url": row.url,
                                                              "description": row.description})
        _check_url(data.get("type", row.type), data.get("url", row.url))
        if "credentials" in data:
            _check_endpoints(ctx, data["credentials"])
        if "name" in data:
            ensure_unique_name(s, DataSource, row.project_id, data["name"], KIND, exclude_id=row.id)
        for key, value in data.items():
            if key == "credentials":
                value = secrets_for(ctx.deps.settings.state_dir).encrypt_dict(value)
            setattr(row, key, value if value is not None else ("" if key == "description" else {}))
        s.flush()
        return Reply(202, {"data_source": views.data_source(row)})


def delete_data_source(ctx: Ctx) -> Reply:
    with ctx.db.session() as s:
        row = get_visible(s, DataSource, ctx.path["id"], ctx.principal, KIND)
        check_delete_allowed(row, ctx.principal, KIND)
        busy = s.scalars(select(Job.id).where(or_(Job.input_id == row.id, Job.output_id == row.id),
                                              Job.status.not_in(TERMINAL))).first()
        if busy:
            raise bad("DELETION_FAILED", f"Data source {row.id} is used by job {busy}, which has not finished")
        s.delete(row)
    return Reply(204)


def register(routes: Routes) -> None:
    both = ("v1.1", "v2")
    routes.add("GET", "/data-sources", list_data_sources, "data-source:list", versions=both, returns="data_sources[]")
    routes.add("POST", "/data-sources", create_data_source, "data-source:create", schema=schemas.DATA_SOURCE_CREATE,
               versions=both, returns="data_source")
    routes.add("GET", "/data-sources/{id}", show_data_source, "data-source:get", versions=both,
               returns="data_source")
    routes.add("PATCH", "/data-sources/{id}", update_data_source, "data-source:update",
               schema=schemas.DATA_SOURCE_UPDATE, returns="data_source")
    routes.add("PUT", "/data-sources/{id}", update_data_source, "data-source:update",
               schema=schemas.DATA_SOURCE_UPDATE, versions=("v1.1",), returns="data_source")
    routes.add("DELETE", "/data-sources/{id}", delete_data_source, "data-source:delete", versions=both)
