"""OpenDocument (.odt, .ods, .odp): the package's content.xml read with defusedxml.

No ODF library is used: the format is a zip of a few XML members, and reading them directly
keeps entity expansion refused (``parse_xml``), each member's size checked before it is
inflated, and a spreadsheet's repeated rows bounded. LibreOffice ends every sheet with a row
"repeated" 1,048,576 times; empty repeats are counted, never expanded, and a non-empty row or
cell is repeated at most ``MAX_REPEAT`` times.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rag.errors import DocumentError
from rag.ingest.readers.base import ReadContext, Section, Unreadable, in_order
from rag.ingest.readers.packages import open_package, package_member
from rag.ingest.readers.tables import table_section
from rag.ingest.readers.xmlsafe import parse_xml, xml_errors

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

DAMAGED = "damaged OpenDocument file"
MAX_REPEAT = 1000  # copies of a repeated row or cell that holds text
MAX_COLUMNS = 16_384  # the widest sheet LibreOffice and Excel make
MAX_EXPANDED_CELLS = 2_000_000  # cells made by repeats in one file, beyond the first copies
_MAX_SPACES = 100  # a <text:s text:c="N"/> run of spaces

_NS = {
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
    "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "draw": "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0",
    "presentation": "urn:oasis:names:tc:opendocument:xmlns:presentation:1.0",
    "style": "urn:oasis:names:tc:opendocument:xmlns:style:1.0",
    "svg": "urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0",
    "manifest": "urn:oasis:names:tc:opendocument:xmlns:manifest:1.0",
}


@functools.cache
def _q(name: str) -> str:
    """``prefix:name`` as ElementTree spells it, ``{namespace}name`` (cached: used per node)."""
    prefix, local = name.split(":")
    return f"{{{_NS[prefix]}}}{local}"


P, H, LIST, TABLE = _q("text:p"), _q("text:h"), _q("text:list"), _q("table:table")
ROW, CELL, COVERED = _q("table:table-row"), _q("table:table-cell"), _q("table:covered-table-cell")
NOTE, NOTES = _q("text:note"), _q("presentation:notes")
_ROW_GROUPS = {_q(f"table:{n}") for n in ("table-header-rows", "table-rows", "table-row-group")}
_LIST_ITEMS = {_q("text:list-item"), _q("text:list-header")}
# Inside a paragraph: not text a reader sees (comments, alt text, images, deleted text).
_NOT_TEXT = {_q(f"office:{n}") for n in ("annotation", "binary-data", "forms")} | {
    _q(n) for n in ("svg:title", "svg:desc", "text:tracked-changes", "presentation:notes")
}
# Blocks left out: generated indexes repeat the document's headings and terms.
_INDEXES = ("table-of-content", "illustration-index", "table-index", "object-index")
_NOT_BLOCKS = _NOT_TEXT | {
    _q(f"text:{n}") for n in (*_INDEXES, "user-index", "alphabetical-index", "sequence-decls")
}
_VALUES = ("string-value", "value", "date-value", "time-value", "boolean-value")
_VALUE_ATTRIBUTES = [_q(f"office:{n}") for n in _VALUES]
_BLANKS = re.compile(r"[ \t\r\n]+")


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    rows: list[tuple[int, list[str]]]


Block = Heading | Paragraph | Table


def _open(data: bytes) -> zipfile.ZipFile:
    archive = open_package(data, DAMAGED)
    manifest = package_member(archive, "META-INF/manifest.xml", DAMAGED)
    if manifest is not None:
        root = parse_xml(manifest, DAMAGED, member="META-INF/manifest.xml")
        if next(root.iter(_q("manifest:encryption-data")), None) is not None:
            raise Unreadable("password-protected OpenDocument file")
    return archive


def _member_xml(archive: zipfile.ZipFile, name: str) -> Element | None:
    content = package_member(archive, name, DAMAGED)
    if content is None:
        return None
    return parse_xml(content, DAMAGED, member=name, forbid_dtd=True)


def _body(archive: zipfile.ZipFile, kind: str) -> Element:
    content = _member_xml(archive, "content.xml")
    body = None if content is None else content.find(f"{_q('office:body')}/{_q(kind)}")
    if body is None:
        raise DocumentError(f"{DAMAGED} (content.xml has no {kind})")
    return body


def _count(element: Element, attribute: str) -> int:
    value = element.get(_q(attribute))
    if value is None:
        return 1
    try:
        return max(1, int(value))
    except ValueError:
        return 1


class _Walker:
    """Blocks of an ODF body in document order; notes (footnotes and endnotes) are collected
    as they are met and their citations ("[1]") kept in the text."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.expanded = 0

    def blocks(self, element: Element, indent: str = "") -> Iterator[Block]:
        for child in element:
            yield from self._block(child, indent)

    def _block(self, element: Element, indent: str) -> Iterator[Block]:
        tag = element.tag
        if tag == H:
            level = min(max(_count(element, "text:outline-level"), 1), 10)
            yield Heading(level, " ".join(self.inline(element).split()))
        elif tag == P:
            yield Paragraph(indent + self.inline(element).strip(" "))
        elif tag == LIST:
            yield from self._list(element, indent)
        elif tag == TABLE:
            yield Table(list(self.table_rows(element)))
        elif tag not in _NOT_BLOCKS:
            yield from self.blocks(element, indent)

    def _list(self, element: Element, indent: str) -> Iterator[Block]:
        """List items as "- item" lines, nested lists indented two spaces a level."""
        for item in element:
            if item.tag not in _LIST_ITEMS:
                continue
            marker = f"{indent}- "
            for child in item:
                text = self.inline(child).strip(" ") if child.tag == P and marker else ""
                if text.strip():
                    yield Paragraph(marker + text)
                    marker = ""
                elif child.tag != P or not marker:
                    yield from self._block(child, indent + "  ")

    def text(self, element: Element) -> str:
        """All text of a block container (a cell, a note body, a header) as lines."""
        lines: list[str] = []
        for block in self.blocks(element):
            if isinstance(block, Table):
                lines.extend(" ".join(cells) for _, cells in block.rows)
            else:
                lines.append(block.text)
        return "\n".join(line for line in lines if line.strip())

    def inline(self, element: Element) -> str:
        parts: list[str] = []
        self._inline(element, parts)
        return "".join(parts)

    def _inline(self, element: Element, parts: list[str]) -> None:
        if element.text:
            parts.append(_BLANKS.sub(" ", element.text))
        for child in element:
            tag = child.tag
            if tag == _q("text:s"):
                parts.append(" " * min(_count(child, "text:c"), _MAX_SPACES))
            elif tag == _q("text:tab"):
                parts.append("\t")
            elif tag == _q("text:line-break"):
                parts.append("\n")
            elif tag == NOTE:
                parts.append(self._note(child))
            elif tag not in _NOT_TEXT:
                if tag in (P, H) and parts:  # paragraphs of a text box inside this one
                    parts.append("\n")
                self._inline(child, parts)
            if child.tail:
                parts.append(_BLANKS.sub(" ", child.tail))

    def _note(self, note: Element) -> str:
        citation = note.find(_q("text:note-citation"))
        mark = "".join(citation.itertext()).strip() if citation is not None else ""
        mark = mark or str(len(self.notes) + 1)
        body = note.find(_q("text:note-body"))
        if body is not None:
            self.notes.append(f"[{mark}] " + self.text(body).replace("\n", " "))
        return f"[{mark}]"

    def table_rows(self, table: Element) -> Iterator[tuple[int, list[str]]]:
        """(row number, cells) of a table's rows that hold text; see the module docstring."""
        number = 0
        for row in _rows(table):
            yield from self.row_copies(row, number)
            number += _count(row, "table:number-rows-repeated")

    def row_copies(self, row: Element, before: int) -> Iterator[tuple[int, list[str]]]:
        """A row, numbered after the ``before`` rows above it, as often as it is repeated."""
        cells = self.cells(row)
        if not any(cells):
            return
        copies = min(_count(row, "table:number-rows-repeated"), MAX_REPEAT)
        self._expand((copies - 1) * len(cells))
        for copy in range(1, copies + 1):
            yield before + copy, cells

    def cells(self, row: Element) -> list[str]:
        cells: list[str] = []
        empty_run = 0  # empty cells not yet added: only those before a cell with text are
        for cell in row:
            if cell.tag not in (CELL, COVERED):
                continue
            repeat = _count(cell, "table:number-columns-repeated")
            text = self.cell_text(cell) if cell.tag == CELL else ""
            if not text:
                empty_run += repeat
                continue
            if len(cells) + empty_run >= MAX_COLUMNS:
                break
            cells.extend([""] * empty_run)
            empty_run = 0
            copies = min(repeat, MAX_REPEAT, MAX_COLUMNS - len(cells))
            self._expand(copies - 1)
            cells.extend([text] * copies)
        return cells

    def cell_text(self, cell: Element) -> str:
        """What the cell shows (its paragraphs), else its value for a file without them."""
        if len(cell) == 1 and cell[0].tag == P and not len(cell[0]):  # most cells: one plain <p>
            return _BLANKS.sub(" ", cell[0].text or "").strip()
        shown = self.text(cell)
        if shown or len(cell):
            return shown
        return next((cell.get(a, "") for a in _VALUE_ATTRIBUTES if cell.get(a)), "")

    def _expand(self, cells: int) -> None:
        self.expanded += cells
        if self.expanded > MAX_EXPANDED_CELLS:
            raise DocumentError(
                f"spreadsheet over its limits (repeats make over {MAX_EXPANDED_CELLS:,} cells)"
            )


