"""A Keystone v3 shim over the builtin identity backend: enough for keystoneauth1 (password and token methods),
python-saharaclient and `openstack dataprocessing …` to authenticate and find the data-processing endpoint."""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
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


def _mapping(value: Any) -> dict[str, Any]:
    """A part of the request that must be an object (absent: empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Unauthorized("Malformed authentication request")
    return value


def _issue(deps: Deps, body: dict[str, Any]) -> tuple[str, Principal, list[str]]:
    auth = body.get("auth") if isinstance(body, dict) else None
    if not isinstance(auth, dict) or not isinstance(auth.get("identity"), dict):
        raise Unauthorized("Expecting auth.identity in the request body")
    identity = auth["identity"]
    methods = identity.get("methods") or []
    if not isinstance(methods, list):
        raise Unauthorized("auth.identity.methods must be a list")
    scope = auth.get("scope") if isinstance(auth.get("scope"), dict) else None
    with deps.db.session() as s:
        if "password" in methods:
            user_ref = _mapping(_mapping(identity.get("password")).get("user"))
            password = user_ref.get("password")
            names = [user_ref.get(k) for k in ("name", "id") if user_ref.get(k) is not None]
            if not isinstance(password, str) or not names or not all(isinstance(n, str) for n in names):
                raise Unauthorized("The request you have made requires authentication.")
            user = builtin.authenticate(s, user_ref.get("name"), user_ref.get("id"), password)
        elif "token" in methods:
            principal = builtin.check_token(s, str(_mapping(identity.get("token")).get("id") or ""))
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
        *admin_routes(deps),
    ]


# --- identity administration (admin only): what `oasis project create` / `oasis user create` need -------------
# Keystone v3's own calls and shapes, so `openstack project create` and `openstack user create` work as well.

_NAME = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$"}
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


class _Denied(Exception):
    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def admin_routes(deps: Deps) -> list[Route]:
    import jsonschema

    def _admin(s, request: Request) -> Principal:  # noqa: ANN001
        principal = builtin.check_token(s, request.headers.get("x-auth-token", ""))
        if principal is None:
            raise _Denied(401, "Unauthorized", "The request you have made requires authentication.")
        if not principal.is_admin:
            raise _Denied(403, "Forbidden", "You are not authorized to perform the requested action: identity "
                                            "administration requires the admin role.")
        return principal

    async def _body(request: Request, schema: dict) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            raise _Denied(400, "Bad Request", "Malformed request body") from None
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(body), key=lambda e: list(e.path))
        if errors:
            raise _Denied(400, "Bad Request", f"Invalid input for field '{'/'.join(map(str, errors[0].path))}': "
                                              f"{errors[0].message}")
        return body

    def handler(fn, schema: dict | None = None, status: int = 200):  # noqa: ANN001, ANN202
        async def endpoint(request: Request) -> Response:
            try:
                body = await _body(request, schema) if schema is not None else None

                def run() -> Any:
                    with deps.db.session() as s:
                        _admin(s, request)
                        return fn(s, request, body)

                result = await run_in_threadpool(run)
            except _Denied as e:
                return _error(e.status, e.title, e.message)
            except IntegrityError:  # two creates of one name raced past the check: Keystone's answer to the second
                return _error(409, "Conflict", "Conflict occurred attempting to store the entity - Duplicate entry.")
            if status == 204:
                return Response(status_code=204)
            return JSONResponse(result, status_code=status)
        endpoint.__name__ = fn.__name__
        return endpoint

    def _find(s, model, ref: str, kind: str):  # noqa: ANN001, ANN202
        row = s.get(model, ref) or s.scalars(select(model).where(model.name == ref)).first()
        if row is None:
            raise _Denied(404, "Not Found", f"Could not find {kind}: {ref}.")
        return row

    def list_projects(s, request, body):  # noqa: ANN001, ANN202
        stmt = select(Project).order_by(Project.name)
        if request.query_params.get("name"):
            stmt = stmt.where(Project.name == request.query_params["name"])
        return {"projects": [_project_view(p) for p in s.scalars(stmt)], "links": {}}

    def create_project(s, request, body):  # noqa: ANN001, ANN202
        name = body["project"]["name"]
        if s.scalars(select(Project).where(Project.name == name)).first() is not None:
            raise _Denied(409, "Conflict", f"Conflict occurred attempting to store project - Duplicate entry "
                                           f"found with name {name}.")
        return {"project": _project_view(builtin.ensure_project(s, name))}

    def show_project(s, request, body):  # noqa: ANN001, ANN202
        return {"project": _project_view(_find(s, Project, request.path_params["project_id"], "project"))}

    def list_users(s, request, body):  # noqa: ANN001, ANN202
        stmt = select(User).order_by(User.name)
        if request.query_params.get("name"):
            stmt = stmt.where(User.name == request.query_params["name"])
        return {"users": [_user_view(u) for u in s.scalars(stmt)], "links": {}}

    def create_user(s, request, body):  # noqa: ANN001, ANN202
        ref = body["user"]
        if s.scalars(select(User).where(User.name == ref["name"])).first() is not None:
            raise _Denied(409, "Conflict", f"Conflict occurred attempting to store user - Duplicate entry found "
                                           f"with name {ref['name']}.")
        project = None
        if ref.get("default_project_id"):
            project = _find(s, Project, ref["default_project_id"], "project")
        user = builtin.ensure_user(s, ref["name"], ref.get("password"))
        if project is not None:  # Keystone would not; a user of a project is what `oasis user create` wants
            builtin.assign_role(s, user, project, "member")
        return {"user": _user_view(user, project.id if project else None)}

    def show_user(s, request, body):  # noqa: ANN001, ANN202
        return {"user": _user_view(_find(s, User, request.path_params["user_id"], "user"))}

    def update_user(s, request, body):  # noqa: ANN001, ANN202
        user = _find(s, User, request.path_params["user_id"], "user")
        if body["user"].get("password"):
            user.password_hash = builtin.hash_password(body["user"]["password"])
        return {"user": _user_view(user)}

    def delete_user(s, request, body):  # noqa: ANN001, ANN202
        from sqlalchemy import delete

        from oasis.db.models import RoleAssignment, Token

        user = _find(s, User, request.path_params["user_id"], "user")
        s.execute(delete(Token).where(Token.user_id == user.id))
        s.execute(delete(RoleAssignment).where(RoleAssignment.user_id == user.id))
        s.delete(user)

    def list_roles(s, request, body):  # noqa: ANN001, ANN202
        from oasis.identity.policy import ROLES

        return {"roles": [{"id": r, "name": r, "domain_id": None, "links": {}} for r in ROLES], "links": {}}

    def _assignment(s, request):  # noqa: ANN001, ANN202
        from oasis.identity.policy import ROLES

        project = _find(s, Project, request.path_params["project_id"], "project")
        user = _find(s, User, request.path_params["user_id"], "user")
        role = request.path_params["role_id"]
        if role not in ROLES:
            raise _Denied(404, "Not Found", f"Could not find role: {role}.")
        return project, user, role

    def grant(s, request, body):  # noqa: ANN001, ANN202
        project, user, role = _assignment(s, request)
        builtin.assign_role(s, user, project, role)

    def check_grant(s, request, body):  # noqa: ANN001, ANN202
        project, user, role = _assignment(s, request)
        if role not in builtin.roles_of(s, user.id, project.id):
            raise _Denied(404, "Not Found", f"Could not find role assignment: {role}.")

    def revoke(s, request, body):  # noqa: ANN001, ANN202
        project, user, role = _assignment(s, request)
        if not builtin.unassign_role(s, user, project, role):
            raise _Denied(404, "Not Found", f"Could not find role assignment: {role}.")

    def list_user_roles(s, request, body):  # noqa: ANN001, ANN202
        project = _find(s, Project, request.path_params["project_id"], "project")
        user = _find(s, User, request.path_params["user_id"], "user")
        return {"roles": [{"id": r, "name": r} for r in builtin.roles_of(s, user.id, project.id)], "links": {}}

    grant_path = "/v3/projects/{project_id}/users/{user_id}/roles/{role_id}"
    return [
        Route("/v3/projects", handler(list_projects), methods=["GET"]),
        Route("/v3/projects", handler(create_project, PROJECT_CREATE, 201), methods=["POST"]),
        Route("/v3/projects/{project_id}", handler(show_project), methods=["GET"]),
        Route("/v3/users", handler(list_users), methods=["GET"]),
        Route("/v3/users", handler(create_user, USER_CREATE, 201), methods=["POST"]),
        Route("/v3/users/{user_id}", handler(show_user), methods=["GET"]),
        Route("/v3/users/{user_id}", handler(update_user, USER_UPDATE), methods=["PATCH"]),
        Route("/v3/users/{user_id}", handler(delete_user, None, 204), methods=["DELETE"]),
        Route("/v3/roles", handler(list_roles), methods=["GET"]),
        Route("/v3/projects/{project_id}/users/{user_id}/roles", handler(list_user_roles), methods=["GET"]),
        Route(grant_path, handler(grant, None, 204), methods=["PUT"]),
        Route(grant_path, handler(check_grant, None, 204), methods=["HEAD"]),
        Route(grant_path, handler(revoke, None, 204), methods=["DELETE"]),
    ]


def openapi_paths() -> dict[str, Any]:
    """The identity administration calls, for the OpenAPI document."""
    err = {"content": {"application/json": {"schema": {"type": "object", "required": ["error"]}}}}
    errors = {str(c): {"description": d, **err} for c, d in ((400, "Bad request"), (401, "Unauthorized"),
                                                              (403, "Admin only"), (404, "Not found"),
                                                              (409, "Name taken"))}

    def op(op_id: str, summary: str, status: int, key: str | None, params: tuple[str, ...] = (),
           body: dict | None = None) -> dict[str, Any]:
        ok: dict[str, Any] = {"description": "Done"}
        if key:
            ok["content"] = {"application/json": {"schema": {"type": "object", "required": [key]}}}
        out: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": ["identity admin"],
                               "parameters": [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                                              for p in params],
                               "responses": {str(status): ok, **errors}}
        if body is not None:
            out["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        return out

    grant = "/v3/projects/{project_id}/users/{user_id}/roles/{role_id}"
    ids = ("project_id", "user_id", "role_id")
    return {
        "/v3/projects": {"get": op("identity:project-list", "List projects", 200, "projects"),
                         "post": op("identity:project-create", "Create a project", 201, "project",
                                    body=PROJECT_CREATE)},
        "/v3/projects/{project_id}": {"get": op("identity:project-get", "Show a project", 200, "project",
                                                ("project_id",))},
        "/v3/users": {"get": op("identity:user-list", "List users", 200, "users"),
                      "post": op("identity:user-create", "Create a user (with default_project_id: a member of it)",
                                 201, "user", body=USER_CREATE)},
        "/v3/users/{user_id}": {"get": op("identity:user-get", "Show a user", 200, "user", ("user_id",)),
                                "patch": op("identity:user-update", "Change a user's password", 200, "user",
                                            ("user_id",), USER_UPDATE),
                                "delete": op("identity:user-delete", "Delete a user", 204, None, ("user_id",))},
        "/v3/roles": {"get": op("identity:role-list", "List roles", 200, "roles")},
        "/v3/projects/{project_id}/users/{user_id}/roles": {
            "get": op("identity:user-roles", "A user's roles on a project", 200, "roles", ("project_id", "user_id"))},
        grant: {"put": op("identity:grant", "Give a user a role on a project", 204, None, ids),
                "delete": op("identity:revoke", "Take a role away", 204, None, ids)},
    }
