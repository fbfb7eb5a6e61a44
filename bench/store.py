"""Store benchmark: both adapters on real MiniLM embeddings of SciFact text.

    python -m bench.store --corpus ../shared/data/scifact/corpus.jsonl

Points are real embeddings of real text: SciFact sentences, their clauses (split at commas and
semicolons) and, to reach 100,000, pairs of consecutive sentences, embedded once and cached
under the cache dir. Queries are the SciFact claims. For each size (10,000 and 100,000 points)
and each adapter it prints the write rate, top-10 search latency p50/p95 plain and with a
keyword filter (about 10% of points pass), and for Qdrant Edge recall@10 of the HNSW search
against exact search.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from rag.config import default_cache_dir
from rag.embed import Embedder
from rag.indexes import DEFAULT_EMBED_MODEL, ChunkingSpec, IndexMeta
from rag.store import SearchFilter, SearchQuery, StoredChunk, VectorStore

SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
CLAUSE = re.compile(r"[,;]\s+")
GROUPS = 10


def texts_of(corpus: Path, wanted: int) -> list[str]:
    texts: list[str] = []
    pairs: list[str] = []
    with corpus.open(encoding="utf-8") as lines:
        for line in lines:
            doc = json.loads(line)
            sentences = [s for s in SENTENCE.split(doc["text"]) if len(s) > 20]
            texts.extend(sentences)
            for sentence in sentences:
                clauses = [c.strip() for c in CLAUSE.split(sentence) if len(c.strip()) > 20]
                if len(clauses) > 1:  # a sentence without commas is already in
                    texts.extend(clauses)
            pairs.extend(" ".join(sentences[i : i + 2]) for i in range(len(sentences) - 1))
    return (texts + pairs)[:wanted]


def embeddings(corpus: Path, wanted: int, embedder: Embedder) -> np.ndarray:
    cache = default_cache_dir() / "bench" / f"scifact-units-{wanted}.npy"
    if cache.exists():
        return np.load(cache)
    texts = texts_of(corpus, wanted)
    started = time.perf_counter()
    vectors = embedder.encode(texts)
    print(f"embedded {len(texts)} texts in {time.perf_counter() - started:.0f} s", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return vectors


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
    }


def timed_searches(
    store: VectorStore, queries: np.ndarray, flt: SearchFilter, exact: bool = False
) -> tuple[list[float], list[list[str]]]:
    times, results = [], []
    for q in queries:
        t = time.perf_counter()
        hits = store.search(
            "bench", SearchQuery(dense=q, sparse=None, limit=10, filter=flt, exact=exact)
        )
        times.append(time.perf_counter() - t)
        results.append([h.id for h in hits])
    return times, results


def recall(approx: list[list[str]], exact: list[list[str]]) -> float:
    return round(
        float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])), 4
    )


def run_adapter(kind: str, vectors: np.ndarray, queries: np.ndarray, work: Path) -> dict[str, Any]:
    store: VectorStore
    if kind == "edge":
        from rag.store import EdgeStore

        store = EdgeStore(work / "edge")
    else:
        from qdrant_client import QdrantClient

        from rag.store.server import ServerStore

        store = ServerStore(QdrantClient(path=str(work / "local")))
    meta = IndexMeta(
        "bench",
        DEFAULT_EMBED_MODEL,
        vectors.shape[1],
        254,
        ChunkingSpec(),
        "bm25",
        "2026-11-22T00:00:00+00:00",
    )
    store.create_index(meta)
    points = [
        StoredChunk(
            str(uuid.UUID(int=i + 1)),
            v,
            None,
            {"dirs": [f"group-{i % GROUPS}"], "source": f"group-{i % GROUPS}/doc-{i}.txt"},
        )
        for i, v in enumerate(vectors)
    ]
    started = time.perf_counter()
    store.upsert("bench", points)
    write_s = time.perf_counter() - started
    result: dict[str, Any] = {
        "points": len(points),
        "write_points_per_s": round(len(points) / write_s),
    }
    flt = SearchFilter(path_prefix="group-3")
    if kind == "edge":
        _, exact = timed_searches(store, queries, SearchFilter(), exact=True)
        _, exact_f = timed_searches(store, queries, flt, exact=True)
        started = time.perf_counter()
        store.optimize("bench")
        result["hnsw_build_s"] = round(time.perf_counter() - started, 1)
    plain_t, plain = timed_searches(store, queries, SearchFilter())
    filt_t, filt = timed_searches(store, queries, flt)
    result["search"] = percentiles(plain_t)
    result["filtered_search"] = percentiles(filt_t)
    if kind == "edge":
        result["recall@10"] = recall(plain, exact)
        result["filtered_recall@10"] = recall(filt, exact_f)
    else:
        result["recall@10"] = "1.0 (local mode searches exactly)"
    store.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--queries", type=Path, default=None)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--local-queries", type=int, default=50, help="queries for local mode")
    args = parser.parse_args()
    if not args.corpus.is_file():
        raise SystemExit(f"no such corpus: {args.corpus} (SciFact lives in ../shared/data)")
    queries_path = args.queries or args.corpus.with_name("queries-train.jsonl")
    sizes = [int(s) for s in args.sizes.split(",")]
    embedder = Embedder(DEFAULT_EMBED_MODEL)
    vectors = embeddings(args.corpus, max(sizes), embedder)
    claims = [json.loads(line)["text"] for line in queries_path.open(encoding="utf-8")][:200]
    queries = embedder.encode(claims)
    report: dict[str, Any] = {}
    for size in sizes:
        for kind in ("edge", "server-local"):
            work = Path(tempfile.mkdtemp(prefix="bench-store-"))
            try:
                q = queries if kind == "edge" else queries[: args.local_queries]
                report[f"{kind}@{size}"] = run_adapter(kind, vectors[:size], q, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            print(json.dumps({f"{kind}@{size}": report[f"{kind}@{size}"]}), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
