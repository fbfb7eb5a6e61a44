"""What every reader produces and is given: sections with their locations, and the context.

A reader is a function ``read(data, context) -> list[Section]`` over a file's bytes. It raises
``Unreadable`` for a file that cannot be read for a reason the user should see but that is not
a fault (a password, a missing tool, a format we do not read): such a file is *skipped* with
that reason, and the sync still exits 0. Any other ``DocumentError`` fails the file.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from rag.errors import DocumentError


class Unreadable(DocumentError):
    """A file skipped with a specific reason (password-protected, OCR off, antiword missing)."""


@dataclass(frozen=True)
class TableRows:
    """What the chunker needs to keep a table whole row by row.

    A table section's text is ``header`` (one Markdown row) on its first line, then one line per
    row; ``rows`` holds each of those lines' row numbers in the sheet or table (1-based, so the
    header of a sheet is usually row 1). Chunks of a table never cut a row, and every chunk
    starts with the header line.
    """

    header: str
    rows: tuple[int, ...]
    label: str = ""  # "sheet Budget", "table 2": the location of a chunk is "<label>, rows a–b"


@dataclass(frozen=True)
class Section:
    """A stretch of text with where it is in its file, as a citation shows it.

    ``offset`` is where ``text`` starts in the page (or file) text that chunks' character
    offsets index. ``location`` says where a reader sees it ("slide 3", "sheet Budget",
    "footnotes"); ``member`` is the path inside a container (``attachment.pdf`` of a mail,
    ``notes/a.md`` of a zip); ``ocr`` marks text recognised from an image.
    """

    text: str
    page: int | None = None
    heading: tuple[str, ...] = ()
    offset: int = 0
    location: str = ""
    member: str = ""
    ocr: bool = False
    table: TableRows | None = None


@dataclass(frozen=True)
class OcrOptions:
    """OCR with tesseract (RAG_OCR, RAG_OCR_LANGUAGES, RAG_OCR_PAGE_TIMEOUT_S)."""

    enabled: bool = False  # resolved: "auto" becomes True when tesseract is installed
    languages: str = "eng"
    page_timeout_s: float = 60.0
    reason_off: str = "OCR is off"  # what a scan without a text layer is skipped with


@dataclass(frozen=True)
class ContainerLimits:
    """Caps on archives and mails, checked before anything is extracted (RAG_ARCHIVE_*)."""

    max_members: int = 1000  # files in one archive, attachments of one mail
    max_total_bytes: int = 200 * 1_000_000  # uncompressed bytes of all members together
    max_ratio: float = 100.0  # uncompressed / compressed, for any member of over 1 MB
    max_depth: int = 2  # archives inside archives (a mail's attached zip counts one)


def ocr_options(mode: str, languages: str, page_timeout_s: float) -> OcrOptions:
    """``RAG_OCR`` resolved: ``auto`` is on where tesseract is installed, else off with why."""
    if mode == "off":
        return OcrOptions(enabled=False, reason_off="OCR is off")
    if shutil.which("tesseract") is None:
        return OcrOptions(enabled=False, reason_off="tesseract is not installed")
    return OcrOptions(enabled=True, languages=languages, page_timeout_s=page_timeout_s)


# (member name, its bytes) -> its sections, each with ``member`` set (containers use it).
ReadMember = Callable[[str, bytes], list["Section"]]


@dataclass
class ReadContext:
    """What a reader may use besides the bytes: OCR, container limits, and for containers
    a way to read a member as a document of its own (with the registry's type detection)."""

    ocr: OcrOptions = field(default_factory=OcrOptions)
    limits: ContainerLimits = field(default_factory=ContainerLimits)
    depth: int = 0
    read_member: ReadMember | None = None
    # Members left out, with why ("secret.pdf: password-protected PDF"); reported, not failed.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # Called after each costly step (an OCR'd page), so the pool extends the file's time.
    heartbeat: Callable[[], None] = lambda: None


Reader = Callable[[bytes, ReadContext], list[Section]]


def in_order(sections: list[Section]) -> list[Section]:
    """Sections with offsets as if their texts were one text, a blank line between them.

    Passages of one file are put in a prompt in the order of (page, offset), and told apart by
    their character offsets: a format without pages (slides, chapters, cells, a Word body)
    keeps its reading order through these offsets.
    """
    placed: list[Section] = []
    offset = 0
    for section in sections:
        placed.append(replace(section, offset=offset))
        offset += len(section.text) + 2
    return placed


def short_reason(exc: BaseException) -> str:
    """A library's exception as a reason of one short line."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= 200 else text[:199] + "…"
