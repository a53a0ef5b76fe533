"""The HTTP API: Sahara's v2 and v1.1/v1.0, a Keystone v3 shim, the version documents and the OpenAPI document."""
from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from oasis import logconfig, metrics
from oasis.api import (binaries, clusters, datasources, history, identity_admin, jobs, keypairs, keystone, openapi,
                       plugins, pools, quotas, site_join, sites, templates, versions, workflows)
from oasis.api.dispatch import Dispatch
from oasis.api.errors import http_exception, unhandled
from oasis.api.routing import Deps, Routes
from oasis.config import Settings
from oasis.db.session import Database
from oasis.identity import open_identity, open_proxy_users
from oasis.storage.base import ObjectStore
from oasis.web.app import mount as dashboard

# Every route of the server, in one table: the version documents, Sahara's resources, the site join (a bundle's
# join token, not a Keystone token) and Keystone's identity subset (tokens, then administration).
RESOURCES = (versions, plugins, templates, clusters, binaries, datasources, jobs, history, sites, site_join, keypairs,
             quotas, workflows, keystone, identity_admin, pools)


async def openapi_document(request: Request) -> Response:
    """The OpenAPI document of the whole API (no token needed, like the version document)."""
    app = request.app
    if getattr(app.state, "openapi", None) is None:
        app.state.openapi = openapi.document(app.state.api_routes)
    return JSONResponse(app.state.openapi)


async def metrics_document(_request: Request) -> Response:
    """Prometheus metrics of this process (no token: aggregates only, no project's data; docs/metrics.md)."""
    body, media = metrics.exposition()
    return Response(body, media_type=media)


def build_routes(deps: Deps) -> Routes:
    routes = Routes(deps)
    for module in RESOURCES:
        module.register(routes)
    return routes


def create_app(settings: Settings, db: Database, store: ObjectStore,
               notify: Callable[[], None] | None = None) -> Starlette:
    """`notify`, if given, is called after every write that sets an `op`, to wake an in-process engine."""
    identity = open_identity(settings, db)
    deps = Deps(settings, db, store, identity, notify, open_proxy_users(settings, identity))
    routes = build_routes(deps)
    app = Starlette(
        # The dashboard (/dashboard) is a client of these routes, called in-process (oasis.web).
        routes=[Route("/openapi.json", openapi_document, methods=["GET"]),
                Route("/metrics", metrics_document, methods=["GET"]), Dispatch(routes.starlette_routes()),
                dashboard()],
        middleware=[Middleware(logconfig.RequestContext, observe=metrics.observe_request)],
        exception_handlers={HTTPException: http_exception, Exception: unhandled},
    )
    app.state.deps = deps
    app.state.api_routes = routes  # the operation table, for the OpenAPI document
    app.state.openapi = None
    return app
