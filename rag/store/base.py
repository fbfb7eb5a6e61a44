"""The one store interface the library talks to; adapters map it onto Qdrant Edge or a server."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from rag.embed import SparseVector
from rag.indexes import IndexMeta

DENSE = "dense"
SPARSE = "bm25"
SearchMode = Literal["dense", "sparse", "hybrid"]
# How a hybrid query fuses its dense and sparse rankings inside Qdrant: distribution-based
# score fusion (each branch's scores normalised by their mean and spread) or reciprocal rank
# fusion. DBSF wins on SciFact (docs/benchmarks.md, `make eval`).
Fusion = Literal["dbsf", "rrf"]

# Payload fields with an index: exact lookups for sync, filters for retrieval.
KEYWORD_FIELDS = ("root", "source", "dirs", "type", "sha256")
FLOAT_FIELDS = ("mtime",)


@dataclass(frozen=True)
class StoredChunk:
    id: str
    dense: npt.NDArray[np.float32]
    sparse: SparseVector | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class SearchFilter:
    """Restrictions on which chunks a search may return (all given ones must hold)."""

    path_prefix: str | None = None
    file_types: tuple[str, ...] = ()
    modified_after: float | None = None
    modified_before: float | None = None
    roots: tuple[str, ...] = field(default=())

    def is_empty(self) -> bool:
        return not (
            self.path_prefix
            or self.file_types
            or self.roots
            or self.modified_after is not None
            or self.modified_before is not None
        )


@dataclass(frozen=True)
class SearchQuery:
    dense: npt.NDArray[np.float32] | None
    sparse: SparseVector | None
    limit: int
    mode: SearchMode = "dense"
    filter: SearchFilter = SearchFilter()
    exact: bool = False
    candidates: int = 100  # per-branch depth of a hybrid query before fusion
    fusion: Fusion = "dbsf"


class VectorStore(Protocol):
    """Indexes: Qdrant collections (or Edge shards) of chunks with dense and sparse vectors."""

    kind: str

    def list_indexes(self) -> list[str]: ...

    def get_meta(self, index: str) -> IndexMeta | None: ...

    def create_index(self, meta: IndexMeta) -> None: ...

    def drop_index(self, index: str) -> bool: ...

    def upsert(self, index: str, chunks: Sequence[StoredChunk]) -> None: ...

    def delete(self, index: str, ids: Sequence[str]) -> None: ...

    def scan(
        self, index: str, fields: Sequence[str], where: SearchFilter | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every point's id and the payload ``fields`` (only the points ``where`` lets through)."""
        ...

    def retrieve(self, index: str, ids: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
        """The whole payloads of the points ``ids`` that exist, in no particular order."""
        ...

    def search(self, index: str, query: SearchQuery) -> list[Hit]: ...

    def count(self, index: str) -> int: ...

    def size_bytes(self, index: str) -> int | None: ...

    def optimize(self, index: str) -> None: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


def path_prefixes(source: str) -> list[str]:
    """Every directory prefix of a relative path: ``a/b/c.pdf`` -> ``["a", "a/b"]``."""
    parts = source.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def normalise_prefix(prefix: str) -> str:
    return prefix.strip().strip("/")
