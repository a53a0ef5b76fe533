"""The API's one front route (oasis.api.dispatch) picks, for any path and method, the route that Starlette's
scan of the whole table picks: FULL before PARTIAL (405), the `.json` variants first, nothing for no match."""
from __future__ import annotations

import pytest
from starlette.routing import Match

from oasis.api.dispatch import Dispatch
from tests.unit.conftest import World

pytestmark = pytest.mark.unit


def _scan(dispatch: Dispatch, scope: dict) -> tuple[Match, object]:
    """Starlette's Router: the first FULL match, else the first PARTIAL one."""
    partial = None
    for route in dispatch.routes:
        match, _child = route.matches(scope)
        if match is Match.FULL:
            return match, route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return (Match.PARTIAL, partial) if partial is not None else (Match.NONE, None)


def test_dispatch_matches_as_the_whole_table(world: World) -> None:
    dispatch = next(r for r in world.client.app.routes if isinstance(r, Dispatch))
    # every route's own path with its parameters filled in (with ids that look like the suffix and the versions),
    # and paths that match nothing
    paths = {"/", "", "/nope", "/v2/nope/more/and/more", "/v2//clusters", "/v2/clusters/", "/v9/clusters",
             "/v2/clusters/a/b/c/d/e/f"}
    for route in dispatch.routes:
        for filler in ("x", "v2", "x.json", "clusters"):
            path = route.path
            for name in route.param_convertors:
                path = path.replace("{" + name + "}", filler)
            paths.add(path)
    checked = 0
    for path in sorted(paths):
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"):
            scope = {"type": "http", "path": path, "method": method, "root_path": "", "headers": []}
            match, child = dispatch.matches(scope)
            want_match, want_route = _scan(dispatch, scope)
            assert match is want_match, (method, path)
            assert child.get("route") is want_route, (method, path)
            checked += 1
    assert checked > 3000


def test_a_request_is_served_and_logged_by_its_own_route(world: World) -> None:
    r = world.get("/v2/clusters.json")
    assert r.status_code == 200 and "clusters" in r.json()
    assert world.client.delete("/v2/plugins").status_code == 405
    assert world.get("/v2/nope").status_code == 404
