"""Embedding speed both ways: in-process (sentence-transformers on --device) and through an
OpenAI-compatible /v1/embeddings service (--embed-url, e.g. the compose `embed` service).

    python -m bench.gpu_embed --folder ../shared/data/sec-10q \
        --questions ../shared/data/sec-10q/qna_data.csv --embed-url http://127.0.0.1:8002
    python -m bench.gpu_embed ... --ingest        # also sync the whole folder, both ways

For each way: question latency one at a time (p50/p95 over --asks questions, after a warm-up);
a burst of --burst questions released at once from as many threads, through the service's
QueryBatcher (rag/embed/batcher.py) and without it (each thread calls the embedder itself),
per-question latency p50/p95 and the forward passes the batcher ran; chunks/s of ingest-style
embedding of --chunks real chunks (the folder's files cut by the ingest chunker) in batches of
--batch-size; with --ingest, a whole `FolderSync` of the folder into a fresh index (seconds,
chunks/s). Prints a table; writes JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.ask import load_questions
from bench.embedders import cached_texts
from bench.gpu_measure import p50_p95
from rag.config import default_cache_dir
from rag.embed import Embedder, HttpEmbedder, QueryBatcher, TextEmbedder, Vectors, embed_device
from rag.indexes import DEFAULT_EMBED_MODEL, IndexSpec


def single(embedder: TextEmbedder, questions: list[str]) -> dict[str, float]:
    for q in questions[:5]:
        embedder.encode_query(q)  # warm-up: kernels, connections
    times = []
    for q in questions:
        t = time.perf_counter()
        embedder.encode_query(q)
        times.append((time.perf_counter() - t) * 1000)
    return p50_p95(times)


def released_together(encode: Callable[[str], Vectors], questions: list[str]) -> list[float]:
    """Each question from its own thread, all released at once; ms from release to vector."""
    start = threading.Barrier(len(questions) + 1)

    def one(question: str) -> float:
        start.wait()
        t = time.perf_counter()
        encode(question)
        return (time.perf_counter() - t) * 1000

    with ThreadPoolExecutor(len(questions)) as pool:
        futures = [pool.submit(one, q) for q in questions]
        start.wait()
        return [f.result() for f in futures]


def burst(embedder: TextEmbedder, questions: list[str], rounds: int) -> dict[str, Any]:
    batcher = QueryBatcher(embedder.encode, max_batch=max(64, len(questions)))
    batched: list[float] = []
    alone: list[float] = []
    for _ in range(rounds):  # the two ways take turns, so load from elsewhere hits both
        batched += released_together(batcher.encode_query, questions)
        alone += released_together(embedder.encode_query, questions)
    return {
        "questions": len(questions),
        "batched_ms": p50_p95(batched),
        "batched_passes_per_burst": round(batcher.passes / rounds, 1),
        "unbatched_ms": p50_p95(alone),
    }


def chunk_rate(embedder: TextEmbedder, texts: list[str]) -> float:
    embedder.encode(texts[:64])  # warm-up
    t = time.perf_counter()
    embedder.encode(texts)
    return round(len(texts) / (time.perf_counter() - t), 1)


def ingest(embedder: TextEmbedder, folder: Path) -> dict[str, Any]:
    """The whole folder synced into a fresh index (parse, chunk, embed, store) with ``embedder``."""
    from rag.ingest import FolderSync
    from rag.store import EdgeStore

    with tempfile.TemporaryDirectory(prefix="bench-gpu-embed-") as work:
        store = EdgeStore(Path(work))
        try:
            report = FolderSync(store, embedder, IndexSpec("bench")).run([folder])
            chunks = sum(1 for _ in store.scan("bench", ["source"]))
        finally:
            store.close()
    return {
        "files": report.added + report.updated,
        "chunks": chunks,
        "seconds": round(report.seconds, 1),
        "embed_seconds": round(report.stages.get("embed", 0.0), 1),
        "chunks_per_s": round(chunks / report.seconds, 1) if report.seconds else None,
    }


def measure(
    name: str,
    embedder: TextEmbedder,
    args: argparse.Namespace,
    questions: list[str],
    texts: list[str],
) -> dict[str, Any]:
    print(f"{name}: questions one at a time", file=sys.stderr, flush=True)
    result: dict[str, Any] = {"way": name, "single_ms": single(embedder, questions[: args.asks])}
    print(f"{name}: bursts of {args.burst}", file=sys.stderr, flush=True)
    result["burst"] = burst(embedder, questions[: args.burst], args.rounds)
    print(f"{name}: {len(texts)} chunks", file=sys.stderr, flush=True)
    result["chunks_per_s"] = chunk_rate(embedder, texts)
    if args.ingest:
        print(f"{name}: syncing {args.folder}", file=sys.stderr, flush=True)
        result["ingest"] = ingest(embedder, args.folder)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = embed_device(args.device)
    local = Embedder(
        DEFAULT_EMBED_MODEL,
        device=device,
        batch_size=args.batch_size,
        backend=args.backend if device == "cpu" else "torch",
        cache_dir=default_cache_dir(),
    )
    questions = load_questions(args.questions, max(args.asks, args.burst))
    questions = (questions * (1 + max(args.asks, args.burst) // max(1, len(questions))))[
        : max(args.asks, args.burst)
    ]
    texts = cached_texts(args.folder, args.chunks, local, default_cache_dir())
    label = f"in-process ({device}, {local.backend})"
    ways = [measure(label, local, args, questions, texts)]
    if args.embed_url:
        http = HttpEmbedder(
            args.embed_url, DEFAULT_EMBED_MODEL, api_key=args.api_key, batch_size=args.batch_size
        )
        try:
            ways.append(measure(f"http {http.url}", http, args, questions, texts))
        finally:
            http.close()
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "ways": ways}


def table(result: dict[str, Any]) -> str:
    rows = [
        "| way | question p50 / p95 ms | burst batched p50 / p95 ms (passes) "
        "| burst unbatched p50 / p95 ms | chunks/s | ingest s (chunks/s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for way in result["ways"]:
        s, b = way["single_ms"], way["burst"]
        ingested = way.get("ingest")
        sync = f"{ingested['seconds']} ({ingested['chunks_per_s']})" if ingested else "-"
        rows.append(
            f"| {way['way']} | {s['p50']} / {s['p95']} "
            f"| {b['batched_ms']['p50']} / {b['batched_ms']['p95']} "
            f"({b['batched_passes_per_burst']}) "
            f"| {b['unbatched_ms']['p50']} / {b['unbatched_ms']['p95']} "
            f"| {way['chunks_per_s']} "
            f"| {sync} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embed-url", help="an OpenAI-compatible /v1/embeddings service")
    parser.add_argument("--api-key", help="its key, if it wants one")
    parser.add_argument("--device", default="auto", help="in-process: auto, cpu, cuda, cuda:1")
    parser.add_argument("--backend", default="torch", help="in-process on the CPU (torch, ...)")
    parser.add_argument("--folder", type=Path, default=Path("../shared/data/sec-10q"))
    parser.add_argument("--questions", type=Path)
    parser.add_argument("--asks", type=int, default=100, help="questions one at a time")
    parser.add_argument("--burst", type=int, default=64, help="questions released at once")
    parser.add_argument("--rounds", type=int, default=5, help="bursts per way")
    parser.add_argument("--chunks", type=int, default=4096, help="chunks for chunks/s")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--ingest", action="store_true", help="also sync the whole folder")
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu-embed.json"))
    args = parser.parse_args()
    args.questions = args.questions or args.folder / "qna_data.csv"
    result = run(args)
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
