"""JSON, JSON Lines, YAML and XML, read as text so that their keys and values are searchable.

Nothing here interprets a file: YAML is indexed as written (never ``yaml.load``, which can
build arbitrary objects); JSON is parsed only to check it and to lay it out one value per line;
XML goes through defusedxml, so that an entity bomb or an external entity (``file:///etc/passwd``)
fails the file instead of being expanded. ``parse_xml`` is shared with the readers of XML-based
packages (OpenDocument, EPUB).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rag.errors import DocumentError
from rag.ingest.readers.base import ReadContext, Section
from rag.ingest.readers.text import decode_text
from rag.ingest.readers.xmlsafe import local_name, parse_xml

if TYPE_CHECKING:
    pass

# Bad lines of a JSON Lines file are named in the skipped list up to this many.
_NAMED_BAD_LINES = 5


def _load_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError as exc:  # the C parser counts its depth against the recursion limit
        raise DocumentError(f"{what} (nested too deeply)") from exc
    except ValueError as exc:  # JSONDecodeError, and integers over Python's digit limit
        raise DocumentError(f"{what} ({exc})") from exc


def read_json(data: bytes, context: ReadContext) -> list[Section]:
    """The document pretty-printed, one key or value per line, non-ASCII kept as written."""
    value = _load_json(decode_text(data), "not valid JSON")
    try:
        text = json.dumps(value, indent=1, ensure_ascii=False)
    except (RecursionError, ValueError) as exc:
        raise DocumentError(f"not valid JSON (nested too deeply: {exc})") from exc
    return [Section(text=text)]


def read_jsonl(data: bytes, context: ReadContext) -> list[Section]:
    """One compact JSON value per line. A line that does not parse is left out and named in
    ``context.skipped`` ("line 7": "not valid JSON"); a file with no good line fails."""
    lines: list[str] = []
    bad: list[int] = []
    first_error = ""
    for number, line in enumerate(decode_text(data).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = _load_json(line, "not valid JSON")
            lines.append(json.dumps(value, ensure_ascii=False))
        except (DocumentError, RecursionError, ValueError) as exc:
            bad.append(number)
            first_error = first_error or f"line {number}: {exc}"
    if bad and not lines:
        raise DocumentError(f"not valid JSON Lines (no line is valid JSON; {first_error})")
    if bad:
        named = ", ".join(str(n) for n in bad[:_NAMED_BAD_LINES])
        more = f" and {len(bad) - _NAMED_BAD_LINES} more" if len(bad) > _NAMED_BAD_LINES else ""
        part = f"line {named}" if len(bad) == 1 else f"lines {named}{more}"
        context.skipped.append((part, "not valid JSON (left out)"))
    return [Section(text="\n".join(lines))]


def read_text(data: bytes, context: ReadContext) -> list[Section]:
    """YAML (and any text format read as it is written): the decoded text, never parsed."""
    return [Section(text=decode_text(data))]


def read_xml(data: bytes, context: ReadContext) -> list[Section]:
    """One ``tag: text`` line per element holding text of its own, in document order.

    An element's own text is its text before its first child and the text after each child
    (mixed content such as ``<p>a <b>b</b> c</p>`` gives "p: a c", then "b: b"). Output grows
    linearly with the file; the tree is walked by ElementTree's iterative ``iter``, so a deeply
    nested file costs no recursion.
    """
    root = parse_xml(data, "not valid XML")
    lines: list[str] = []
    for element in root.iter():
        pieces = [element.text or ""] + [child.tail or "" for child in element]
        own = " ".join(" ".join(pieces).split())
        name = local_name(element.tag)
        if own and name:
            lines.append(f"{name}: {own}")
    return [Section(text="\n".join(lines))]
