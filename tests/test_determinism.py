"""The same question, index, filter and settings give the same passages, in the same order.

The index holds real abstracts (SciFact), each stored three times under different folders:
exact duplicates tie exactly in dense, sparse and fused scores, which is where Qdrant's
arbitrary tie-breaking (qdrant/qdrant#6814) showed up as changing passage lists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from rag.ask import Retriever, build_messages, order_passages
from rag.embed import Embedder, SparseEncoder
from rag.indexes import ChunkingSpec, IndexMeta
from rag.store import Fusion, SearchFilter, StoredChunk, VectorStore, path_prefixes
from tests.conftest import SCIFACT_DIR, require_shared

ABSTRACTS = 60
COPIES = ("2024", "2025", "archive/2025")
QUESTIONS = 20
ASKS = 3


@dataclass(frozen=True)
class Corpus:
    texts: list[str]
    vectors: npt.NDArray[np.float32]
    questions: list[str]


@pytest.fixture(scope="module")
def corpus(embedder: Embedder) -> Corpus:
    folder = require_shared(SCIFACT_DIR)
    with (folder / "corpus.jsonl").open(encoding="utf-8") as f:
        docs = [json.loads(next(f)) for _ in range(ABSTRACTS)]
    with (folder / "queries-train.jsonl").open(encoding="utf-8") as f:
        questions = [json.loads(next(f))["text"] for _ in range(QUESTIONS)]
    texts = [f"{d['title']} {d['text']}" for d in docs]
    return Corpus(texts, embedder.encode(texts), questions)


def fill(store: VectorStore, corpus: Corpus, dim: int) -> None:
    store.create_index(
        IndexMeta(
            name="docs",
            embed_model="sentence-transformers/all-MiniLM-L6-v2",
            dim=dim,
            max_tokens=256,
            chunking=ChunkingSpec(),
            sparse="bm25",
            created_at="2026-11-23T00:00:00+00:00",
        )
    )
    sparse = SparseEncoder()
    chunks = []
    for c, folder in enumerate(COPIES):
        for i, (text, vector) in enumerate(zip(corpus.texts, corpus.vectors, strict=True)):
            source = f"{folder}/abstract-{i:03d}.txt"
            payload = {
                "root": "/docs",
                "source": source,
                "dirs": path_prefixes(source),
                "type": "txt",
                "sha256": f"sha-{i}",
                "mtime": 1000.0 + i,
                "page": None,
                "heading": [],
                "char_start": 0,
                "char_end": len(text),
                "text": text,
            }
            point = f"00000000-0000-0000-{c:04d}-{i:012d}"
            chunks.append(StoredChunk(point, vector, sparse.encode_document(text), payload))
    store.upsert("docs", chunks)
    store.optimize("docs")


def passage_lists(
    retriever: Retriever, corpus: Corpus, top_k: int, flt: SearchFilter | None = None
) -> list[set[tuple[str, ...]]]:
    """Per question, the distinct passage-id lists seen over ``ASKS`` asks."""
    seen: list[set[tuple[str, ...]]] = [set() for _ in corpus.questions]
    for _ in range(ASKS):
        for q, question in enumerate(corpus.questions):
            hits = retriever.retrieve("docs", question, top_k, flt).hits
            seen[q].add(tuple(h.id for h in hits))
    return seen


@pytest.mark.parametrize(("fusion", "top_k"), [("dbsf", 5), ("dbsf", 35), ("rrf", 5)])
def test_hybrid_retrieval_returns_identical_passage_lists_for_repeated_questions(
    store: VectorStore, embedder: Embedder, corpus: Corpus, fusion: Fusion, top_k: int
) -> None:
    fill(store, corpus, embedder.dim)
    retriever = Retriever(store, embedder, SparseEncoder(), mode="hybrid", fusion=fusion)
    seen = passage_lists(retriever, corpus, top_k)
    changed = [corpus.questions[q] for q, lists in enumerate(seen) if len(lists) > 1]
    assert changed == []
    assert all(len(next(iter(lists))) == top_k for lists in seen)


def test_tied_duplicates_are_ordered_by_point_id(
    store: VectorStore, embedder: Embedder, corpus: Corpus
) -> None:
    fill(store, corpus, embedder.dim)
    retriever = Retriever(store, embedder, SparseEncoder(), mode="dense")
    hits = retriever.retrieve("docs", corpus.texts[7], 3).hits
    # The question is abstract 7 itself: its three copies tie at the top, in id order.
    assert [h.payload["source"] for h in hits] == [f"{c}/abstract-007.txt" for c in COPIES]
    assert [h.id for h in hits] == sorted(h.id for h in hits)


def test_filtered_retrieval_is_deterministic_too(
    store: VectorStore, embedder: Embedder, corpus: Corpus
) -> None:
    fill(store, corpus, embedder.dim)
    retriever = Retriever(store, embedder, SparseEncoder(), mode="hybrid")
    seen = passage_lists(retriever, corpus, 5, SearchFilter(path_prefix="2025"))
    assert all(len(lists) == 1 for lists in seen)
    assert all(h.startswith("2025/") for lists in seen for h in _sources(retriever, lists))


def test_prompts_built_from_repeated_retrievals_are_byte_identical(
    store: VectorStore, embedder: Embedder, corpus: Corpus
) -> None:
    fill(store, corpus, embedder.dim)
    retriever = Retriever(store, embedder, SparseEncoder(), mode="hybrid")
    for question in corpus.questions:
        prompts = set()
        for _ in range(ASKS):
            hits = order_passages(retriever.retrieve("docs", question, 8).hits, "canonical")
            prompts.add(json.dumps(build_messages(hits, question)))
        assert len(prompts) == 1, question


def _sources(retriever: Retriever, lists: set[tuple[str, ...]]) -> list[str]:
    ids = set(next(iter(lists)))
    return [p["source"] for i, p in retriever.store.scan("docs", ["source"]) if i in ids]