def _rows(table: Element) -> Iterator[Element]:
    for child in table:
        if child.tag == ROW:
            yield child
        elif child.tag in _ROW_GROUPS:
            yield from _rows(child)


def _assemble(
    blocks: Iterator[Block],
    location: str = "",
    table_label: str = "table {n}",
    heading: tuple[str, ...] = (),
) -> list[Section]:
    """Sections from blocks: prose split at headings (the heading path under ``heading``),
    one section per table, in document order."""
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    prose: list[str] = []
    tables = 0

    def current() -> tuple[str, ...]:
        return heading + tuple(title for _, title in path)

    def flush() -> None:
        text = "\n".join(line for line in prose if line.strip())
        if text:
            sections.append(Section(text=text, heading=current(), location=location))
        prose.clear()

    for block in blocks:
        if isinstance(block, Heading) and block.text:
            flush()
            path = [(lvl, t) for lvl, t in path if lvl < block.level] + [(block.level, block.text)]
            prose.append(block.text)
        elif isinstance(block, Paragraph | Heading):
            prose.append(block.text)
        else:
            flush()
            tables += 1
            label = table_label.format(n=tables)
            table = table_section(block.rows, label=label, heading=current())
            if table is not None:
                sections.append(table)
    flush()
    return sections


def read_text_document(data: bytes, context: ReadContext) -> list[Section]:
    """Prose by heading, each table (``table N``), then footnotes, header and footer."""
    with _deep_nesting_fails():
        archive = _open(data)
        walker = _Walker()
        sections = _assemble(walker.blocks(_body(archive, "office:text")))
        if walker.notes:
            sections.append(Section(text="\n".join(walker.notes), location="footnotes"))
        styles = _member_xml(archive, "styles.xml")
        found: dict[str, list[str]] = {"header": [], "footer": []}
        for master in [] if styles is None else styles.iter(_q("style:master-page")):
            for part in master:  # style:header, style:header-left, style:footer-first, ...
                kind = part.tag.rsplit("}", 1)[-1].split("-")[0]
                text = _Walker().text(part) if kind in found else ""
                if text and text not in found[kind]:
                    found[kind].append(text)
        for kind, texts in found.items():
            if texts:
                sections.append(Section(text="\n".join(texts), location=kind))
        return in_order(sections)


