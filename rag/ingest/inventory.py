"""What an index holds: its settings, files and sizes, for `rag-index show`, the document list
over HTTP and the MCP tools; and which indexes a caller may read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rag.errors import IndexNotFoundError
from rag.ingest.locations import location_kind
from rag.store import VectorStore, path_prefixes

SCANNED = ("root", "source", "sha256", "member", "location", "page", "ocr")
MAX_LOCATIONS = 50  # per file: a workbook's sheets, a deck's slides


@dataclass
class FileEntry:
    """A file of the index, with the parts its readers found: members of an archive or mail,
    locations (slides, sheets, footnotes) and the pages read by OCR."""

    root: str
    source: str
    sha256: str
    chunks: int = 0
    members: dict[str, int] = field(default_factory=dict)  # member path -> its chunks
    locations: list[str] = field(default_factory=list)
    ocr_pages: set[tuple[str, int]] = field(default_factory=set)  # (member, page)

    def add(self, payload: dict[str, Any]) -> None:
        self.chunks += 1
        member = str(payload.get("member") or "")
        if member:
            self.members[member] = self.members.get(member, 0) + 1
        location = location_kind(str(payload.get("location") or ""))
        if location and location not in self.locations and len(self.locations) < MAX_LOCATIONS:
            self.locations.append(location)
        if payload.get("ocr"):
            self.ocr_pages.add((member, int(payload.get("page") or 0)))

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "root": self.root,
            "path": self.source,
            "sha256": self.sha256,
            "chunks": self.chunks,
        }
        if self.members:
            found["members"] = [{"path": m, "chunks": n} for m, n in sorted(self.members.items())]
        if self.locations:
            found["locations"] = self.locations
        if self.ocr_pages:
            found["ocr_pages"] = len(self.ocr_pages)
        return found

    def under(self, folder: str) -> bool:
        """Whether the file is ``folder`` or inside it (whole names, as filters match them)."""
        folder = folder.strip().strip("/")
        return not folder or self.source == folder or folder in path_prefixes(self.source)


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
            "file_list": [f.to_json() for f in self.files],
        }


def summarise(store: VectorStore, name: str) -> IndexSummary:
    meta = store.get_meta(name)
    if meta is None:
        raise IndexNotFoundError(f"index {name!r} does not exist")
    entries: dict[tuple[str, str, str], FileEntry] = {}
    for _, payload in store.scan(name, SCANNED):
        key = (str(payload["root"]), str(payload["source"]), str(payload["sha256"]))
        entries.setdefault(key, FileEntry(*key)).add(payload)
    files = [entries[key] for key in sorted(entries)]
    return IndexSummary(
        name=name,
        store=store.kind,
        meta=meta.to_json(),
        chunks=store.count(name),
        size_bytes=store.size_bytes(name),
        files=files,
    )


@dataclass(frozen=True)
class IndexEntry:
    name: str
    created_at: str
    embed_model: str
    chunks: int


def readable_indexes(store: VectorStore, readable: Callable[[str], bool]) -> list[IndexEntry]:
    """The store's indexes that ``readable`` lets through (a key's scope), by name."""
    entries = []
    for name in sorted(store.list_indexes()):
        meta = store.get_meta(name) if readable(name) else None
        if meta is not None:
            entries.append(IndexEntry(name, meta.created_at, meta.embed_model, store.count(name)))
    return entries
