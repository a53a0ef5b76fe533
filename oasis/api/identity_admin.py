"""Keystone v3's administration calls over the builtin identity (admin only): projects, users and role
assignments, so that `oasis project|user` and `openstack project|user|role` work. The HTTP only (paths, Keystone's
shapes and codes); the rules are oasis.identity.admin's."""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from oasis.api.errors import ApiError
from oasis.api.keystone import DOMAIN, V3
from oasis.api.routing import Ctx, Handler, Reply, Routes
from oasis.db.models import Project, User
from oasis.identity import admin
from oasis.identity.policy import ROLES

ADMIN = "identity:admin"  # the policy action of every administration call: admin only

# --- schemas and views ----------------------------------------------------------------------------------------

_NAME = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.@-]*\Z"}
PROJECT_CREATE = {"type": "object", "required": ["project"], "properties": {"project": {
    "type": "object", "required": ["name"], "properties": {
        "name": _NAME, "description": {"type": "string"}, "domain_id": {"type": "string"},
        "enabled": {"type": "boolean"}, "is_domain": {"type": "boolean"}, "parent_id": {"type": "string"}}}}}
USER_CREATE = {"type": "object", "required": ["user"], "properties": {"user": {
    "type": "object", "required": ["name"], "properties": {
        "name": _NAME, "password": {"type": "string", "minLength": 1, "maxLength": 4096},
        "default_project_id": {"type": "string"}, "domain_id": {"type": "string"}, "enabled": {"type": "boolean"},
        "description": {"type": "string"}, "email": {"type": "string"}}}}}
USER_UPDATE = {"type": "object", "required": ["user"], "properties": {"user": {
    "type": "object", "properties": {"password": {"type": "string", "minLength": 1, "maxLength": 4096},
                                     "enabled": {"type": "boolean"}, "description": {"type": "string"}}}}}


def _project_view(p: Project) -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "domain_id": DOMAIN["id"], "enabled": True, "is_domain": False,
            "parent_id": DOMAIN["id"], "description": "", "tags": [], "options": {}, "links": {}}


def _user_view(u: User, default_project: str | None = None) -> dict[str, Any]:
    # Never the password or its hash.
    return {"id": u.id, "name": u.name, "domain_id": DOMAIN["id"], "enabled": True,
            "default_project_id": default_project, "password_expires_at": None, "options": {}, "links": {}}


def _role_view(name: str) -> dict[str, Any]:
    return {"id": name, "name": name}


# --- handlers -------------------------------------------------------------------------------------------------


def _identity_errors(handler: Handler) -> Handler:
    """The administration rules' refusals in Keystone's codes."""
    @functools.wraps(handler)
    def run(ctx: Ctx) -> Reply:
        try:
            return handler(ctx)
        except admin.NotFound as e:
            raise ApiError(404, "NOT_FOUND", str(e)) from None
        except admin.Conflict as e:
            raise ApiError(409, "CONFLICT", str(e)) from None
    return run


@_identity_errors
def list_projects(ctx: Ctx) -> Reply:
    """List projects"""
    with ctx.db.session() as s:
        return Reply(200, {"projects": [_project_view(p) for p in admin.projects(s, ctx.query.get("name"))],
                           "links": {}})


@_identity_errors
def create_project(ctx: Ctx) -> Reply:
    """Create a project"""
    with ctx.db.session() as s:
        return Reply(201, {"project": _project_view(admin.create_project(s, ctx.body["project"]["name"]))})


@_identity_errors
def show_project(ctx: Ctx) -> Reply:
    """Show a project"""
    with ctx.db.session() as s:
        return Reply(200, {"project": _project_view(admin.find_project(s, ctx.path["project_id"]))})


@_identity_errors
def list_users(ctx: Ctx) -> Reply:
    """List users"""
    with ctx.db.session() as s:
        return Reply(200, {"users": [_user_view(u) for u in admin.users(s, ctx.query.get("name"))], "links": {}})