def read_spreadsheet(data: bytes, context: ReadContext) -> list[Section]:
    """Each sheet as a table (``sheet NAME``, heading the sheet's name), rows numbered as in
    the sheet. content.xml is parsed incrementally, each row dropped once read."""
    with _deep_nesting_fails():
        archive = _open(data)
        content = package_member(archive, "content.xml", DAMAGED)
        if content is None:
            raise DocumentError(f"{DAMAGED} (no content.xml)")
        sections: list[Section] = []
        for name, rows in _sheets(content, _Walker()):
            label = f"sheet {name}" if name else "sheet"
            table = table_section(rows, label=label, heading=(name,) if name else ())
            if table is not None:
                sections.append(table)
        return in_order(sections)


def _sheets(content: bytes, walker: _Walker) -> Iterator[tuple[str, list[tuple[int, list[str]]]]]:
    """(name, rows) of each sheet, from ``iterparse`` events: a row is read when it ends and
    then removed from the tree, so memory holds one sheet's text, not its XML."""
    import defusedxml.ElementTree as safe_tree

    events = safe_tree.iterparse(io.BytesIO(content), ("start", "end"), forbid_dtd=True)
    open_elements: list[Element] = []
    rows: list[tuple[int, list[str]]] = []
    depth = number = 0  # depth: tables open (a cell may hold a table of its own)
    with xml_errors(DAMAGED, "content.xml"):
        for event, element in events:
            if event == "start":
                open_elements.append(element)
                depth += element.tag == TABLE
                if element.tag == TABLE and depth == 1:
                    rows, number = [], 0
                continue
            open_elements.pop()
            if element.tag == ROW and depth == 1:
                rows.extend(walker.row_copies(element, number))
                number += _count(element, "table:number-rows-repeated")
                open_elements[-1].remove(element)
            elif element.tag == TABLE:
                depth -= 1
                if depth == 0:
                    yield element.get(_q("table:name"), ""), rows
                    open_elements[-1].remove(element)


