"""The dashboard's routes, mounted at /dashboard by the API's `create_app` (so `oasis up` and `oasis api` both
serve it). A Mount of routes, not an app of its own: `request.app` stays the API's app, which the pages call
in-process."""
from __future__ import annotations

from pathlib import Path

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from oasis.web import live, login, pages
from oasis.web.render import SecureHeaders, error_page
from oasis.web.session import ROOT, load_session

STATIC = Path(__file__).resolve().parent / "static"


async def not_found(request: Request) -> Response:
    session = await load_session(request)
    return error_page(request, session, 404, "404 Not Found", f"There is no dashboard page at {request.url.path}.")


def mount() -> Mount:
    get, post = ["GET"], ["POST"]
    routes = [
        Route("/", pages.overview, methods=get),
        Route("/login", login.login_form, methods=get),
        Route("/login", login.login, methods=post),
        Route("/logout", login.logout, methods=post),
        Route("/clusters", pages.clusters, methods=get),
        Route("/clusters", pages.create_cluster, methods=post),
        Route("/clusters/new", pages.new_cluster, methods=get),
        Route("/clusters/{id}", pages.cluster, methods=get),
        Route("/clusters/{id}/events", live.cluster_events, methods=get),
        Route("/clusters/{id}/scale", pages.scale_cluster, methods=post),
        Route("/clusters/{id}/delete", pages.delete_cluster, methods=post),
        Route("/jobs", pages.jobs, methods=get),
        Route("/jobs", pages.run_job, methods=post),
        Route("/jobs/new", pages.new_job, methods=get),
        Route("/jobs/{id}", pages.job, methods=get),
        Route("/jobs/{id}/logs/events", live.job_log_events, methods=get),
        Route("/jobs/{id}/history/{name}", pages.job_history_file, methods=get),
        Route("/templates", pages.templates, methods=get),
        Route("/job-templates", pages.job_templates, methods=get),
        Route("/job-binaries", pages.job_binaries, methods=get),
        Route("/data-sources", pages.data_sources, methods=get),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Route("/{rest:path}", not_found),
    ]
    return Mount(ROOT, routes=routes, middleware=[Middleware(SecureHeaders)])
