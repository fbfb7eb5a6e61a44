"""``KeyGate``: a route's key checks, made before any byte of the request's body is read.

FastAPI reads and parses a request's body (JSON, or a multipart upload spooled to a temporary
file) before it runs the route's dependencies, so the checks of api/auth.py alone would let a
caller without a key make the service read a 100 MB upload before it answers 401. This pure
ASGI middleware hands the app a ``receive`` that, when the route first asks for the body (the
router has matched the route by then), makes the route's checks from the headers alone: the key
(401), a key file that cannot be read (503), the key's request rate (429) and, on a route that
writes, the write right or the service record's local token (401, 403). A refusal goes out
through the app's error handlers at once, the body unread, and closes the connection. What the
gate found stays in ``request.state``, where the dependencies take it instead of checking twice
(and where the gate finds that they already ran, for a route that reads its body itself).

The checks a route needs are read from its own dependencies (``authenticate``, ``admitted``,
``metrics_access``, ``readiness``) and parameters (the local-token header marks a writing
route), so a new route is gated as soon as it depends on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import (
    Access,
    access_error_headers,
    admitted,
    authenticate,
    metrics_access,
    presented_key,
    readiness,
    require_write,
)
from api.errors import error_body
from rag.guard import (
    ANONYMOUS,
    TOKEN_HEADER,
    AuthenticationError,
    KeysUnavailableError,
    PermissionDeniedError,
    RateLimitedError,
)

REFUSALS = (AuthenticationError, PermissionDeniedError, RateLimitedError, KeysUnavailableError)


@dataclass(frozen=True)
class Guard:
    """What a route asks of its caller."""

    key: bool = False  # authenticate: a key whenever keys are required
    rate: bool = False  # admitted: and within the key's request rate
    metrics: bool = False  # metrics_access: a key unless /metrics is public
    readiness: bool = False  # readiness: a key; an unreadable key file is the route's answer
    writes: bool = False  # takes the local token: a key with write rights, or the token


def _calls(dependant: Dependant) -> set[Any]:
    found: set[Any] = set()
    for sub in dependant.dependencies:
        found.add(sub.call)
        found |= _calls(sub)
    return found


def _headers(dependant: Dependant) -> set[str]:
    found = {param.alias.lower() for param in dependant.header_params}
    for sub in dependant.dependencies:
        found |= _headers(sub)
    return found


def guard_of(route: BaseRoute) -> Guard | None:
    """The checks ``route`` makes through its dependencies; None for an open route."""
    if not isinstance(route, APIRoute):
        return None
    calls = _calls(route.dependant)
    guard = Guard(
        key=authenticate in calls or admitted in calls,
        rate=admitted in calls,
        metrics=metrics_access in calls,
        readiness=readiness in calls,
        writes=TOKEN_HEADER.lower() in _headers(route.dependant),
    )
    return guard if guard != Guard() else None


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class RefusedBeforeBodyError(HTTPException):
    """A refusal raised from ``receive``: FastAPI lets an HTTPException out of its body reading
    unchanged, and api/errors.py answers it in the envelope of the refusal's own type."""

    def __init__(self, refusal: Exception, *, close: bool) -> None:
        status, body = error_body(refusal)
        headers = access_error_headers(refusal) or {}
        if close:  # the unread body: the connection cannot carry another request
            headers["Connection"] = "close"
        super().__init__(status, body["error"]["message"], headers)
        self.kind: str = body["error"]["type"]


class KeyGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._guards: dict[int, Guard | None] = {}  # by id(route): routes compare by value

    def _guard(self, route: BaseRoute | None) -> Guard | None:
        if route is None:
            return None
        if id(route) not in self._guards:
            self._guards[id(route)] = guard_of(route)
        return self._guards[id(route)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        checked = False

        async def gated() -> Message:
            nonlocal checked
            if not checked:
                checked = True
                self._check_first(scope)
            return await receive()

        await self.app(scope, gated, send)

    def _check_first(self, scope: Scope) -> None:
        """Before the first body byte: the route's checks, unless its dependencies ran."""
        guard = self._guard(scope.get("route"))
        access: Access | None = getattr(scope["app"].state, "access", None)
        if guard is None or access is None or "principal" in scope.get("state", {}):
            return
        try:
            self._check(access, guard, scope)
        except REFUSALS as exc:
            raise RefusedBeforeBodyError(exc, close=_has_body(scope)) from exc

    def _check(self, access: Access, guard: Guard, scope: Scope) -> None:
        """What the route's dependencies would check, from the headers; raises the refusal."""
        if guard.metrics and access.metrics_public:
            return
        request = Request(scope)  # headers only: the body is never touched here
        try:
            principal = access.authenticate(presented_key(request))
        except KeysUnavailableError:
            if guard.readiness:
                return  # /readyz answers "not ready" with the reason
            raise
        state = scope.setdefault("state", {})
        state["principal"] = principal
        if guard.rate and principal is not ANONYMOUS:
            access.limiter.check_request(principal)
            state["admitted"] = True
        if guard.writes:
            record = getattr(getattr(scope["app"].state, "services", None), "record", None)
            local = record is not None and record.accepts(request.headers.get(TOKEN_HEADER))
            index = scope.get("path_params", {}).get("index")
            if index is not None:
                require_write(principal, str(index), local=local)
            elif principal is ANONYMOUS and not local:
                raise AuthenticationError(
                    "this route needs an API key with write rights (or the local token of "
                    "rag-ingest): send it as 'Authorization: Bearer <key>'"
                )
