"""HTTP routes: /ask (JSON or server-sent events), /healthz, /readyz, /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import Services, ServicesDep
from api.errors import error_body
from api.protocol import AskRequest, AskResponse, ErrorResponse
from api.sse import sse_event
from rag.answer import AskEvent, AskOptions, CitationsEvent, DoneEvent, answer_json
from rag.store.base import SearchFilter

router = APIRouter()

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (413, 422, 503, 504)
}


def ask_options(body: AskRequest, services: Services) -> AskOptions:
    s = services.settings
    f = body.filters
    flt = SearchFilter(
        path_prefix=f.path_prefix if f else None,
        file_types=tuple(f.file_types or ()) if f else (),
        modified_after=f.modified_after.timestamp() if f and f.modified_after else None,
        modified_before=f.modified_before.timestamp() if f and f.modified_before else None,
    )
    return AskOptions(
        question=body.question,
        top_k=body.top_k if body.top_k is not None else s.top_k,
        index=body.index or s.index,
        filter=flt,
        max_tokens=body.max_tokens or s.max_output_tokens,
        temperature=body.temperature,
    )


@router.post("/ask", response_model=AskResponse, responses=ERRORS)
async def ask(body: AskRequest, services: ServicesDep) -> Any:
    options = ask_options(body, services)
    events = services.answerer.stream(options)
    if not body.stream:
        async for event in events:
            if isinstance(event, DoneEvent):
                services.metrics.observe_answer(event.answer)
                return answer_json(event.answer)
    first = await anext(events)  # errors before the first byte still get their HTTP status
    return StreamingResponse(
        _sse(first, events, services),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse(
    first: AskEvent, events: AsyncIterator[AskEvent], services: Services
) -> AsyncIterator[bytes]:
    try:
        if isinstance(first, CitationsEvent):
            citations = [asdict(c) for c in first.citations]
            yield sse_event("citations", {"citations": citations, "model": first.model})
        async for event in events:
            if isinstance(event, DoneEvent):
                services.metrics.observe_answer(event.answer)
                done = answer_json(event.answer)
                del done["citations"], done["answer"]
                yield sse_event("done", done)
            elif not isinstance(event, CitationsEvent):
                yield sse_event("token", {"text": event.text})
    except asyncio.CancelledError:
        raise  # the client went away: closing `events` aborts the engine request
    except Exception as exc:  # after the first byte the status is sent: report in band
        _, body = error_body(exc)
        yield sse_event("error", body["error"])
    finally:
        await events.aclose()  # type: ignore[attr-defined]


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "not ready"}})
async def readyz(services: ServicesDep) -> JSONResponse:
    checks: dict[str, str] = {}
    proc = services.engine_process
    if await services.engine.health():
        checks["engine"] = "ok"
    elif proc is not None and not proc.running():
        checks["engine"] = "exited (see the engine log)"
    else:
        checks["engine"] = "unreachable"
    try:
        await asyncio.to_thread(services.store.ping)
        checks["store"] = "ok"
        meta = await asyncio.to_thread(services.store.get_meta, services.settings.index)
        checks["index"] = "ok" if meta is not None else f"missing: {services.settings.index}"
    except Exception as exc:
        checks["store"] = f"unavailable: {exc}"
        checks["index"] = "unknown"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    body = await services.metrics.render(services.engine)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
