"""OpenAI-compatible routes: GET /v1/models (one model per readable index, and the engine's own),
GET /v1/models/{id}, POST /v1/chat/completions and POST /v1/completions (JSON, or OpenAI's
server-sent events with ``stream``).

Same keys, rate limits and engine checks as /ask; errors in the project's envelope
``{"error": {"type", "message"}}``, which OpenAI's clients read as their own.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from api.auth import AdmittedDep, get_access, require_read
from api.cancel import unless_disconnected
from api.deps import Services, ServicesDep
from api.errors import error_body
from api.media import JsonBody
from api.middleware import note_in_band_error
from api.openai_protocol import (
    AnswerRequest,
    ChatCompletion,
    ChatCompletionRequest,
    CompletionRequest,
    ModelCard,
    ModelList,
    TextCompletion,
)
from api.openapi import CHAT_RESPONSES, COMPLETION_RESPONSES, MODEL_RESPONSES, MODELS_RESPONSES
from api.protocol import MAX_QUESTION_CHARS, AskRequest
from api.routes import ask_options
from rag.ask import (
    AskEvent,
    AskOptions,
    Completion,
    DirectOptions,
    DoneEvent,
    Turn,
    chat_options,
    check_question,
    engine_messages,
    final_answer,
    index_model_card,
    index_of,
    is_task,
    model_cards,
)
from rag.ask import TextCompletion as TextCompletionShape
from rag.guard import ANONYMOUS, Principal

router = APIRouter(prefix="/v1", tags=["openai"])


def sse_data(data: Any) -> bytes:
    """One event of OpenAI's stream: a bare ``data:`` line (no ``event:`` name)."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


DONE = b"data: [DONE]\n\n"


@router.get("/models", response_model=ModelList, responses=MODELS_RESPONSES)
async def list_models(services: ServicesDep, caller: AdmittedDep) -> dict[str, Any]:
    """One model per index the key may read, `rag:<index>`; then the engine's own (no
    retrieval: a chat UI's task model)."""
    cards = await asyncio.to_thread(model_cards, services.store, caller.can_read)
    engine = await services.direct.model_card()
    return {"object": "list", "data": cards + ([engine] if engine else [])}


@router.get("/models/{model:path}", response_model=ModelCard, responses=MODEL_RESPONSES)
async def get_model(model: str, services: ServicesDep, caller: AdmittedDep) -> dict[str, Any]:
    """One model of GET /v1/models: `rag:<index>` or the engine's own."""
    engine = await services.direct.model_card()
    if engine is not None and engine["id"] == model:
        return engine
    require_read(caller, index_of(model))
    return await asyncio.to_thread(index_model_card, services.store, model)


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses=CHAT_RESPONSES,
    dependencies=[JsonBody],
)
async def chat_completions(
    body: ChatCompletionRequest, services: ServicesDep, request: Request, caller: AdmittedDep
) -> Response:
    """The last user message answered from the index the model names, with citations; the
    engine's own model and chat UIs' task prompts answered by the engine alone."""
    completion = Completion(
        body.model, include_usage=body.include_usage(), sources=_sources(body, services)
    )
    events = await _answering(body.messages, body, services, request, caller)
    return await _respond(events, completion, bool(body.stream), services, request)


@router.post(
    "/completions",
    response_model=TextCompletion,
    responses=COMPLETION_RESPONSES,
    dependencies=[JsonBody],
)
async def completions(
    body: CompletionRequest, services: ServicesDep, request: Request, caller: AdmittedDep
) -> Response:
    """The prompt answered as the question of a chat completion, in the `text_completion` shape."""
    sources = _sources(body, services)
    completion = TextCompletionShape(
        body.model, include_usage=body.include_usage(), sources=sources
    )
    events = await _answering(body.turns(), body, services, request, caller)
    return await _respond(events, completion, bool(body.stream), services, request)


async def _answering(
    turns: Sequence[Turn],
    body: AnswerRequest,
    services: Services,
    request: Request,
    caller: Principal,
) -> AsyncIterator[AskEvent]:
    """The answer's events: from the engine alone for its own model or a task prompt (the key
    may use the `rag:` model it names), else from the index."""
    defaults = _defaults(body, services)
    limiter = get_access(request).limiter
    charge = None if caller is ANONYMOUS else functools.partial(limiter.charge_tokens, caller)
    engine_model = await services.direct.serves(body.model)
    if engine_model or is_task(turns):
        if not engine_model:
            require_read(caller, index_of(body.model))
        services.supervisor.check()  # a known-down engine: 503 at once
        messages = engine_messages(turns)
        options = DirectOptions(messages, defaults.max_tokens, defaults.temperature)
        return services.direct.stream(options, charge=charge)
    asked = chat_options(turns, model=body.model, defaults=defaults)
    check_question(asked.question, MAX_QUESTION_CHARS)
    require_read(caller, asked.index)
    services.supervisor.check()
    return services.asker().stream(asked, charge=charge)


async def _respond(
    events: AsyncIterator[AskEvent],
    completion: Completion,
    stream: bool,
    services: Services,
    request: Request,
) -> Response:
    if not stream:
        answer = await unless_disconnected(request, final_answer(events))
        services.metrics.observe_answer(answer)
        return JSONResponse(completion.whole(answer))
    # Everything known before the first byte (engine refusal included) is an HTTP status.
    first = await unless_disconnected(request, anext(events))
    return StreamingResponse(
        _sse(first, events, completion, services, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _sources(body: AnswerRequest, services: Services) -> bool:
    """The request's `sources`, else the service's RAG_CHAT_SOURCES."""
    return services.settings.chat_sources if body.sources is None else body.sources


def _defaults(body: AnswerRequest, services: Services) -> AskOptions:
    """What /ask would do with the request's answer settings (and the service's defaults)."""
    settings = AskRequest.model_construct(
        question="",
        top_k=body.top_k,
        filters=body.filters,
        max_tokens=body.answer_tokens(),
        temperature=body.temperature or 0.0,
    )
    return ask_options(settings, services)


async def _sse(
    first: AskEvent,
    events: AsyncIterator[AskEvent],
    completion: Completion,
    services: Services,
    request: Request,
) -> AsyncIterator[bytes]:
    try:
        for chunk in completion.chunks(first):
            yield sse_data(chunk)
        async for event in events:
            if isinstance(event, DoneEvent):
                services.metrics.observe_answer(event.answer)
            for chunk in completion.chunks(event):
                yield sse_data(chunk)
        yield DONE
    except asyncio.CancelledError:
        raise  # the client went away: closing `events` aborts the engine request
    except Exception as exc:  # after the first byte the status is sent: report in band
        status, error = error_body(exc)
        note_in_band_error(request, status)
        yield sse_data(error)  # {"error": {...}}: OpenAI's clients raise it as an APIError
    finally:
        await events.aclose()  # type: ignore[attr-defined]
