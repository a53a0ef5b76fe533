"""What every resource shares: visibility, lookups, ownership, protection, unique names, filters and Sahara's
`limit`/`marker`/`sort_by` pagination with `markers`."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from oasis.api.errors import ApiError, bad, not_found
from oasis.api.routing import Ctx
from oasis.identity.principal import Principal

PAGING = frozenset({"limit", "marker", "sort_by"})


def visible(stmt: Select, model: Any, principal: Principal) -> Select:
    """A project sees its own rows and public ones; an admin sees every project's. A cluster waiting in a warm
    pool is no one's yet: it is seen under its pool (oasis/api/pools.py), not as a cluster."""
    if hasattr(model, "pool_id"):
        stmt = stmt.where(model.pool_id.is_(None))
    if principal.is_admin:
        return stmt
    return stmt.where(or_(model.project_id == principal.project_id, model.is_public.is_(True)))


def get_visible(s: Session, model: Any, object_id: str, principal: Principal, kind: str,
                status: int = 404) -> Any:
    """The row if the caller may see it. A URL id that is not found is 404; a reference inside a body is 400
    (Sahara's validators raise NotFound as 400), hence `status`."""
    row = s.get(model, object_id)
    if row is not None and getattr(row, "pool_id", None) is not None:
        row = None  # a pooled cluster: no one's until a create claims it
    if row is None or not (principal.is_admin or row.project_id == principal.project_id or row.is_public):
        if status == 404:
            raise not_found(kind, object_id)
        raise bad("INVALID_REFERENCE", f"{kind} with id '{object_id}' not found")
    return row


def require_owner(row: Any, principal: Principal, kind: str, deleting: bool = False) -> None:
    """A public row of another project is readable, not writable. Administrators may act on any project's rows."""
    if row.project_id != principal.project_id and not principal.is_admin:
        verb, name = ("deleted", "DELETION_FAILED") if deleting else ("updated", "UPDATE_FAILED")
        raise bad(name, f"{kind} with id '{row.id}' could not be {verb} because it wasn't created in this tenant")


def check_update_allowed(row: Any, data: dict[str, Any], principal: Principal, kind: str,
                         current: dict[str, Any] | None = None) -> None:
    """Ownership, then Sahara's protection rule: a protected row only takes a change of `is_public` or an update
    that unsets `is_protected` (values equal to the current ones do not count as changes)."""
    require_owner(row, principal, kind)
    if not row.is_protected or not data.get("is_protected", True):
        return
    current = current if current is not None else {}
    changed = [k for k, v in data.items() if k not in ("is_public", "is_protected")
               and (k not in current or current[k] != v)]
    if changed:
        raise bad("UPDATE_FAILED", f"{kind} with id '{row.id}' could not be updated because it's marked as protected")


def check_delete_allowed(row: Any, principal: Principal, kind: str) -> None:
    require_owner(row, principal, kind, deleting=True)
    if row.is_protected:
        raise bad("DELETION_FAILED", f"{kind} with id '{row.id}' could not be deleted because it's marked as protected")


def ensure_unique_name(s: Session, model: Any, project_id: str, name: str, kind: str,
                       exclude_id: str | None = None) -> None:
    stmt = select(model.id).where(model.project_id == project_id, model.name == name)
    if exclude_id is not None:
        stmt = stmt.where(model.id != exclude_id)
    if s.scalars(stmt).first() is not None:
        raise bad("NAME_ALREADY_EXISTS", f"{kind} with name '{name}' already exists")


def _limit(ctx: Ctx) -> int | None:
    raw = ctx.query.get("limit")
    if raw is None:
        return None
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if limit <= 0:
        raise bad("INVALID_DATA", "'limit' must be positive integer")
    return limit


def page(ctx: Ctx, s: Session, model: Any, kind: str, *, filters: dict[str, Any], sorts: dict[str, Any],
         stmt: Select | None = None, extra_params: frozenset[str] = frozenset()) -> tuple[list[Any], dict | None]:
    """One page of the rows the caller sees, filtered by equality on whitelisted parameters and sorted.

    Returns (rows, markers); markers is None unless Sahara would add them (a marker was given, or there is a
    previous or next page). `filters` and `sorts` map parameter and field names to columns."""
    ctx.check_params(PAGING | set(filters) | extra_params)
    limit = _limit(ctx)
    stmt = visible(stmt if stmt is not None else select(model), model, ctx.principal)
    for name, column in filters.items():
        values = ctx.query.getlist(name)
        if values:
            stmt = stmt.where(column.in_(values))
    sort_by = ctx.query.get("sort_by") or ""
    desc = sort_by.startswith("-")
    field = sort_by.lstrip("-")
    if field and field not in sorts:
        raise bad("INVALID_DATA", f"Unknown field for sorting {field}; valid fields are: {', '.join(sorted(sorts))}")
    order = [sorts[field]] if field else [model.created_at]
    order.append(model.id)
    ordering = [c.desc() if desc else c.asc() for c in order]
    marker = ctx.query.get("marker")
    if marker is None and limit is None:
        return list(s.scalars(stmt.order_by(*ordering))), None

    if marker is not None:
        get_visible(s, model, marker, ctx.principal, kind)
    ids = list(s.scalars(stmt.with_only_columns(model.id).order_by(*ordering)))
    start = 0
    if marker is not None:
        if marker not in ids:  # exists, but filtered out: nothing follows it
            return [], {"prev": None, "next": None}
        start = ids.index(marker) + 1
    chosen = ids[start:start + limit] if limit is not None else ids[start:]
    # Sahara's markers: `next` is the last id of this page when more follow; `prev` is the marker that gives
    # the previous page.
    nxt = chosen[-1] if limit is not None and start + limit < len(ids) else None
    prev = ids[start - 1 - limit] if marker is not None and limit is not None and start - 1 - limit >= 0 else None
    markers = {"prev": prev, "next": nxt} if marker is not None or nxt or prev else None
    rows: dict[str, Any] = {}
    for i in range(0, len(chosen), 500):  # bounded IN lists
        rows.update((r.id, r) for r in s.scalars(select(model).where(model.id.in_(chosen[i:i + 500]))))
    return [rows[i] for i in chosen if i in rows], markers


def listing(key: str, items: list[dict], markers: dict | None) -> dict:
    body: dict[str, Any] = {key: items}
    if markers is not None:
        body["markers"] = markers
    return body


__all__ = ["ApiError", "visible", "get_visible", "require_owner", "check_update_allowed", "check_delete_allowed",
           "ensure_unique_name", "page", "listing"]
