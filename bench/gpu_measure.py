"""Measurements of `bench.gpu`: one ask through the service and the same prompt to the engine.

The prompt the service built is rebuilt here from its `citations` event (the passages in prompt
order, numbered as the model sees them) with `rag.ask.prompt.build_messages`, so any service given
by URL can be compared with its engine on exactly the prompt it sent. TTFT is the time to the first
non-empty token seen by an HTTP client (the service: the first `token` event).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from rag.ask import build_messages
from rag.engine import Message
from rag.store import Hit

MAX_TOKENS = 8  # a few tokens: a dummy-weight model may emit an empty first piece
TopK = int | str


def p50_p95(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p95": round(ordered[round(0.95 * (len(ordered) - 1))], 2),
    }


@dataclass
class ServiceAsk:
    ttft_ms: float
    timings: dict[str, Any] = field(default_factory=dict)
    prompt_tokens: int = 0
    citations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Target:
    """The engine and the service measured; `forget` drops the service's cached query vectors."""

    engine: httpx.AsyncClient
    service: httpx.AsyncClient
    model: str
    forget: Callable[[], None] | None = None


async def service_ask(client: httpx.AsyncClient, question: str, top_k: TopK) -> ServiceAsk:
    body = {"question": question, "top_k": top_k, "max_tokens": MAX_TOKENS, "stream": True}
    started = time.perf_counter()
    result = ServiceAsk(ttft_ms=0.0)
    event = ""
    async with client.stream("POST", "/ask", json=body) as response:
        if response.status_code >= 400:
            await response.aread()
            raise RuntimeError(f"/ask answered {response.status_code}: {response.text[:500]}")
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:].strip()
                if event == "token" and not result.ttft_ms:
                    result.ttft_ms = (time.perf_counter() - started) * 1000
            elif line.startswith("data: ") and event in ("citations", "done", "error"):
                data = json.loads(line[6:])
                if event == "error":
                    raise RuntimeError(f"/ask streamed an error: {data}")
                if event == "citations":
                    result.citations = data["citations"]
                else:
                    result.timings = data["timings"]
                    result.prompt_tokens = int(data["usage"]["prompt_tokens"])
                    if not result.ttft_ms:  # no visible token at all: the done event
                        result.ttft_ms = (time.perf_counter() - started) * 1000
    return result


def messages_from(citations: list[dict[str, Any]], question: str) -> list[Message]:
    """The prompt the service sent, rebuilt from its citations (already in prompt order)."""
    hits = [
        Hit(
            id=str(c["chunk_id"]),
            score=float(c["score"]),
            payload={"source": c["source"], "page": c["page"], "heading": c["heading"]}
            | {"text": c["text"]},
        )
        for c in citations
    ]
    return build_messages(hits, question)


async def engine_ask(
    client: httpx.AsyncClient, model: str, messages: list[Message]
) -> tuple[float, int]:
    """(TTFT ms, prompt tokens) of one streamed chat completion sent straight to the engine."""
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    ttft, prompt_tokens = 0.0, 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices", []):
                if not ttft and (choice.get("delta") or {}).get("content"):
                    ttft = (time.perf_counter() - started) * 1000
            if chunk.get("usage"):
                prompt_tokens = int(chunk["usage"]["prompt_tokens"])
    return ttft or (time.perf_counter() - started) * 1000, prompt_tokens


async def reset_cache(engine: httpx.AsyncClient) -> bool:
    """Empty the engine's prefix cache (vLLM serves the route with VLLM_SERVER_DEV_MODE=1)."""
    response = await engine.post("/reset_prefix_cache")
    return response.status_code < 400


