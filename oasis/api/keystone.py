"""A Keystone v3 shim over the builtin identity backend: enough for keystoneauth1 (password and token methods),
python-saharaclient and `openstack dataprocessing …` to authenticate and find the data-processing endpoint."""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from oasis.api.routing import Deps
from oasis.api.views import ts
from oasis.db.models import Project, User, utcnow
from oasis.identity import builtin
from oasis.identity.principal import Principal

DOMAIN = {"id": "default", "name": "Default"}
REGION = "RegionOne"


class Unauthorized(Exception):
    pass


def _error(status: int, title: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": status, "title": title, "message": message}}, status_code=status)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def version_document(request: Request) -> dict[str, Any]:
    return {"version": {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
                        "links": [{"rel": "self", "href": f"{_base(request)}/v3/"}],
                        "media-types": [{"base": "application/json",
                                         "type": "application/vnd.openstack.identity-v3+json"}]}}


async def identity_version(request: Request) -> Response:
    return JSONResponse(version_document(request))


def _endpoints(service_id: str, url: str) -> list[dict[str, Any]]:
    return [{"id": f"{service_id}-{interface}", "interface": interface, "region": REGION, "region_id": REGION,
             "url": url} for interface in ("public", "internal", "admin")]


def token_body(request: Request, principal: Principal, methods: list[str]) -> dict[str, Any]:
    base = _base(request)
    return {"token": {
        "methods": methods,
        "expires_at": f"{ts(principal.expires_at)}.000000Z",
        "issued_at": f"{ts(principal.issued_at or utcnow())}.000000Z",
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


def _project(s, scope: dict[str, Any] | None, user: User) -> Project:
    """The project a token is for: the scope's (by id, or by name), or the user's only one when unscoped."""
    if scope:
        ref = scope.get("project")
        if not isinstance(ref, dict):
            raise Unauthorized("Only project scope is supported")
        if ref.get("id"):
            project = s.get(Project, str(ref["id"]))
        else:
            project = s.scalars(select(Project).where(Project.name == str(ref.get("name")))).first()
        if project is None or not builtin.roles_of(s, user.id, project.id):
            raise Unauthorized("The user has no role on the requested project")
        return project
    projects = [p for p in s.scalars(select(Project).order_by(Project.name)) if builtin.roles_of(s, user.id, p.id)]
    if not projects:
        raise Unauthorized("The user has no role on any project")
    return projects[0]


def _issue(deps: Deps, body: dict[str, Any]) -> tuple[str, Principal, list[str]]:
    auth = body.get("auth") if isinstance(body, dict) else None
    if not isinstance(auth, dict) or not isinstance(auth.get("identity"), dict):
        raise Unauthorized("Expecting auth.identity in the request body")
    identity = auth["identity"]
    methods = identity.get("methods") or []
    scope = auth.get("scope") if isinstance(auth.get("scope"), dict) else None
    with deps.db.session() as s:
        if "password" in methods:
            user_ref = (identity.get("password") or {}).get("user") or {}
            password = user_ref.get("password")
            if not isinstance(password, str) or not (user_ref.get("name") or user_ref.get("id")):
                raise Unauthorized("The request you have made requires authentication.")
            user = builtin.authenticate(s, user_ref.get("name"), user_ref.get("id"), password)
        elif "token" in methods:
            principal = builtin.check_token(s, str((identity.get("token") or {}).get("id") or ""))
            user = s.get(User, principal.user_id) if principal else None
        else:
            raise Unauthorized("Supported methods are password and token")
        if user is None:
            raise Unauthorized("The request you have made requires authentication.")
        project = _project(s, scope, user)
        token = builtin.issue_token(s, user, project, deps.settings.token_hours)
        principal = builtin.check_token(s, token)
    assert principal is not None
    return token, principal, [m for m in methods if m in ("password", "token")]


def routes(deps: Deps) -> list[Route]:
    async def create_token(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _error(400, "Bad Request", "Malformed request body")
        try:
            token, principal, methods = await run_in_threadpool(_issue, deps, body)
        except Unauthorized as e:
            return _error(401, "Unauthorized", str(e))
        response = JSONResponse(token_body(request, principal, methods), status_code=201)
        response.headers["X-Subject-Token"] = token
        return response

    def _check(request: Request) -> tuple[Principal | None, Principal | None]:
        with deps.db.session() as s:
            return (builtin.check_token(s, request.headers.get("x-auth-token", "")),
                    builtin.check_token(s, request.headers.get("x-subject-token", "")))

    async def validate_token(request: Request) -> Response:
        caller, subject = await run_in_threadpool(_check, request)
        if caller is None:
            return _error(401, "Unauthorized", "The request you have made requires authentication.")
        if subject is None:
            return _error(404, "Not Found", "Could not find token")
        if request.method == "HEAD":
            return Response(status_code=200, headers={"X-Subject-Token": request.headers["x-subject-token"]})
        response = JSONResponse(token_body(request, subject, ["token"]))
        response.headers["X-Subject-Token"] = request.headers["x-subject-token"]
        return response

    def _revoke(request: Request) -> bool:
        with deps.db.session() as s:
            if builtin.check_token(s, request.headers.get("x-auth-token", "")) is None:
                return False
            builtin.revoke_token(s, request.headers.get("x-subject-token", ""))
            return True

    async def revoke_token(request: Request) -> Response:
        if not await run_in_threadpool(_revoke, request):
            return _error(401, "Unauthorized", "The request you have made requires authentication.")
        return Response(status_code=204)

    return [
        Route("/v3", identity_version, methods=["GET"]),
        Route("/v3/", identity_version, methods=["GET"]),
        Route("/v3/auth/tokens", create_token, methods=["POST"]),
        Route("/v3/auth/tokens", validate_token, methods=["GET", "HEAD"]),
        Route("/v3/auth/tokens", revoke_token, methods=["DELETE"]),
    ]
