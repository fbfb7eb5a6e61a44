"""Retrieval: embed the question, search the index (dense, sparse or hybrid), rerank if asked."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Protocol

from rag.embedding import Embedder
from rag.sparse import SparseEncoder
from rag.store.base import Fusion, Hit, SearchFilter, SearchMode, SearchQuery, VectorStore


class Reranker(Protocol):
    def rerank(self, question: str, hits: list[Hit], top_k: int) -> list[Hit]: ...


@dataclass(frozen=True)
class Retrieved:
    hits: list[Hit]  # best first
    embed_ms: float
    search_ms: float
    rerank_ms: float = 0.0


class Retriever:
    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        sparse: SparseEncoder,
        *,
        mode: SearchMode = "hybrid",
        reranker: Reranker | None = None,
        rerank_candidates: int = 30,
        fusion: Fusion = "dbsf",
    ) -> None:
        self.fusion: Fusion = fusion
        self.store = store
        self.embedder = embedder
        self.sparse = sparse
        self.mode = mode
        self.reranker = reranker
        self.rerank_candidates = rerank_candidates
        # Tools ask the same questions again and again: keep their vectors.
        self._dense = functools.lru_cache(maxsize=4096)(embedder.encode_query)

    def forget_queries(self) -> None:
        """Drop the cached query vectors (benchmarks measure cold embeddings)."""
        self._dense.cache_clear()

    def retrieve(
        self,
        index: str,
        question: str,
        limit: int,
        flt: SearchFilter | None = None,
        *,
        mode: SearchMode | None = None,
        exact: bool = False,
    ) -> Retrieved:
        mode = mode or self.mode
        t0 = time.perf_counter()
        dense = self._dense(question) if mode != "sparse" else None
        sparse = self.sparse.encode_query(question) if mode != "dense" else None
        t1 = time.perf_counter()
        depth = max(limit, self.rerank_candidates) if self.reranker else limit
        query = SearchQuery(
            dense=dense,
            sparse=sparse,
            limit=depth,
            mode=mode,
            filter=flt or SearchFilter(),
            exact=exact,
            candidates=max(100, depth),
            fusion=self.fusion,
        )
        hits = self.store.search(index, query)
        t2 = time.perf_counter()
        rerank_ms = 0.0
        if self.reranker is not None and hits:
            hits = self.reranker.rerank(question, hits, limit)
            rerank_ms = (time.perf_counter() - t2) * 1000
        return Retrieved(hits[:limit], (t1 - t0) * 1000, (t2 - t1) * 1000, rerank_ms)