async def overhead(
    target: Target, questions: list[str], top_k: TopK, *, cold: bool = False
) -> dict[str, Any]:
    """Warm-engine method; with `cold`, each question is first timed on an emptied cache too."""
    rows: list[dict[str, float]] = []
    for question in questions:
        row: dict[str, float] = {}
        if cold and not await reset_cache(target.engine):
            raise RuntimeError("the engine has no /reset_prefix_cache (VLLM_SERVER_DEV_MODE=1)")
        first = await service_ask(target.service, question, top_k)  # warms the engine
        messages = messages_from(first.citations, question)
        if cold:
            await reset_cache(target.engine)
            row["cold_service_ttft_ms"] = first.ttft_ms
            row["cold_engine_ttft_ms"] = (await engine_ask(target.engine, target.model, messages))[
                0
            ]
        if target.forget is not None:
            target.forget()  # the service embeds the question again, as for a new one
        ask = await service_ask(target.service, question, top_k)
        direct, engine_tokens = await engine_ask(target.engine, target.model, messages)
        row |= {
            "service_ttft_ms": ask.ttft_ms,
            "engine_ttft_ms": direct,
            "overhead_ms": ask.ttft_ms - direct,
            "embed_ms": float(ask.timings.get("embed_ms") or 0.0),
            "search_ms": float(ask.timings.get("search_ms") or 0.0),
            "prompt_ms": float(ask.timings.get("prompt_ms") or 0.0),
            "prompt_tokens": float(ask.prompt_tokens),
            "passages": float(len(ask.citations)),
            "same_prompt": float(engine_tokens == ask.prompt_tokens),
        }
        rows.append(row)
    summary: dict[str, Any] = {key: p50_p95([r[key] for r in rows]) for key in rows[0]}
    summary["prompt_tokens"] |= {"min": min(r["prompt_tokens"] for r in rows)}
    summary["prompt_tokens"] |= {"max": max(r["prompt_tokens"] for r in rows)}
    summary["same_prompt"] = sum(r["same_prompt"] for r in rows) / len(rows)
    summary["top_k"], summary["asks"] = top_k, len(rows)
    o, e = summary["overhead_ms"], summary["engine_ttft_ms"]
    summary["overhead_p50_pct"] = round(100 * o["p50"] / e["p50"], 1)
    return summary


async def burst(target: Target, questions: list[str], top_k: TopK) -> dict[str, Any]:
    """All questions at once through the service, then their prompts at once to the engine.

    Each burst starts from an emptied prefix cache, so both sides prefill everything.
    """
    await reset_cache(target.engine)
    if target.forget is not None:
        target.forget()
    started = time.perf_counter()
    asks = await asyncio.gather(*(service_ask(target.service, q, top_k) for q in questions))
    service_wall = time.perf_counter() - started
    prompts = [messages_from(a.citations, q) for a, q in zip(asks, questions, strict=True)]
    await reset_cache(target.engine)
    started = time.perf_counter()
    direct = await asyncio.gather(*(engine_ask(target.engine, target.model, m) for m in prompts))
    engine_wall = time.perf_counter() - started
    service = p50_p95([a.ttft_ms for a in asks])
    engine = p50_p95([d[0] for d in direct])
    return {
        "asks": len(questions),
        "top_k": top_k,
        "service_ttft_ms": service,
        "engine_ttft_ms": engine,
        "embed_ms": p50_p95([float(a.timings.get("embed_ms") or 0.0) for a in asks]),
        "prompt_ms": p50_p95([float(a.timings.get("prompt_ms") or 0.0) for a in asks]),
        "overhead_p50_pct": round(100 * (service["p50"] - engine["p50"]) / engine["p50"], 1),
        "service_wall_s": round(service_wall, 2),
        "engine_wall_s": round(engine_wall, 2),
    }


async def healthz_during(target: Target, question: str, top_k: TopK) -> dict[str, Any]:
    """/healthz latency (p50/max) polled while one ask runs: does the ask block the loop?"""
    ask = asyncio.create_task(service_ask(target.service, question, top_k))
    latencies: list[float] = []
    while not ask.done():
        t = time.perf_counter()
        (await target.service.get("/healthz")).raise_for_status()
        latencies.append((time.perf_counter() - t) * 1000)
        await asyncio.sleep(0.01)
    await ask
    return {"polls": len(latencies), "max_ms": round(max(latencies, default=0.0), 2)} | (
        {"p50_ms": p50_p95(latencies)["p50"]} if latencies else {}
    )
