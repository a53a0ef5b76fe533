"""Keypairs (an oasis extension at `/v2/keypairs`): the user SSH keys a cluster may name in `user_keypair_id`,
as Sahara named Nova's. Per project, by unique name. Only public keys are kept; a keypair created without one
is generated here, and its private key is in that one create answer and nowhere else."""
from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from oasis.api import schemas
from oasis.api.errors import bad, not_found
from oasis.api.routing import Ctx, Reply, Routes
from oasis.api.views import ts
from oasis.db.models import Keypair
from oasis.keys import generate_keypair, parse_public_key

KIND = "Keypair"


def view(row: Keypair) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "project_id": row.project_id, "public_key": row.public_key,
            "fingerprint": row.fingerprint, "created_at": ts(row.created_at)}


def find(s: Session, project_id: str, ref: str) -> Keypair | None:
    """A project's keypair by name (what `user_keypair_id` holds, as with Nova) or id."""
    return s.scalars(select(Keypair).where(Keypair.project_id == project_id,
                                           or_(Keypair.name == ref, Keypair.id == ref))).first()


def require(s: Session, project_id: str, ref: str) -> Keypair:
    """The keypair a cluster names; Sahara's answer when Nova has none by that name."""
    row = find(s, project_id, ref)
    if row is None:
        raise bad("NOT_FOUND", f"Requested keypair '{ref}' not found")
    return row


def _get(ctx: Ctx, s: Session) -> Keypair:
    # Keypairs are a project's own: another project's (an administrator's included) are not there.
    row = find(s, ctx.principal.project_id, ctx.path["id"])
    if row is None:
        raise not_found(KIND, ctx.path["id"])
    return row


def list_keypairs(ctx: Ctx) -> Reply:
    ctx.check_params({"name"})
    stmt = select(Keypair).where(Keypair.project_id == ctx.principal.project_id).order_by(Keypair.name)
    if ctx.query.get("name"):
        stmt = stmt.where(Keypair.name == ctx.query["name"])
    with ctx.db.session() as s:
        return Reply(200, {"keypairs": [view(r) for r in s.scalars(stmt)]})


def create_keypair(ctx: Ctx) -> Reply:
    """Import a public key, or (without one) generate a keypair and answer its private key this once."""
    data = ctx.body
    private = None
    if data.get("public_key"):
        try:
            public, fingerprint = parse_public_key(data["public_key"])
        except ValueError as e:
            raise bad("VALIDATION_ERROR", f"public_key: {e}") from None
    else:
        private, public = generate_keypair(data["name"])
        fingerprint = parse_public_key(public)[1]
    with ctx.db.session() as s:
        if find(s, ctx.principal.project_id, data["name"]) is not None:
            raise bad("NAME_ALREADY_EXISTS", f"Keypair with name '{data['name']}' already exists")
        row = Keypair(project_id=ctx.principal.project_id, name=data["name"], public_key=public,
                      fingerprint=fingerprint)
        s.add(row)
        s.flush()
        out = view(row)
    if private is not None:
        out["private_key"] = private
    return Reply(202, {"keypair": out})


def show_keypair(ctx: Ctx) -> Reply:
    ctx.check_params(set())
    with ctx.db.session() as s:
        return Reply(200, {"keypair": view(_get(ctx, s))})


def delete_keypair(ctx: Ctx) -> Reply:
    """As with Nova, clusters keep the key line already installed; `update_keypair` after re-creating a keypair
    of the same name puts the new key in its place."""
    with ctx.db.session() as s:
        s.delete(_get(ctx, s))
    return Reply(204)


def register(routes: Routes) -> None:
    routes.add("GET", "/keypairs", list_keypairs, "keypair:list", returns="keypairs[]")
    routes.add("POST", "/keypairs", create_keypair, "keypair:create", schema=schemas.KEYPAIR_CREATE,
               returns="keypair")
    routes.add("GET", "/keypairs/{id}", show_keypair, "keypair:get", returns="keypair")
    routes.add("DELETE", "/keypairs/{id}", delete_keypair, "keypair:delete")
