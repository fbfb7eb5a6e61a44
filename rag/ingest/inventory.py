"""What an index holds: its settings, files and sizes, for `rag-index show`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rag.errors import IndexNotFoundError
from rag.store import VectorStore


@dataclass(frozen=True)
class FileEntry:
    root: str
    source: str
    sha256: str
    chunks: int


@dataclass(frozen=True)
class IndexSummary:
    name: str
    store: str
    meta: dict[str, Any]
    chunks: int
    size_bytes: int | None
    files: list[FileEntry]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "store": self.store,
            "embedder": {
                "model": self.meta["embed_model"],
                "dim": self.meta["dim"],
                "max_tokens": self.meta["max_tokens"],
            },
            "chunking": self.meta["chunking"],
            "sparse": self.meta["sparse"],
            "created_at": self.meta["created_at"],
            "files": len(self.files),
            "chunks": self.chunks,
            "size_bytes": self.size_bytes,
            "file_list": [
                {"root": f.root, "path": f.source, "sha256": f.sha256, "chunks": f.chunks}
                for f in self.files
            ],
        }


def summarise(store: VectorStore, name: str) -> IndexSummary:
    meta = store.get_meta(name)
    if meta is None:
        raise IndexNotFoundError(f"index {name!r} does not exist")
    counts: dict[tuple[str, str, str], int] = {}
    for _, payload in store.scan(name, ("root", "source", "sha256")):
        key = (str(payload["root"]), str(payload["source"]), str(payload["sha256"]))
        counts[key] = counts.get(key, 0) + 1
    files = [FileEntry(r, s, h, n) for (r, s, h), n in sorted(counts.items())]
    return IndexSummary(
        name=name,
        store=store.kind,
        meta=meta.to_json(),
        chunks=store.count(name),
        size_bytes=store.size_bytes(name),
        files=files,
    )
