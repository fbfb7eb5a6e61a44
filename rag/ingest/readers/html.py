"""HTML: the text a reader sees, by a linear scanner (no tree, no backtracking)."""

from __future__ import annotations

import html as htmllib
import re

from rag.ingest.readers.base import ReadContext, Section
from rag.ingest.readers.text import decode_text

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


def visible_text(html: str) -> str:
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


def read(data: bytes, context: ReadContext) -> list[Section]:
    return [Section(text=html_text(decode_text(data)))]


def html_text(markup: str) -> str:
    """The visible text of HTML markup, one line per block, blank runs collapsed."""
    raw = visible_text(markup)
    lines = [" ".join(line.split()) for line in raw.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
