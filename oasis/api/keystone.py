"""A Keystone v3 shim over the builtin identity backend: enough for keystoneauth1 (password and token methods),
python-saharaclient and `openstack dataprocessing …` to authenticate and find the data-processing endpoint.
Routes of the one table (oasis.api.routing) under /v3, with Keystone's error envelope; identity administration
is oasis.api.identity_admin's."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from oasis.api.errors import ApiError
from oasis.api.routing import Ctx, Reply, Routes
from oasis.api.views import ts
from oasis.db.models import Project, Trust, User, utcnow
from oasis.identity import builtin
from oasis.identity.base import IdentityError
from oasis.identity.principal import Principal

log = logging.getLogger(__name__)

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

_ROLE_REF = {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}},
             "anyOf": [{"required": ["id"]}, {"required": ["name"]}]}
# Keystone's trust_create_request_body, less what the builtin backend does not do (redelegation, limited uses).
TRUST_CREATE = {"type": "object", "required": ["trust"], "properties": {"trust": {
    "type": "object", "required": ["trustor_user_id", "trustee_user_id", "impersonation"],
    "properties": {
        "trustor_user_id": {"type": "string", "minLength": 1, "maxLength": 64},
        "trustee_user_id": {"type": "string", "minLength": 1, "maxLength": 64},
        "project_id": {"type": ["string", "null"], "maxLength": 64},
        "impersonation": {"type": "boolean"},
        "roles": {"type": "array", "items": _ROLE_REF},
        "expires_at": {"type": ["string", "null"]},
        "remaining_uses": {"type": "null"},
        "allow_redelegation": {"type": "boolean", "enum": [False]},
        "redelegation_count": {"type": ["integer", "null"]}}}}}

# --- views ----------------------------------------------------------------------------------------------------


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _endpoints(service_id: str, url: str) -> list[dict[str, Any]]:
    return [{"id": f"{service_id}-{interface}", "interface": interface, "region": REGION, "region_id": REGION,
             "url": url} for interface in ("public", "internal", "admin")]


def _stamp(when: Any) -> str:
    """Keystone's time format, to the microsecond."""
    return f"{ts(when)}.{getattr(when, 'microsecond', 0):06d}Z"


def _keystone_time(value: datetime | None) -> str | None:
    return _stamp(value) if value is not None else None


def trust_view(request: Request, trust: Trust, with_roles: bool = True) -> dict[str, Any]:
    """A trust as Keystone shows it (a list leaves out the roles, as Keystone's does)."""
    url = f"{_base(request)}/v3/OS-TRUST/trusts/{trust.id}"
    out: dict[str, Any] = {
        "id": trust.id, "trustor_user_id": trust.trustor_user_id, "trustee_user_id": trust.trustee_user_id,
        "project_id": trust.project_id, "impersonation": bool(trust.impersonation),
        "expires_at": _keystone_time(trust.expires_at), "remaining_uses": None, "allow_redelegation": False,
        "redelegation_count": 0, "deleted_at": None, "links": {"self": url}}
    if with_roles:
        out["roles"] = [{"id": r, "name": r, "domain_id": None, "links": {"self": f"{_base(request)}/v3/roles/{r}"}}
                        for r in trust.roles]
        out["roles_links"] = {"self": url + "/roles", "previous": None, "next": None}
    return out


def _trust_scope(s: Session, trust_id: str | None) -> dict[str, Any] | None:
    """What a trust-scoped token's body says of its trust."""
    trust = s.get(Trust, trust_id) if trust_id else None
    if trust is None:
        return None
    return {"id": trust.id, "impersonation": bool(trust.impersonation),
            "trustor_user": {"id": trust.trustor_user_id}, "trustee_user": {"id": trust.trustee_user_id}}


