"""Tables as text that keeps its rows: one Markdown row per line, the header first.

Every reader of tabular data (Word and slide tables, sheets, CSV, OpenDocument) builds its
sections here, so a table reads the same whatever file it came from and the chunker can keep
rows whole and repeat the header in every chunk (``TableRows``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rag.ingest.readers.base import Section, TableRows


def cell_text(value: object) -> str:
    """A cell as one line: inner line breaks and runs of blanks become one space, ``|`` escaped."""
    text = "" if value is None else str(value)
    return " ".join(text.split()).replace("|", "\\|")


def markdown_row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(cell_text(c) for c in cells) + " |"


def table_section(
    rows: Iterable[tuple[int, Sequence[object]]],
    *,
    label: str = "",
    heading: tuple[str, ...] = (),
    page: int | None = None,
    member: str = "",
    header: Sequence[object] | None = None,
) -> Section | None:
    """A table's section from ``(row number, cells)`` pairs, or None when it holds no text.

    Empty rows are left out and trailing empty cells trimmed; the first row left (or
    ``header``, when the caller knows it) is the header line repeated in every chunk.
    """
    numbers: list[int] = []
    lines: list[str] = []  # only each row's line is kept: a sheet of 200,000 rows stays small
    head_line = None if header is None else markdown_row(header)
    for number, cells in rows:
        texts = [cell_text(c) for c in cells]
        while texts and not texts[-1]:
            texts.pop()
        if not any(texts):
            continue
        if head_line is None:
            head_line = "| " + " | ".join(texts) + " |"
            continue
        numbers.append(number)
        lines.append("| " + " | ".join(texts) + " |")
    if head_line is None:
        return None
    if not lines:  # a header alone: its text is still worth finding
        return Section(text=head_line, page=page, heading=heading, location=label, member=member)
    return Section(
        text="\n".join([head_line, *lines]),
        page=page,
        heading=heading,
        location=label,
        member=member,
        table=TableRows(header=head_line, rows=tuple(numbers), label=label),
    )
