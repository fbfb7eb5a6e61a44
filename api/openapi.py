"""The OpenAPI document as the contract: every status a route returns, with the error envelope;
the event stream of /ask; /metrics as Prometheus text; max_tokens bounded by the engine's window.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute

from api.protocol import ErrorResponse
from rag.ask import max_output_bound

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

CHAT_SSE_EVENT = {  # one event of OpenAI's stream: unnamed, `data` is a chunk or [DONE]
    "type": "object",
    "required": ["data"],
    "properties": {"event": {"type": "string", "enum": ["message"]}, "data": {"type": "string"}},
}
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
        "question and the reserved answer (`no_passage_fits`, with the numbers), or the ask needs "
        "more tokens than the engine's whole KV cache (`exceeds_engine_capacity`)."
    ),
    415: _error("The body is not sent as `application/json` (`unsupported_media_type`)."),
    422: _error(
        "Invalid request: a field of the wrong type or out of range, max_tokens over half the "
        "engine's window, an index built with another embedder (`index_mismatch`)."
    ),
    429: _error(
        "The key is over its requests per second or prompt tokens per minute.", RETRY_AFTER
    ),
    500: _error("An unexpected error; the log has the details."),
    502: _error("The engine refused the request."),
    503: _error(
        "The engine, the store or the embedding service is unavailable (down, starting...), "
        "or the engine is at "
        "capacity and the ask cannot start (or did not get its first token) before its deadline "
        "(`overloaded`, RAG_REQUEST_TIMEOUT_S or timeout_s); Retry-After is the estimate.",
        RETRY_AFTER,
    ),
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
CHAT_SSE_DESCRIPTION = (
    'With `"stream": true`: OpenAI\'s server-sent events, `data: <chat.completion.chunk>` each, '
    "then `data: [DONE]`. The first chunk carries the extension field `citations`; with "
    '`stream_options: {"include_usage": true}` a last chunk (no choices) carries `usage`. A '
    'failure after the first byte ends the stream with `data: {"error": {type, message}}`.'
)
CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ASK_RESPONSES,
    200: {
        "description": "The completion (JSON), or its chunks as events when `stream` is true.",
        "content": {"text/event-stream": {"schema": CHAT_SSE_EVENT}},
    },
    404: _error(
        "The model is neither `rag:<index>` of an existing index nor the engine's own "
        "(`unknown_index`): GET /v1/models."
    ),
    413: _error(
        "The body is larger than RAG_CHAT_MAX_REQUEST_BYTES (`body_too_large`), the question "
        "(the last user message, for a `rag:` model) is over 4000 characters "
        "(`question_too_long`) or does not fit the window (`prompt_too_long`), passages matched "
        "but none fits beside the question and the reserved answer (`no_passage_fits`), or the "
        "ask needs more tokens than the engine's whole KV cache (`exceeds_engine_capacity`)."
    ),
}
COMPLETION_RESPONSES: dict[int | str, dict[str, Any]] = {
    **CHAT_RESPONSES,
    200: {
        "description": "The text completion (JSON), or its chunks as events when `stream` is true.",
        "content": {"text/event-stream": {"schema": CHAT_SSE_EVENT}},
    },
}
MODELS_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _error("An API key is required and none (or an invalid one) was sent.", AUTHENTICATE),
    429: _error("The key is over its requests per second.", RETRY_AFTER),
    503: _error("The store is unavailable.", RETRY_AFTER),
}
MODEL_RESPONSES: dict[int | str, dict[str, Any]] = {
    **MODELS_RESPONSES,
    403: _error("The API key may not read the model's index (`permission_denied`)."),
    404: _error("No such model (`unknown_index`): GET /v1/models lists them."),
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


# The answer-length fields bounded by the engine's window: /ask's, and the chat completion's.
BOUNDED = [
    ("AskRequest", "max_tokens"),
    ("ChatCompletionRequest", "max_tokens"),
    ("ChatCompletionRequest", "max_completion_tokens"),
    ("CompletionRequest", "max_tokens"),
]


def _bound_max_tokens(schema: dict[str, Any], bound: int) -> None:
    for model, name in BOUNDED:
        found = schema["components"]["schemas"].get(model)
        field = found["properties"][name] if found else {}
        for variant in field.get("anyOf", [field]):
            if "maximum" in variant:
                variant["maximum"] = bound


def _bound_timeout(schema: dict[str, Any], bound: float) -> None:
    """/ask's timeout_s goes up to RAG_MAX_REQUEST_TIMEOUT_S (the schema knows only 3600)."""
    field = schema["components"]["schemas"]["AskRequest"]["properties"]["timeout_s"]
    for variant in field.get("anyOf", [field]):
        if "maximum" in variant:
            variant["maximum"] = bound


def route_statuses(routes: list[BaseRoute]) -> list[tuple[str, int]]:
    """(route, status) for each status a route documents, its success and the statuses every
    route may answer (404 for an unknown index or file, 405, 422 for its parameters)."""
    pairs: set[tuple[str, int]] = set()
    for context in iter_route_contexts(routes):  # the included routers' routes too
        route = context.original_route
        if isinstance(route, APIRoute) and context.path:
            documented = {int(code) for code in route.responses if str(code).isdigit()}
            success = {route.status_code or 200}
            for status in documented | success | {404, 405, 422}:
                pairs.add((context.path, status))
    return sorted(pairs)


def install_contract(app: FastAPI) -> None:
    """The document, with max_tokens's bound set once the engine's window is known."""

    def contract() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        schema["paths"]["/ask"]["post"]["responses"]["200"]["description"] += " " + SSE_DESCRIPTION
        for path in ("/v1/chat/completions", "/v1/completions"):
            chat = schema["paths"].get(path)
            if chat is not None:
                chat["post"]["responses"]["200"]["description"] += " " + CHAT_SSE_DESCRIPTION
        _bound_timeout(schema, app.state.settings.max_request_timeout_s)
        services = getattr(app.state, "services", None)
        info = services.engine.known_model_info if services is not None else None
        if info is not None:
            _bound_max_tokens(schema, max_output_bound(info.max_model_len))
            app.openapi_schema = schema
        return schema

    app.openapi = contract  # type: ignore[method-assign]
