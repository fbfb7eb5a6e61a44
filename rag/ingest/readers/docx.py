"""Word (.docx, .docm): the body in document order, with headers, footers and notes.

Paragraphs and tables are read as they stand in the body, so a table sits between the prose
before and after it; a heading (styles "Title" and "Heading 1".."Heading 9") opens a section
that runs to the next heading and gives the heading path of everything under it. Text is taken
from the XML rather than from python-docx's ``Paragraph.text``, which leaves out tracked
insertions, content controls, fields and text boxes that Word shows.

python-docx parses the parts it knows with lxml and ``resolve_entities=False``: an external
entity is never loaded, and libxml2 refuses a billion-laughs document outright. Footnotes and
endnotes python-docx (1.2) keeps as raw bytes; they are parsed here with defusedxml, DTDs
forbidden (Office never writes one).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from rag.errors import DocumentError
from rag.ingest.readers.base import ReadContext, Section, in_order, short_reason
from rag.ingest.readers.tables import table_section

if TYPE_CHECKING:
    from docx.document import Document

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_P, _TBL, _SDT, _SDT_CONTENT = f"{W}p", f"{W}tbl", f"{W}sdt", f"{W}sdtContent"
# Run content that is text: w:t its own, the others the character they stand for.
_TEXT: dict[str, str | None] = {
    f"{W}t": None,
    f"{W}tab": "\t",
    f"{W}ptab": "\t",
    f"{W}br": "\n",
    f"{W}cr": "\n",
    f"{W}noBreakHyphen": "-",
}
# Never text: deleted runs (their w:delText), an AlternateContent's fallback copy of its choice,
# field codes (w:instrText holds "PAGE \* MERGEFORMAT"; the field's result runs are read).
_SKIP = {f"{W}del", _FALLBACK, f"{W}instrText", f"{W}delInstrText", f"{W}moveFrom"}
_NOTE_REFS = {f"{W}footnoteReference": "footnotes", f"{W}endnoteReference": "endnotes"}
# Not notes: the rule above the notes of a page and its continuation on the next.
_NOT_NOTES = {"separator", "continuationSeparator", "continuationNotice"}
_HEADING_STYLE = re.compile(r"heading ([1-9])")

# Main-part content types of macro-enabled documents and templates: the same WordprocessingML
# as a .docx, which python-docx refuses only by its content type.
_WORD_MAIN_TYPES = (
    "application/vnd.ms-word.document.macroEnabled.main+xml",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml",
    "application/vnd.ms-word.template.macroEnabledTemplate.main+xml",
)

NoteNumbers = Mapping[str, Mapping[str, int]]  # "footnotes" -> note id -> number shown


def read(data: bytes, context: ReadContext) -> list[Section]:
    try:
        document = _open(data)
        notes = {kind: _notes(document, kind) for kind in ("footnotes", "endnotes")}
        numbers = {kind: _numbered(found) for kind, found in notes.items()}
        sections = _header_footer(document, "header", numbers)
        sections += _body(document, numbers)
        sections += _header_footer(document, "footer", numbers)
        for kind, found in notes.items():
            lines = [f"[{n}] {text}" for n, (_, text) in enumerate(found, 1) if text]
            if lines:
                sections.append(Section(text="\n".join(lines), location=kind))
    except (DocumentError, MemoryError):
        raise
    except Exception as exc:  # python-docx, zipfile and lxml raise assorted types
        raise DocumentError(f"damaged Word document ({short_reason(exc)})") from exc
    return in_order(sections)


def _open(data: bytes) -> Document:
    from docx.opc.part import PartFactory
    from docx.package import Package
    from docx.parts.document import DocumentPart

    for content_type in _WORD_MAIN_TYPES:
        PartFactory.part_type_for.setdefault(content_type, DocumentPart)
    part = Package.open(io.BytesIO(data)).main_document_part
    if not isinstance(part, DocumentPart):
        raise DocumentError("damaged Word document (its main part is not a Word document)")
    return cast("Document", part.document)  # a lazyproperty, typed Any


def _body(document: Document, numbers: NoteNumbers) -> list[Section]:
    """Prose sections at each heading, and a section per table, in document order."""
    from docx.table import Table

    style_names = {s.style_id: s.name.lower() for s in document.styles if s.name}
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    tables = 0

    def heading() -> tuple[str, ...]:
        return tuple(title for _, title in path)

    def flush() -> None:
        text = "\n".join(lines).strip()
        if text:
            sections.append(Section(text=text, heading=heading()))
        lines.clear()

    for block in _blocks(document.element.body):
        if block.tag == _TBL:
            flush()
            tables += 1
            table = Table(block, document._body)
            found = table_section(
                _table_rows(table, numbers), label=f"table {tables}", heading=heading()
            )
            if found is not None:
                sections.append(found)
            continue
        text = element_text(block, numbers)
        level = _heading_level(style_names.get(block.style or ""))
        if level is not None and text.strip():
            flush()
            title = " ".join(text.split())
            path = [(lvl, name) for lvl, name in path if lvl < level] + [(level, title)]
        if text.strip():
            lines.append(text)
    flush()
    return sections


def _blocks(container: Any) -> Iterator[Any]:
    """The w:p and w:tbl of a body in order, those inside block content controls too."""
    for child in container:
        if child.tag in (_P, _TBL):
            yield child
        elif child.tag == _SDT:
            content = child.find(_SDT_CONTENT)
            if content is not None:
                yield from _blocks(content)


def _heading_level(style_name: str | None) -> int | None:
    """0 for the title, 1..9 for "Heading 1".."Heading 9"; None for any other paragraph."""
    if style_name == "title":
        return 0
    match = _HEADING_STYLE.fullmatch(style_name or "")
    return int(match.group(1)) if match else None


def _table_rows(table: Any, numbers: NoteNumbers) -> Iterator[tuple[int, list[str]]]:
    """Each row's cells by grid column. python-docx yields a cell spanning columns once per
    column: its text is given once, then empty cells, so later cells stay under their header.
    A vertically merged cell is repeated in each row it spans, so every row reads whole."""
    for number, row in enumerate(table.rows, start=1):
        cells: list[str] = [""] * row.grid_cols_before
        previous = None
        for cell in row.cells:
            cells.append("" if cell is previous else element_text(cell._tc, numbers))
            previous = cell
        yield number, cells


def element_text(element: Any, numbers: NoteNumbers) -> str:
    """The text Word shows for an element (lxml or ElementTree), one line per paragraph.

    Iterative, so a deeply nested part cannot exhaust the stack. Entity references that lxml
    leaves unresolved have no string tag and are passed over.
    """
    parts: list[str] = []
    stack = [iter(element)]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
            continue
        tag = child.tag
        if not isinstance(tag, str) or tag in _SKIP:
            continue
        if tag in _TEXT:
            parts.append(_TEXT[tag] or child.text or "")
        elif tag in _NOTE_REFS:
            number = numbers.get(_NOTE_REFS[tag], {}).get(child.get(f"{W}id", ""))
            if number is not None:
                parts.append(f"[{number}]")
        else:
            if tag == _P and parts:
                parts.append("\n")
            stack.append(iter(child))
    return "".join(parts)


def _header_footer(document: Document, kind: str, numbers: NoteNumbers) -> list[Section]:
    """The distinct headers (or footers) of all the document's sections as one section.

    Read through each section's references rather than ``section.header``, which adds a
    definition to a header that is linked to the previous section's.
    """
    texts: list[str] = []
    related = document.part.related_parts
    for properties in document.element.body.iter(f"{W}sectPr"):
        for reference in properties.iter(f"{W}{kind}Reference"):
            part = related.get(reference.get(f"{R}id", ""))
            element = getattr(part, "element", None)
            if element is None:
                continue
            text = "\n".join(ln for ln in element_text(element, numbers).splitlines() if ln.strip())
            if text and text not in texts:
                texts.append(text)
    return [Section(text="\n".join(texts), location=kind)] if texts else []


def _notes(document: Document, kind: str) -> list[tuple[str, str]]:
    """(id, text on one line) of each footnote or endnote, in the order the part holds them
    (the order Word numbers them in)."""
    from defusedxml.ElementTree import fromstring
    from docx.opc.constants import RELATIONSHIP_TYPE as RT

    reltype = RT.FOOTNOTES if kind == "footnotes" else RT.ENDNOTES
    blobs = [
        rel.target_part.blob
        for rel in document.part.rels.values()
        if rel.reltype == reltype and not rel.is_external
    ]
    found: list[tuple[str, str]] = []
    for blob in blobs[:1]:
        root = fromstring(blob, forbid_dtd=True)
        for note in root:
            if note.get(f"{W}type") in _NOT_NOTES:
                continue
            text = " ".join(element_text(note, {}).split())
            found.append((note.get(f"{W}id", ""), text))
    return found


def _numbered(notes: list[tuple[str, str]]) -> dict[str, int]:
    """Note id -> the number a reader sees (Word numbers notes 1, 2, 3 in the order it writes
    them; the ids need not be consecutive)."""
    return {note_id: number for number, (note_id, _) in enumerate(notes, start=1)}
