"""One route in front of the API's many (every version, with and without the project segment, with and without
`.json`: some 700), matching a request against only the routes that could match its path: those with as many
segments and the same first two (where the route has them literally). Starlette's router tries its routes in turn, a regular expression each, and
that scan cost more than the database did for a page of jobs (bench/api_load.py). The order among the
candidates is the table's own, so a request matches the route it matched before, and a path that matches no
route with another method still answers 405."""
from __future__ import annotations

from typing import Any

from starlette.datastructures import URLPath
from starlette.routing import BaseRoute, Match, NoMatchFound, Route, get_route_path
from starlette.types import Receive, Scope, Send


_MISS = object()  # a segment no route has literally: only a parameter matches it


def _shape(path: str) -> tuple[int, str, str]:
    """(number of segments, first segment, second segment) of a path: "/v2/clusters/x" -> (4, "v2", "clusters")."""
    parts = path.split("/", 3)
    return path.count("/") + 1, parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else ""


def _literal(segment: str) -> Any:
    """The segment, or _MISS for a parameter (which matches any segment)."""
    return _MISS if "{" in segment else segment


class Dispatch(BaseRoute):
    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes
        # A route's `{param}` matches one segment ([^/]+), so a route can match only paths with its number of
        # segments and, where its first two segments are literal, those segments; one that matches across
        # segments ({x:path}), or that is no plain Route, is a candidate for every path.
        anywhere = {i for i, r in enumerate(routes) if not _plain(r)}
        shapes = {i: _shape(r.path) for i, r in enumerate(routes) if i not in anywhere}
        firsts: dict[int, set[Any]] = {}
        seconds: dict[tuple[int, Any], set[Any]] = {}
        for n, a, b in shapes.values():
            firsts.setdefault(n, {_MISS}).add(_literal(a))
        for n, known in firsts.items():
            for a in known:
                seconds[(n, a)] = {_MISS} | {_literal(sb) for m, sa, sb in shapes.values()
                                            if m == n and _literal(sa) in (_MISS, a)}

        def fits(i: int, n: int, a: Any, b: Any) -> bool:
            m, sa, sb = shapes[i]
            return m == n and _literal(sa) in (_MISS, a) and _literal(sb) in (_MISS, b)

        # Built once, for every shape the table knows (a segment it does not know is _MISS): no entry per
        # request, so no request can make this grow; a path of another length gets the routes that fit anything.
        self._firsts, self._seconds = firsts, seconds
        self._candidates = {(n, a, b): [r for i, r in enumerate(routes) if i in anywhere or fits(i, n, a, b)]
                            for (n, a), known in seconds.items() for b in known}
        self._anywhere = [routes[i] for i in sorted(anywhere)]

    def candidates(self, scope: Scope) -> list[Route]:
        n, a, b = _shape(get_route_path(scope))
        known = self._firsts.get(n)
        if known is None:
            return self._anywhere
        first = a if a in known else _MISS
        second = b if b in self._seconds[(n, first)] else _MISS
        return self._candidates[(n, first, second)]

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
