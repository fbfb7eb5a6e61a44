"""Readers: one module per document format, each turning a file's bytes into sections with
the locations a citation needs; the registry picks one by the type detected from the bytes."""

from __future__ import annotations

from rag.ingest.readers.base import (
    ContainerLimits,
    OcrOptions,
    ReadContext,
    Section,
    TableRows,
    Unreadable,
    ocr_options,
)
from rag.ingest.readers.registry import (
    READ_TYPES,
    SUFFIX_TYPES,
    detect_type,
    file_type,
    parse_document,
)

__all__ = [
    "READ_TYPES",
    "SUFFIX_TYPES",
    "ContainerLimits",
    "OcrOptions",
    "ReadContext",
    "Section",
    "TableRows",
    "Unreadable",
    "detect_type",
    "file_type",
    "ocr_options",
    "parse_document",
]
