"""How an endpoint is served. One table of operations (RouteSpec) holds every route of the server: Sahara's (v2,
v1.1, v1.0 and the version list at /), Keystone's identity subset (v3) and the site join; the OpenAPI document is
generated from the same table (oasis.api.openapi). Sahara's routes are registered as Sahara registers them (with
and without the `/{project_id}` segment after the version, and with a `.json` suffix). One wrapper does for every
request what Sahara's middleware and decorators do: microversion header, authentication, project check, policy,
body parsing and JSON-schema validation, then runs the (synchronous) handler in a thread and renders errors in
the envelope of the route's API (Sahara's, or Keystone's for /v3), a database conflict and a bug included."""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from oasis import logconfig
from oasis.api.errors import INTERNAL, ApiError, bad, duplicate_entry, keystone_conflict, render, render_keystone
from oasis.api.views import for_version
from oasis.config import Settings
from oasis.db.session import Database
from oasis.identity import policy
from oasis.identity.base import Identity, IdentityError
from oasis.identity.proxy import ProxyUsers
from oasis.identity.policy import Forbidden
from oasis.identity.principal import Principal
from oasis.storage.base import ObjectStore

log = logging.getLogger("oasis.api")

MICROVERSION = "2.0"  # the only v2 microversion, as in Sahara
_VERSION_RE = re.compile(r"\d+\.\d+")


@dataclass
class Deps:
    settings: Settings
    db: Database
    store: ObjectStore
    identity: Identity
    notify: Callable[[], None] | None = None
    proxy_users: ProxyUsers | None = None  # where `[proxy] domain` is set (oasis.identity.proxy)


@dataclass
class Ctx:
    """What a handler gets: the caller, the request's path ids (without the project), query and body."""

    deps: Deps
    request: Request
    principal: Principal | None  # None on a route that takes no Keystone token (auth "public" or "join_token")
    version: str  # "v2", "v1.1", "v1.0", "v3", or "" (the version list at /)
    path: dict[str, str]
    query: QueryParams
    body: Any = None

    @property
    def db(self) -> Database:
        return self.deps.db

    @property
    def store(self) -> ObjectStore:
        return self.deps.store

    def notify(self) -> None:
        """Wake an in-process engine after a write that set `op`; other engines poll the database."""
        if self.deps.notify is not None:
            try:
                self.deps.notify()
            except Exception:  # the row is written; a failed wake-up only delays the engine's next poll
                log.exception("engine notify failed")

    def check_params(self, allowed: set[str] | frozenset[str]) -> None:
        """Sahara v2 whitelists query parameters per request."""
        unknown = sorted(set(self.query.keys()) - set(allowed))
        if unknown:
            raise bad("INVALID_PARAMS_ON_REQUEST",
                      f"The only valid params for this request are: {', '.join(sorted(allowed)) or 'none'} "
                      f"(got: {', '.join(unknown)})")


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Ctx], "Reply | Response"]


# JSON Schema counts 1.0 as an integer; Python code that gets one fails later (`range(1.0)`), so an integer is an
# int here, and never a bool (json gives `true` as True, an int to Python).
_STRICT_TYPES = jsonschema.Draft7Validator.TYPE_CHECKER.redefine(
    "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool))
StrictValidator = jsonschema.validators.extend(jsonschema.Draft7Validator, type_checker=_STRICT_TYPES)


def schema_errors(schema: dict, data: Any) -> str | None:
    """All JSON-schema failures as Sahara prints them: `path[idx]: message`, one per line."""
    validator = StrictValidator(schema)
    lines = []
    for err in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        path = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
                       for i, p in enumerate(err.absolute_path))
        lines.append(f"{path}: {err.message}" if path else err.message)
    return "\n".join(lines) or None


def validate(schema: dict, data: Any) -> None:
    problems = schema_errors(schema, data)
    if problems:
        raise bad("VALIDATION_ERROR", problems)


