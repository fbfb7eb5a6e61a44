"""Ingesting: finding files under the roots, reading and parsing them in isolated workers,
chunking, syncing an index by content hash, and the HTTP ingestion jobs."""

from __future__ import annotations

from rag.ingest.chunking import Chunker
from rag.ingest.documents import SUFFIX_TYPES, file_type, parse_document
from rag.ingest.inventory import summarise
from rag.ingest.jobs import (
    DocumentNotFoundError,
    IndexSyncs,
    Job,
    JobNotFoundError,
    JobRunner,
    ingest_limits,
    source_roots,
)
from rag.ingest.server_paths import (
    BadPathError,
    save_uploads,
    sync_paths,
    upload_dir,
    uploaded_copy,
)
from rag.ingest.sync import FolderSync, IngestLimits

__all__ = [
    "BadPathError",
    "Chunker",
    "DocumentNotFoundError",
    "FolderSync",
    "IndexSyncs",
    "IngestLimits",
    "Job",
    "JobNotFoundError",
    "JobRunner",
    "SUFFIX_TYPES",
    "file_type",
    "ingest_limits",
    "parse_document",
    "save_uploads",
    "source_roots",
    "summarise",
    "sync_paths",
    "upload_dir",
    "uploaded_copy",
]
