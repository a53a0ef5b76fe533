"""A Keystone v3 shim over the builtin identity backend: enough for keystoneauth1 (password and token methods),
python-saharaclient and `openstack dataprocessing …` to authenticate and find the data-processing endpoint.
Routes of the one table (oasis.api.routing) under /v3, with Keystone's error envelope; identity administration
is oasis.api.identity_admin's."""
from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from oasis.api.errors import ApiError
from oasis.api.routing import Ctx, Reply, Routes
from oasis.api.views import ts
from oasis.db.models import Project, User, utcnow
from oasis.identity import builtin
from oasis.identity.principal import Principal

DOMAIN = {"id": "default", "name": "Default"}
REGION = "RegionOne"
V3 = ("v3",)
NEEDS_AUTH = "The request you have made requires authentication."

# --- schemas --------------------------------------------------------------------------------------------------

# What keystoneauth sends. Only the shape: an auth document that fails it, or names no usable credentials,
# is refused with 401 (`invalid_status`), as an authentication failure.
TOKEN_REQUEST = {"type": "object", "required": ["auth"], "properties": {"auth": {
    "type": "object", "required": ["identity"], "properties": {
        "identity": {"type": "object", "properties": {
            "methods": {"type": "array", "items": {"type": "string"}},
            "password": {"type": "object", "properties": {"user": {"type": "object", "properties": {
                "id": {"type": "string"}, "name": {"type": "string"}, "password": {"type": "string"},
                "domain": {"type": "object"}}}}},
            "token": {"type": "object", "properties": {"id": {"type": "string"}}}}},
        "scope": {}}}}}

# --- views ----------------------------------------------------------------------------------------------------


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _endpoints(service_id: str, url: str) -> list[dict[str, Any]]:
    return [{"id": f"{service_id}-{interface}", "interface": interface, "region": REGION, "region_id": REGION,
             "url": url} for interface in ("public", "internal", "admin")]


def _stamp(when: Any) -> str:
    """Keystone's time format, to the microsecond."""
    return f"{ts(when)}.{getattr(when, 'microsecond', 0):06d}Z"


def token_body(request: Request, principal: Principal, methods: list[str]) -> dict[str, Any]:
    base = _base(request)
    return {"token": {
        "methods": methods,
        "expires_at": _stamp(principal.expires_at),
        "issued_at": _stamp(principal.issued_at or utcnow()),
        "user": {"id": principal.user_id, "name": principal.user_name, "domain": DOMAIN, "password_expires_at": None},
        "project": {"id": principal.project_id, "name": principal.project_name, "domain": DOMAIN},
        "roles": [{"id": role, "name": role} for role in principal.roles],
        "is_domain": False,
        "catalog": [
            {"type": "data-processing", "name": "sahara", "id": "sahara",
             "endpoints": _endpoints("sahara", f"{base}/v2")},
            {"type": "identity", "name": "keystone", "id": "keystone",
             "endpoints": _endpoints("keystone", f"{base}/v3")},
        ],
    }}


# --- tokens ---------------------------------------------------------------------------------------------------


def identity_version(ctx: Ctx) -> Reply:
    """The Keystone v3 version document"""
    _not_here(ctx)
    return Reply(200, {"version": {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
                                   "links": [{"rel": "self", "href": f"{_base(ctx.request)}/v3/"}],
                                   "media-types": [{"base": "application/json",
                                                    "type": "application/vnd.openstack.identity-v3+json"}]}})


def _refused(message: str = NEEDS_AUTH) -> ApiError:
    return ApiError(401, "UNAUTHORIZED", message)


