"""Where a chunk is, in words: what citations, prompts and `rag-index show` say of a payload.

A chunk's payload holds ``source`` (its file, relative to the ingested folder) and, where the
reader knew more, ``member`` (the path inside an archive or mail), ``page``, ``location``
("slide 3", "sheet Budget, rows 2–40", "footnotes") and ``ocr``. A member is shown as a path
under its file: ``mail.eml/report.pdf``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def document_path(payload: Mapping[str, Any]) -> str:
    """The file, or the member under its file (``archive.zip/notes/a.md``)."""
    source = str(payload.get("source", "?"))
    member = payload.get("member")
    return f"{source}/{member}" if member else source


def describe(payload: Mapping[str, Any], *, headings: bool = True) -> str:
    """``mail.eml/report.pdf, page 2 (OCR) — Results > Q3``: one line, for people and models."""
    where = document_path(payload)
    if payload.get("page") is not None:
        where += f", page {payload['page']}"
    if payload.get("location"):
        where += f", {payload['location']}"
    if payload.get("ocr"):
        where += " (OCR)"
    heading = payload.get("heading") or []
    if headings and heading:
        where += " — " + " > ".join(str(h) for h in heading)
    return where


def location_kind(location: str) -> str:
    """A location without its rows (``sheet Budget, rows 2–40`` -> ``sheet Budget``)."""
    head, _, rows = location.rpartition(", ")
    return head if head and rows.startswith(("row ", "rows ")) else location
