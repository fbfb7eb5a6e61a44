"""HTTP methods across routes: HEAD is answered wherever GET is (the server sends the headers
only), and a 405 names in `Allow` every method its path takes, not only one route's."""

from __future__ import annotations

from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send


def _methods(routes: list[BaseRoute], scope: Scope, full: bool) -> set[str]:
    """The methods of the routes whose path matches (with ``full``: and whose method does)."""
    found: set[str] = set()
    for route in iter_route_contexts(routes):  # the included routers' routes too
        match, _ = route.matches(scope)
        if match is Match.FULL or (match is Match.PARTIAL and not full):
            found |= route.methods or set()
    return found


def allowed_methods(routes: list[BaseRoute], scope: Scope) -> str:
    """The `Allow` header for the request's path: every route's methods, HEAD with GET."""
    methods = _methods(routes, scope, full=False)
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


class HeadLikeGet:
    """A HEAD request to a path with a GET route and no HEAD route of its own goes to the GET
    route; the server (uvicorn) drops the body because its own scope still says HEAD."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            routes = scope["app"].routes
            if not _methods(routes, scope, full=True):
                as_get = {**scope, "method": "GET"}  # a copy: the server's scope stays HEAD
                if _methods(routes, as_get, full=True):
                    scope = as_get
        await self.app(scope, receive, send)
