"""Syncing folders into an index, decided by content hashes, with parsing isolated in workers.

- A file whose sha256 matches a complete earlier version is skipped without parsing (the worker
  hashes while it reads and stops there).
- A new or changed file is parsed and chunked in a worker process while this process embeds
  and writes the files before it (a pipeline with bounded queues); its new points are written,
  then every other point of that path is deleted. Point ids are uuid5(root, path, sha256, chunk
  index) over the name's bytes, so a re-run can never duplicate.
- A file counts as ingested only when all its points are there: each chunk records how many
  chunks its version has, and a path whose points disagree (two hashes, or too few chunks, as a
  run killed mid-file leaves them) is redone on the next run.
- Files gone from an ingested root lose their points (unless ``delete=False``).
- One bad file never ends the run: it is reported with its reason and the others go on.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag.embed import SparseEncoder, TextEmbedder
from rag.errors import DocumentError
from rag.indexes import IndexMeta, IndexSpec
from rag.ingest.chunking import Chunk
from rag.ingest.discovery import Entry, SourceFile, discover
from rag.ingest.parse_pool import ParsePool
from rag.ingest.parse_worker import Failed, Parsed, Skipped, Task, WorkerConfig
from rag.ingest.paths import from_fields, name_bytes, path_fields, uuid5_bytes
from rag.ingest.readers import ContainerLimits, OcrOptions
from rag.ingest.reading import OutsideRoots, hash_file, resolve_roots
from rag.ingest.report import SyncReport
from rag.store import StoredChunk, VectorStore, path_prefixes

log = logging.getLogger("rag.ingest")
POINT_NAMESPACE = uuid.UUID("8f6b1c2e-7d1a-4a8e-9a57-3d1f0c2b9e41")
STATE_FIELDS = ("root", "root_raw", "source", "source_raw", "sha256", "n_chunks")


@dataclass(frozen=True)
class IngestLimits:
    """What a run may read and how it parses (RAG_MAX_FILE_MB, RAG_INGEST_WORKERS, ...)."""

    max_file_bytes: int = 100 * 1_000_000
    workers: int = field(default_factory=lambda: default_workers())
    parse_timeout_s: float = 60.0
    worker_memory_bytes: int = 1024 << 20
    batch_chunks: int = 512  # chunks embedded and written together, across files or within one
    ocr: OcrOptions = field(default_factory=OcrOptions)
    containers: ContainerLimits = field(default_factory=ContainerLimits)


def default_workers() -> int:
    """One parse worker per core but one: this process embeds on a core of its own.

    On 2 cores, 1 worker ingested the 20 SEC filings in 116 s and 2 workers in 159 s: parsing and
    embedding fight for the same cores.
    """
    return max(1, (os.cpu_count() or 1) - 1)


Progress = Callable[[SourceFile, int, int], None]  # (file, its bytes, bytes of the whole run)


def point_id(root: str, source: str, sha256: str, index: int) -> str:
    name = b"\0".join((name_bytes(root), name_bytes(source), sha256.encode(), b"%d" % index))
    return str(uuid5_bytes(POINT_NAMESPACE, name))


@dataclass
class _Existing:
    ids: set[str] = field(default_factory=set)
    hashes: set[str] = field(default_factory=set)
    n_chunks: int = -1

    def complete_hash(self) -> str | None:
        if len(self.hashes) == 1 and len(self.ids) == self.n_chunks:
            return next(iter(self.hashes))
        return None


@dataclass(eq=False)  # compared and hashed by identity: one per file of the run
class _Pending:
    """A parsed file on its way to the store; its chunks may span several batches."""

    file: SourceFile
    parsed: Parsed
    old_ids: set[str]
    is_new: bool
    written: int = 0
    failed: bool = False


class FolderSync:
    """Everything one index's sync needs, built once and reused across runs."""

    def __init__(
        self,
        store: VectorStore,
        embedder: TextEmbedder,
        spec: IndexSpec,
        sparse: SparseEncoder | None = None,
        *,
        limits: IngestLimits | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.spec = spec
        self.sparse = sparse or SparseEncoder()
        self.limits = limits or IngestLimits()
        self.meta = self._open_index()

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

    def worker_config(self) -> WorkerConfig:
        return WorkerConfig(
            embed_model=self.meta.embed_model,
            chunking=self.meta.chunking,
            max_file_bytes=self.limits.max_file_bytes,
            memory_bytes=self.limits.worker_memory_bytes,
            ocr=self.limits.ocr,
            containers=self.limits.containers,
        )

    def run(
        self,
        paths: Sequence[Path],
        *,
        delete: bool = True,
        progress: Progress | None = None,
        within: Sequence[Path] | None = None,
    ) -> SyncReport:
        """Sync ``paths``; with ``within``, files resolving outside those roots are skipped (when
        listed, and when opened: a symlink swapped in during the run is not followed)."""
        started = time.perf_counter()
        report = SyncReport()
        roots = resolve_roots(within)
        found = discover(paths, self.limits.max_file_bytes, within)
        report.files_seen = len(found.files) + len(found.failed)
        report.failed.extend(found.failed)
        report.skipped_files.extend(found.skipped)
        existing = self._existing()
        report.stages["scan"] += time.perf_counter() - started
        total_bytes = sum(f.size for f in found.files)
        t = time.perf_counter()
        changed = []
        for file in found.files:
            state = existing.get((file.root, file.source))
            known = state.complete_hash() if state else None
            if known is not None:  # hashing here spares starting workers for unchanged files
                try:
                    unchanged = hash_file(file.path, self.limits.max_file_bytes, roots) == known
                except OutsideRoots as exc:
                    report.skipped_files.append(Entry(file.path, str(exc)))
                    continue
                except DocumentError as exc:
                    report.failed.append(Entry(file.path, str(exc)))
                    continue
                if unchanged:
                    report.unchanged += 1
                    if progress is not None:
                        progress(file, file.size, total_bytes)
                    continue
            changed.append(file)
        report.stages["read"] += time.perf_counter() - t
        if changed:
            self._ingest(changed, existing, report, progress, total_bytes, roots)
        if delete:
            seen = {(f.root, f.source) for f in found.files}
            vanished = [
                state
                for (root, source), state in existing.items()
                if root in found.roots
                and (root, source) not in seen
                and not os.path.lexists(os.path.join(root, source))  # skipped, not gone
            ]
            ids = [i for state in vanished for i in state.ids]
            t = time.perf_counter()
            self.store.delete(self.spec.name, ids)
            report.stages["write"] += time.perf_counter() - t
            report.deleted = len(vanished)
            report.chunks_deleted += len(ids)
        if report.chunks_written or report.chunks_deleted:
            t = time.perf_counter()
            self.store.optimize(self.spec.name)
            report.stages["write"] += time.perf_counter() - t
        report.seconds = time.perf_counter() - started
        return report

    def _ingest(
        self,
        files: list[SourceFile],
        existing: dict[tuple[str, str], _Existing],
        report: SyncReport,
        progress: Progress | None,
        total_bytes: int,
        roots: tuple[str, ...] | None = None,
    ) -> None:
        tasks = [Task(seq, file.path, file.kind, roots) for seq, file in enumerate(files)]
        workers = max(1, min(self.limits.workers, len(tasks)))
        batch = _Batch(self, report)
        # An OCR'd page tells the pool it is done: each has its own time, rendering included.
        beat_timeout = max(self.limits.parse_timeout_s, self.limits.ocr.page_timeout_s + 30)
        with ParsePool(
            self.worker_config(),
            workers=workers,
            timeout_s=self.limits.parse_timeout_s,
            beat_timeout_s=beat_timeout,
        ) as pool:
            report.workers = workers
            for task, outcome in pool.imap(tasks, backlog=2 * workers):
                file = files[task.seq]
                if isinstance(outcome, Failed):
                    report.failed.append(Entry(file.path, outcome.reason))
                elif isinstance(outcome, Skipped):
                    report.skipped_files.append(Entry(file.path, outcome.reason))
                else:
                    report.skipped_files.extend(
                        Entry(f"{file.path}/{part}", reason) for part, reason in outcome.skipped
                    )
                    state = existing.get((file.root, file.source))
                    batch.add(
                        _Pending(
                            file,
                            outcome,
                            old_ids=state.ids if state else set(),
                            is_new=state is None or state.complete_hash() is None,
                        )
                    )
                if progress is not None:
                    progress(file, file.size, total_bytes)
            batch.flush()
            report.workers_replaced = pool.replaced

    def _existing(self) -> dict[tuple[str, str], _Existing]:
        state: dict[tuple[str, str], _Existing] = {}
        for point, payload in self.store.scan(self.spec.name, STATE_FIELDS):
            root = from_fields(str(payload.get("root")), payload.get("root_raw"))
            source = from_fields(str(payload.get("source")), payload.get("source_raw"))
            entry = state.setdefault((root, source), _Existing())
            entry.ids.add(point)
            entry.hashes.add(str(payload.get("sha256")))
            entry.n_chunks = int(payload.get("n_chunks", -1))
        return state


_Row = tuple[_Pending, int, Chunk]  # a file, the chunk's index in it, the chunk
_Point = tuple[_Pending, StoredChunk]


class _Batch:
    """Chunks gathered across files, embedded and written ``batch_chunks`` at a time."""

    def __init__(self, sync: FolderSync, report: SyncReport) -> None:
        self.sync = sync
        self.report = report
        self.rows: list[_Row] = []

    def add(self, item: _Pending) -> None:
        parsed, stages = item.parsed, self.report.stages
        stages["read"] += parsed.read_s
        stages["parse"] += parsed.parse_s
        stages["chunk"] += parsed.chunk_s
        self.report.pages += parsed.pages
        self.report.dropped_runs += parsed.dropped_runs
        self.report.dropped_chars += parsed.dropped_chars
        for i, chunk in enumerate(parsed.chunks):
            self.rows.append((item, i, chunk))
            if len(self.rows) >= self.sync.limits.batch_chunks:
                self.flush()

    def flush(self) -> None:
        rows = [row for row in self.rows if not row[0].failed]
        self.rows = []
        if not rows:
            return
        points = self._points(rows)
        t = time.perf_counter()
        index = self.sync.spec.name
        self.sync.store.upsert(index, [p for _, p in points])
        for item, _ in points:
            item.written += 1
        for item in dict.fromkeys(item for item, _, _ in rows):
            if item.failed or item.written < len(item.parsed.chunks):
                continue
            self._finish(item)
        self.report.stages["write"] += time.perf_counter() - t

    def _points(self, rows: list[_Row]) -> list[_Point]:
        """Embedded points of ``rows``; a file whose chunks cannot be embedded fails alone."""
        t = time.perf_counter()
        try:
            points = self._embed(rows)
        except Exception:  # find the file at fault: embed file by file
            points = []
            for item in dict.fromkeys(item for item, _, _ in rows):
                own = [row for row in rows if row[0] is item]
                try:
                    points.extend(self._embed(own))
                except Exception as exc:
                    log.exception("embedding %r failed", item.file.path)
                    self._fail(item, f"embedding failed: {type(exc).__name__}: {exc}")
        self.report.stages["embed"] += time.perf_counter() - t
        return points

    def _embed(self, rows: list[_Row]) -> list[_Point]:
        texts = [chunk.text for _, _, chunk in rows]
        dense = self.sync.embedder.encode(texts)
        points = []
        for row, (item, i, chunk) in enumerate(rows):
            file, parsed = item.file, item.parsed
            pid = point_id(file.root, file.source, parsed.sha256, i)
            sparse = self.sync.sparse.encode_document(chunk.text)
            points.append((item, StoredChunk(pid, dense[row], sparse, _payload(item, i, chunk))))
        return points

    def _fail(self, item: _Pending, reason: str) -> None:
        if not item.failed:
            item.failed = True
            self.report.failed.append(Entry(item.file.path, reason))

    def _finish(self, item: _Pending) -> None:
        file, parsed = item.file, item.parsed
        count = len(parsed.chunks)
        new_ids = {point_id(file.root, file.source, parsed.sha256, i) for i in range(count)}
        stale = sorted(item.old_ids - new_ids)
        self.sync.store.delete(self.sync.spec.name, stale)
        self.report.chunks_written += len(parsed.chunks)
        self.report.chunks_deleted += len(stale)
        if item.is_new:
            self.report.added += 1
        else:
            self.report.updated += 1


def _payload(item: _Pending, index: int, chunk: Chunk) -> dict[str, Any]:
    file, parsed = item.file, item.parsed
    names = {**path_fields(file.root, "root"), **path_fields(file.source, "source")}
    return {
        **names,
        "dirs": path_prefixes(names["source"]),
        "type": file.kind,
        "sha256": parsed.sha256,
        "mtime": parsed.mtime,
        "page": chunk.page,
        "heading": list(chunk.heading),
        **_location(chunk),
        "char_start": chunk.char_start,
        "char_end": chunk.char_end,
        "chunk_index": index,
        "n_chunks": len(parsed.chunks),
        "text": chunk.text,
    }


def _location(chunk: Chunk) -> dict[str, Any]:
    """Where in its file a chunk is, beyond page and heading; absent fields stay absent."""
    found: dict[str, Any] = {}
    if chunk.location:
        found["location"] = chunk.location
    if chunk.member:
        found["member"] = chunk.member
    if chunk.ocr:
        found["ocr"] = True
    return found
