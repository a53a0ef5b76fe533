"""What every resource shares: visibility, lookups, ownership, protection, unique names, filters and Sahara's
`limit`/`marker`/`sort_by` pagination with `markers`."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Select, and_, literal, or_, select, true, tuple_, union_all
from sqlalchemy.orm import Session

from oasis.api.errors import ApiError, bad, not_found
from oasis.api.routing import Ctx
from oasis.identity.principal import Principal

PAGING = frozenset({"limit", "marker", "sort_by"})
MAX_LIMIT = 2**31 - 1


def visible(stmt: Select, model: Any, principal: Principal) -> Select:
    """A project sees its own rows and public ones; an admin sees every project's. A cluster waiting in a warm
    pool is no one's yet: it is seen under its pool (oasis/api/pools.py), not as a cluster."""
    if hasattr(model, "pool_id"):
        stmt = stmt.where(model.pool_id.is_(None))
    if principal.is_admin:
        return stmt
    return stmt.where(or_(*_visibility(model, principal)))


def _visibility(model: Any, principal: Principal) -> list[Any]:
    """What `visible` allows, as disjoint conditions: each one an index can serve in order (an OR of the two
    cannot be read in order from any index, so it sorts every row the caller sees)."""
    if principal.is_admin:
        return [true()]
    return [model.project_id == principal.project_id,
            and_(model.is_public.is_(True), model.project_id != principal.project_id)]


def get_visible(s: Session, model: Any, object_id: str, principal: Principal, kind: str,
                status: int = 404, load: tuple[Any, ...] = ()) -> Any:
    """The row if the caller may see it. A URL id that is not found is 404; a reference inside a body is 400
    (Sahara's validators raise NotFound as 400), hence `status`. `load`: loader options, as `page` takes."""
    row = s.get(model, object_id, options=load)
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
    # Sahara sets no upper bound; one beyond any table is the same page as the bound (and SQL's LIMIT is 64-bit)
    return min(limit, MAX_LIMIT)


def page(ctx: Ctx, s: Session, model: Any, kind: str, *, filters: dict[str, Any], sorts: dict[str, Any],
         stmt: Select | None = None, extra_params: frozenset[str] = frozenset(),
         load: tuple[Any, ...] = ()) -> tuple[list[Any], dict | None]:
    """One page of the rows the caller sees, filtered by equality on whitelisted parameters and sorted.

    Returns (rows, markers); markers is None unless Sahara would add them (a marker was given, or there is a
    previous or next page). `filters` and `sorts` map parameter and field names to columns; `load` holds loader
    options for the rows (columns a view never shows, deferred)."""
    ctx.check_params(PAGING | set(filters) | extra_params)
    limit = _limit(ctx)
    base = stmt if stmt is not None else select(model)
    for name, column in filters.items():
        values = ctx.query.getlist(name)
        if values:
            base = base.where(column.in_(values))
    stmt = visible(base, model, ctx.principal).options(*load)
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
    if all(not getattr(c, "nullable", True) for c in order):
        return _keyset_page(s, model, base, _visibility(model, ctx.principal), order, desc, marker, limit, load)
    return _listed_page(s, model, stmt, ordering, marker, limit, load)


def _keyset_page(s: Session, model: Any, base: Select, parts: list[Any], order: list[Any], desc: bool,
                 marker: str | None, limit: int | None, load: tuple[Any, ...]) -> tuple[list[Any], dict | None]:
    """A page read from the marker's place in the order (a row comparison on the sort columns), at most
    limit + 1 ids from each part of what the caller sees (its project's rows, others' public ones: each read
    in order from an index), merged by the database: the same rows and markers as `_listed_page`, for orders
    whose columns are never NULL (NULLs sort first or last as the database likes, and compare as nothing)."""
    key = tuple_(*order)
    prev = None
    if marker is not None:
        here = s.execute(base.where(or_(*parts), model.id == marker).with_only_columns(*order)).first()
        if here is None:  # exists, but filtered out: nothing follows it
            return [], {"prev": None, "next": None}
        at = tuple_(*(literal(v, c.type) for v, c in zip(here, order)))
        if limit is not None:  # the row `limit` places before the marker opens the previous page
            before = _ordered_ids(s, base, parts, order, not desc, key > at if desc else key < at, limit, limit - 1)
            prev = before[0] if before else None
        base = base.where(key < at if desc else key > at)
    ids = _ordered_ids(s, base, parts, order, desc, None, limit + 1 if limit is not None else None, 0)
    nxt = ids[limit - 1] if limit is not None and len(ids) > limit else None
    if limit is not None:
        ids = ids[:limit]
    markers = {"prev": prev, "next": nxt} if marker is not None or nxt or prev else None
    rows: dict[str, Any] = {}
    for i in range(0, len(ids), 500):  # bounded IN lists
        rows.update((r.id, r) for r in s.scalars(select(model).options(*load).where(model.id.in_(ids[i:i + 500]))))
    return [rows[i] for i in ids if i in rows], markers


def _ordered_ids(s: Session, base: Select, parts: list[Any], order: list[Any], desc: bool, where: Any,
                 limit: int | None, offset: int) -> list[str]:
    """Ids in the order, from `offset`, at most `limit`: each part ordered and cut on its own (so an index
    serves it), then the parts merged in the same order."""
    cols = [c.label(f"k{i}") for i, c in enumerate(order)]
    branches = []
    for part in parts:
        branch = base.where(part) if where is None else base.where(part, where)
        branch = branch.with_only_columns(*cols).order_by(*[c.desc() if desc else c.asc() for c in order])
        if limit is not None:
            branch = branch.limit(limit + offset)
        branches.append(branch)
    if len(branches) == 1:
        stmt = branches[0].offset(offset) if offset else branches[0]
        return [row[-1] for row in s.execute(stmt)]
    # SQLite takes no ORDER BY or LIMIT on a member of a UNION: each member is a subquery of its own.
    merged = union_all(*(select(b.subquery()) for b in branches)).subquery()
    keys = [merged.c[f"k{i}"] for i in range(len(order))]
    stmt = select(keys[-1]).order_by(*[k.desc() if desc else k.asc() for k in keys])
    if limit is not None:
        stmt = stmt.limit(limit)
    if offset:
        stmt = stmt.offset(offset)
    return list(s.scalars(stmt))


def _listed_page(s: Session, model: Any, stmt: Select, ordering: list[Any], marker: str | None,
                 limit: int | None, load: tuple[Any, ...]) -> tuple[list[Any], dict | None]:
    """A page found in the list of every id of the listing (orders on a column that may be NULL)."""
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
        rows.update((r.id, r) for r in s.scalars(select(model).options(*load).where(model.id.in_(chosen[i:i + 500]))))
    return [rows[i] for i in chosen if i in rows], markers


def listing(key: str, items: list[dict], markers: dict | None) -> dict:
    body: dict[str, Any] = {key: items}
    if markers is not None:
        body["markers"] = markers
    return body


__all__ = ["ApiError", "visible", "get_visible", "require_owner", "check_update_allowed", "check_delete_allowed",
           "ensure_unique_name", "page", "listing"]
