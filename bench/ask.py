"""Ask benchmark: service overhead on time-to-first-token, and prefix-cache hits by passage order.

    python -m bench.ask --folder ../shared/data/sec-10q \
        --questions ../shared/data/sec-10q/qna_data.csv

1. Syncs the folder into an index kept under the cache dir (a re-run only hashes the files).
2. Starts the real engine (the managed one: SmolLM2 on the vLLM CPU build here) and the real
   service (uvicorn, in a thread of this process).
3. Overhead: for each question, the prompt the service builds is sent once to the engine to warm
   its cache; then the service's TTFT (POST /ask streamed, first `token` event, measured by an
   HTTP client) and the engine's TTFT on the same prompt sent directly are measured, both with
   the cache warm. Their difference is what the service adds: embedding, search, prompt
   fitting, its HTTP hop.
4. Prefix cache: the engine's cache is reset, the question set is asked with passages in score
   order, then reset again and asked in canonical order; the hit ratio of each pass is read from
   the engine's /metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import json
import os
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from api.app import create_app
from rag.ask import AskOptions, PassageOrder, Timings
from rag.config import Settings, default_cache_dir
from rag.embed import Embedder
from rag.engine import EngineProcess, Message, local_engine_config, prefix_cache_counters
from rag.indexes import IndexSpec
from rag.ingest import FolderSync
from rag.store import EdgeStore

INDEX = "bench-sec"


def p50_p95(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
    }


def load_questions(path: Path, limit: int) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return [row["Question"].strip() for row in csv.DictReader(f)][:limit]


def sync_index(folder: Path, data_dir: Path) -> None:
    store = EdgeStore(data_dir)
    try:
        report = FolderSync(store, Embedder(IndexSpec(INDEX).embed_model), IndexSpec(INDEX)).run(
            [folder]
        )
        print(
            f"index: {report.added + report.updated} files ingested, "
            f"{report.unchanged} unchanged, {report.seconds:.0f} s",
            flush=True,
        )
    finally:
        store.close()


@contextmanager
def bench_engine(data_dir: Path) -> Iterator[tuple[EngineProcess, Settings]]:
    """The engine started here (ready), and the service's settings against it, for the index
    synced into ``data_dir``; stopped on the way out. Dev mode exposes /reset_prefix_cache, so
    a pass can start from an empty cache."""
    settings = Settings(data_dir=data_dir, index=INDEX, engine_port=8791)
    config = local_engine_config(settings)
    config = dataclasses.replace(config, env={**config.env, "VLLM_SERVER_DEV_MODE": "1"})
    engine = EngineProcess(config, data_dir / "logs" / "bench-engine.log")
    engine.start()
    try:
        engine.wait_ready()
        yield (
            engine,
            settings.model_copy(update={"llm_url": engine.url, "llm_tokenizer": config.model}),
        )
    finally:
        engine.stop()


async def engine_ttft(client: httpx.AsyncClient, model: str, messages: list[Message]) -> float:
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": 1,
        "temperature": 0.0,
        "stream": True,
    }
    started = time.perf_counter()
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                return (time.perf_counter() - started) * 1000
    raise RuntimeError("the engine streamed no content")


async def service_ttft(client: httpx.AsyncClient, question: str, top_k: int) -> float:
    body = {"question": question, "top_k": top_k, "max_tokens": 1, "stream": True}
    started = time.perf_counter()
    async with client.stream("POST", "/ask", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("event: token"):
                return (time.perf_counter() - started) * 1000
    raise RuntimeError("the service streamed no token")


class Service:
    def __init__(self, settings: Settings, port: int) -> None:
        self.app = create_app(settings)
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning")
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(self.server.serve(),), daemon=True
        )
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> Service:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=600)


async def overhead(
    service: Service, engine_url: str, questions: list[str], top_k: int
) -> dict[str, Any]:
    answerer = service.app.state.services.answerer
    model = (
        await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(answerer.engine.model_info(), service.loop)
        )
    ).id
    rows: list[dict[str, float]] = []
    async with (
        httpx.AsyncClient(base_url=engine_url, timeout=300) as engine,
        httpx.AsyncClient(base_url=service.url, timeout=300) as api,
    ):
        for question in questions:
            timings = Timings()
            fitted = await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(
                    answerer.prepare(AskOptions(question, top_k=top_k, index=INDEX), timings),
                    service.loop,
                )
            )
            await engine_ttft(engine, model, fitted.messages)  # warm the engine's cache
            answerer.retriever.forget_queries()  # the service must embed the question itself
            via_service = await service_ttft(api, question, top_k)
            direct = await engine_ttft(engine, model, fitted.messages)
            rows.append(
                {
                    "service_ttft_ms": via_service,
                    "engine_ttft_ms": direct,
                    "overhead_ms": via_service - direct,
                    "embed_ms": timings.embed_ms,
                    "search_ms": timings.search_ms,
                    "prompt_ms": timings.prompt_ms,
                }
            )
    return {key: p50_p95([r[key] for r in rows]) for key in rows[0]} | {"asks": len(rows)}


async def cache_pass(
    service: Service, engine_url: str, questions: list[str], top_k: int, order: PassageOrder
) -> dict[str, Any]:
    answerer = service.app.state.services.answerer
    async with httpx.AsyncClient(base_url=engine_url, timeout=300) as engine:
        (await engine.post("/reset_prefix_cache")).raise_for_status()
        hits0, queries0 = prefix_cache_counters((await engine.get("/metrics")).text)
        for question in questions:
            options = AskOptions(question, top_k=top_k, index=INDEX, max_tokens=1)
            await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(
                    answerer.answer(options, order=order), service.loop
                )
            )
        hits1, queries1 = prefix_cache_counters((await engine.get("/metrics")).text)
    return {
        "order": order,
        "asks": len(questions),
        "prompt_tokens": int(queries1 - queries0),
        "cached_tokens": int(hits1 - hits0),
        "hit_ratio": round((hits1 - hits0) / max(1.0, queries1 - queries0), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--questions", type=Path, required=True)
    parser.add_argument("--asks", type=int, default=50)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument(
        "--torch-threads", type=int, help="torch threads of the service (1 beside a CPU engine)"
    )
    args = parser.parse_args()
    if args.torch_threads:  # before torch loads (the engine sets its own threads)
        os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)
    if not args.folder.is_dir() or not args.questions.is_file():
        raise SystemExit("needs the SEC filings and questions of ../shared/data/sec-10q")
    data_dir = default_cache_dir() / "bench" / "ask-data"
    sync_index(args.folder, data_dir)
    questions = load_questions(args.questions, args.asks)

    with bench_engine(data_dir) as (engine, service_settings):
        with Service(service_settings, 8792) as service:
            loop = asyncio.new_event_loop()
            result = {
                "overhead": loop.run_until_complete(
                    overhead(service, engine.url, questions, args.top_k)
                ),
                "prefix_cache": [
                    loop.run_until_complete(
                        cache_pass(service, engine.url, questions, args.top_k, order)
                    )
                    for order in ("score", "canonical")
                ],
            }
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