def _microversion(request: Request) -> str:
    """`OpenStack-API-Version: data-processing 2.0`; absent means 2.0 and `latest` the newest."""
    header = request.headers.get("openstack-api-version")
    if not header:
        return MICROVERSION
    for part in header.split(","):
        service, _, value = part.strip().partition(" ")
        if service.lower() != "data-processing":
            continue
        value = value.strip()
        if value.lower() == "latest":
            return MICROVERSION
        if not _VERSION_RE.fullmatch(value):
            raise ApiError(400, "BAD_REQUEST", f"API Version String '{value}' is of invalid format. It must be "
                                               "of format 'major.minor'.")
        major, minor = (int(x) for x in value.split("."))
        if f"{major}.{minor}" != MICROVERSION:
            raise ApiError(406, "NOT_ACCEPTABLE", f"Version {value} is not supported by the API. Minimum is "
                                                  f"{MICROVERSION} and maximum is {MICROVERSION}.",
                           {"min_version": MICROVERSION, "max_version": MICROVERSION})
        return MICROVERSION
    return MICROVERSION


# How a route is authenticated, and the header that carries its credential:
#   "token"       a Keystone token (X-Auth-Token), checked here; then the project check and the policy
#   "public"      nothing (the version documents; issuing a token, whose body carries the credentials)
#   "join_token"  a bundle's join token (X-Oasis-Join-Token): required here, checked by the handler against the
#                 bundle version its body names; never logged (it is in a header, not in the path or the body)
AUTH_HEADERS = {"token": "X-Auth-Token", "public": None, "join_token": "X-Oasis-Join-Token"}


def _authenticate(deps: Deps, request: Request) -> Principal:
    token = request.headers.get("x-auth-token", "")
    if not token:
        raise ApiError(401, "UNAUTHORIZED", "Authentication required: send a token in X-Auth-Token")
    try:
        principal = deps.identity.authenticate_token(token)
    except IdentityError as e:  # Keystone down: not the caller's fault, and not a reason to refuse its token
        raise ApiError(503, "SERVICE_UNAVAILABLE", str(e)) from None
    if principal is None:
        raise ApiError(401, "UNAUTHORIZED", "The token is invalid or has expired")
    return principal


def www_authenticate(settings: Settings) -> str:
    """Where a client without a valid token should get one, as keystonemiddleware (so Sahara) tells it."""
    uri = settings.keystone.www_authenticate_uri if settings.keystone else ""
    return f'Keystone uri="{uri}"'


def _require_join_token(request: Request) -> None:
    header = AUTH_HEADERS["join_token"]
    if not request.headers.get(header):
        raise ApiError(401, "UNAUTHORIZED", f"Joining a site requires the bundle's join token in {header}")


# No request of any API nests deeper than a cluster template's node group configs (about 6 levels): a deeper body
# is refused before the schema validation, the handlers or the database recurse into it.
MAX_JSON_DEPTH = 32


def json_depth_exceeds(data: Any, limit: int) -> bool:
    """Whether `data` nests more than `limit` arrays and objects deep; iterative, so any depth is measured."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def parse_json(raw: bytes, optional: bool, objects_only: bool = True) -> Any:
    if not raw.strip():
        return {} if optional else None
    try:
        data = json.loads(raw)
    except RecursionError:  # the parser's own limit (about 1,000 levels) met first
        raise bad("MALFORMED_REQUEST_BODY", f"Malformed message body: nested more than {MAX_JSON_DEPTH} levels "
                                            f"deep") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise bad("MALFORMED_REQUEST_BODY", f"Malformed message body: {e}") from None
    if json_depth_exceeds(data, MAX_JSON_DEPTH):
        raise bad("MALFORMED_REQUEST_BODY", f"Malformed message body: nested more than {MAX_JSON_DEPTH} levels deep")
    if objects_only and not isinstance(data, dict):
        raise bad("MALFORMED_REQUEST_BODY", "Malformed message body: the body must be a JSON object")
    return data


async def read_limited(request: Request, limit: int) -> bytes:
    """The raw body, refusing early (413-free, Sahara answers 400) once it exceeds the limit."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise bad("DATA_TOO_BIG", f"Size of data ({declared}) is greater than maximum ({limit})")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise bad("DATA_TOO_BIG", f"Size of data (more than {limit}) is greater than maximum ({limit})")
        chunks.append(chunk)
    return b"".join(chunks)


V1 = ("v1.0", "v1.1")
# v1.x request fields spelled the v2 way before validation (v2 names are used everywhere inside oasis).
_V1_REQUEST_RENAMES = {"hadoop_version": "plugin_version"}
_DEFAULT_STATUS = {"GET": 200, "HEAD": 200, "POST": 202, "PUT": 202, "PATCH": 202, "DELETE": 204}


