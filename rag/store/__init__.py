"""Vector stores: Qdrant Edge embedded by default, a Qdrant server when a URL is given."""

from __future__ import annotations

from rag.config import Settings
from rag.embed import SparseVector
from rag.store.base import (
    Fusion,
    Hit,
    SearchFilter,
    SearchMode,
    SearchQuery,
    StoredChunk,
    VectorStore,
    path_prefixes,
)
from rag.store.disk import DiskReserve, free_bytes, keep_files_private, private_dir
from rag.store.edge import EdgeStore


def open_store(settings: Settings) -> VectorStore:
    """The server adapter when ``RAG_QDRANT_URL`` is set, else Qdrant Edge under the data dir
    (keeping ``RAG_MIN_FREE_MB`` free on its file system)."""
    if settings.qdrant_url:
        from rag.store.server import ServerStore

        return ServerStore.connect(
            settings.qdrant_url,
            settings.qdrant_api_key,
            shard_number=settings.qdrant_shard_number,
            replication_factor=settings.qdrant_replication_factor,
        )
    return EdgeStore(settings.data_dir, min_free_bytes=settings.min_free_mb * 1_000_000)


__all__ = [
    "DiskReserve",
    "EdgeStore",
    "Fusion",
    "Hit",
    "SearchFilter",
    "SearchMode",
    "SearchQuery",
    "SparseVector",
    "StoredChunk",
    "VectorStore",
    "free_bytes",
    "keep_files_private",
    "open_store",
    "path_prefixes",
    "private_dir",
]
