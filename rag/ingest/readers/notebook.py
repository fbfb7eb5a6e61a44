"""Jupyter notebooks (.ipynb): the cells in order, as a reader of the notebook sees them.

Markdown cells are split at their headings like Markdown files, the heading path carrying on
into the cells below; code cells are fenced with the kernel's language and followed by their
text outputs (streams, ``text/plain`` or ``text/markdown`` results, error names). Images and
HTML outputs are left out: base64 blobs and markup are nothing to search.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rag.errors import DocumentError
from rag.ingest.readers.base import ReadContext, Section, in_order
from rag.ingest.readers.markdown import headings as markdown_headings
from rag.ingest.readers.text import decode_text

MAX_OUTPUT_CHARS = 100_000  # of one cell's outputs: a cell printing a whole log is cut there
_LANGUAGE = re.compile(r"[\w+#.-]{1,40}")


def read(data: bytes, context: ReadContext) -> list[Section]:
    """One section per cell (``cell N``, N counting every cell from 1), more for a Markdown
    cell with headings."""
    try:
        notebook = json.loads(decode_text(data))
    except RecursionError as exc:
        raise DocumentError("not a valid notebook (nested too deeply)") from exc
    except ValueError as exc:
        raise DocumentError(f"not a valid notebook ({exc})") from exc
    cells = _cells(notebook)
    language = _language(notebook)
    path: list[tuple[int, str]] = []
    sections: list[Section] = []
    for number, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict):
            continue
        kind = cell.get("cell_type")
        source = _joined(cell.get("source", cell.get("input")))
        where = f"cell {number}"
        if kind == "markdown":
            for text, heading in _split_at_headings(source, path):
                sections.append(Section(text=text, heading=heading, location=where))
            continue
        heading = tuple(title for _, title in path)
        if kind == "code":
            own = cell.get("language")  # nbformat 3 names it on each code cell
            cell_language = _clean_language(own) if isinstance(own, str) else ""
            fence = f"```{cell_language or language}\n{source}\n```"
            text = "\n".join(t for t in (fence, _outputs(cell.get("outputs"))) if t)
            if not source.strip() and text == fence:
                continue
        else:  # raw cells, and nbformat 3's "heading" cells
            text = source
        sections.append(Section(text=text, heading=heading, location=where))
    return in_order([s for s in sections if s.text.strip()])


def _cells(notebook: Any) -> list[Any]:
    """nbformat 4's ``cells``, or nbformat 3's cells of its worksheets."""
    if isinstance(notebook, dict):
        cells = notebook.get("cells")
        if isinstance(cells, list):
            return cells
        sheets = notebook.get("worksheets")
        if isinstance(sheets, list):
            groups = [s.get("cells") for s in sheets if isinstance(s, dict)]
            return [c for group in groups if isinstance(group, list) for c in group]
    raise DocumentError("not a valid notebook (it has no cells)")


def _language(notebook: dict[str, Any]) -> str:
    metadata = notebook.get("metadata")
    if not isinstance(metadata, dict):
        return "python"
    for key, field in (("kernelspec", "language"), ("language_info", "name")):
        value = metadata.get(key)
        if isinstance(value, dict) and isinstance(value.get(field), str):
            language = _clean_language(value[field])
            if language:
                return language
    return "python"


def _clean_language(value: str) -> str:
    value = value.strip().lower()
    return value if _LANGUAGE.fullmatch(value) else ""


def _joined(value: object) -> str:
    """A notebook string: one string, or a list of lines with their own line ends."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(v for v in value if isinstance(v, str))
    return ""


def _outputs(outputs: object) -> str:
    texts: list[str] = []
    for output in outputs if isinstance(outputs, list) else []:
        if not isinstance(output, dict):
            continue
        kind = output.get("output_type")
        if kind == "stream":
            texts.append(_joined(output.get("text")))
        elif kind in ("execute_result", "display_data", "pyout"):
            data = output.get("data", output)  # nbformat 3 keeps the formats on the output
            if isinstance(data, dict):
                shown = data.get("text/markdown") or data.get("text/plain") or data.get("text")
                texts.append(_joined(shown))
        elif kind in ("error", "pyerr"):
            texts.append(f"{output.get('ename', 'Error')}: {output.get('evalue', '')}")
    return "\n".join(t.rstrip("\n") for t in texts if t.strip())[:MAX_OUTPUT_CHARS]


def _split_at_headings(text: str, path: list[tuple[int, str]]) -> list[tuple[str, tuple[str, ...]]]:
    """(text, heading path) pieces of a Markdown cell; ``path`` (level, title) is updated, so
    the cells below are under the last heading seen."""
    pieces: list[tuple[str, tuple[str, ...]]] = []
    start = 0
    current = tuple(title for _, title in path)
    for heading_start, level, title in markdown_headings(text):
        if text[start:heading_start].strip():
            pieces.append((text[start:heading_start], current))
        path[:] = [(lvl, name) for lvl, name in path if lvl < level] + [(level, title)]
        current = tuple(name for _, name in path)
        start = heading_start
    if text[start:].strip():
        pieces.append((text[start:], current))
    return pieces
