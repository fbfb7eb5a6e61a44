"""Syncing folders into an index, decided by content hashes.

- A file whose sha256 matches a complete earlier version is skipped without parsing.
- A new or changed file is parsed, chunked and embedded; its new points are written, then every
  other point of that path is deleted. Point ids are uuid5(root, path, sha256, chunk index), so
  a re-run can never duplicate.
- A file counts as ingested only when all its points are there: each chunk records how many
  chunks its version has, and a path whose points disagree (two hashes, or too few chunks, as a
  run killed mid-file leaves them) is redone on the next run.
- Files gone from an ingested root lose their points (unless ``delete=False``).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag.chunking import Chunk, Chunker
from rag.documents import file_type, parse_document
from rag.embedding import Embedder
from rag.errors import DocumentError
from rag.indexes import IndexMeta, IndexSpec
from rag.sparse import SparseEncoder
from rag.store.base import StoredChunk, VectorStore, path_prefixes

POINT_NAMESPACE = uuid.UUID("8f6b1c2e-7d1a-4a8e-9a57-3d1f0c2b9e41")
STATE_FIELDS = ("root", "source", "sha256", "n_chunks")
EMBED_FLUSH_CHUNKS = 512  # chunks gathered across small files before one embedding pass


@dataclass(frozen=True)
class SourceFile:
    root: str  # absolute, resolved folder the relative path is taken from
    source: str  # path relative to root, with '/' separators
    path: Path
    kind: str


@dataclass(frozen=True)
class Failure:
    path: str
    reason: str


@dataclass
class SyncReport:
    files_seen: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped: int = 0
    failed: list[Failure] = field(default_factory=list)
    chunks_written: int = 0
    chunks_deleted: int = 0
    pages: int = 0
    seconds: float = 0.0
    stages: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("scan", "parse", "chunk", "embed", "write"), 0.0)
    )

    def to_json(self) -> dict[str, Any]:
        return {
            "files_seen": self.files_seen,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "skipped": self.skipped,
            "failed": [{"path": f.path, "reason": f.reason} for f in self.failed],
            "chunks_written": self.chunks_written,
            "chunks_deleted": self.chunks_deleted,
            "pages": self.pages,
            "seconds": round(self.seconds, 3),
            "stages": {k: round(v, 3) for k, v in self.stages.items()},
        }


@dataclass
class _Existing:
    ids: set[str] = field(default_factory=set)
    hashes: set[str] = field(default_factory=set)
    n_chunks: int = -1

    def complete_hash(self) -> str | None:
        if len(self.hashes) == 1 and len(self.ids) == self.n_chunks:
            return next(iter(self.hashes))
        return None


@dataclass
class _Prepared:
    file: SourceFile
    sha256: str
    mtime: float
    chunks: list[Chunk]
    old_ids: set[str]
    is_new: bool


Progress = Callable[[SourceFile, int, int], None]  # (file, its bytes, bytes of the whole run)


def point_id(root: str, source: str, sha256: str, index: int) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{root}\0{source}\0{sha256}\0{index}"))


def discover(paths: Sequence[Path], report: SyncReport) -> tuple[list[SourceFile], set[str]]:
    """Readable document files under ``paths`` and the roots whose vanished files may go.

    Symlinks are followed; a folder reached twice (a symlink loop) is walked once.
    """
    files: list[SourceFile] = []
    roots: set[str] = set()
    for given in paths:
        if given.is_file():
            root = given.resolve().parent
            candidates: Iterator[Path] = iter([given])
        else:
            root = given.resolve()
            roots.add(str(root))
            candidates = _walk(root)
        for path in candidates:
            kind = file_type(path)
            if kind is None:
                report.skipped += 1
                continue
            source = os.path.relpath(path.absolute(), root).replace(os.sep, "/")
            files.append(SourceFile(str(root), source, path, kind))
    files.sort(key=lambda f: (f.root, f.source))
    return files, roots


def _walk(root: Path) -> Iterator[Path]:
    seen: set[tuple[int, int]] = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        try:
            st = os.stat(folder)
        except OSError:
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                yield Path(folder) / name


class FolderSync:
    """Everything one index's sync needs, built once and reused across runs."""

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        spec: IndexSpec,
        sparse: SparseEncoder | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.spec = spec
        self.sparse = sparse or SparseEncoder()
        self.meta = self._open_index()
        self.chunker = Chunker(
            chunk_tokens=self.meta.chunking.chunk_tokens,
            overlap_tokens=self.meta.chunking.overlap_tokens,
            max_tokens=embedder.max_tokens,
            token_ids=embedder.token_ids,
            token_offsets=embedder.token_offsets,
            whole_sections=self.meta.chunking.mode == "document",
        )

    def _open_index(self) -> IndexMeta:
        meta = self.store.get_meta(self.spec.name)
        if meta is not None:
            meta.check_compatible(self.embedder.model_id, self.embedder.dim)
            return meta
        meta = IndexMeta(
            name=self.spec.name,
            embed_model=self.embedder.model_id,
            dim=self.embedder.dim,
            max_tokens=self.embedder.max_tokens,
            chunking=self.spec.chunking,
            sparse=self.spec.sparse,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self.store.create_index(meta)
        return meta

    def run(
        self, paths: Sequence[Path], *, delete: bool = True, progress: Progress | None = None
    ) -> SyncReport:
        started = time.perf_counter()
        report = SyncReport()
        index = self.spec.name
        files, roots = discover(paths, report)
        report.files_seen = len(files)
        total_bytes = sum(_size(f.path) for f in files)
        t = time.perf_counter()
        existing = self._existing()
        report.stages["scan"] += time.perf_counter() - t

        pending: list[_Prepared] = []
        seen: set[tuple[str, str]] = set()
        for file in files:
            seen.add((file.root, file.source))
            prepared = self._prepare(file, existing.get((file.root, file.source)), report)
            if progress is not None:
                progress(file, _size(file.path), total_bytes)
            if prepared is not None:
                pending.append(prepared)
            if sum(len(p.chunks) for p in pending) >= EMBED_FLUSH_CHUNKS:
                self._commit(pending, report)
                pending = []
        self._commit(pending, report)

        if delete:
            vanished = [
                state
                for (root, source), state in existing.items()
                if root in roots and (root, source) not in seen
            ]
            ids = [i for state in vanished for i in state.ids]
            t = time.perf_counter()
            self.store.delete(index, ids)
            report.stages["write"] += time.perf_counter() - t
            report.deleted = len(vanished)
            report.chunks_deleted += len(ids)
        if report.chunks_written or report.chunks_deleted:
            t = time.perf_counter()
            self.store.optimize(index)
            report.stages["write"] += time.perf_counter() - t
        report.seconds = time.perf_counter() - started
        return report

    def _existing(self) -> dict[tuple[str, str], _Existing]:
        state: dict[tuple[str, str], _Existing] = {}
        for point, payload in self.store.scan(self.spec.name, STATE_FIELDS):
            key = (str(payload.get("root")), str(payload.get("source")))
            entry = state.setdefault(key, _Existing())
            entry.ids.add(point)
            entry.hashes.add(str(payload.get("sha256")))
            entry.n_chunks = int(payload.get("n_chunks", -1))
        return state

    def _prepare(
        self, file: SourceFile, existing: _Existing | None, report: SyncReport
    ) -> _Prepared | None:
        try:
            data = file.path.read_bytes()
            mtime = file.path.stat().st_mtime
        except OSError as exc:
            report.failed.append(Failure(str(file.path), _os_reason(exc)))
            return None
        sha256 = hashlib.sha256(data).hexdigest()
        if existing is not None and existing.complete_hash() == sha256:
            report.unchanged += 1
            return None
        t = time.perf_counter()
        try:
            sections = parse_document(data, file.kind)
        except DocumentError as exc:
            report.failed.append(Failure(str(file.path), str(exc)))
            return None
        finally:
            report.stages["parse"] += time.perf_counter() - t
        report.pages += len({s.page for s in sections}) if file.kind == "pdf" else 1
        t = time.perf_counter()
        chunks = self.chunker.chunk(sections)
        report.stages["chunk"] += time.perf_counter() - t
        if not chunks:
            report.failed.append(Failure(str(file.path), "no text to index"))
            return None
        is_new = existing is None or existing.complete_hash() is None
        old_ids = existing.ids if existing is not None else set()
        return _Prepared(file, sha256, mtime, chunks, old_ids, is_new)

    def _commit(self, batch: list[_Prepared], report: SyncReport) -> None:
        if not batch:
            return
        texts = [chunk.text for item in batch for chunk in item.chunks]
        t = time.perf_counter()
        dense = self.embedder.encode(texts)
        sparse = [self.sparse.encode_document(text) for text in texts]
        report.stages["embed"] += time.perf_counter() - t
        t = time.perf_counter()
        row = 0
        for item in batch:
            points = []
            for i, chunk in enumerate(item.chunks):
                payload = _payload(item, i, chunk)
                pid = point_id(item.file.root, item.file.source, item.sha256, i)
                points.append(StoredChunk(pid, dense[row], sparse[row], payload))
                row += 1
            self.store.upsert(self.spec.name, points)
            stale = sorted(item.old_ids - {p.id for p in points})
            self.store.delete(self.spec.name, stale)
            report.chunks_written += len(points)
            report.chunks_deleted += len(stale)
            if item.is_new:
                report.added += 1
            else:
                report.updated += 1
        report.stages["write"] += time.perf_counter() - t


def _payload(item: _Prepared, index: int, chunk: Chunk) -> dict[str, Any]:
    return {
        "root": item.file.root,
        "source": item.file.source,
        "dirs": path_prefixes(item.file.source),
        "type": item.file.kind,
        "sha256": item.sha256,
        "mtime": item.mtime,
        "page": chunk.page,
        "heading": list(chunk.heading),
        "char_start": chunk.char_start,
        "char_end": chunk.char_end,
        "chunk_index": index,
        "n_chunks": len(item.chunks),
        "text": chunk.text,
    }


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _os_reason(exc: OSError) -> str:
    if exc.errno == 40:  # ELOOP
        return "symlink loop"
    return exc.strerror or str(exc)
