"""Reading files into sections of text: PDF pages, Markdown sections, plain text, HTML.

A section is the unit whose text character offsets refer to: a PDF page's text, or the whole
text of any other file. Markdown sections keep their heading path and their offset inside the
file text, so a chunk's ``char_start``/``char_end`` always index the page (or file) text.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

from rag.errors import DocumentError

SUFFIX_TYPES: dict[str, str] = {
    ".pdf": "pdf",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    ".html": "html",
    ".htm": "html",
}


def file_type(path: Path) -> str | None:
    """The document type of a file by its suffix, or None when it is not a document we read."""
    return SUFFIX_TYPES.get(path.suffix.lower())


@dataclass(frozen=True)
class Section:
    """A stretch of text with its page, heading path and offset in the page (or file) text."""

    text: str
    page: int | None = None
    heading: tuple[str, ...] = ()
    offset: int = 0


def parse_document(data: bytes, kind: str) -> list[Section]:
    """Sections of a document's text; raises DocumentError with a reason a user understands."""
    if not data.strip():
        raise DocumentError("empty file")
    parser = _PARSERS[kind]
    sections = [s for s in parser(data) if s.text.strip()]
    if not sections:
        raise DocumentError("no extractable text" + (" (scanned PDF?)" if kind == "pdf" else ""))
    return sections


# pypdf caps arrays at 100,000 elements against hostile files; real 10-Q filings (Microsoft's)
# carry larger ones in their content streams. Still bounded, 20 times higher.
PDF_MAX_ARRAY_ELEMENTS = 2_000_000


def _parse_pdf(data: bytes) -> list[Section]:
    import logging

    from pypdf import PdfReader, apply_configuration

    # pypdf logs every repair it attempts; a file it cannot read is reported once, below.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        with apply_configuration(array_maximum_element_count=PDF_MAX_ARRAY_ELEMENTS):
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted and not reader.decrypt(""):
                raise DocumentError("encrypted PDF (needs a password)")
            return [
                Section(text=page.extract_text() or "", page=number)
                for number, page in enumerate(reader.pages, start=1)
            ]
    except DocumentError:
        raise
    except Exception as exc:  # pypdf raises assorted error types on damaged files
        raise DocumentError(f"unreadable PDF ({type(exc).__name__}: {exc})") from exc


def decode_text(data: bytes) -> str:
    """UTF-8 when it is UTF-8, then Western Windows-1252, then what charset-normalizer finds."""
    if b"\x00" in data[:8192]:
        raise DocumentError("binary file, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    western = _western_text(data)
    if western is not None:
        return western
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise DocumentError("not decodable as text in any known encoding")
    return str(best)


def _western_text(data: bytes) -> str | None:
    """Windows-1252 when the text reads as mostly-ASCII words with a few accented letters.

    Statistical detectors confuse short Western texts with Central European code pages
    ("crème" read as "crčme"); in a script such as Cyrillic most letters are non-ASCII, and
    those texts fall through to charset-normalizer.
    """
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return None
    letters = [c for c in text if c.isalpha()]
    accented = sum(1 for c in letters if ord(c) > 127)
    return text if letters and accented / len(letters) < 0.3 else None


def _parse_text(data: bytes) -> list[Section]:
    return [Section(text=decode_text(data))]


_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)


def _fenced_ranges(text: str) -> list[tuple[int, int]]:
    marks = [m.start() for m in _FENCE.finditer(text)]
    return [(marks[i], marks[i + 1]) for i in range(0, len(marks) - 1, 2)]


def _parse_markdown(data: bytes) -> list[Section]:
    text = decode_text(data)
    fences = _fenced_ranges(text)
    headings = [
        m for m in _HEADING.finditer(text) if not any(a <= m.start() < b for a, b in fences)
    ]
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    start = 0
    current: tuple[str, ...] = ()
    for match in headings:
        if match.start() > start:
            sections.append(Section(text[start : match.start()], heading=current, offset=start))
        level = len(match.group(1))
        path = [(lvl, title) for lvl, title in path if lvl < level] + [(level, match.group(2))]
        current = tuple(title for _, title in path)
        start = match.start()
    sections.append(Section(text[start:], heading=current, offset=start))
    return sections


_INVISIBLE = ("script", "style", "noscript", "template", "head", "svg")


def _parse_html(data: bytes) -> list[Section]:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(decode_text(data))
    tree.strip_tags(list(_INVISIBLE))
    root = tree.body or tree.root
    raw = root.text(separator="\n") if root is not None else ""
    lines = [" ".join(line.split()) for line in raw.splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return [Section(text=text)]


_PARSERS = {
    "pdf": _parse_pdf,
    "markdown": _parse_markdown,
    "text": _parse_text,
    "html": _parse_html,
}
