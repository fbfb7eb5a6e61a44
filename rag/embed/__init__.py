"""Embedding: the dense embedders (in-process or over HTTP), their tokenizer for chunking,
the question batcher and the BM25 sparse encoder."""

from __future__ import annotations

from rag.embed.base import (
    BACKENDS,
    PACKAGED_MODELS,
    Backend,
    SparseVector,
    TextEmbedder,
    Vectors,
    resolve_model,
)
from rag.embed.batcher import QueryBatcher
from rag.embed.embedder import Embedder
from rag.embed.http import EmbedServiceError, HttpEmbedder
from rag.embed.options import EmbedOptions, embed_device, embedder_from
from rag.embed.sparse import SparseEncoder
from rag.embed.wordpieces import WordPieces

__all__ = [
    "BACKENDS",
    "PACKAGED_MODELS",
    "Backend",
    "EmbedOptions",
    "EmbedServiceError",
    "Embedder",
    "HttpEmbedder",
    "QueryBatcher",
    "SparseEncoder",
    "SparseVector",
    "TextEmbedder",
    "Vectors",
    "WordPieces",
    "embed_device",
    "embedder_from",
    "resolve_model",
]
