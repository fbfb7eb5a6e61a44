"""Plain text: the encoding its byte order mark names, UTF-8, Windows-1252 or detected."""

from __future__ import annotations

import codecs

from rag.errors import DocumentError
from rag.ingest.readers.base import ReadContext, Section

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


def read(data: bytes, context: ReadContext) -> list[Section]:
    return [Section(text=decode_text(data))]
