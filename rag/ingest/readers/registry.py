"""Which reader reads a file: its type detected from its bytes, the suffix only as a hint.

Discovery admits a file by its suffix (``SUFFIX_TYPES``); the worker then looks at the content:
a PDF named ``.docx`` is read as a PDF, a ``.docx`` that is not a zip archive fails with that
reason, an encrypted Office file (an OLE container holding ``EncryptedPackage``) is skipped as
password-protected. Containers (zip, mail) read their members through ``parse_document`` again,
one level deeper.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import replace
from pathlib import Path

from rag.errors import DocumentError
from rag.ingest.readers import (
    containers,
    docx,
    epub,
    images,
    legacy,
    mail,
    markdown,
    notebook,
    odf,
    pdf,
    pptx,
    rtf,
    sheets,
    structured,
    text,
)
from rag.ingest.readers import html as html_reader
from rag.ingest.readers.base import ReadContext, Reader, ReadMember, Section, Unreadable

SUFFIX_TYPES: dict[str, str] = {
    ".pdf": "pdf",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    ".log": "text",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".docx": "docx",
    ".docm": "docx",
    ".pptx": "pptx",
    ".pptm": "pptx",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".csv": "csv",
    ".tsv": "tsv",
    ".odt": "odt",
    ".ods": "ods",
    ".odp": "odp",
    ".rtf": "rtf",
    ".eml": "eml",
    ".epub": "epub",
    ".ipynb": "ipynb",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".xml": "xml",
    ".zip": "zip",
    ".doc": "doc",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".tif": "image",
    ".tiff": "image",
    # Formats we recognise but do not read: skipped with their own reason, never "failed".
    ".xls": "xls",
    ".ppt": "ppt",
    ".msg": "msg",
}

READERS: dict[str, Reader] = {
    "pdf": pdf.read,
    "markdown": markdown.read,
    "text": text.read,
    "html": html_reader.read,
    "docx": docx.read,
    "pptx": pptx.read,
    "xlsx": sheets.read_xlsx,
    "csv": sheets.read_csv,
    "tsv": sheets.read_tsv,
    "odt": odf.read_text_document,
    "ods": odf.read_spreadsheet,
    "odp": odf.read_presentation,
    "rtf": rtf.read,
    "eml": mail.read,
    "epub": epub.read,
    "ipynb": notebook.read,
    "json": structured.read_json,
    "jsonl": structured.read_jsonl,
    "yaml": structured.read_text,
    "xml": structured.read_xml,
    "zip": containers.read_zip,
    "doc": legacy.read_doc,
    "image": images.read,
}

# The types a search filter may name (``file_types``): every type read, i.e. a chunk's "type".
READ_TYPES: frozenset[str] = frozenset(READERS)

UNSUPPORTED = {
    "xls": ".xls/.ppt binary formats are not supported (save as .xlsx)",
    "ppt": ".xls/.ppt binary formats are not supported (save as .pptx)",
    "msg": "Outlook .msg is not supported (save the mail as .eml)",
}

# Types whose content has a signature of its own; others are trusted to their suffix.
_ZIP_TYPES = {"docx", "pptx", "xlsx", "odt", "ods", "odp", "epub", "zip"}
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ODF_MIMETYPES = {
    b"application/vnd.oasis.opendocument.text": "odt",
    b"application/vnd.oasis.opendocument.spreadsheet": "ods",
    b"application/vnd.oasis.opendocument.presentation": "odp",
    b"application/epub+zip": "epub",
}


def file_type(path: Path) -> str | None:
    """The document type of a file by its suffix, or None when it is not a document we read."""
    return SUFFIX_TYPES.get(path.suffix.lower())


def detect_type(data: bytes, hint: str) -> str:
    """The type the bytes are, ``hint`` (the suffix's type) where they carry no signature."""
    head = data[:8]
    if data.lstrip()[:5] == b"%PDF-" or (hint == "pdf" and b"%PDF-" in data[:1024]):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return _zip_type(data, hint)
    if head.startswith(_OLE):
        return _ole_type(data, hint)
    if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8\xff"):
        return "image"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image"
    if data.lstrip()[:5] == b"{\\rtf":
        return "rtf"
    if hint in _ZIP_TYPES or hint in ("image", "doc"):
        raise DocumentError(f"not a valid .{hint} file (its content is not what the name says)")
    return hint


def _zip_type(data: bytes, hint: str) -> str:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = set(archive.namelist())
        mimetype = archive.read("mimetype")[:100].strip() if "mimetype" in names else b""
    except (zipfile.BadZipFile, OSError, RuntimeError, ValueError, NotImplementedError) as exc:
        raise DocumentError(f"damaged zip archive ({exc})") from exc
    if mimetype in _ODF_MIMETYPES:
        return _ODF_MIMETYPES[mimetype]
    if "[Content_Types].xml" in names:
        for prefix, kind in (("word/", "docx"), ("ppt/", "pptx"), ("xl/", "xlsx")):
            if any(n.startswith(prefix) for n in names):
                return kind
    return "zip"


# Zip-based document formats whose libraries inflate their parts whole.
_PACKAGES = {"docx", "pptx", "xlsx", "odt", "ods", "odp", "epub"}


def _check_package(data: bytes, context: ReadContext) -> None:
    """An Office or OpenDocument package's parts, from its directory, before any is inflated:
    their uncompressed total within the archive limit (a zip bomb dressed as a .docx)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        total = sum(info.file_size for info in archive.infolist())
    limit = context.limits.max_total_bytes
    if total > limit:
        raise Unreadable(
            f"archive over its limits ({total:,} bytes uncompressed, more than {limit:,}; "
            "RAG_ARCHIVE_MAX_MB)"
        )


def _ole_type(data: bytes, hint: str) -> str:
    """OLE compound files: legacy Office, Outlook mail, or an encrypted OOXML package."""

    def has(stream: str) -> bool:
        return stream.encode("utf-16-le") in data

    if has("EncryptedPackage") or has("EncryptionInfo"):
        raise Unreadable("password-protected Office document")
    if has("WordDocument"):
        return "doc"
    if has("PowerPoint Document"):
        return "ppt"
    if has("Workbook") or has("Book"):
        return "xls"
    if has("__substg1.0_"):
        return "msg"
    return hint if hint in ("doc", "xls", "ppt", "msg") else "doc"


def parse_document(data: bytes, kind: str, context: ReadContext | None = None) -> list[Section]:
    """Sections of a document's text; raises Unreadable (skip) or DocumentError (fail) with a
    reason a user understands."""
    if not data.strip():
        raise DocumentError("empty file")
    context = context or ReadContext()
    if context.read_member is None:
        context.read_member = _member_reader(context)
    detected = detect_type(data, kind)
    if detected in UNSUPPORTED:
        raise Unreadable(UNSUPPORTED[detected])
    if detected in _PACKAGES:
        _check_package(data, context)
    sections = [s for s in READERS[detected](data, context) if s.text.strip()]
    if not sections:
        raise DocumentError("no extractable text")
    return sections


def _member_reader(context: ReadContext) -> ReadMember:
    """Read a container's member as a document of its own, one level deeper."""

    def read_member(name: str, data: bytes) -> list[Section]:
        if context.depth > context.limits.max_depth:
            depth = context.limits.max_depth
            raise Unreadable(f"archive over its limits (nested deeper than {depth})")
        kind = file_type(Path(name))
        if kind is None:
            raise Unreadable("not a document type")
        inner = ReadContext(
            ocr=context.ocr,
            limits=context.limits,
            depth=context.depth + 1,
            skipped=context.skipped,
            heartbeat=context.heartbeat,
        )
        sections = parse_document(data, kind, inner)
        return [_under(name, s) for s in sections]

    return read_member


def _under(name: str, section: Section) -> Section:
    member = f"{name}/{section.member}" if section.member else name
    return replace(section, member=member)
