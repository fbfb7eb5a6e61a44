"""The OpenAPI document as the contract: every status a route returns, with the error envelope;
the event stream of /ask; /metrics as Prometheus text; max_tokens bounded by the engine's window.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.protocol import ErrorResponse
from rag.answer import max_output_bound

RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before asking again",
        "schema": {"type": "integer"},
    }
}
AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": "The scheme to send the key with",
        "schema": {"type": "string"},
    }
}
SSE_DESCRIPTION = (
    'With `"stream": true`: server-sent events, in this order: `citations` (data: '
    "`{citations, model, notice}`), `token` (data: `{text}`) for each piece of the answer, "
    "then `done` (data: `{usage, timings, model, finish_reason, notice}`). A failure after the "
    "first byte ends the stream with an `error` event (data: `{type, message}`); failures "
    "before it are HTTP statuses, as for JSON answers."
)

SSE_EVENT = {  # one event of the stream; `data` is JSON text
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["citations", "token", "done", "error"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"model": ErrorResponse, "description": description}
    if headers:
        response["headers"] = headers
    return response


ASK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The answer (JSON), or its event stream when `stream` is true.",
        "content": {"text/event-stream": {"schema": SSE_EVENT}},
    },
    400: _error("The body cannot be read."),
    401: _error("An API key is required and none (or an invalid one) was sent.", AUTHENTICATE),
    403: _error("The API key may not read the index asked for (`permission_denied`)."),
    404: _error("The index asked for does not exist (`unknown_index`)."),
    413: _error(
        "The body is larger than RAG_MAX_REQUEST_BYTES (`body_too_large`), the question does not "
        "fit the window (`prompt_too_long`), or passages matched but none fits beside the "
        "question and the reserved answer (`no_passage_fits`, with the numbers)."
    ),
    422: _error(
        "Invalid request: a field of the wrong type or out of range, max_tokens over half the "
        "engine's window, an index built with another embedder (`index_mismatch`)."
    ),
    429: _error(
        "The key is over its requests per second or prompt tokens per minute.", RETRY_AFTER
    ),
    500: _error("An unexpected error; the log has the details."),
    502: _error("The engine refused the request."),
    503: _error("The engine or the store is unavailable (down, starting...).", RETRY_AFTER),
    504: _error("The engine did not answer within RAG_LLM_TIMEOUT."),
}
READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _error("An API key is required and none (or an invalid one) was sent.", AUTHENTICATE),
    503: {
        "description": "Not ready: the failing checks say why.",
        "headers": RETRY_AFTER,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReadyResponse"}}},
    },
}
METRICS_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _error(
        "An API key is required (unless RAG_METRICS_PUBLIC=true) and none was sent.", AUTHENTICATE
    ),
    200: {
        "description": "Prometheus text exposition format.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
}


def _bound_max_tokens(schema: dict[str, Any], bound: int) -> None:
    field = schema["components"]["schemas"]["AskRequest"]["properties"]["max_tokens"]
    for variant in field.get("anyOf", [field]):
        if "maximum" in variant:
            variant["maximum"] = bound


def install_contract(app: FastAPI) -> None:
    """The document, with max_tokens's bound set once the engine's window is known."""

    def contract() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        schema["paths"]["/ask"]["post"]["responses"]["200"]["description"] += " " + SSE_DESCRIPTION
        services = getattr(app.state, "services", None)
        info = services.engine.known_model_info if services is not None else None
        if info is not None:
            _bound_max_tokens(schema, max_output_bound(info.max_model_len))
            app.openapi_schema = schema
        return schema

    app.openapi = contract  # type: ignore[method-assign]