@dataclass(frozen=True)
class Dialect:
    """What differs between the two APIs in the one table: how errors look, what a database conflict answers,
    and whether paths get Sahara's `/{project_id}` segment and `.json` suffix."""

    render: Callable[[ApiError, dict[str, str]], Response]
    conflict: Callable[[IntegrityError, object], ApiError]
    sahara_paths: bool


SAHARA = Dialect(render, duplicate_entry, sahara_paths=True)
KEYSTONE = Dialect(render_keystone, keystone_conflict, sahara_paths=False)


def dialect(version: str) -> Dialect:
    return KEYSTONE if version == "v3" else SAHARA


@dataclass
class RouteSpec:
    """One API operation; kept so that the OpenAPI document can be generated from the same table."""

    method: str
    path: str  # after the version: "/clusters/{id}"; "" is the version's own document
    handler: Handler
    action: str
    versions: tuple[str, ...]  # () : served at `path` itself, under no version (the version list at /)
    body: str  # "none", "json" (an object; empty → {}), "any" (any JSON value; empty → {}), "raw"
    schema: dict | Callable[[], dict] | None
    json_suffix: bool
    max_body: int
    status: int = 200
    # The response envelope: "cluster" is {"cluster": {...}}, "clusters[]" a page of them; None: see `media`.
    returns: str | None = None
    # Top-level keys of the (v2-shaped) response renamed for v1.x: {"job_template": "job"}.
    envelope: dict[str, str] = field(default_factory=dict)
    media: str = "application/json"
    summary: str = ""
    extra_status: tuple[int, ...] = ()
    auth: str = "token"  # see AUTH_HEADERS
    # The status of a body its schema refuses (Keystone's token issue answers 401 to an auth document it cannot use).
    invalid_status: int = 400
    errors: tuple[int, ...] = ()  # error statuses beyond the usual ones, for the OpenAPI document
    headers: tuple[str, ...] = ()  # request headers the handler reads (besides the credential), for the document

    def path_in(self, version: str) -> str:
        """The operation's path under one of its versions, as the OpenAPI document lists it."""
        return f"/{version}{self.path}" if version else self.path


