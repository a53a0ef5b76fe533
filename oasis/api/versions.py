"""The version documents, before any authentication as in Sahara: `GET /` lists the versions (300 Multiple
Choices) and `GET /v2` (`/v1.1`, `/v1.0`) describes one. Identity's (`GET /v3`) is oasis.api.keystone's."""
from __future__ import annotations

from starlette.requests import Request

from oasis.api.routing import MICROVERSION, Ctx, Reply, Routes

SAHARA_VERSIONS = ("v2", "v1.1", "v1.0")


def _versions(request: Request) -> list[dict]:
    base = str(request.base_url).rstrip("/")
    return [
        {"id": "v1.0", "status": "SUPPORTED", "links": [{"rel": "self", "href": f"{base}/v1.0/"}]},
        {"id": "v1.1", "status": "SUPPORTED", "links": [{"rel": "self", "href": f"{base}/v1.1/"}]},
        {"id": "v2", "status": "CURRENT", "links": [{"rel": "self", "href": f"{base}/v2/"}],
         "min_version": MICROVERSION, "max_version": MICROVERSION},
    ]


def version_list(ctx: Ctx) -> Reply:
    """The API versions (Sahara answers 300 Multiple Choices)"""
    return Reply(300, {"versions": _versions(ctx.request)})


def version_one(ctx: Ctx) -> Reply:
    """One API version"""
    return Reply(200, {"version": next(v for v in _versions(ctx.request) if v["id"] == ctx.version)})


def register(routes: Routes) -> None:
    routes.add("GET", "/", version_list, "versions:list", versions=(), auth="public", json_suffix=False,
               returns="versions[]", status=300)
    routes.add("GET", "", version_one, "versions:get", versions=SAHARA_VERSIONS, auth="public", json_suffix=False,
               returns="version")
