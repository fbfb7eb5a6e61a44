"""What a sync did, file by file and stage by stage: the report `rag-ingest --json` prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rag.ingest.discovery import Entry
from rag.ingest.paths import path_fields

STAGES = ("scan", "read", "parse", "chunk", "embed", "write")


def _entries(entries: list[Entry]) -> list[dict[str, str]]:
    return [{**path_fields(e.path, "path"), "reason": e.reason} for e in entries]


@dataclass
class SyncReport:
    """Counts of files and chunks; ``failed`` and ``skipped_files`` give each entry's reason.

    Stage seconds: ``read``, ``parse`` and ``chunk`` are summed over the worker processes (they
    run side by side, and beside ``embed`` and ``write``), so stages may add up to more than
    ``seconds``, the wall time of the run.
    """

    files_seen: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: list[Entry] = field(default_factory=list)
    skipped_files: list[Entry] = field(default_factory=list)
    chunks_written: int = 0
    chunks_deleted: int = 0
    pages: int = 0
    dropped_runs: int = 0  # stretches the embedder's tokenizer cannot represent, left out
    dropped_chars: int = 0
    workers: int = 0
    workers_replaced: int = 0
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @property
    def skipped(self) -> int:
        return len(self.skipped_files)

    def to_json(self) -> dict[str, Any]:
        return {
            "files_seen": self.files_seen,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "skipped": self.skipped,
            "failed": _entries(self.failed),
            "skipped_files": _entries(self.skipped_files),
            "chunks_written": self.chunks_written,
            "chunks_deleted": self.chunks_deleted,
            "pages": self.pages,
            "unrepresentable": {"runs": self.dropped_runs, "chars": self.dropped_chars},
            "workers": self.workers,
            "workers_replaced": self.workers_replaced,
            "seconds": round(self.seconds, 3),
            "stages": {k: round(v, 3) for k, v in self.stages.items()},
        }
