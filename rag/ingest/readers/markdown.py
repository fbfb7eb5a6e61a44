"""Markdown: sections at its ATX headings, each with its heading path and offset."""

from __future__ import annotations

import bisect
import re

from rag.ingest.readers.base import ReadContext, Section
from rag.ingest.readers.text import decode_text

# Only the start of a heading line is matched by a regular expression; the title is cut in
# code. ``^(#{1,6})[ \t]+(.+?)[ \t#]*$`` backtracks quadratically on a line such as "# # # …".
_HEADING_START = re.compile(r"^(#{1,6})[ \t]", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)


def _fence_marks(text: str) -> list[int]:
    """Starts of fence lines; a position is fenced when an odd number of marks precede it."""
    marks = [m.start() for m in _FENCE.finditer(text)]
    return marks if len(marks) % 2 == 0 else marks[:-1]


def headings(text: str) -> list[tuple[int, int, str]]:
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


def read(data: bytes, context: ReadContext) -> list[Section]:
    text = decode_text(data)
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    start = 0
    current: tuple[str, ...] = ()
    for heading_start, level, title in headings(text):
        if heading_start > start:
            sections.append(Section(text[start:heading_start], heading=current, offset=start))
        path = [(lvl, name) for lvl, name in path if lvl < level] + [(level, title)]
        current = tuple(name for _, name in path)
        start = heading_start
    sections.append(Section(text[start:], heading=current, offset=start))
    return sections