def token_body(request: Request, principal: Principal, methods: list[str],
               trust: dict[str, Any] | None = None) -> dict[str, Any]:
    base = _base(request)
    extra = {"OS-TRUST:trust": trust} if trust is not None else {}
    return {"token": {**extra,
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
        raise _refused("Only project and trust (OS-TRUST:trust) scopes are supported")
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
            if principal is not None and principal.trust_id is not None:
                # Keystone: a trust-scoped token cannot be rescoped, to a project or to another trust
                raise ApiError(403, "FORBIDDEN", "You are not authorized to perform the requested action: "
                                                 "rescoping a trust-scoped token.")
            user = s.get(User, principal.user_id) if principal else None
        else:
            raise _refused("Supported methods are password and token")
        if user is None:
            raise _refused()
        hours = ctx.deps.settings.token_hours
        trust_ref = scope.get("OS-TRUST:trust") if scope else None
        if trust_ref is not None:
            if not isinstance(trust_ref, dict) or not isinstance(trust_ref.get("id"), str) or not trust_ref["id"]:
                raise ApiError(400, "VALIDATION_ERROR", "Expecting to find id in OS-TRUST:trust.")
            try:
                token = builtin.issue_trust_token(s, user, trust_ref["id"], hours)
            except builtin.TrustRefused as e:
                raise ApiError(e.status, "FORBIDDEN" if e.status == 403 else "NOT_FOUND", e.message) from None
        else:
            token = builtin.issue_token(s, user, _scoped_project(s, scope, user), hours)
        principal = builtin.check_token(s, token)
        assert principal is not None
        trust = _trust_scope(s, principal.trust_id)
    body = token_body(ctx.request, principal, [m for m in methods if m in ("password", "token")], trust)
    return Reply(201, body, {"X-Subject-Token": token})


def _subject(ctx: Ctx) -> str:
    return ctx.request.headers.get("x-subject-token", "")


# Keystone's own policy (identity:validate_token, identity:revoke_token): the token's owner, an admin, a service.
SERVICE_ROLE = "service"


def _may_see(caller: Principal | None, subject: Principal) -> bool:
    return caller is not None and (caller.user_id == subject.user_id or caller.is_admin
                                   or SERVICE_ROLE in caller.roles)


def _owned_subject(ctx: Ctx, action: str) -> tuple[Principal, dict[str, Any] | None]:
    """The principal of the token in X-Subject-Token and what its body says of its trust, if the caller may see
    it (404: no such token, as Keystone)."""
    _not_here(ctx)
    with ctx.db.session() as s:
        subject = builtin.check_token(s, _subject(ctx))
        trust = _trust_scope(s, subject.trust_id) if subject is not None else None
    if subject is None:
        raise ApiError(404, "NOT_FOUND", "Could not find token")
    if not _may_see(ctx.principal, subject):
        raise ApiError(403, "FORBIDDEN", f"You are not authorized to perform the requested action: {action}.")
    return subject, trust


def _not_here(ctx: Ctx) -> None:
    """With Keystone as the identity backend, tokens are Keystone's: this shim neither issues nor checks any."""
    settings = ctx.deps.settings
    if settings.identity_backend == "keystone" and settings.keystone is not None:
        raise ApiError(404, "NOT_FOUND", "This service's identity is Keystone: authenticate at "
                                         f"{settings.keystone.www_authenticate_uri}")


def validate_token(ctx: Ctx) -> Reply | Response:
    """Validate the token in X-Subject-Token (HEAD: only whether it is valid); the token's owner, an admin or a
    service may"""
    subject, trust = _owned_subject(ctx, "identity:validate_token")
    headers = {"X-Subject-Token": _subject(ctx)}
    if ctx.request.method == "HEAD":
        return Response(status_code=200, headers=headers)
    return Reply(200, token_body(ctx.request, subject, ["token"], trust), headers)


def revoke_token(ctx: Ctx) -> Reply:
    """Revoke the token in X-Subject-Token; the token's owner, an admin or a service may"""
    _owned_subject(ctx, "identity:revoke_token")
    with ctx.db.session() as s:
        builtin.revoke_token(s, _subject(ctx))
    return Reply(204)


# --- trusts (OS-TRUST) ----------------------------------------------------------------------------------------


def _forbidden(action: str) -> ApiError:
    return ApiError(403, "FORBIDDEN", f"You are not authorized to perform the requested action: {action}")


def _refusal(e: builtin.TrustRefused) -> ApiError:
    return ApiError(e.status, {400: "VALIDATION_ERROR", 403: "FORBIDDEN"}.get(e.status, "NOT_FOUND"), e.message)


def _expiry(value: str | None) -> datetime | None:
    """An ISO 8601 time (Keystone's `2030-01-01T00:00:00.000000Z`), as the naive UTC the database keeps."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, "VALIDATION_ERROR", f"Invalid input for field 'expires_at': '{value[:64]}' is not an "
                                                "ISO 8601 time.") from None
    return when.astimezone(timezone.utc).replace(tzinfo=None) if when.tzinfo else when


def create_trust(ctx: Ctx) -> Reply:
    """Create a trust: the caller (the trustor) delegates roles on its token's project to the trustee"""
    data, caller = ctx.body["trust"], ctx.principal
    if data["trustor_user_id"] != caller.user_id:
        raise _forbidden("The authenticated user should match the trustor.")
    roles = [str(r.get("id") or r.get("name")) for r in data.get("roles") or []]
    with ctx.db.session() as s:
        try:
            trust = builtin.make_trust(s, caller, data["trustee_user_id"], data.get("project_id"), roles,
                                       data["impersonation"], _expiry(data.get("expires_at")))
        except builtin.TrustRefused as e:
            raise _refusal(e) from None
        return Reply(201, {"trust": trust_view(ctx.request, trust)})


def list_trusts(ctx: Ctx) -> Reply:
    """The trusts of a trustor or of a trustee (the caller's own; an admin's: anyone's, or all)"""
    ctx.check_params({"trustor_user_id", "trustee_user_id"})
    trustor, trustee = ctx.query.get("trustor_user_id"), ctx.query.get("trustee_user_id")
    caller = ctx.principal
    if not caller.is_admin:
        if trustor is None and trustee is None:
            raise _forbidden("identity:list_trusts.")
        if trustor is not None and trustor != caller.user_id:
            raise _forbidden("identity:list_trusts_for_trustor.")
        if trustee is not None and trustee != caller.user_id:
            raise _forbidden("identity:list_trusts_for_trustee.")
    with ctx.db.session() as s:
        rows = builtin.trusts_of(s, trustor, trustee)
        return Reply(200, {"trusts": [trust_view(ctx.request, t, with_roles=False) for t in rows],
                           "links": {"self": f"{_base(ctx.request)}/v3/OS-TRUST/trusts", "previous": None,
                                     "next": None}})


def _visible_trust(s: Session, ctx: Ctx) -> Trust:
    trust_id = ctx.path["trust_id"]
    trust = s.get(Trust, trust_id)
    if trust is None or (trust.expires_at is not None and trust.expires_at <= utcnow()):
        raise ApiError(404, "NOT_FOUND", f"Could not find trust: {trust_id}.")
    return trust


def show_trust(ctx: Ctx) -> Reply:
    """A trust, to its trustor, its trustee or an admin"""
    with ctx.db.session() as s:
        trust = _visible_trust(s, ctx)
        if not ctx.principal.is_admin and ctx.principal.user_id not in (trust.trustor_user_id, trust.trustee_user_id):
            raise _forbidden("Requested user has no relation to this trust")
        return Reply(200, {"trust": trust_view(ctx.request, trust)})


def delete_trust(ctx: Ctx) -> Reply:
    """Delete a trust (its trustor or an admin); the tokens scoped to it stop working at once"""
    with ctx.db.session() as s:
        trust = _visible_trust(s, ctx)
        if not ctx.principal.is_admin and ctx.principal.user_id != trust.trustor_user_id:
            raise _forbidden("Only admin or trustor can delete a trust")
        builtin.delete_trust(s, trust.id)
    return Reply(204)


# --- the trusts oasis makes for work that outlives the request's token -------------------------------------


def trust_for_work(ctx: Ctx) -> str:
    """A trust from the caller to oasis's service user (the caller's roles on its project, impersonating it), made
    with the request's own token, for work the engine may do after that token expired. A refusal is the caller's
    4xx (the identity's status where it gives one, else 403), with the identity's reason."""
    token = ctx.request.headers.get("x-auth-token", "")
    try:
        return ctx.deps.identity.create_trust(token, ctx.principal)
    except IdentityError as e:
        status = getattr(e, "status", 403)
        raise ApiError(status if 400 <= status < 600 else 403, "TRUST_REFUSED",
                       f"oasis could not get a trust from you for work that outlives your token: {e}") from None


@contextmanager
def trusts_undone_on_failure(ctx: Ctx) -> Iterator[list[str]]:
    """The list a request adds the ids of the trusts it makes to; if the request then fails, they are deleted
    again, so nothing is left behind that no row knows about."""
    made: list[str] = []
    try:
        yield made
    except BaseException:
        for trust_id in made:
            try:
                ctx.deps.identity.delete_trust(trust_id)
            except IdentityError as e:  # the request's own error matters more; this trust then expires unused
                log.warning("could not delete the unused trust %s: %s", trust_id, e)
        raise


def proxy_for_job(ctx: Ctx, job_id: str) -> dict[str, Any]:
    """The job's proxy user, with a trust from the caller limited to the job (oasis.identity.proxy), made with
    the request's own token; a refusal is the caller's 403 with the identity's reason."""
    assert ctx.deps.proxy_users is not None
    try:
        return ctx.deps.proxy_users.make(job_id, ctx.request.headers.get("x-auth-token", ""), ctx.principal)
    except IdentityError as e:
        raise ApiError(403, "TRUST_REFUSED", f"oasis could not make the job's proxy user: {e}") from None


@contextmanager
def proxies_undone_on_failure(ctx: Ctx) -> Iterator[list[dict[str, Any]]]:
    """As `trusts_undone_on_failure`, for proxy users: a request that fails removes the ones it made (a crash in
    between leaves them to the engines' periodic clean-up)."""
    made: list[dict[str, Any]] = []
    try:
        yield made
    except BaseException:
        for record in made:
            try:
                assert ctx.deps.proxy_users is not None
                ctx.deps.proxy_users.remove(record)
            except IdentityError as e:
                log.warning("could not remove the unused proxy user %s: %s", record.get("name"), e)
        raise


def register(routes: Routes) -> None:
    routes.add("GET", "", identity_version, "identity:version", versions=V3, auth="public", returns="version")
    routes.add("POST", "/auth/tokens", issue_token, "identity:token-issue", versions=V3, auth="public", body="any",
               schema=TOKEN_REQUEST, invalid_status=401, status=201, returns="token")
    routes.add("GET", "/auth/tokens", validate_token, "identity:token-validate", versions=V3, returns="token",
               headers=("X-Subject-Token",))
    routes.add("DELETE", "/auth/tokens", revoke_token, "identity:token-revoke", versions=V3,
               headers=("X-Subject-Token",))
    routes.add("POST", "/OS-TRUST/trusts", create_trust, "identity:trust-create", versions=V3, schema=TRUST_CREATE,
               status=201, returns="trust", errors=(403, 404))
    routes.add("GET", "/OS-TRUST/trusts", list_trusts, "identity:trust-list", versions=V3, returns="trusts[]",
               errors=(403,))
    routes.add("GET", "/OS-TRUST/trusts/{trust_id}", show_trust, "identity:trust-get", versions=V3,
               returns="trust", errors=(403, 404))
    routes.add("DELETE", "/OS-TRUST/trusts/{trust_id}", delete_trust, "identity:trust-delete", versions=V3,
               errors=(403, 404))