class Routes:
    MAX_JSON_BODY = 16 * 1024 * 1024

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.specs: list[RouteSpec] = []
        # Built once per process and policy file; a file that cannot be used fails here, at start (PolicyError).
        self.policy = policy.load(deps.settings.policy_file)

    def add(self, method: str, path: str, handler: Handler, action: str, *, versions: tuple[str, ...] = ("v2",),
            body: str = "none", schema: dict | Callable[[], dict] | None = None, json_suffix: bool = True,
            max_body: int | None = None, status: int | None = None, returns: str | None = None,
            envelope: dict[str, str] | None = None, media: str = "application/json", summary: str = "",
            extra_status: tuple[int, ...] = (), auth: str = "token", invalid_status: int = 400,
            errors: tuple[int, ...] = (), headers: tuple[str, ...] = ()) -> None:
        if auth not in AUTH_HEADERS:
            raise ValueError(f"{method} {path}: unknown auth {auth!r}")
        if body == "none" and method in ("POST", "PUT", "PATCH"):
            body = "json"
        self.specs.append(RouteSpec(method, path, handler, action, versions, body, schema, json_suffix,
                                    max_body or self.MAX_JSON_BODY, status or _DEFAULT_STATUS[method], returns,
                                    envelope or {}, media, summary or handler.__doc__ or "", extra_status, auth,
                                    invalid_status, errors, headers))

    def starlette_routes(self) -> list[Route]:
        missing = self.policy.missing([(spec.action, version, spec.path) for spec in self.specs
                                       if spec.auth == "token" for version in spec.versions])
        if missing:  # a route added without a rule in oasis.identity.rules
            raise ValueError(f"routes without a policy rule: {', '.join(missing)}")
        # `.json` variants first: a plain `{id}` parameter would otherwise swallow "x.json".
        suffixed, plain = [], []
        for spec in self.specs:
            for version in spec.versions or ("",):
                sahara = dialect(version).sahara_paths
                path = spec.path_in(version)
                plain.append(Route(path, self._endpoint(spec, version, False), methods=[spec.method]))
                if spec.path == "":  # a version's own document answers with and without the trailing slash
                    plain.append(Route(f"{path}/", self._endpoint(spec, version, False), methods=[spec.method]))
                if sahara and spec.json_suffix:
                    suffixed.append(Route(f"{path}.json", self._endpoint(spec, version, False),
                                          methods=[spec.method]))
                # The project segment is checked against the token's project: only token routes have one.
                if sahara and version and spec.auth == "token":
                    with_project = f"/{version}/{{project_id}}{spec.path}"
                    plain.append(Route(with_project, self._endpoint(spec, version, True), methods=[spec.method]))
                    if spec.json_suffix:
                        suffixed.append(Route(f"{with_project}.json", self._endpoint(spec, version, True),
                                              methods=[spec.method]))
        return suffixed + plain

    def _endpoint(self, spec: RouteSpec, version: str, project_segment: bool) -> Callable[[Request], Any]:
        deps = self.deps
        api = dialect(version)

        async def endpoint(request: Request) -> Response:
            headers = {}
            if version == "v2":
                headers = {"OpenStack-API-Version": f"data-processing {MICROVERSION}", "Vary": "OpenStack-API-Version"}
            body: Any = None
            params: dict[str, str] = {}
            try:
                if version == "v2":
                    _microversion(request)
                principal = None
                if spec.auth == "token":
                    principal = await run_in_threadpool(_authenticate, deps, request)
                elif spec.auth == "join_token":
                    _require_join_token(request)
                params = dict(request.path_params)
                logconfig.add(**_context_ids(spec.path, params))  # the row the request is about, for its lines
                if project_segment:
                    project = params.pop("project_id")
                    if project != principal.project_id and not principal.is_admin:
                        raise ApiError(401, "UNAUTHORIZED", "The project in the URL is not the token's project")
                if principal is not None:
                    try:
                        self.policy.authorize(principal, spec.action, version, spec.path)
                    except Forbidden as e:
                        raise ApiError(403, "FORBIDDEN", str(e)) from None
                if spec.body == "raw":
                    body = await read_limited(request, spec.max_body)
                elif spec.body in ("json", "any") or spec.method == "DELETE":
                    raw = await read_limited(request, spec.max_body)
                    body = parse_json(raw, optional=True, objects_only=spec.body != "any")
                if version in V1 and isinstance(body, dict):
                    body = {_V1_REQUEST_RENAMES.get(k, k): v for k, v in body.items()}
                if spec.schema is not None:
                    problems = schema_errors(spec.schema() if callable(spec.schema) else spec.schema, body)
                    if problems:
                        raise ApiError(spec.invalid_status, "VALIDATION_ERROR", problems)
                ctx = Ctx(deps, request, principal, version, params, request.query_params, body)
                result = await run_in_threadpool(spec.handler, ctx)
            except ApiError as e:
                if e.status == 401 and spec.auth == "token" and deps.settings.identity_backend == "keystone":
                    headers = {**headers, "WWW-Authenticate": www_authenticate(deps.settings)}
                return api.render(e, headers)
            except IntegrityError as e:
                log.info("integrity error on %s %s", request.method, request.url.path)
                name = body.get("name") if isinstance(body, dict) else None
                return api.render(api.conflict(e, name or params.get("name")), headers)
            except Exception:  # the path and method only: a credential is never in either
                log.exception("unhandled error on %s %s", request.method, request.url.path)
                return api.render(INTERNAL, headers)
            if version in V1 and isinstance(result, Reply) and isinstance(result.body, dict):
                result.body = for_version({spec.envelope.get(k, k): v for k, v in result.body.items()}, version)
            return _to_response(result, headers)

        endpoint.__name__ = spec.handler.__name__
        return endpoint


# The first segment of a route's path whose `{id}` names a row the log context has a field for.
_CONTEXT_IDS = {"clusters": "cluster_id", "jobs": "job_id", "job-executions": "job_id", "sites": "site_id"}


def _context_ids(path: str, params: dict[str, str]) -> dict[str, str | None]:
    field_name = _CONTEXT_IDS.get(path.strip("/").split("/")[0])
    return {field_name: params.get("id")} if field_name else {}


def _to_response(result: Reply | Response, headers: dict[str, str]) -> Response:
    if isinstance(result, Response):
        result.headers.update(headers)
        return result
    merged = {**headers, **result.headers}
    if result.status == 204:
        return Response(status_code=204, headers=merged)
    return JSONResponse(result.body if result.body is not None else {}, status_code=result.status, headers=merged)