def _mapping(value: Any) -> dict[str, Any]:
    """A part of the auth document that must be an object (absent: empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _refused("Malformed authentication request")
    return value


def _scoped_project(s: Session, scope: dict[str, Any] | None, user: User) -> Project:
    """The project of the token: the scope's (by id, or by name), or the user's only one when unscoped."""
    if not scope:
        project = builtin.token_project(s, user)
        if project is None:
            raise _refused("The user has no role on any project")
        return project
    ref = scope.get("project")
    if not isinstance(ref, dict):
        raise _refused("Only project scope is supported")
    if ref.get("id"):
        project = builtin.token_project(s, user, project_id=str(ref["id"]))
    else:
        project = builtin.token_project(s, user, project_name=str(ref.get("name")))
    if project is None:
        raise _refused("The user has no role on the requested project")
    return project


def issue_token(ctx: Ctx) -> Reply:
    """Issue a project-scoped token (password or token method); the token is in the X-Subject-Token header"""
    _not_here(ctx)
    body = ctx.body
    auth = body.get("auth") if isinstance(body, dict) else None
    if not isinstance(auth, dict) or not isinstance(auth.get("identity"), dict):
        raise _refused("Expecting auth.identity in the request body")
    identity = auth["identity"]
    methods = identity.get("methods") or []
    if not isinstance(methods, list):
        raise _refused("auth.identity.methods must be a list")
    scope = auth.get("scope") if isinstance(auth.get("scope"), dict) else None
    with ctx.db.session() as s:
        if "password" in methods:
            user_ref = _mapping(_mapping(identity.get("password")).get("user"))
            password = user_ref.get("password")
            names = [user_ref.get(k) for k in ("name", "id") if user_ref.get(k) is not None]
            if not isinstance(password, str) or not names or not all(isinstance(n, str) for n in names):
                raise _refused()
            user = builtin.authenticate(s, user_ref.get("name"), user_ref.get("id"), password)
        elif "token" in methods:
            principal = builtin.check_token(s, str(_mapping(identity.get("token")).get("id") or ""))
            user = s.get(User, principal.user_id) if principal else None
        else:
            raise _refused("Supported methods are password and token")
        if user is None:
            raise _refused()
        project = _scoped_project(s, scope, user)
        token = builtin.issue_token(s, user, project, ctx.deps.settings.token_hours)
        principal = builtin.check_token(s, token)
    assert principal is not None
    body = token_body(ctx.request, principal, [m for m in methods if m in ("password", "token")])
    return Reply(201, body, {"X-Subject-Token": token})


def _subject(ctx: Ctx) -> str:
    return ctx.request.headers.get("x-subject-token", "")


# Keystone's own policy (identity:validate_token, identity:revoke_token): the token's owner, an admin, a service.
SERVICE_ROLE = "service"


def _may_see(caller: Principal | None, subject: Principal) -> bool:
    return caller is not None and (caller.user_id == subject.user_id or caller.is_admin
                                   or SERVICE_ROLE in caller.roles)


def _owned_subject(ctx: Ctx, action: str) -> Principal:
    """The principal of the token in X-Subject-Token, if the caller may see it (404: no such token, as Keystone)."""
    _not_here(ctx)
    with ctx.db.session() as s:
        subject = builtin.check_token(s, _subject(ctx))
    if subject is None:
        raise ApiError(404, "NOT_FOUND", "Could not find token")
    if not _may_see(ctx.principal, subject):
        raise ApiError(403, "FORBIDDEN", f"You are not authorized to perform the requested action: {action}.")
    return subject


def _not_here(ctx: Ctx) -> None:
    """With Keystone as the identity backend, tokens are Keystone's: this shim neither issues nor checks any."""
    settings = ctx.deps.settings
    if settings.identity_backend == "keystone" and settings.keystone is not None:
        raise ApiError(404, "NOT_FOUND", "This service's identity is Keystone: authenticate at "
                                         f"{settings.keystone.www_authenticate_uri}")


def validate_token(ctx: Ctx) -> Reply | Response:
    """Validate the token in X-Subject-Token (HEAD: only whether it is valid); the token's owner, an admin or a
    service may"""
    subject = _owned_subject(ctx, "identity:validate_token")
    headers = {"X-Subject-Token": _subject(ctx)}
    if ctx.request.method == "HEAD":
        return Response(status_code=200, headers=headers)
    return Reply(200, token_body(ctx.request, subject, ["token"]), headers)


def revoke_token(ctx: Ctx) -> Reply:
    """Revoke the token in X-Subject-Token; the token's owner, an admin or a service may"""
    _owned_subject(ctx, "identity:revoke_token")
    with ctx.db.session() as s:
        builtin.revoke_token(s, _subject(ctx))
    return Reply(204)


def register(routes: Routes) -> None:
    routes.add("GET", "", identity_version, "identity:version", versions=V3, auth="public", returns="version")
    routes.add("POST", "/auth/tokens", issue_token, "identity:token-issue", versions=V3, auth="public", body="any",
               schema=TOKEN_REQUEST, invalid_status=401, status=201, returns="token")
    routes.add("GET", "/auth/tokens", validate_token, "identity:token-validate", versions=V3, returns="token",
               headers=("X-Subject-Token",))
    routes.add("DELETE", "/auth/tokens", revoke_token, "identity:token-revoke", versions=V3,
               headers=("X-Subject-Token",))
