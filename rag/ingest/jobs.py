"""Ingestion jobs inside the process that owns the store: syncs and deletions over HTTP.

A job runs the same library as `rag-ingest` (``FolderSync`` and its ``SyncReport``) in a worker
thread, so the event loop keeps answering while it parses, embeds and writes; its points are
searchable as soon as they are written. Each index has one writer: jobs for the same index
queue and run one after another (``queued`` until the one before is done), jobs for different
indexes run side by side. Finished jobs are kept, newest first, up to ``history``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rag.config import Settings
from rag.embed import EmbedServiceError, TextEmbedder, embedder_from
from rag.errors import (
    DiskFullError,
    IndexMismatchError,
    IndexNotFoundError,
    NotWritableError,
    RagError,
    StoreUnavailableError,
    writing_in,
)
from rag.indexes import IndexSpec
from rag.ingest.discovery import SourceFile, discover
from rag.ingest.paths import from_fields
from rag.ingest.readers import ContainerLimits, ocr_options
from rag.ingest.report import SyncReport
from rag.ingest.sync import FolderSync, IngestLimits, default_workers
from rag.store import VectorStore

log = logging.getLogger("rag.jobs")
JobState = Literal["queued", "running", "succeeded", "failed"]
JobKind = Literal["sync", "delete"]
HISTORY = 100


class JobNotFoundError(RagError):
    """No job by that id: unknown, or finished and forgotten (HTTP 404)."""


class DocumentNotFoundError(RagError):
    """The index holds no file by that name (HTTP 404)."""


class JobsClosedError(StoreUnavailableError):
    """The service is shutting down and takes no more jobs (HTTP 503)."""


class JobCancelledError(RagError):
    """The service shut down while the job ran; a later sync finishes what it began."""


# (exception, error type): the same names as the HTTP error envelope; rag-ingest maps them to
# its exit codes.
ERROR_TYPES: list[tuple[type[Exception], str]] = [
    (IndexMismatchError, "index_mismatch"),
    (IndexNotFoundError, "unknown_index"),
    (DiskFullError, "disk_full"),
    (StoreUnavailableError, "store_unavailable"),
    (EmbedServiceError, "embedder_unavailable"),
    (JobCancelledError, "cancelled"),
    (NotWritableError, "not_writable"),
    (RagError, "invalid_request"),
]


def ingest_limits(settings: Settings) -> IngestLimits:
    """What a sync may read and how it parses, from the settings (rag-ingest's and the api's)."""
    return IngestLimits(
        max_file_bytes=int(settings.max_file_mb * 1_000_000),
        workers=settings.ingest_workers or default_workers(),
        parse_timeout_s=settings.parse_timeout_s,
        worker_memory_bytes=settings.worker_memory_mb << 20,
        batch_chunks=8 * settings.embed_batch_size,
        ocr=ocr_options(settings.ocr, settings.ocr_languages, settings.ocr_page_timeout_s),
        containers=ContainerLimits(
            max_members=settings.archive_max_members,
            max_total_bytes=int(settings.archive_max_mb * 1_000_000),
        ),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Progress:
    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    current: str | None = None


@dataclass
class Job:
    index: str
    kind: JobKind
    paths: list[str]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: JobState = "queued"
    created_at: str = field(default_factory=_now)
    started_at: str | None = None
    finished_at: str | None = None
    progress: Progress = field(default_factory=Progress)
    report: SyncReport | None = None
    error: dict[str, str] | None = None

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed")

    def to_json(self) -> dict[str, Any]:
        p = self.progress
        return {
            "id": self.id,
            "index": self.index,
            "kind": self.kind,
            "state": self.state,
            "paths": self.paths,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "progress": {
                "files_total": p.files_total,
                "files_done": p.files_done,
                "bytes_total": p.bytes_total,
                "bytes_done": p.bytes_done,
                "current": p.current,
            },
            "report": self.report.to_json() if self.report is not None else None,
            "error": self.error,
        }


def error_of(exc: Exception) -> dict[str, str]:
    for kind, name in ERROR_TYPES:
        if isinstance(exc, kind):
            return {"type": name, "message": str(exc)}
    return {"type": "internal_error", "message": "internal error; see the log"}


class IndexSyncs:
    """A ``FolderSync`` for any index of the store, reusing the service's embedder when the
    index was built with it (other embedders are loaded once, on first use)."""

    def __init__(self, settings: Settings, store: VectorStore, embedder: TextEmbedder) -> None:
        self.settings = settings
        self.store = store
        self._embedders = {embedder.model_id: embedder}
        self._own = embedder.model_id  # the service's: closed by the service
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            loaded = [e for model, e in self._embedders.items() if model != self._own]
        for embedder in loaded:
            embedder.close()

    def _embedder(self, model: str) -> TextEmbedder:
        with self._lock:
            if model not in self._embedders:
                self._embedders[model] = embedder_from(self.settings.embed_options(), model)
            return self._embedders[model]

    def __call__(self, index: str) -> FolderSync:
        s = self.settings
        spec = IndexSpec.load(index, s.indexes_dir, s.embed_model)
        meta = self.store.get_meta(index)
        embedder = self._embedder(meta.embed_model if meta else spec.embed_model)
        return FolderSync(self.store, embedder, spec, limits=ingest_limits(s))


def source_roots(
    store: VectorStore, index: str, source: str, root: str | None = None
) -> dict[str, list[str]]:
    """The point ids of the file ``source`` (relative to its root), by root; only under
    ``root`` when it is given."""
    found: dict[str, list[str]] = {}
    for point, payload in store.scan(index, ("root", "root_raw", "source", "source_raw")):
        if from_fields(str(payload.get("source")), payload.get("source_raw")) != source:
            continue
        found_root = from_fields(str(payload.get("root")), payload.get("root_raw"))
        if root is None or found_root == root:
            found.setdefault(found_root, []).append(point)
    return found


def delete_source(store: VectorStore, index: str, source: str, root: str | None) -> SyncReport:
    """Remove every passage of the file ``source`` from the index."""
    report = SyncReport()
    started = time.perf_counter()
    found = source_roots(store, index, source, root)
    ids = [point for points in found.values() for point in points]
    store.delete(index, ids)
    if ids:
        store.optimize(index)
    report.deleted = len(found)
    report.chunks_deleted = len(ids)
    report.seconds = time.perf_counter() - started
    return report


class JobRunner:
    """Runs jobs one index at a time each, in threads; keeps their state for ``GET /v1/jobs``."""

    def __init__(
        self,
        store: VectorStore,
        syncs: Callable[[str], FolderSync],
        *,
        history: int = HISTORY,
        max_file_bytes: int = 100 * 1_000_000,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.syncs = syncs
        # Told the index after each job, before the job reads as done (a failed one may have
        # written part): the answer cache's generations (rag/shared/generations.py).
        self.on_change = on_change
        self.history = history
        self.max_file_bytes = max_file_bytes
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._writers: dict[str, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()
        self._closed = False

    def sync(
        self,
        index: str,
        paths: Sequence[Path],
        *,
        delete: bool = True,
        within: Sequence[Path] | None = None,
    ) -> Job:
        """Queue a sync of ``paths`` into ``index`` (created on first use); with ``within``,
        files and folders resolving outside those roots are skipped (symlinks out of them)."""
        job = Job(index, "sync", [str(p) for p in paths])
        roots = None if within is None else list(within)
        return self._submit(job, lambda: self._run_sync(job, list(paths), delete, roots))

    def delete(
        self, index: str, source: str, root: str | None = None, unlink: Path | None = None
    ) -> Job:
        """Queue the removal of a file's passages; ``unlink`` (an uploaded copy) goes too."""
        job = Job(index, "delete", [source])

        def run() -> SyncReport:
            if unlink is not None:
                with writing_in(unlink.parent, "the uploads folder"):
                    unlink.unlink(missing_ok=True)
            return delete_source(self.store, index, source, root)

        return self._submit(job, run)

    def get(self, job_id: str) -> dict[str, Any] | None:
        """A snapshot of the job's state, or None when it is unknown (or long forgotten)."""
        with self._lock:
            job = self._jobs.get(job_id)
            return job.to_json() if job is not None else None

    def index_of(self, job_id: str) -> str | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return job.index if job is not None else None

    def close(self) -> None:
        """Take no more jobs, let the running ones finish, fail the queued ones."""
        with self._lock:
            self._closed = True
            writers = list(self._writers.values())
        for writer in writers:
            writer.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for job in self._jobs.values():
                if not job.done:
                    job.state, job.finished_at = "failed", _now()
                    job.error = {"type": "cancelled", "message": "the service shut down"}

    def _submit(self, job: Job, work: Callable[[], SyncReport]) -> Job:
        with self._lock:
            if self._closed:
                raise JobsClosedError("the service is shutting down; try again when it is back")
            self._jobs[job.id] = job
            writer = self._writers.get(job.index)
            if writer is None:
                writer = ThreadPoolExecutor(1, thread_name_prefix=f"writer-{job.index}")
                self._writers[job.index] = writer
        writer.submit(self._run, job, work)
        return job

    def _run(self, job: Job, work: Callable[[], SyncReport]) -> None:
        with self._lock:
            job.state, job.started_at = "running", _now()
        try:
            try:
                report = work()
            finally:
                if self.on_change is not None:
                    self.on_change(job.index)
        except Exception as exc:
            if not isinstance(exc, RagError):
                log.exception("job %s (%s of index %r) failed", job.id, job.kind, job.index)
            with self._lock:
                job.state, job.error = "failed", error_of(exc)
        else:
            with self._lock:
                job.state, job.report = "succeeded", report
        finally:
            with self._lock:
                job.finished_at = _now()
                job.progress.current = None
                self._forget_old()

    def _run_sync(
        self, job: Job, paths: list[Path], delete: bool, within: list[Path] | None
    ) -> SyncReport:
        found = discover(paths, self.max_file_bytes, within)
        with self._lock:
            job.progress.files_total = len(found.files)
            job.progress.bytes_total = sum(f.size for f in found.files)
        sync = self.syncs(job.index)

        def progress(file: SourceFile, size: int, total: int) -> None:
            with self._lock:
                if self._closed:  # files written so far are complete; the rest waits
                    raise JobCancelledError("the service shut down during the sync")
                p = job.progress
                p.files_done += 1
                p.bytes_done += size
                p.bytes_total = total
                p.current = file.source

        return sync.run(paths, delete=delete, progress=progress, within=within)

    def _forget_old(self) -> None:
        finished = [key for key, job in self._jobs.items() if job.done]
        for key in finished[: max(0, len(finished) - self.history)]:
            del self._jobs[key]
