"""Reading files into sections of text: PDF pages, Markdown sections, plain text, HTML.

A section is the unit whose text character offsets refer to: a PDF page's text, or the whole
text of any other file. Markdown sections keep their heading path and their offset inside the
file text, so a chunk's ``char_start``/``char_end`` always index the page (or file) text.
"""

from __future__ import annotations

import bisect
import codecs
import html as htmllib
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


# The UTF-32-LE mark starts with the UTF-16-LE one, so UTF-32 is tried first.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def decode_text(data: bytes) -> str:
    """The encoding its byte order mark names; else UTF-8 when it is UTF-8, then Western
    Windows-1252, then what charset-normalizer finds."""
    for mark, encoding in _BYTE_ORDER_MARKS:
        if data.startswith(mark):
            try:
                return data[len(mark) :].decode(encoding)
            except UnicodeDecodeError:
                continue  # not what the mark says: read it as unmarked bytes
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


# Only the start of a heading line is matched by a regular expression; the title is cut in
# code. ``^(#{1,6})[ \t]+(.+?)[ \t#]*$`` backtracks quadratically on a line such as "# # # …".
_HEADING_START = re.compile(r"^(#{1,6})[ \t]", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)


def _fence_marks(text: str) -> list[int]:
    """Starts of fence lines; a position is fenced when an odd number of marks precede it."""
    marks = [m.start() for m in _FENCE.finditer(text)]
    return marks if len(marks) % 2 == 0 else marks[:-1]


def _headings(text: str) -> list[tuple[int, int, str]]:
    """(start, level, title) of each ATX heading outside fenced code, in one pass."""
    marks = _fence_marks(text)
    found: list[tuple[int, int, str]] = []
    for match in _HEADING_START.finditer(text):
        start = match.start()
        if bisect.bisect_right(marks, start) % 2:
            continue
        end = text.find("\n", start)
        rest = text[match.end() - 1 : end if end >= 0 else len(text)]
        body = rest.lstrip(" \t")
        if body:  # the title ends before trailing blanks and closing hashes, keeping a character
            title = body.rstrip(" \t#") or body[0]
        elif len(rest) > 1:  # blanks only: the title is the last blank
            title = rest[-1]
        else:
            continue
        found.append((start, len(match.group(1)), title))
    return found


def _parse_markdown(data: bytes) -> list[Section]:
    text = decode_text(data)
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    start = 0
    current: tuple[str, ...] = ()
    for heading_start, level, title in _headings(text):
        if heading_start > start:
            sections.append(Section(text[start:heading_start], heading=current, offset=start))
        path = [(lvl, name) for lvl, name in path if lvl < level] + [(level, title)]
        current = tuple(name for _, name in path)
        start = heading_start
    sections.append(Section(text[start:], heading=current, offset=start))
    return sections


_INVISIBLE = frozenset({"script", "style", "noscript", "template", "svg", "title"})
# What a document head may hold; any other start tag (or <body>) ends an unclosed <head>.
_HEAD_CONTENT = frozenset(
    {"base", "link", "meta", "script", "style", "noscript", "template", "title"}
)
# fmt: off
_BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "body", "br", "caption", "dd", "details",
    "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1",
    "h2", "h3", "h4", "h5", "h6", "header", "hr", "html", "li", "main", "nav", "ol", "option",
    "p", "pre", "section", "summary", "table", "tbody", "td", "tfoot", "th", "thead", "tr",
    "ul",
})
# fmt: on


# Elements whose content is text up to their end tag, never markup.
_RAW_TEXT = frozenset({"script", "style", "title", "textarea", "xmp", "iframe", "noembed"})
_TAG_START = re.compile(r"<(/?)([A-Za-z][^\s/>]*)")


class _Ahead:
    """The next ``needle`` at or after a position that only moves forward: each character of
    the text is searched once, however many unterminated ``<`` or ``<!--`` it holds."""

    def __init__(self, text: str, needle: str) -> None:
        self.text, self.needle, self.found = text, needle, -1

    def find(self, start: int) -> int:
        if self.found >= start:
            return self.found
        if self.found != -2:  # -2: no occurrence left
            self.found = self.text.find(self.needle, start)
            if self.found < 0:
                self.found = -2
        return max(self.found, -1)


def _visible_text(html: str) -> str:
    """The text a reader sees, a line break at each block element, in one forward pass.

    A tree builder repairs nesting with work that grows with the depth (lexbor took 100 s on
    200,000 nested ``<div>``s), and the standard library's parser rescans the rest of the input
    after each unterminated ``</`` or ``<!``. Here every search moves forward. A ``>`` inside a
    quoted attribute value ends the tag early; a few characters of that value may show.
    """
    parts: list[str] = []
    closing, comment_end = _Ahead(html, ">"), _Ahead(html, "-->")
    hidden, in_head, pos = 0, False, 0
    while pos < len(html):
        lt = html.find("<", pos)
        if lt < 0:
            lt = len(html)
        if not hidden and not in_head:
            parts.append(html[pos:lt])
        if lt == len(html):
            break
        tag = _TAG_START.match(html, lt)
        if html.startswith("<!--", lt):
            end = comment_end.find(lt + 4)
            pos = len(html) if end < 0 else end + 3
            continue
        if tag is None and not html.startswith(("<!", "<?", "</"), lt):
            if not hidden and not in_head:
                parts.append("<")
            pos = lt + 1
            continue
        gt = closing.find(tag.end() if tag else lt + 2)
        if gt < 0:
            break  # an unterminated tag at the end of the file
        pos = gt + 1
        if tag is None:
            continue  # a doctype, processing instruction or bogus comment
        name, is_end = tag.group(2).lower(), bool(tag.group(1))
        if name == "head":
            in_head = not is_end
        elif in_head and not is_end and name not in _HEAD_CONTENT:
            in_head = False
        if name in _INVISIBLE and html[gt - 1] != "/":
            hidden = max(hidden - 1, 0) if is_end else hidden + 1
        elif name in _BLOCKS:
            parts.append("\n")
        if name in _RAW_TEXT and not is_end:
            close = re.compile(f"</{re.escape(name)}", re.IGNORECASE).search(html, pos)
            end = close.start() if close else len(html)
            if not hidden and not in_head:
                parts.append(html[pos:end])
            pos = end
    return htmllib.unescape("".join(parts))


def _parse_html(data: bytes) -> list[Section]:
    raw = _visible_text(decode_text(data))
    lines = [" ".join(line.split()) for line in raw.splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return [Section(text=text)]


_PARSERS = {
    "pdf": _parse_pdf,
    "markdown": _parse_markdown,
    "text": _parse_text,
    "html": _parse_html,
}