def read_presentation(data: bytes, context: ReadContext) -> list[Section]:
    """Each slide's text (``slide N``, heading its title) and tables, then its speaker notes."""
    with _deep_nesting_fails():
        archive = _open(data)
        walker = _Walker()
        sections: list[Section] = []
        pages = _body(archive, "office:presentation").findall(_q("draw:page"))
        for number, page in enumerate(pages, start=1):
            heading = _slide_title(walker, page)
            where = f"slide {number}"
            sections += _assemble(walker.blocks(page), where, f"{where}, table {{n}}", heading)
            notes = page.find(NOTES)
            text = walker.text(notes) if notes is not None else ""
            if text:
                where = f"speaker notes of slide {number}"
                sections.append(Section(text=text, heading=heading, location=where))
        return in_order(sections)


def _slide_title(walker: _Walker, page: Element) -> tuple[str, ...]:
    """The slide's title placeholder text, else its name unless LibreOffice's "pageN"."""
    for frame in page.iter(_q("draw:frame")):
        if frame.get(_q("presentation:class")) == "title":
            title = " ".join(walker.text(frame).split())
            if title:
                return (title,)
    name = page.get(_q("draw:name"), "")
    return (name,) if name and not re.fullmatch(r"page\d+", name) else ()


@contextlib.contextmanager
def _deep_nesting_fails() -> Iterator[None]:
    """Elements nested thousands deep (never in a real document) fail the file; the walk
    recurses once per level."""
    try:
        yield
    except RecursionError as exc:
        raise DocumentError(f"{DAMAGED} (elements nested too deeply)") from exc