@_identity_errors
def create_user(ctx: Ctx) -> Reply:
    """Create a user (with default_project_id: a member of that project)"""
    ref = ctx.body["user"]
    with ctx.db.session() as s:
        user, project = admin.create_user(s, ref["name"], ref.get("password"), ref.get("default_project_id"))
        return Reply(201, {"user": _user_view(user, project.id if project else None)})


@_identity_errors
def show_user(ctx: Ctx) -> Reply:
    """Show a user"""
    with ctx.db.session() as s:
        return Reply(200, {"user": _user_view(admin.find_user(s, ctx.path["user_id"]))})


@_identity_errors
def update_user(ctx: Ctx) -> Reply:
    """Change a user's password"""
    with ctx.db.session() as s:
        user = admin.find_user(s, ctx.path["user_id"])
        if ctx.body["user"].get("password"):
            admin.set_password(user, ctx.body["user"]["password"])
        return Reply(200, {"user": _user_view(user)})


@_identity_errors
def delete_user(ctx: Ctx) -> Reply:
    """Delete a user, its tokens and its role assignments"""
    with ctx.db.session() as s:
        admin.delete_user(s, admin.find_user(s, ctx.path["user_id"]))
    return Reply(204)


def list_roles(ctx: Ctx) -> Reply:
    """List roles"""
    return Reply(200, {"roles": [{**_role_view(r), "domain_id": None, "links": {}} for r in ROLES],
                       "links": {}})


@_identity_errors
def list_user_roles(ctx: Ctx) -> Reply:
    """A user's roles on a project"""
    with ctx.db.session() as s:
        project = admin.find_project(s, ctx.path["project_id"])
        user = admin.find_user(s, ctx.path["user_id"])
        return Reply(200, {"roles": [_role_view(r) for r in admin.roles_on(s, user, project)], "links": {}})


def _on_assignment(change: Callable[[Session, User, Project, str], None]) -> Handler:
    """The handler of one call on a role assignment (`/projects/{p}/users/{u}/roles/{role}`): grant, check or
    revoke."""
    @_identity_errors
    @functools.wraps(change)
    def handler(ctx: Ctx) -> Reply:
        with ctx.db.session() as s:
            project = admin.find_project(s, ctx.path["project_id"])
            user = admin.find_user(s, ctx.path["user_id"])
            change(s, user, project, ctx.path["role_id"])
        return Reply(204)
    return handler


def register(routes: Routes) -> None:
    routes.add("GET", "/projects", list_projects, ADMIN, versions=V3, returns="projects[]")
    routes.add("POST", "/projects", create_project, ADMIN, versions=V3, schema=PROJECT_CREATE, status=201,
               returns="project")
    routes.add("GET", "/projects/{project_id}", show_project, ADMIN, versions=V3, returns="project")
    routes.add("GET", "/users", list_users, ADMIN, versions=V3, returns="users[]")
    routes.add("POST", "/users", create_user, ADMIN, versions=V3, schema=USER_CREATE, status=201, returns="user")
    routes.add("GET", "/users/{user_id}", show_user, ADMIN, versions=V3, returns="user")
    routes.add("PATCH", "/users/{user_id}", update_user, ADMIN, versions=V3, schema=USER_UPDATE, status=200,
               returns="user")
    routes.add("DELETE", "/users/{user_id}", delete_user, ADMIN, versions=V3)
    routes.add("GET", "/roles", list_roles, ADMIN, versions=V3, returns="roles[]")
    routes.add("GET", "/projects/{project_id}/users/{user_id}/roles", list_user_roles, ADMIN, versions=V3,
               returns="roles[]")
    assignment = "/projects/{project_id}/users/{user_id}/roles/{role_id}"
    routes.add("PUT", assignment, _on_assignment(admin.grant), ADMIN, versions=V3, status=204,
               summary="Give a user a role on a project")
    routes.add("HEAD", assignment, _on_assignment(admin.check_grant), ADMIN, versions=V3, status=204,
               summary="Whether a user has a role on a project")
    routes.add("DELETE", assignment, _on_assignment(admin.revoke), ADMIN, versions=V3,
               summary="Take a role away from a user")
