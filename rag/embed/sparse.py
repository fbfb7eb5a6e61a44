"""BM25 sparse vectors with Qdrant's own tokenizer (English stemming and stop words).

Documents carry term-frequency weights saturated with BM25's k and b; the collection's IDF
modifier supplies the inverse document frequency at query time, so the index needs no corpus
statistics and stays correct as files come and go.
"""

from __future__ import annotations

import qdrant_edge as qe

from rag.embed.base import SparseVector


class SparseEncoder:
    def __init__(self, language: str = "english", avg_len: float = 150.0) -> None:
        self._bm25 = qe.Bm25(qe.Bm25Config(language=language, avg_len=avg_len))

    def encode_document(self, text: str) -> SparseVector:
        vector = self._bm25.embed_document(text)
        return SparseVector(list(vector.indices), list(vector.values))

    def encode_query(self, text: str) -> SparseVector:
        vector = self._bm25.embed_query(text)
        return SparseVector(list(vector.indices), list(vector.values))
