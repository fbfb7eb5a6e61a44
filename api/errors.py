"""Typed errors mapped to HTTP once, as one JSON envelope: {"error": {"type", "message"}}."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from api.auth import ACCESS_STATUSES, access_error_headers
from api.cancel import ClientDisconnectedError
from api.methods import allowed_methods
from rag.ask import (
    NoPassageFitsError,
    OutputTooLongError,
    PassageNotFoundError,
    PromptTooLongError,
    QuestionTooLongError,
)
from rag.embed import EmbedServiceError
from rag.engine import EngineRejectedError, EngineTimeoutError, EngineUnavailableError
from rag.errors import (
    DiskFullError,
    IndexMismatchError,
    IndexNotFoundError,
    NotWritableError,
    StoreUnavailableError,
)
from rag.guard import AskTooLargeError, OverloadedError, TimeoutTooLongError
from rag.ingest import (
    BadPathError,
    DocumentNotFoundError,
    JobNotFoundError,
    UnsupportedUploadError,
    UploadQuotaError,
)

RETRY_AFTER_S = 5

STATUSES: list[tuple[type[Exception], int, str]] = [
    *ACCESS_STATUSES,  # 401, 403, 429
    (PromptTooLongError, 413, "prompt_too_long"),
    (QuestionTooLongError, 413, "question_too_long"),
    (NoPassageFitsError, 413, "no_passage_fits"),
    (OutputTooLongError, 422, "invalid_request"),
    (TimeoutTooLongError, 422, "invalid_request"),
    (AskTooLargeError, 413, "exceeds_engine_capacity"),
    (OverloadedError, 503, "overloaded"),
    (ClientDisconnectedError, 499, "client_closed_request"),
    (IndexNotFoundError, 404, "unknown_index"),
    (JobNotFoundError, 404, "not_found"),
    (DocumentNotFoundError, 404, "not_found"),
    (PassageNotFoundError, 404, "not_found"),
    (BadPathError, 422, "invalid_request"),
    (UnsupportedUploadError, 415, "unsupported_media_type"),
    (UploadQuotaError, 413, "upload_quota_exceeded"),
    (IndexMismatchError, 422, "index_mismatch"),
    (EngineUnavailableError, 503, "engine_unavailable"),
    (DiskFullError, 507, "disk_full"),
    (StoreUnavailableError, 503, "store_unavailable"),
    (NotWritableError, 503, "not_writable"),
    (EmbedServiceError, 503, "embedder_unavailable"),
    (EngineTimeoutError, 504, "engine_timeout"),
    (EngineRejectedError, 502, "engine_rejected"),
]


def envelope(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


def retry_after(exc: Exception) -> dict[str, str]:
    if isinstance(exc, OverloadedError):
        return {"Retry-After": exc.retry_after_header}
    seconds = exc.retry_after if isinstance(exc, EngineUnavailableError) else RETRY_AFTER_S
    return {"Retry-After": str(seconds)}


def error_body(exc: Exception) -> tuple[int, dict[str, Any]]:
    for kind, status, name in STATUSES:
        if isinstance(exc, kind):
            return status, envelope(name, str(exc))
    return 500, envelope("internal_error", "internal error; see the log")


HTTP_TYPES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    async def typed(_: Request, exc: Exception) -> JSONResponse:
        status, body = error_body(exc)
        headers = access_error_headers(exc) or (retry_after(exc) if status == 503 else None)
        return JSONResponse(body, status_code=status, headers=headers)

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse(envelope("invalid_request", _validation_message(exc)), 422)

    async def http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        kind = getattr(exc, "kind", None) or HTTP_TYPES.get(exc.status_code, "http_error")
        body = envelope(kind, str(exc.detail))
        headers = exc.headers
        if exc.status_code == 405:  # every method of the path, not only the first route's
            headers = {**(headers or {}), "Allow": allowed_methods(app.routes, request.scope)}
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    for kind, _, _ in STATUSES:
        app.add_exception_handler(kind, typed)
    app.add_exception_handler(Exception, typed)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http)
