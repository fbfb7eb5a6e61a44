"""Embedding backends compared on this machine: chunks/s and agreement with torch.

    python -m bench.embedders --folder ../shared/data/sec-10q
    python -m bench.embedders --folder ../shared/data/sec-10q --scifact ../shared/data/scifact \
        --backends torch,onnx-int8          # adds SciFact train nDCG@10 (dense) per backend

The texts are real chunks: the folder's PDFs parsed and cut by the ingest chunker (200 tokens),
the first ``--texts`` of them. Each backend encodes them in batches of ``--batch-size`` with
``--threads`` threads; the backends take turns (A B C A B C ...) for ``--rounds`` rounds, so
that load from other processes falls on all of them alike, and the table shows the best and
the median round. The agreement is the cosine of each vector with torch's (min and mean).
Exported models are cached under the cache dir (``RAG_CACHE_DIR``). JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rag.config import Settings
from rag.embed import BACKENDS, Backend, Embedder, Vectors
from rag.indexes import DEFAULT_EMBED_MODEL


def chunk_texts(folder: Path, wanted: int, embedder: Embedder) -> list[str]:
    from rag.ingest import Chunker, file_type, parse_document

    chunker = Chunker(
        chunk_tokens=200,
        overlap_tokens=32,
        max_tokens=embedder.max_tokens,
        token_ids=embedder.token_ids,
        token_offsets=embedder.token_offsets,
    )
    texts: list[str] = []
    for path in sorted(folder.iterdir()):
        kind = file_type(path)
        if kind is None or not path.is_file():
            continue
        chunked = chunker.chunk(parse_document(path.read_bytes(), kind))
        texts.extend(c.text for c in chunked.chunks)
        if len(texts) >= wanted:
            break
    return texts[:wanted]


def cached_texts(folder: Path, wanted: int, embedder: Embedder, cache: Path) -> list[str]:
    """Parsing and chunking take a minute; the texts are kept for the next run."""
    name = f"embedder-texts-{folder.resolve().name}-{wanted}.json"
    path = cache / "bench" / name
    if path.exists():
        texts: list[str] = json.loads(path.read_text(encoding="utf-8"))
        return texts
    texts = chunk_texts(folder, wanted, embedder)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(texts), encoding="utf-8")
    return texts


def scifact_ndcg(embedder: Embedder, data_dir: Path, max_docs: int | None) -> float:
    """Dense nDCG@10 on SciFact train through the normal ingest and retrieval paths."""
    from rag.evaluation import Evaluation, load_beir
    from rag.store import EdgeStore

    data = load_beir(
        data_dir / "corpus.jsonl",
        data_dir / "queries-train.jsonl",
        data_dir / "qrels-train.tsv",
        max_docs,
    )
    with tempfile.TemporaryDirectory(prefix="bench-embedders-") as tmp:
        evaluation = Evaluation(data, EdgeStore(Path(tmp) / "store"), embedder, Path(tmp) / "c")
        evaluation.prepare()
        return float(evaluation.run("dense")["ndcg@10"])


def agreement(vectors: Vectors, reference: Vectors) -> dict[str, float]:
    cosines = np.sum(vectors * reference, axis=1)
    return {"min": float(cosines.min()), "mean": float(cosines.mean())}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    settings = Settings()
    backends: list[Backend] = args.backends
    embedders = {
        b: Embedder(
            DEFAULT_EMBED_MODEL,
            batch_size=args.batch_size,
            backend=b,
            cache_dir=settings.cache_dir,
            threads=args.threads,
        )
        for b in backends
    }
    first = embedders[backends[0]]
    texts = cached_texts(args.folder, args.texts, first, settings.cache_dir)
    for embedder in embedders.values():  # warm-up: first-call allocations are not measured
        embedder.encode(texts[: args.batch_size])
    rates: dict[str, list[float]] = {b: [] for b in backends}
    vectors: dict[str, Vectors] = {}
    for round_ in range(1, args.rounds + 1):
        for backend, embedder in embedders.items():
            started = time.perf_counter()
            vectors[backend] = embedder.encode(texts)
            rates[backend].append(len(texts) / (time.perf_counter() - started))
            print(f"round {round_} {backend}: {rates[backend][-1]:.1f}/s", file=sys.stderr)
    reference = vectors.get("torch")
    if reference is None:
        reference = Embedder(DEFAULT_EMBED_MODEL, batch_size=args.batch_size).encode(texts)
    rows: dict[str, dict[str, Any]] = {}
    for backend in backends:
        rows[backend] = {
            "best_chunks_per_s": round(max(rates[backend]), 1),
            "median_chunks_per_s": round(statistics.median(rates[backend]), 1),
            "rounds": [round(r, 1) for r in rates[backend]],
            "cosine_vs_torch": agreement(vectors[backend], reference),
        }
        if args.scifact is not None:
            ndcg = scifact_ndcg(embedders[backend], args.scifact, args.max_docs)
            rows[backend]["scifact_ndcg@10"] = round(ndcg, 4)
    return {
        "texts": len(texts),
        "mean_tokens": round(statistics.mean(first.count_tokens(t) for t in texts), 1),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "rounds": args.rounds,
        "max_docs": args.max_docs,
        "backends": rows,
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['texts']} chunks (mean {result['mean_tokens']} tokens), batch "
        f"{result['batch_size']}, {result['threads']} threads, {result['rounds']} rounds "
        "interleaved; other processes share the CPU, so the numbers are noisy",
        f"{'backend':<14} {'best/s':>8} {'median/s':>9} {'cos min':>9} {'cos mean':>9}  nDCG@10",
    ]
    for backend, row in result["backends"].items():
        cos = row["cosine_vs_torch"]
        ndcg = row.get("scifact_ndcg@10", "")
        lines.append(
            f"{backend:<14} {row['best_chunks_per_s']:>8} {row['median_chunks_per_s']:>9} "
            f"{cos['min']:>9.5f} {cos['mean']:>9.5f}  {ndcg}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True, help="Documents to chunk.")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--backends",
        type=lambda s: s.split(","),
        default=list(BACKENDS),
        help=f"Comma-separated, from {','.join(BACKENDS)}.",
    )
    parser.add_argument("--scifact", type=Path, help="BEIR SciFact folder: add nDCG@10.")
    parser.add_argument("--max-docs", type=int, help="nDCG on a subset of this many documents.")
    args = parser.parse_args()
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown:
        parser.error(f"unknown backends {unknown}; choose from {','.join(BACKENDS)}")
    result = run(args)
    print(table(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
