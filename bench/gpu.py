"""GPU ask benchmark: service overhead, bursts, long context and prefix reuse against vLLM.

    python -m bench.gpu --engine-url http://127.0.0.1:8000 --service-url http://127.0.0.1:8080 \
        --questions ../shared/data/sec-10q/qna_data.csv [--api-key KEY]
    python -m bench.gpu --engine-url URL --folder ../shared/data/sec-10q --questions ... \
        --tokenizer /tmp/model          (the service is started here, in-process)

Without --engine-url, vLLM is started from --engine-model (add --engine-arg=--load-format=dummy
for a dummy-weight folder) with VLLM_SERVER_DEV_MODE=1. Without --service-url, the folder is
synced into an index (embedded on --embed-device) and the service runs in this process (uvicorn
in a thread, as bench/ask.py), which also allows the prefix-cache pass by passage order.
Sections (--parts): overhead (warm-engine method at --top-k 5, 35), auto (warm and cold
`top_k: "auto"`, /healthz polled beside it), burst (--bursts asks at once, service vs engine),
cache (hit ratio of --cache-asks questions, score vs canonical order), embed (question
embedding latency and ingest speed by device). Prints a table; writes JSON to --out.
With --service-url the service's query-vector cache cannot be cleared from here, so the timed
ask of the warm-engine method may reuse the warm-up ask's question vector (embed_ms near 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from bench.ask import INDEX, Service, cache_pass, load_questions
from bench.gpu_measure import Target, burst, healthz_during, overhead, p50_p95
from rag.config import Settings, default_cache_dir
from rag.embed import Embedder
from rag.engine import EngineConfig, EngineProcess
from rag.indexes import IndexSpec
from rag.ingest import FolderSync
from rag.store import EdgeStore

PARTS = ("embed", "overhead", "cache", "burst", "auto")


def build_index(folder: Path, data_dir: Path, device: str) -> dict[str, Any]:
    """Sync ``folder`` into the benchmark index, embedding on ``device``."""
    store = EdgeStore(data_dir)
    try:
        spec = IndexSpec(INDEX)
        embedder = Embedder(spec.embed_model, device=device, batch_size=256)
        report = FolderSync(store, embedder, spec).run([folder])
        return {
            "device": device,
            "files": report.added + report.updated,
            "unchanged": report.unchanged,
            "seconds": round(report.seconds, 1),
        }
    finally:
        store.close()


def embed_latency(questions: list[str], device: str) -> dict[str, Any]:
    """One question at a time, as the service embeds them, on ``device`` (torch)."""
    embedder = Embedder(IndexSpec(INDEX).embed_model, device=device)
    for q in questions[:5]:
        embedder.encode_query(q)
    times = []
    for q in questions:
        t = time.perf_counter()
        embedder.encode_query(q)
        times.append((time.perf_counter() - t) * 1000)
    batch = questions * max(1, 2048 // len(questions))
    t = time.perf_counter()
    embedder.encode(batch)
    rate = len(batch) / (time.perf_counter() - t)
    return {"device": device, "query_ms": p50_p95(times), "batch_texts_per_s": round(rate)}


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    info["host"] = f"{platform.machine()}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    for name in ("vllm", "torch", "transformers"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing or broken package is only not reported
            continue
    return info


async def run_parts(args: argparse.Namespace, engine_url: str, service: Service | None) -> Any:
    questions = load_questions(args.questions, max(args.bursts + [args.cache_asks, args.asks]))
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    service_url = args.service_url or (service.url if service else "")
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    result: dict[str, Any] = {}
    async with (
        httpx.AsyncClient(base_url=engine_url, timeout=900, limits=limits) as engine,
        httpx.AsyncClient(base_url=service_url, timeout=900, headers=headers, limits=limits) as api,
    ):
        model = (await engine.get("/v1/models")).json()["data"][0]["id"]
        forget = service.app.state.services.answerer.retriever.forget_queries if service else None
        target = Target(engine, api, model, forget)
        asks = questions[: args.asks]
        if "overhead" in args.parts:
            result["overhead"] = [await overhead(target, asks, k) for k in args.top_k]
        if "burst" in args.parts:
            result["burst"] = [
                await burst(target, questions[:n], args.burst_top_k) for n in args.bursts
            ]
        if "auto" in args.parts:
            auto = await overhead(target, asks[: args.auto_asks], "auto", cold=True)
            auto["healthz_during_ask"] = await healthz_during(target, asks[-1], "auto")
            result["auto"] = auto
    if "cache" in args.parts and service is not None:
        result["prefix_cache"] = [
            await cache_pass(service, engine_url, questions[: args.cache_asks], 5, order)
            for order in ("score", "canonical")
        ]
    return result


def start_engine(args: argparse.Namespace, logs: Path) -> EngineProcess:
    config = EngineConfig(
        model=args.engine_model,
        served_name=Path(args.engine_model).name,
        max_model_len=args.max_model_len,
        port=args.engine_port,
        extra_args=tuple(args.engine_arg),
        env={"VLLM_SERVER_DEV_MODE": "1"},
    )
    engine = EngineProcess(config, logs / "bench-gpu-engine.log")
    engine.start()
    engine.wait_ready()
    return engine


def print_table(result: dict[str, Any]) -> None:
    def pair(d: dict[str, float]) -> str:
        return f"{d['p50']:.0f} / {d['p95']:.0f}"

    print("\n| measure | engine alone | through the service |\n| --- | --- | --- |")
    for row in result.get("overhead", []) + ([result["auto"]] if "auto" in result else []):
        o = row["overhead_ms"]
        print(
            f"| top_k {row['top_k']} ({row['prompt_tokens']['p50']:.0f} tokens), TTFT p50 / p95 ms"
            f" | {pair(row['engine_ttft_ms'])} | {pair(row['service_ttft_ms'])} (overhead "
            f"{o['p50']:.1f} / {o['p95']:.1f} ms, {row['overhead_p50_pct']}% of p50) |"
        )
        print(
            f"| top_k {row['top_k']}: stages p50 ms | | embed {row['embed_ms']['p50']:.1f}, "
            f"search {row['search_ms']['p50']:.1f}, prompt {row['prompt_ms']['p50']:.1f} |"
        )
    if "auto" in result:
        a = result["auto"]
        print(
            f"| auto cold TTFT p50 ms | {a['cold_engine_ttft_ms']['p50']:.0f} | "
            f"{a['cold_service_ttft_ms']['p50']:.0f} |"
        )
        print(f"| auto: /healthz during an ask | | {a['healthz_during_ask']} |")
    for b in result.get("burst", []):
        print(
            f"| burst of {b['asks']} (top_k {b['top_k']}), TTFT p50 / p95 ms | "
            f"{pair(b['engine_ttft_ms'])} | {pair(b['service_ttft_ms'])} (embed p50 "
            f"{b['embed_ms']['p50']:.0f} ms) |"
        )
    for c in result.get("prefix_cache", []):
        print(
            f"| prefix-cache hit ratio, {c['asks']} asks, {c['order']} order | | {c['hit_ratio']} |"
        )
    for e in result.get("embed", []):
        print(f"| question embedding on {e['device']} | | {e['query_ms']} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=Path, required=True)
    parser.add_argument("--folder", type=Path, help="documents to index (in-process service)")
    parser.add_argument("--engine-url")
    parser.add_argument("--service-url")
    parser.add_argument("--api-key", default=os.environ.get("RAG_BENCH_API_KEY"))
    parser.add_argument("--engine-model", help="model folder, when the engine is started here")
    parser.add_argument("--engine-arg", action="append", default=[])
    parser.add_argument("--engine-port", type=int, default=8793)
    parser.add_argument("--max-model-len", type=int, default=262144)
    parser.add_argument("--tokenizer", help="the served model's tokenizer (in-process service)")
    parser.add_argument("--data-dir", type=Path, default=default_cache_dir() / "bench" / "gpu")
    parser.add_argument("--embed-device", default="cuda")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--asks", type=int, default=20)
    parser.add_argument("--top-k", type=int, nargs="+", default=[5, 35])
    parser.add_argument("--auto-asks", type=int, default=3)
    parser.add_argument("--bursts", type=int, nargs="+", default=[64, 100])
    parser.add_argument("--burst-top-k", type=int, default=35)
    parser.add_argument("--cache-asks", type=int, default=40)
    parser.add_argument("--out", type=Path, action="append", default=[])
    args = parser.parse_args()
    args.parts = set(args.parts.split(","))
    result: dict[str, Any] = {"environment": environment(), "argv": sys.argv[1:]}
    out = args.out or [Path("bench/results/gpu.json")]
    if out[0].is_file():  # sections measured by an earlier call are kept
        result = json.loads(out[0].read_text()) | result
    questions = load_questions(args.questions, 40)
    if "embed" in args.parts:
        devices = [args.embed_device] + (["cpu"] if args.embed_device != "cpu" else [])
        result["embed"] = [embed_latency(questions, d) for d in devices]
    with ExitStack() as stack:
        engine_url = args.engine_url
        if engine_url is None:
            if args.engine_model is None:
                raise SystemExit("give --engine-url, or --engine-model to start vLLM here")
            engine = start_engine(args, args.data_dir / "logs")
            stack.callback(engine.stop)
            engine_url = engine.url
        service = None
        if args.service_url is None:
            if args.folder is None:
                raise SystemExit("--folder is needed to start the service here")
            ingest = build_index(args.folder, args.data_dir, args.embed_device)
            if ingest["files"] or "ingest" not in result:  # a re-run only hashes the files
                result["ingest"] = ingest
            settings = Settings(
                data_dir=args.data_dir,
                index=INDEX,
                llm_url=engine_url,
                llm_tokenizer=args.tokenizer,
                embed_backend="torch",
                rate_limit_rps=0,
                rate_limit_tokens_per_minute=0,
                prompt_warm_passages=50_000,  # as the compose stack runs it
                request_timeout_s=120,  # measures the engine's pace, not admission's deadline
            )
            service = stack.enter_context(Service(settings, 8794))
        loop = asyncio.new_event_loop()
        result |= loop.run_until_complete(run_parts(args, engine_url, service))
    print(json.dumps(result, indent=2))
    print_table(result)
    for path in out:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
