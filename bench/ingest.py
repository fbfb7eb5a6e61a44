"""Ingestion benchmark: our sync against LlamaIndex's default pipeline on the same folder.

    python -m bench.ingest --folder ../shared/data/sec-10q

Prints pages, chunks, seconds per stage, pages/s, chunks/s and peak RSS for a first ingest
into a fresh index, then the unchanged re-run, then LlamaIndex's default pipeline
(SimpleDirectoryReader -> SentenceSplitter -> HuggingFaceEmbedding on the same MiniLM ->
QdrantVectorStore in qdrant-client's local mode) and the ratio of the two.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rag.embedding import Embedder, resolve_model
from rag.indexes import DEFAULT_EMBED_MODEL, IndexSpec
from rag.store.edge import EdgeStore
from rag.sync import FolderSync


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ours(folder: Path, work: Path) -> dict[str, Any]:
    embedder = Embedder(DEFAULT_EMBED_MODEL)
    store = EdgeStore(work / "ours")
    try:
        sync = FolderSync(store, embedder, IndexSpec(name="bench"))
        first = sync.run([folder])
        rerun = sync.run([folder])
        points_after_rerun = store.count("bench")
    finally:
        store.close()
    return {
        "pages": first.pages,
        "chunks": first.chunks_written,
        "seconds": round(first.seconds, 2),
        "stages": {k: round(v, 2) for k, v in first.stages.items()},
        "pages_per_s": round(first.pages / first.seconds, 2),
        "chunks_per_s": round(first.chunks_written / first.seconds, 2),
        "peak_rss_mb": round(peak_rss_mb()),
        "failed": [f.path for f in first.failed],
        "rerun": {
            "seconds": round(rerun.seconds, 3),
            "unchanged": rerun.unchanged,
            "chunks_written": rerun.chunks_written,
            "points": points_after_rerun,
        },
        "rerun_speedup": round(first.seconds / rerun.seconds, 1),
    }


def llamaindex_default(folder: Path, work: Path) -> dict[str, Any]:
    from llama_index.core import SimpleDirectoryReader
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    embed = HuggingFaceEmbedding(model_name=resolve_model(DEFAULT_EMBED_MODEL), device="cpu")
    client = QdrantClient(path=str(work / "llamaindex"))
    store = QdrantVectorStore(client=client, collection_name="bench")
    started = time.perf_counter()
    documents = SimpleDirectoryReader(str(folder), required_exts=[".pdf"]).load_data()
    loaded = time.perf_counter()
    pipeline = IngestionPipeline(transformations=[SentenceSplitter(), embed], vector_store=store)
    nodes = pipeline.run(documents=documents)
    seconds = time.perf_counter() - started
    tokenizer = embed._model.tokenizer
    lengths = [len(tokenizer(n.get_content(), add_special_tokens=True)["input_ids"]) for n in nodes]
    client.close()
    return {
        "pages": len(documents),
        "chunks": len(nodes),
        "seconds": round(seconds, 2),
        "stages": {
            "read": round(loaded - started, 2),
            "split+embed+write": round(seconds - (loaded - started), 2),
        },
        "chunks_truncated_by_embedder": sum(1 for n in lengths if n > 256),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    if not args.folder.is_dir():
        raise SystemExit(f"no such folder: {args.folder} (the SEC filings live in ../shared/data)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        result: dict[str, Any] = {"folder": str(args.folder), "ours": ours(args.folder, work)}
        print(json.dumps(result["ours"], indent=2), flush=True)
        if not args.skip_baseline:
            result["llamaindex_default"] = llamaindex_default(args.folder, work)
            result["speedup_vs_llamaindex"] = round(
                result["llamaindex_default"]["seconds"] / result["ours"]["seconds"], 2
            )
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
