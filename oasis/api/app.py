"""The HTTP API: Sahara's v2 (and v1.1 job binary internals), a Keystone v3 shim, and the version document."""
from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from oasis.api import binaries, clusters, datasources, jobs, keypairs, keystone, openapi, plugins, sites, templates
from oasis.api import site_join
from oasis.api.errors import http_exception, unhandled
from oasis.api.routing import MICROVERSION, Deps, Routes
from oasis.config import Settings
from oasis.db.session import Database
from oasis.storage.base import ObjectStore

RESOURCES = (plugins, templates, clusters, binaries, datasources, jobs, sites, keypairs)


def _versions(request: Request) -> list[dict]:
    base = str(request.base_url).rstrip("/")
    return [
        {"id": "v1.0", "status": "SUPPORTED", "links": [{"rel": "self", "href": f"{base}/v1.0/"}]},
        {"id": "v1.1", "status": "SUPPORTED", "links": [{"rel": "self", "href": f"{base}/v1.1/"}]},
        {"id": "v2", "status": "CURRENT", "links": [{"rel": "self", "href": f"{base}/v2/"}],
         "min_version": MICROVERSION, "max_version": MICROVERSION},
    ]


async def version_list(request: Request) -> Response:
    """Sahara answers `GET /` with 300 Multiple Choices, before any authentication."""
    return JSONResponse({"versions": _versions(request)}, status_code=300)


async def version_one(request: Request) -> Response:
    wanted = request.url.path.strip("/").split("/")[0]
    return JSONResponse({"version": next(v for v in _versions(request) if v["id"] == wanted)})


async def openapi_document(request: Request) -> Response:
    """The OpenAPI document of the whole API (no token needed, like the version document)."""
    app = request.app
    if getattr(app.state, "openapi", None) is None:
        app.state.openapi = openapi.document(app.state.api_routes,
                                              {**keystone.openapi_paths(), **site_join.openapi_paths()})
    return JSONResponse(app.state.openapi)


def build_routes(deps: Deps) -> Routes:
    routes = Routes(deps)
    for module in RESOURCES:
        module.register(routes)
    return routes


def create_app(settings: Settings, db: Database, store: ObjectStore,
               notify: Callable[[], None] | None = None) -> Starlette:
    """`notify`, if given, is called after every write that sets an `op`, to wake an in-process engine."""
    deps = Deps(settings, db, store, notify)
    routes = build_routes(deps)
    app = Starlette(
        routes=[Route("/", version_list, methods=["GET"]),
                Route("/openapi.json", openapi_document, methods=["GET"]),
                *(Route(p, version_one, methods=["GET"]) for p in ("/v2", "/v2/", "/v1.1", "/v1.1/", "/v1.0", "/v1.0/")),
                *keystone.routes(deps),
                # before the Keystone-authenticated routes: a joining site has its bundle's token, not a Keystone one
                Route("/v2/sites/join", site_join.join_site, methods=["POST"]),
                *routes.starlette_routes()],
        exception_handlers={HTTPException: http_exception, Exception: unhandled},
    )
    app.state.deps = deps
    app.state.api_routes = routes  # the operation table, for the OpenAPI document
    app.state.openapi = None
    return app
