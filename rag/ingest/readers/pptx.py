"""PowerPoint (.pptx, .pptm): each slide's text, its tables, then its speaker notes.

A slide is one section located at "slide N", headed by its title when it has a title
placeholder: the title first, then every shape's text in the slide's reading order (the order
of its shape tree, which is what PowerPoint's reading order and screen readers follow), group
shapes opened. A table on a slide is a section of its own ("slide N, table K"), between the
slide text before and after it. The speaker notes follow as "speaker notes of slide N".
Charts, pictures and SmartArt hold no text python-pptx reads and are passed over.

python-pptx parses with lxml and ``resolve_entities=False`` (no external entity is loaded).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rag.errors import DocumentError
from rag.ingest.readers.base import ReadContext, Section, in_order, short_reason
from rag.ingest.readers.tables import table_section

if TYPE_CHECKING:
    from pptx.slide import Slide


def read(data: bytes, context: ReadContext) -> list[Section]:
    from pptx import Presentation

    try:
        presentation = Presentation(io.BytesIO(data))
        sections: list[Section] = []
        for number, slide in enumerate(presentation.slides, start=1):
            sections += _slide(slide, number)
    except (DocumentError, MemoryError):
        raise
    except Exception as exc:  # python-pptx, zipfile and lxml raise assorted types
        raise DocumentError(f"damaged PowerPoint presentation ({short_reason(exc)})") from exc
    return in_order(sections)


def _slide(slide: Slide, number: int) -> list[Section]:
    location = f"slide {number}"
    title_shape = slide.shapes.title
    title = _frame_text(title_shape) if title_shape is not None else ""
    heading = (" ".join(title.split()),) if title.strip() else ()
    sections: list[Section] = []
    lines = [title] if title.strip() else []
    tables = 0

    def flush() -> None:
        text = "\n".join(lines).strip()
        if text:
            sections.append(Section(text=text, heading=heading, location=location))
        lines.clear()

    for shape in _shapes(slide.shapes):
        if title_shape is not None and shape.shape_id == title_shape.shape_id:
            continue
        if getattr(shape, "has_table", False):
            flush()
            tables += 1
            label = f"{location}, table {tables}"
            found = table_section(_table_rows(shape.table), label=label, heading=heading)
            if found is not None:
                sections.append(found)
        elif not _is_furniture(shape):
            text = _frame_text(shape)
            if text.strip():
                lines.append(text)
    flush()
    if slide.has_notes_slide:
        frame = slide.notes_slide.notes_text_frame
        notes = _clean(frame.text) if frame is not None else ""
        if notes.strip():
            notes_location = f"speaker notes of {location}"
            sections.append(Section(text=notes.strip(), heading=heading, location=notes_location))
    return sections


def _shapes(shapes: Any) -> Iterator[Any]:
    """Every shape in tree order, the members of a group in place of the group."""
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    for shape in shapes:
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _shapes(shape.shapes)
        else:
            yield shape


def _is_furniture(shape: Any) -> bool:
    """The slide number and date placeholders: the same on every slide, nothing to find."""
    from pptx.enum.shapes import PP_PLACEHOLDER

    if not shape.is_placeholder:
        return False
    return shape.placeholder_format.type in (PP_PLACEHOLDER.SLIDE_NUMBER, PP_PLACEHOLDER.DATE)


def _frame_text(shape: Any) -> str:
    return _clean(shape.text_frame.text) if getattr(shape, "has_text_frame", False) else ""


def _clean(text: str) -> str:
    """python-pptx gives a line break inside a paragraph as a vertical tab."""
    return text.replace("\v", "\n")


def _table_rows(table: Any) -> Iterator[tuple[int, list[str]]]:
    """Each row's cells; a cell covered by a merged one is empty, so cells stay in columns."""
    for number, row in enumerate(table.rows, start=1):
        yield number, ["" if cell.is_spanned else _clean(cell.text) for cell in row.cells]
