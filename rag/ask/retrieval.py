"""Retrieval: embed the question, search the index (dense, sparse or hybrid), rerank if asked.

Results are deterministic: the same question, index, filter and settings give the same hits in
the same order. Qdrant breaks ties between equal scores arbitrarily (qdrant/qdrant#6814: exact
duplicates tie in every mode, and hybrid fusion ties often), and DBSF's normalisation can differ
in the last bits between runs. So the retriever asks the store for a few hits past the cut-off,
orders them by score rounded to ``SCORE_DECIMALS`` and then by point id, and searches deeper
while a group of tied scores straddles the end of what came back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from rag.embed import SparseEncoder, TextEmbedder, Vectors
from rag.store import Fusion, Hit, SearchFilter, SearchMode, SearchQuery, VectorStore

# Scores agreeing to this many decimals count as a tie (and are ordered by id): cosine and
# DBSF scores are O(1) and RRF ranks differ by >= 1e-4, while run-to-run noise is ~1e-7.
SCORE_DECIMALS = 6


def stable_key(hit: Hit) -> tuple[float, str]:
    """Best first; equal scores (at ``SCORE_DECIMALS``) in point-id order."""
    return (-round(hit.score, SCORE_DECIMALS), hit.id)


def tie_margin(limit: int) -> int:
    """How many hits past the cut-off to fetch: room for a few tied duplicates."""
    return max(4, limit // 4)


def search_stable(store: VectorStore, index: str, query: SearchQuery) -> list[Hit]:
    """The store's best ``query.limit`` hits in a deterministic order (see the module doc)."""
    want = query.limit
    depth = want + tie_margin(want)
    while True:
        hits = sorted(store.search(index, dataclasses.replace(query, limit=depth)), key=stable_key)
        if len(hits) < depth or not _ties(hits, want):
            return hits[:want]
        depth *= 2  # the tie at the cut-off may go on past what came back


def _ties(hits: Sequence[Hit], want: int) -> bool:
    """Whether the last hit kept and the last hit fetched share a rounded score."""
    return want > 0 and stable_key(hits[want - 1])[0] == stable_key(hits[-1])[0]


class QueryEncoder(Protocol):
    def encode_query(self, text: str) -> Vectors: ...


@runtime_checkable
class AsyncQueryEncoder(Protocol):
    """A query encoder the event loop can await (``QueryBatcher``) without a thread of its own."""

    async def aencode_query(self, text: str) -> Vectors: ...


class _VectorCache:
    """The last ``size`` questions' vectors (tools ask the same questions again and again)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._vectors: OrderedDict[str, Vectors] = OrderedDict()

    def get(self, question: str) -> Vectors | None:
        with self._lock:
            vector = self._vectors.get(question)
            if vector is not None:
                self._vectors.move_to_end(question)
            return vector

    def put(self, question: str, vector: Vectors) -> None:
        if self.size == 0:
            return
        with self._lock:
            self._vectors[question] = vector
            self._vectors.move_to_end(question)
            if len(self._vectors) > self.size:
                self._vectors.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._vectors.clear()


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
        embedder: TextEmbedder,
        sparse: SparseEncoder,
        *,
        queries: QueryEncoder | None = None,
        mode: SearchMode = "hybrid",
        reranker: Reranker | None = None,
        rerank_candidates: int = 30,
        fusion: Fusion = "dbsf",
        query_cache_size: int = 4096,
    ) -> None:
        self.fusion: Fusion = fusion
        self.store = store
        self.embedder = embedder
        self.sparse = sparse
        self.mode = mode
        self.reranker = reranker
        self.rerank_candidates = rerank_candidates
        # ``queries`` (a QueryBatcher in the service) embeds concurrent questions together.
        self.queries: QueryEncoder = queries or embedder
        self.query_cache_size = query_cache_size  # 0: none kept
        self._vectors = _VectorCache(query_cache_size)

    def forget_queries(self) -> None:
        """Drop the cached query vectors (benchmarks measure cold embeddings)."""
        self._vectors.clear()

    def _dense(self, question: str) -> Vectors:
        vector = self._vectors.get(question)
        if vector is None:
            vector = self.queries.encode_query(question)
            self._vectors.put(question, vector)
        return vector

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
        return self._search(index, question, limit, flt, mode, exact, dense, t0)

    async def aretrieve(
        self,
        index: str,
        question: str,
        limit: int,
        flt: SearchFilter | None = None,
        *,
        mode: SearchMode | None = None,
        exact: bool = False,
    ) -> Retrieved:
        """``retrieve`` for the event loop: the question's vector is awaited from the batcher
        (every concurrent ask joins one pass, none holds a thread meanwhile), then the search
        and rerank run in one thread hop. Without an awaitable encoder it is one hop in all."""
        mode = mode or self.mode
        t0 = time.perf_counter()
        dense = self._vectors.get(question) if mode != "sparse" else None
        if mode != "sparse" and dense is None:
            if not isinstance(self.queries, AsyncQueryEncoder):
                return await asyncio.to_thread(
                    self.retrieve, index, question, limit, flt, mode=mode, exact=exact
                )
            dense = await self.queries.aencode_query(question)
            self._vectors.put(question, dense)
        return await asyncio.to_thread(
            self._search, index, question, limit, flt, mode, exact, dense, t0
        )

    async def aretrieve_all(
        self, index: str, queries: Sequence[str], limit: int, flt: SearchFilter | None = None
    ) -> Retrieved:
        """The best ``limit`` hits for one query, or for several with their rankings fused
        (``fuse_rankings``, each ranking deeper by up to ``FUSION_EXTRA``, so that a hit one
        query ranks just past the cut still counts); the stages' times are the slowest query's
        (they run together)."""
        if len(queries) == 1:
            return await self.aretrieve(index, queries[0], limit, flt)
        depth = limit + min(2 * limit, FUSION_EXTRA)
        found = await asyncio.gather(*(self.aretrieve(index, q, depth, flt) for q in queries))
        return Retrieved(
            fuse_rankings([f.hits for f in found], limit),
            max(f.embed_ms for f in found),
            max(f.search_ms for f in found),
            max(f.rerank_ms for f in found),
        )

    def _search(
        self,
        index: str,
        question: str,
        limit: int,
        flt: SearchFilter | None,
        mode: SearchMode,
        exact: bool,
        dense: Vectors | None,
        t0: float,
    ) -> Retrieved:
        """Sparse-encode, search and rerank; ``embed_ms`` counts from ``t0`` (dense included)."""
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
        hits = search_stable(self.store, index, query)
        t2 = time.perf_counter()
        rerank_ms = 0.0
        if self.reranker is not None and hits:
            hits = self.reranker.rerank(question, hits, limit)
            rerank_ms = (time.perf_counter() - t2) * 1000
        return Retrieved(hits[:limit], (t1 - t0) * 1000, (t2 - t1) * 1000, rerank_ms)


RRF_K = 60  # reciprocal rank fusion's constant, as Qdrant and the literature use it
FUSION_EXTRA = 100  # hits past the cut each fused ranking holds, at most


def fuse_rankings(rankings: Sequence[Sequence[Hit]], limit: int) -> list[Hit]:
    """Rankings of several queries as one (reciprocal rank fusion); ties in point-id order, so
    the same rankings always fuse alike. Each hit keeps its first ranking's score."""
    scores: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking):
            scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (RRF_K + rank + 1)
            first.setdefault(hit.id, hit)
    order = sorted(scores, key=lambda i: (-round(scores[i], SCORE_DECIMALS + 4), i))
    return [first[i] for i in order[:limit]]
