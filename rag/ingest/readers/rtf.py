"""RTF: the text striprtf finds, as one section.

RTF is 7-bit ASCII that escapes every other character (``\\'e9``, ``\\u8364?``), decoded by
striprtf with the code page the file declares; the bytes themselves are read as Windows-1252
(Latin-1 where a byte has no Windows-1252 character), which every byte is, so no input fails
decoding. striprtf is a single regular-expression scan, linear in the input; the worker's time
limit bounds it on a huge file.
"""

from __future__ import annotations

import re

from rag.errors import DocumentError
from rag.ingest.readers.base import ReadContext, Section

_BLANK_RUNS = re.compile(r"\n[ \t]*(?:\n[ \t]*){2,}")


def read(data: bytes, context: ReadContext) -> list[Section]:
    from striprtf.striprtf import rtf_to_text

    try:
        markup = data.decode("cp1252")
    except UnicodeDecodeError:
        markup = data.decode("latin-1")
    try:
        text: str = rtf_to_text(markup, errors="ignore")  # type: ignore[no-untyped-call]
    except Exception as exc:  # striprtf raises what its parsing meets (int(None), chr(2**40))
        raise DocumentError(f"unreadable RTF ({type(exc).__name__}: {exc})") from exc
    return [Section(text=_BLANK_RUNS.sub("\n\n", text).strip())]
