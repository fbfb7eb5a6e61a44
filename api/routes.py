"""HTTP routes: /ask (JSON or server-sent events), /healthz, /readyz, /metrics."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from dataclasses import asdict

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST

from api.auth import (
    KEYS_RETRY_AFTER_S,
    AdmittedDep,
    MetricsAccessDep,
    ReadinessDep,
    get_access,
    require_read,
)
from api.cancel import unless_disconnected
from api.deps import Services, ServicesDep
from api.errors import error_body
from api.media import JsonBody
from api.middleware import note_in_band_error
from api.openapi import ASK_RESPONSES, METRICS_RESPONSES, READY_RESPONSES
from api.protocol import AskRequest, AskResponse, HealthResponse, ReadyResponse
from api.sse import sse_event
from rag.ask import AskEvent, AskOptions, CitationsEvent, DoneEvent, answer_json, exchanges_from
from rag.guard import ANONYMOUS
from rag.store import SearchFilter

router = APIRouter()


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
        timeout_s=body.timeout_s,
        history=tuple(exchanges_from((turn.role, turn.content) for turn in body.history)),
    )


@router.post("/ask", response_model=AskResponse, responses=ASK_RESPONSES, dependencies=[JsonBody])
async def ask(
    body: AskRequest, services: ServicesDep, request: Request, caller: AdmittedDep
) -> Response:
    """Answer from the index, with citations: JSON, or server-sent events with `stream`."""
    options = ask_options(body, services)
    require_read(caller, options.index)
    services.supervisor.check()  # a known-down engine: 503 at once
    limiter = get_access(request).limiter
    charge = None if caller is ANONYMOUS else functools.partial(limiter.charge_tokens, caller)
    if not body.stream:
        answer = await unless_disconnected(request, services.asker().answer(options, charge=charge))
        services.metrics.observe_answer(answer)
        return JSONResponse(answer_json(answer))
    events = services.asker().stream(options, charge=charge)
    # Everything known before the first byte (engine refusal included) is an HTTP status.
    first = await unless_disconnected(request, anext(events))
    return StreamingResponse(
        _sse(first, events, services, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse(
    first: AskEvent, events: AsyncIterator[AskEvent], services: Services, request: Request
) -> AsyncIterator[bytes]:
    try:
        if isinstance(first, CitationsEvent):
            citations = [asdict(c) for c in first.citations]
            data = {"citations": citations, "model": first.model, "notice": first.notice}
            yield sse_event("citations", data)
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
        status, body = error_body(exc)
        note_in_band_error(request, status)
        yield sse_event("error", body["error"])
    finally:
        await events.aclose()  # type: ignore[attr-defined]


@router.get("/healthz", response_model=HealthResponse)
@router.head("/healthz", response_model=HealthResponse, operation_id="healthz_head")
async def healthz() -> dict[str, str]:
    """The process is alive (says nothing of the engine or the store: see /readyz)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyResponse, responses=READY_RESPONSES)
@router.head(
    "/readyz", response_model=ReadyResponse, responses=READY_RESPONSES, operation_id="readyz_head"
)
async def readyz(services: ServicesDep, keys: ReadinessDep) -> JSONResponse:
    """Engine, store, default index and key file all usable; 503 with the failing check
    otherwise."""
    if keys is not None:  # no caller can be checked: only the key file's state is told
        body = {"ready": False, "checks": {"keys": keys}}
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(KEYS_RETRY_AFTER_S)})
    checks: dict[str, str] = {}
    status = services.supervisor.status
    if status.state != "ready":
        checks["engine"] = status.describe()
    elif not await services.engine.health():  # between two of the supervisor's probes
        checks["engine"] = "not answering its health check"
    else:
        checks["engine"] = "ok"
    try:
        await asyncio.to_thread(services.store.ping)
        checks["store"] = "ok"
        meta = await asyncio.to_thread(services.store.get_meta, services.settings.index)
        checks["index"] = "ok" if meta is not None else f"missing: {services.settings.index}"
    except Exception as exc:
        checks["store"] = f"unavailable: {exc}"
        checks["index"] = "unknown"
    checks["keys"] = "ok"
    ready = all(v == "ok" for v in checks.values())
    headers = None if ready else {"Retry-After": str(services.supervisor.retry_after())}
    body = {"ready": ready, "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503, headers=headers)


@router.get("/metrics", response_class=Response, responses=METRICS_RESPONSES)
async def metrics(services: ServicesDep, _: MetricsAccessDep) -> Response:
    """Prometheus metrics of the service, and the engine's prefix-cache counters."""
    body = await services.metrics.render(services.engine, services.supervisor.ready)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
