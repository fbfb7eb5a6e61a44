"""API keys over HTTP: who is calling (401 when a key is needed and absent or wrong), what the
key may read (403), and the per-key rate limits (429). Key material is never logged.

The app's ``lifespan`` puts an ``Access`` on ``app.state.access``; routes depend on
``AdmittedDep`` (authenticated and within its request rate), ``PrincipalDep``
(authenticated only), ``ReadinessDep`` (``/readyz``) or ``MetricsAccessDep`` (``/metrics``);
``/healthz`` depends on none. FastAPI reads a request's body before it runs dependencies, so
``api.key_gate.KeyGate`` makes the same checks first, from the headers alone, and leaves the
caller in ``request.state``, where these dependencies find it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from rag.guard import (
    ANONYMOUS,
    AuthenticationError,
    KeyStore,
    KeysUnavailableError,
    PermissionDeniedError,
    Principal,
    RateLimitedError,
    RateLimiter,
)

AuthMode = Literal["auto", "required", "off"]

# The lines api/errors.py maps once (status, envelope type).
ACCESS_STATUSES: list[tuple[type[Exception], int, str]] = [
    (AuthenticationError, 401, "unauthenticated"),
    (PermissionDeniedError, 403, "permission_denied"),
    (RateLimitedError, 429, "rate_limited"),
    (KeysUnavailableError, 503, "keys_unavailable"),
]
KEYS_RETRY_AFTER_S = 30  # a key file is repaired by hand


@dataclass
class Access:
    keys: KeyStore
    limiter: RateLimiter
    mode: AuthMode = "auto"
    metrics_public: bool = False

    def required(self) -> bool:
        """Whether callers need a key: always, never, or (auto) once keys have existed, even
        when the last was revoked (``KeyStore.closed``)."""
        return self.mode == "required" or (self.mode == "auto" and self.keys.closed())

    def authenticate(self, presented: str | None) -> Principal:
        """The caller's principal; anonymous (reads everything) only while keys are not required."""
        if not self.required():
            # Keys are optional: a valid one still gets its own rate limits.
            found = self.keys.verify(presented) if presented and self.mode != "off" else None
            return found or ANONYMOUS
        if not presented:
            raise AuthenticationError(
                "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
            )
        principal = self.keys.verify(presented)
        if principal is None:
            raise AuthenticationError("the API key is not valid (unknown, malformed or revoked)")
        return principal


def presented_key(request: Request) -> str | None:
    """The key from ``Authorization: Bearer …`` or ``X-API-Key``, if any."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return request.headers.get("x-api-key") or None


def get_access(request: Request) -> Access:
    access: Access = request.app.state.access
    return access


def authenticate(request: Request) -> Principal:
    """Dependency: the caller, or 401. Does not take from the rate limits (see ``admitted``)."""
    found: Principal | None = getattr(request.state, "principal", None)  # by KeyGate, or before
    if found is None:
        found = get_access(request).authenticate(presented_key(request))
        request.state.principal = found
    return found


def admitted(request: Request, principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """Dependency of routes that do work: the caller, 401, or 429 once over its request rate.

    Limits are per key: callers of a service without keys (or with RAG_AUTH=off) are not
    limited here.
    """
    if principal is not ANONYMOUS and not getattr(request.state, "admitted", False):
        get_access(request).limiter.check_request(principal)
        request.state.admitted = True
    return principal


def metrics_access(request: Request) -> None:
    """Dependency of ``/metrics``: a key unless ``RAG_METRICS_PUBLIC=true``."""
    access = get_access(request)
    if not access.metrics_public:
        authenticate(request)


def readiness(request: Request) -> str | None:
    """Dependency of ``/readyz``: the caller is authenticated (401 otherwise), and a key file
    that cannot be read is returned as its failing check (not ready) rather than raised."""
    try:
        authenticate(request)
    except KeysUnavailableError as exc:
        return f"unavailable: {exc}"
    return None


def require_read(principal: Principal, index: str) -> None:
    """403 unless the key may read ``index``."""
    if not principal.can_read(index):
        raise PermissionDeniedError(f"key {principal.name!r} may not read index {index!r}")


def require_write(principal: Principal, index: str, *, local: bool = False) -> None:
    """401 for a caller without a key, 403 unless the key may change ``index`` (a write key of
    that index, or an admin key). ``local``: the caller holds the service record's token
    (`rag-ingest` on this machine), which stands in for a key while none is required."""
    if principal is ANONYMOUS:
        if local:
            return
        raise AuthenticationError(
            f"writing index {index!r} needs an API key with write rights: create one with "
            f"`rag-keys create NAME --index {index} --write` and send it as "
            "'Authorization: Bearer <key>'"
        )
    if not principal.can_write(index):
        raise PermissionDeniedError(f"key {principal.name!r} may not write index {index!r}")


def require_admin(principal: Principal) -> None:
    if not principal.admin:
        raise PermissionDeniedError(f"key {principal.name!r} is not an admin key")


PrincipalDep = Annotated[Principal, Depends(authenticate)]
AdmittedDep = Annotated[Principal, Depends(admitted)]
MetricsAccessDep = Annotated[None, Depends(metrics_access)]
ReadinessDep = Annotated[str | None, Depends(readiness)]


def access_error_headers(exc: Exception) -> dict[str, str] | None:
    """The headers HTTP wants with a 401 or 429."""
    if isinstance(exc, AuthenticationError):
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, RateLimitedError):
        return {"Retry-After": exc.retry_after_header}
    if isinstance(exc, KeysUnavailableError):
        return {"Retry-After": str(KEYS_RETRY_AFTER_S)}
    return None


def install_access_errors(app: FastAPI) -> None:
    """401/403/429 in the project's envelope, for apps (and tests) without api/errors.py's map."""

    async def handle(_: Request, exc: Exception) -> JSONResponse:
        for kind, status, name in ACCESS_STATUSES:
            if isinstance(exc, kind):
                body = {"error": {"type": name, "message": str(exc)}}
                return JSONResponse(body, status_code=status, headers=access_error_headers(exc))
        raise exc

    for kind, _, _ in ACCESS_STATUSES:
        app.add_exception_handler(kind, handle)
