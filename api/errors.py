"""Typed errors mapped to HTTP once, as one JSON envelope: {"error": {"type", "message"}}."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from rag.errors import IndexMismatchError, IndexNotFoundError, StoreUnavailableError
from rag.llm import EngineRejectedError, EngineTimeoutError, EngineUnavailableError
from rag.prompt import PromptTooLongError

RETRY_AFTER_S = "5"

STATUSES: list[tuple[type[Exception], int, str]] = [
    (PromptTooLongError, 413, "prompt_too_long"),
    (IndexNotFoundError, 422, "unknown_index"),
    (IndexMismatchError, 422, "index_mismatch"),
    (EngineUnavailableError, 503, "engine_unavailable"),
    (StoreUnavailableError, 503, "store_unavailable"),
    (EngineTimeoutError, 504, "engine_timeout"),
    (EngineRejectedError, 502, "engine_rejected"),
]


def error_body(exc: Exception) -> tuple[int, dict[str, Any]]:
    for kind, status, name in STATUSES:
        if isinstance(exc, kind):
            return status, {"error": {"type": name, "message": str(exc)}}
    return 500, {"error": {"type": "internal_error", "message": "internal error; see the log"}}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    async def typed(_: Request, exc: Exception) -> JSONResponse:
        status, body = error_body(exc)
        headers = {"Retry-After": RETRY_AFTER_S} if status == 503 else None
        return JSONResponse(body, status_code=status, headers=headers)

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        body = {"error": {"type": "invalid_request", "message": _validation_message(exc)}}
        return JSONResponse(body, status_code=422)

    async def http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        body = {"error": {"type": "http_error", "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    for kind, _, _ in STATUSES:
        app.add_exception_handler(kind, typed)
    app.add_exception_handler(Exception, typed)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http)
