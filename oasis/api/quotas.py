"""Per-project quotas (an oasis extension at `/v2/quotas`): an administrator sets a project's limits, a member or
reader reads its own project's, each beside what the project uses now. The checks that the cluster and job routes
call are here too; the counting and the lock that make them atomic are in oasis/db/quotas.py."""
from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from oasis.api.errors import ApiError, bad
from oasis.api.routing import Ctx, Reply, Routes
from oasis.config import QUOTA_MAX
from oasis.db import quotas
from oasis.db.capacity import Demand
from oasis.db.models import Project

_LIMIT = {"type": ["integer", "null"], "minimum": -1, "maximum": QUOTA_MAX,
          "description": "The most the project may hold; -1 or null: unlimited"}
QUOTA_UPDATE = {
    "type": "object",
    "properties": {"quota": {"type": "object", "properties": {key: _LIMIT for key in quotas.KEYS},
                             "additionalProperties": False}},
    "required": ["quota"],
    "additionalProperties": False,
}


def _no_project(ref: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"Project '{ref}' not found")


def _project(ctx: Ctx, s: Session, ref: str) -> tuple[str, str]:
    """The project a path names, (id, name). The builtin identity knows every project, by id or name; with
    Keystone the path gives the project's id, which oasis cannot look up (Nova takes it as given too)."""
    if ctx.deps.settings.identity_backend == "builtin":
        row = s.scalars(select(Project).where(or_(Project.id == ref, Project.name == ref))).first()
        if row is None:
            raise _no_project(ref)
        return row.id, row.name
    mine = ctx.principal
    return (mine.project_id, mine.project_name) if ref in (mine.project_id, mine.project_name) else (ref, ref)


def _view(ctx: Ctx, s: Session, project_id: str) -> dict[str, Any]:
    return {"project_id": project_id,
            "quota": quotas.limits(s, project_id, ctx.deps.settings.quota_defaults),
            "usage": quotas.usage(s, project_id)}


def show_own_quota(ctx: Ctx) -> Reply:
    """The caller's project's limits and usage."""
    ctx.check_params(set())
    with ctx.db.session() as s:
        return Reply(200, _view(ctx, s, ctx.principal.project_id))


def show_quota(ctx: Ctx) -> Reply:
    """A project's limits and usage: an administrator's for any project, anyone else's for its own only (another
    project is a 404 to them, as its rows are)."""
    ctx.check_params(set())
    mine, ref = ctx.principal, ctx.path["id"]
    if ref not in (mine.project_id, mine.project_name) and not mine.is_admin:
        # As another project's rows are: not there for the caller, the same whether the project exists or not.
        raise _no_project(ref)
    with ctx.db.session() as s:
        project_id, _ = _project(ctx, s, ref)
        return Reply(200, _view(ctx, s, project_id))


def update_quota(ctx: Ctx) -> Reply:
    """Set some of a project's limits (administrators; policy `data-processing:quotas:update`); the keys the
    body leaves out keep theirs. A limit below what the project uses already refuses its next requests only."""
    with ctx.db.session() as s:
        project_id, _ = _project(ctx, s, ctx.path["id"])
        quotas.set_limits(s, project_id, ctx.body["quota"])
        s.flush()
        return Reply(200, _view(ctx, s, project_id))


def check(ctx: Ctx, s: Session, requested: dict[str, int]) -> None:
    """The caller's project's quota against what the request adds (400 QUOTA_ERROR if over). Call it last, just
    before the request's rows are written in the same session: it holds the project's lock from here on."""
    try:
        quotas.check(s, ctx.principal.project_id, ctx.principal.project_name, requested,
                     ctx.deps.settings.quota_defaults)
    except quotas.QuotaExceeded as e:
        raise bad("QUOTA_ERROR", str(e)) from None


def check_clusters(ctx: Ctx, s: Session, instances: list[Demand], clusters: int = 0) -> None:
    """New clusters (`clusters` of them, with all their instances) or a scale's new instances."""
    check(ctx, s, quotas.demand(instances, clusters))


def check_job(ctx: Ctx, s: Session) -> None:
    """One more running job."""
    check(ctx, s, {"running_jobs": 1})


def register(routes: Routes) -> None:
    routes.add("GET", "/quotas", show_own_quota, "quota:get", returns="quota")
    routes.add("GET", "/quotas/{id}", show_quota, "quota:get", returns="quota")
    routes.add("PUT", "/quotas/{id}", update_quota, "quota:update", schema=QUOTA_UPDATE, status=200,
               returns="quota")
