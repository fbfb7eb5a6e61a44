"""XML from files nobody curated: parsed with entity declarations refused (no "billion
laughs", no external entities reading local files), errors as a DocumentError with a reason."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from xml.etree.ElementTree import Element

from rag.errors import DocumentError


def parse_xml(data: bytes, what: str, *, member: str = "", forbid_dtd: bool = False) -> Element:
    """The root element of an XML document, parsed with entity declarations refused.

    defusedxml refuses any ``<!ENTITY`` (internal ones make the "billion laughs" bomb, external
    ones read local files or URLs) and never fetches a DTD; with ``forbid_dtd`` a DOCTYPE is
    refused too, for formats that never carry one. An error's reason is ``what`` ("not valid
    XML"), then in parentheses the ``member`` of a package it is about and what was wrong.
    """
    import defusedxml.ElementTree as safe_tree

    with xml_errors(what, member):
        root: Element = safe_tree.fromstring(data, forbid_dtd=forbid_dtd)
    return root


@contextlib.contextmanager
def xml_errors(what: str, member: str = "") -> Iterator[None]:
    """defusedxml's refusals and expat's syntax errors as a DocumentError with a reason."""
    import defusedxml

    where = f"{member}: " if member else ""
    try:
        yield
    except defusedxml.DefusedXmlException as exc:
        refused = "a DTD is" if isinstance(exc, defusedxml.DTDForbidden) else "entities are"
        raise DocumentError(f"{what} ({where}{refused} refused)") from exc
    except (SyntaxError, ValueError) as exc:  # ParseError is a SyntaxError
        raise DocumentError(f"{what} ({where}{exc})") from exc


def local_name(tag: object) -> str:
    """``{namespace}name`` without its namespace (comments and processing instructions: "")."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""
