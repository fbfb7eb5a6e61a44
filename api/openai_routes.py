"""OpenAI-compatible routes: GET /v1/models (one model per readable index) and
POST /v1/chat/completions (JSON, or OpenAI's server-sent events with ``stream``).

Same keys, rate limits and engine checks as /ask; errors in the project's envelope
``{"error": {"type", "message"}}``, which OpenAI's clients read as their own.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from api.auth import AdmittedDep, get_access, require_read
from api.cancel import unless_disconnected
from api.deps import Services, ServicesDep
from api.errors import error_body
from api.media import JsonBody
from api.middleware import note_in_band_error
from api.openai_protocol import ChatCompletion, ChatCompletionRequest, ModelList
from api.openapi import CHAT_RESPONSES, MODELS_RESPONSES
from api.protocol import AskRequest
from api.routes import ask_options
from rag.ask import AskEvent, AskOptions, Completion, DoneEvent, chat_options, model_cards
from rag.guard import ANONYMOUS

router = APIRouter(prefix="/v1", tags=["openai"])


def sse_data(data: Any) -> bytes:
    """One event of OpenAI's stream: a bare ``data:`` line (no ``event:`` name)."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


DONE = b"data: [DONE]\n\n"


@router.get("/models", response_model=ModelList, responses=MODELS_RESPONSES)
async def list_models(services: ServicesDep, caller: AdmittedDep) -> dict[str, Any]:
    """One model per index the key may read: `rag:<index>`."""
    cards = await asyncio.to_thread(model_cards, services.store, caller.can_read)
    return {"object": "list", "data": cards}


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses=CHAT_RESPONSES,
    dependencies=[JsonBody],
)
async def chat_completions(
    body: ChatCompletionRequest, services: ServicesDep, request: Request, caller: AdmittedDep
) -> Response:
    """The last user message answered from the index the model names, with citations."""
    options = chat_options(body.messages, model=body.model, defaults=_defaults(body, services))
    require_read(caller, options.index)
    services.supervisor.check()  # a known-down engine: 503 at once
    limiter = get_access(request).limiter
    charge = None if caller is ANONYMOUS else functools.partial(limiter.charge_tokens, caller)
    completion = Completion(body.model, include_usage=body.include_usage(), sources=body.sources)
    if not body.stream:
        answer = await unless_disconnected(
            request, services.answerer.answer(options, charge=charge)
        )
        services.metrics.observe_answer(answer)
        return JSONResponse(completion.whole(answer))
    events = services.answerer.stream(options, charge=charge)
    # Everything known before the first byte (engine refusal included) is an HTTP status.
    first = await unless_disconnected(request, anext(events))
    return StreamingResponse(
        _sse(first, events, completion, services, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _defaults(body: ChatCompletionRequest, services: Services) -> AskOptions:
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
