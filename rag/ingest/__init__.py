"""Ingesting: finding files under the roots, reading and parsing them in isolated workers,
chunking, syncing an index by content hash, and the HTTP ingestion jobs."""

from __future__ import annotations

from rag.ingest.chunking import Chunker
from rag.ingest.inventory import FileEntry, IndexEntry, readable_indexes, summarise
from rag.ingest.jobs import (
    DocumentNotFoundError,
    IndexSyncs,
    Job,
    JobNotFoundError,
    JobRunner,
    ingest_limits,
    source_roots,
)
from rag.ingest.locations import describe, document_path, location_kind
from rag.ingest.readers import READ_TYPES, SUFFIX_TYPES, file_type, parse_document
from rag.ingest.server_paths import (
    BadPathError,
    UnsupportedUploadError,
    UploadQuotaError,
    save_uploads,
    sync_paths,
    sync_roots,
    upload_dir,
    upload_limits,
    uploaded_copy,
)
from rag.ingest.sync import FolderSync, IngestLimits

__all__ = [
    "READ_TYPES",
    "describe",
    "document_path",
    "location_kind",
    "BadPathError",
    "Chunker",
    "DocumentNotFoundError",
    "FileEntry",
    "FolderSync",
    "IndexEntry",
    "IndexSyncs",
    "IngestLimits",
    "Job",
    "JobNotFoundError",
    "JobRunner",
    "SUFFIX_TYPES",
    "UnsupportedUploadError",
    "UploadQuotaError",
    "file_type",
    "ingest_limits",
    "parse_document",
    "readable_indexes",
    "save_uploads",
    "source_roots",
    "summarise",
    "sync_paths",
    "sync_roots",
    "upload_dir",
    "upload_limits",
    "uploaded_copy",
]
