"""One route in front of the API's many (every version, with and without the project segment, with and without
`.json`: some 700), matching a request against only the routes that could match its path: those with as many
segments and the same first one. Starlette's router tries its routes in turn, a regular expression each, and
that scan cost more than the database did for a page of jobs (bench/api_load.py). The order among the
candidates is the table's own, so a request matches the route it matched before, and a path that matches no
route with another method still answers 405."""
from __future__ import annotations

from typing import Any

from starlette.datastructures import URLPath
from starlette.routing import BaseRoute, Match, NoMatchFound, Route, get_route_path
from starlette.types import Receive, Scope, Send


def _key(path: str) -> tuple[int, str]:
    """(number of segments, first segment) of a path: "/v2/clusters/x" -> (4, "v2")."""
    parts = path.split("/", 2)
    return path.count("/") + 1, parts[1] if len(parts) > 1 else ""


class Dispatch(BaseRoute):
    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes
        # A route's `{param}` matches one segment ([^/]+), so a route can match only paths with its number of
        # segments; one whose first segment is a parameter, or that matches across segments ({x:path}), or that
        # is no plain Route, is a candidate for every path.
        anywhere = {i for i, r in enumerate(routes) if not _plain(r) or "{" in _key(r.path)[1]}
        keyed: dict[tuple[int, str], list[int]] = {}
        for i, r in enumerate(routes):
            if i not in anywhere:
                keyed.setdefault(_key(r.path), []).append(i)
        # Built once: a path of any other shape gets the routes that may match anything (no entry per request,
        # so no request can make this grow).
        self._candidates = {key: [routes[i] for i in sorted([*ids, *anywhere])] for key, ids in keyed.items()}
        self._anywhere = [routes[i] for i in sorted(anywhere)]

    def candidates(self, scope: Scope) -> list[Route]:
        return self._candidates.get(_key(get_route_path(scope)), self._anywhere)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        partial: tuple[Match, Scope] | None = None
        for route in self.candidates(scope):
            match, child = route.matches(scope)
            if match is Match.FULL:
                return match, {**child, "route": route}  # the router puts it in the scope: the route that serves
            if match is Match.PARTIAL and partial is None:
                partial = (match, {**child, "route": route})
        return partial if partial is not None else (Match.NONE, {})

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await scope["route"].handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        for route in self.routes:
            try:
                return route.url_path_for(name, **path_params)
            except NoMatchFound:
                pass
        raise NoMatchFound(name, path_params)


def _plain(route: BaseRoute) -> bool:
    return type(route) is Route and ":path}" not in route.path
